"""The architecture as a test: imports point down the chain of docs/design, slide/tiling never load torch, the jobs
are the top of the library, and the commands that run a job reach the library through it alone."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "histo_daen"

# Lower rank = more basic. A module may import from its own rank's package or from lower ranks only.
FOUNDATION = {
    "errors", "classes", "atomic", "seeding", "config", "devices", "digest", "progress", "provenance", "resources",
    "torchrun", "interrupts",
}  # fmt: skip
RANKS: dict[str, int] = {name: 0 for name in FOUNDATION} | {
    "slide": 1,
    "tiling": 2,
    "data": 3,
    "models": 4,
    "training": 5,
    "inference": 5,
    "evaluation": 6,
    "export": 6,
    "jobs": 7,
}
TOP_LEVEL_RANK = 8  # the package's __init__ (lazy public names) may name anything


def _component(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "histo_daen" or len(parts) < 2:
        return None
    return parts[1]


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def _own_rank(path: Path) -> tuple[str, int]:
    relative = path.relative_to(PACKAGE)
    name = relative.parts[0].removesuffix(".py")
    if name == "__init__":
        return name, TOP_LEVEL_RANK
    return name, RANKS.get(name, TOP_LEVEL_RANK)


def test_imports_point_down_the_chain() -> None:
    violations = []
    for path in sorted(PACKAGE.rglob("*.py")):
        own, own_rank = _own_rank(path)
        for lineno, module in _imports(path):
            target = _component(module)
            if target is None or target == own or target == "__version__":
                continue
            target_rank = RANKS.get(target, TOP_LEVEL_RANK)
            # Siblings of one rank (training/inference, evaluation/export) stay independent; foundation modules may
            # use each other.
            sibling_clash = target_rank == own_rank and target != own and 0 < own_rank < TOP_LEVEL_RANK
            if target_rank > own_rank or sibling_clash:
                violations.append(
                    f"{path.relative_to(ROOT)}:{lineno} imports {module} (rank {target_rank} >= {own_rank})"
                )
    assert not violations, "imports pointing up the chain:\n" + "\n".join(violations)


def test_foundation_modules_import_only_foundation() -> None:
    violations = []
    for name in FOUNDATION:
        paths = [PACKAGE / f"{name}.py"] if (PACKAGE / f"{name}.py").exists() else list((PACKAGE / name).rglob("*.py"))
        for path in paths:
            for lineno, module in _imports(path):
                target = _component(module)
                if target is not None and target not in FOUNDATION:
                    violations.append(f"{path.relative_to(ROOT)}:{lineno} imports {module}")
    assert not violations, "\n".join(violations)


@pytest.mark.parametrize("package", ["histo_daen.slide", "histo_daen.tiling", "histo_daen.cli"])
def test_package_imports_without_loading_torch(package: str) -> None:
    code = f"import sys, {package}; sys.exit(1 if 'torch' in sys.modules else 0)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"importing {package} loads torch\n{result.stderr}"


def test_cli_modules_hold_no_torch_imports_at_module_level() -> None:
    """Commands import heavy libraries inside the function, so `histo-daen --help` stays instant."""
    offenders = []
    for path in sorted((ROOT / "cli").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                if any(n.split(".")[0] in {"torch", "torchvision", "zarr", "matplotlib"} for n in names):
                    offenders.append(f"{path.name}:{node.lineno}")
    assert not offenders, offenders


def test_every_package_module_has_a_rank() -> None:
    """A new top-level module or package must be placed in the chain (or the foundation) on purpose."""
    unplaced = sorted(
        path.name.removesuffix(".py")
        for path in PACKAGE.iterdir()
        if (path.suffix == ".py" or (path.is_dir() and (path / "__init__.py").exists()))
        and path.name.removesuffix(".py") not in RANKS
        and path.name != "__init__.py"
    )
    assert not unplaced, f"give these a rank in RANKS: {unplaced}"


# Commands that run a job import the library only through jobs and the foundation (parse, call one job, echo).
JOB_COMMANDS = {"tile", "segment", "train", "evaluate", "demo"}


def test_job_commands_reach_the_library_through_jobs_only() -> None:
    violations = []
    for name in sorted(JOB_COMMANDS):
        path = ROOT / "cli" / f"{name}.py"
        for lineno, module in _imports(path):
            target = _component(module)
            if target is not None and target not in FOUNDATION | {"jobs", "cli"}:
                violations.append(f"cli/{name}.py:{lineno} imports {module}")
    assert not violations, "\n".join(violations)


def test_nothing_below_the_jobs_knows_about_cohorts() -> None:
    """Shards, folder naming and slide discovery for cohorts belong to histo_daen.jobs.cohort alone."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.relative_to(PACKAGE).parts[0] == "jobs":
            continue
        text = path.read_text(encoding="utf-8")
        offenders += [f"{path.relative_to(ROOT)}: {word}" for word in ("Shard", "find_slides(") if word in text]
    allowed = {"histo_daen/slide/discovery.py: find_slides(", "histo_daen/slide/__init__.py: find_slides("}
    assert not [o for o in offenders if o not in allowed], offenders
