"""The installed package stands alone: build the wheel, install it away from the checkout, run the demo at toy size.

A fresh virtual environment gets the wheel with ``pip install --no-deps --no-index``; torch and the other
dependencies come from this test's own environment through a path entry (a ``.pth`` line), so no run downloads or
reinstalls gigabytes. The path entry adds that environment's packages but not its ``.pth`` hooks, so the project's
editable install stays out and ``histo_daen`` is imported from the wheel. Only building the wheel uses the network
(pip fetches the build backend from the package index, as ``make install`` does).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "histo_daen", "cli", "configs")
TOY = [
    "slide_size=[1536,1024]",
    "n_train=16",
    "n_val=2",
    "n_test=4",
    "train_overrides=[optim.max_steps=2, optim.batch_size=4, data.workers=0, data.validate=false]",
    "segment_overrides=[chunk_size=64, overview_max_side=256]",
]


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    environment = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONNOUSERSITE": "1"}
    environment.pop("PYTHONPATH", None)
    result = subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def _install_wheel(work: Path) -> Path:
    """Build the wheel from a copy of the sources and install it into a new virtual environment; returns its bin/."""
    source = work / "source"  # a copy, so the build leaves no build/ or egg-info in the checkout
    source.mkdir(parents=True)
    for name in SOURCES:
        origin = ROOT / name
        if origin.is_dir():
            shutil.copytree(origin, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(origin, source / name)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(work / "dist"), "."], source)
    (wheel,) = (work / "dist").glob("histo_daen-*.whl")
    environment = work / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(environment)], work)
    python = environment / "bin" / "python"
    site = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], work).stdout.strip()
    (Path(site) / "project_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", str(wheel)], work)
    return environment / "bin"


@pytest.mark.slow
def test_demo_runs_from_the_installed_wheel(tmp_path: Path) -> None:
    installed = _install_wheel(tmp_path / "build")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    code = (
        "import histo_daen, histo_daen.cli; from histo_daen.config.load import shipped_configs; "
        "print(histo_daen.__file__); print(','.join(shipped_configs()))"
    )
    where, names = _run([str(installed / "python"), "-c", code], run_dir).stdout.split()
    assert Path(where).is_relative_to(installed.parent)  # the wheel's copy, not the checkout
    assert names.split(",") == sorted(path.stem for path in (ROOT / "configs").glob("*.yaml"))

    result = _run([str(installed / "histo-daen"), "demo", "-o", "out", "--workers", "0", *TOY], run_dir)
    assert "Demo outputs are in out/" in result.stdout
    out = run_dir / "out"
    assert (out / "maps" / "demo" / "summary.json").is_file() and (out / "comparison" / "comparison.md").is_file()
    # The training recipe is the shipped demo config, read from the installed package.
    recipe = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    used = yaml.safe_load((out / "runs" / "daen" / "config.yaml").read_text())
    overridden = {("model", "variant"), ("optim", "max_steps"), ("optim", "batch_size"), ("data", "workers")}
    for section, values in recipe.items():
        if isinstance(values, dict):
            for key, value in values.items():
                if (section, key) not in overridden:
                    assert used[section][key] == value, f"{section}.{key}"


def test_every_subpackage_is_listed_for_the_wheel() -> None:
    """setuptools installs only the packages pyproject.toml lists: a new subpackage must be added there."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        "histo_daen." + ".".join(path.parent.relative_to(ROOT / "histo_daen").parts)
        for path in (ROOT / "histo_daen").rglob("__init__.py")
    }
    found = {name.rstrip(".") for name in found} | {"histo_daen.cli", "histo_daen.configs"}
    assert found == listed
