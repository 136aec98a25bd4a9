"""``make demo``: the whole tool on built-in synthetic data, step by step, with nothing downloaded.

Each step is a function ``step(context) -> str`` that does one stage, stores what later steps need in
``context.results`` and returns one line saying where its outputs are. Steps are listed in :data:`STEPS`; later
capabilities (synthetic dataset, training, evaluation, comparison, slide segmentation) append their own. Every
step is resumable: rerunning the demo reuses finished outputs.

Run it with ``make demo``, ``python -m histo_daen.demo --output demo_output`` or ``histo-daen demo``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["STEPS", "DemoContext", "DemoStep", "main", "run_demo"]

logger = logging.getLogger(__name__)


@dataclass
class DemoContext:
    """What the steps share.

    Attributes:
        output: the demo's output folder.
        progress: show progress bars.
        workers: worker processes for slide reading (None: all cores).
        results: outputs of earlier steps by name (e.g. ``"slide"`` -> the synthetic slide).
    """

    output: Path
    progress: bool = True
    workers: int | None = None
    results: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DemoStep:
    """One stage of the demo: a title for people and the function that runs it."""

    name: str
    title: str
    run: Callable[[DemoContext], str]


# -- steps ---------------------------------------------------------------------------------------------------------

DEMO_SLIDE = {"size_wh": (4096, 3072), "mpp": 0.5, "levels": 4, "seed": 2024, "pen_marks": True, "dust": True}


def write_demo_slide(context: DemoContext) -> str:
    """A 4096 x 3072 px Aperio-style SVS at 0.5 um/px (20x) with the four classes, pen marks and dust."""
    from histo_daen.data.synthetic_slide import write_synthetic_slide
    from histo_daen.slide import open_slide

    path = context.output / "slides" / "demo.svs"
    if path.is_file() and path.with_name("demo.mask.png").is_file():
        with open_slide(path) as slide:  # reuse it if it is a whole, readable slide
            slide.identity()
    else:
        write_synthetic_slide(path, **DEMO_SLIDE)  # type: ignore[arg-type]
    context.results["slide"] = path
    return f"{path} (ground truth: {path.with_name('demo.mask.png').name})"


def tile_demo_slide(context: DemoContext) -> str:
    """Tiles of 224 px at 1 um/px (the LUAD-HistoSeg resolution), at least half tissue, with the manifest."""
    from histo_daen.config.schema import TileConfig
    from histo_daen.tiling import tile_slide

    result = tile_slide(
        context.results["slide"],
        context.output / "tiles",
        TileConfig(),
        workers=context.workers,
        progress=context.progress,
        progress_label="tiling demo.svs",
    )
    context.results["tiles"] = result
    return (
        f"{result.n_tiles} tiles ({result.n_written} written, {result.n_skipped} already there), "
        f"tissue {result.tissue_area_mm2:.2f} mm²: {result.manifest_path}; check {result.output_dir / 'tiles.png'}"
    )


STEPS: list[DemoStep] = [
    DemoStep("slide", "Write a synthetic whole-slide image", write_demo_slide),
    DemoStep("tile", "Find the tissue and tile it", tile_demo_slide),
]


# -- running -------------------------------------------------------------------------------------------------------


def run_demo(
    output: str | Path,
    *,
    steps: Sequence[DemoStep] | None = None,
    progress: bool = True,
    workers: int | None = None,
    echo: Callable[[str], None] = print,
) -> DemoContext:
    """Run the demo steps in order, echoing a header and a result line for each.

    Args:
        output: folder for everything the demo writes (created).
        steps: the steps to run (default: :data:`STEPS`).
        progress: progress bars.
        workers: slide-reading processes (None: all cores).
        echo: where the lines go (the CLI passes ``click.echo``).

    Returns:
        The context, with every step's results.
    """
    context = DemoContext(Path(output), progress=progress, workers=workers)
    context.output.mkdir(parents=True, exist_ok=True)
    chosen = list(STEPS if steps is None else steps)
    for number, step in enumerate(chosen, start=1):
        echo(f"[{number}/{len(chosen)}] {step.title}")
        started = time.perf_counter()
        line = step.run(context)
        echo(f"      {line} ({time.perf_counter() - started:.1f} s)")
    echo(f"Demo outputs are in {context.output}/")
    return context


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m histo_daen.demo --output demo_output``."""
    parser = argparse.ArgumentParser(prog="python -m histo_daen.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="demo_output", help="output folder [default: demo_output]")
    parser.add_argument("--workers", type=int, default=None, help="slide-reading processes [default: all cores]")
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    from histo_daen.errors import HistoDaenError

    try:
        run_demo(arguments.output, workers=arguments.workers)
    except HistoDaenError as err:
        print(f"Error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
