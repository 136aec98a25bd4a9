"""The tile folder of one slide (:func:`tile_slide`): built, resumed, verified. Cohorts: :mod:`histo_daen.jobs.tile`.

The folder (``FOLDER``, e.g. ``tiles/<slide stem>``) holds::

    FOLDER/manifest.csv      one row per tile (level-0 box, tissue fraction, file, size, SHA-256)
    FOLDER/manifest.json     slide identity, parameters, grid, counts, package version
    FOLDER/config.yaml       the resolved TileConfig
    FOLDER/tiles/            <slide stem>_x<X>_y<Y>.png (or .jpg)
    FOLDER/thumbnail.png     the slide at the tissue mask's resolution (pictures: :mod:`histo_daen.tiling.pictures`)
    FOLDER/tissue_mask.png   the tissue mask (white = tissue), same size
    FOLDER/tiles.png         the thumbnail with the tissue outline and the kept tiles drawn on it

Resumable and atomic: a job builds ``FOLDER.partial/``, writes every file atomically, journals each tile, and
renames it to ``FOLDER/`` only when the manifest is written, so a killed job never leaves a folder a later run
mistakes for complete. A rerun with equal parameters finishes an interrupted job (tiles journaled and
verified are kept) or, on a complete folder, verifies every tile against the manifest and rewrites only broken
ones; with different parameters or another slide it stops and names what changed
(:func:`histo_daen.provenance.require_same`), unless ``overwrite``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from histo_daen import __version__
from histo_daen.atomic import make_durable, partial_dir_for, prepare_output_folder
from histo_daen.config import dump_config, to_plain_dict
from histo_daen.config.schema import TileConfig
from histo_daen.errors import NoTissueError, OutputExistsError
from histo_daen.progress import progress_bar
from histo_daen.provenance import differences, require_same
from histo_daen.resources import require_disk
from histo_daen.slide import Slide, open_slide
from histo_daen.tiling.extract import TileFile, TileWriter, map_tiles, warm_up_workers, write_tile
from histo_daen.tiling.grid import TileGrid, tile_grid
from histo_daen.tiling.manifest import (
    FORMAT_VERSION,
    JOURNAL_NAME,
    MANIFEST_CSV,
    MANIFEST_JSON,
    ManifestRow,
    append_journal,
    read_header,
    read_journal,
    read_manifest,
    verify_tile_file,
    write_header,
    write_manifest,
)
from histo_daen.tiling.pictures import write_tiling_pictures

__all__ = ["TILES_FOLDER", "SlideTilingResult", "tile_slide"]

logger = logging.getLogger(__name__)

TILES_FOLDER = "tiles"
# File bytes per tile pixel: H&E texture barely compresses losslessly (2.7 measured for PNG), JPEG at 90 about 0.5.
_TILE_FILE_BYTES_PER_PIXEL = {"png": 3.0, "jpeg": 0.75}


@dataclass(frozen=True)
class SlideTilingResult:
    """What tiling one slide did.

    Attributes:
        slide_path: the slide.
        output_dir: its folder.
        manifest_path: ``output_dir / "manifest.csv"``.
        n_tiles: tiles in the manifest.
        n_written: tiles this call wrote.
        n_skipped: tiles already present and verified.
        tissue_area_mm2: tissue area found.
    """

    slide_path: Path
    output_dir: Path
    manifest_path: Path
    n_tiles: int
    n_written: int
    n_skipped: int
    tissue_area_mm2: float

    def summary(self) -> str:
        """The one line the CLI prints for this slide."""
        return (
            f"{self.slide_path.name}: {self.n_written} tiles written, {self.n_skipped} skipped (already present), "
            f"tissue {self.tissue_area_mm2:.2f} mm² -> {self.manifest_path}"
        )


def _parameters(config: TileConfig, slide: Slide) -> dict[str, Any]:
    """What decides the tiles' content; a rerun must match all of it to resume."""
    parameters = to_plain_dict(config)
    parameters["slide_mpp"] = slide.mpp  # the value used, from the file or the override
    return parameters


def _header(slide: Slide, config: TileConfig, grid: TileGrid, n_tiles: int) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "histo_daen_version": __version__,
        "slide": slide.identity(),
        "parameters": _parameters(config, slide),
        "grid": {
            "downsample": grid.downsample,
            "level": grid.level,
            "level_downsample": slide.level_downsamples[grid.level],
            "tile_size_level0": grid.tile_size_level0,
            "stride_level0": grid.stride * grid.downsample,
            "n_cols": grid.n_cols,
            "n_rows": grid.n_rows,
            "tissue_downsample": grid.tissue_downsample,
        },
        "n_tiles": n_tiles,
        "tissue_area_mm2": round(grid.tissue_area_mm2, 6),
        "files": {"manifest": MANIFEST_CSV, "tiles": TILES_FOLDER + "/", "config": "config.yaml"},
    }


def _reuse_record(header: Mapping[str, Any]) -> dict[str, Any]:
    """What a rerun must match to reuse an output: the format, the parameters and the slide (by content)."""
    return {key: header.get(key) for key in ("format_version", "parameters", "slide")}


def _stale_temporaries(folder: Path) -> None:
    """Remove the ``.tmp-*`` files a killed job left (atomic writes that never finished)."""
    if folder.is_dir():
        for leftover in folder.glob(".tmp-*"):
            leftover.unlink(missing_ok=True)


def tile_slide(
    slide_path: str | os.PathLike[str],
    folder: str | os.PathLike[str],
    config: TileConfig | None = None,
    *,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = False,
    progress_label: str = "",
) -> SlideTilingResult:
    """Find the tissue on one slide, cut it into tiles at ``config.target_mpp`` and write them with a manifest.

    Args:
        slide_path: the slide file.
        folder: the slide's output folder, e.g. ``tiles/<slide stem>`` (built as ``<folder>.partial``).
        config: tiling settings (defaults: :class:`~histo_daen.config.schema.TileConfig`).
        workers: reader processes (None: all cores; 0: in this process).
        overwrite: replace an existing output made with other parameters.
        progress: show a tqdm bar.
        progress_label: text before the bar (e.g. ``"[2/10] slide.svs"``).

    Returns:
        Counts and paths (see :class:`SlideTilingResult`).

    Raises:
        SlideError: the slide cannot be opened, is corrupt, or is smaller than one tile.
        MissingResolutionError: no usable mpp and no ``config.slide_mpp``.
        NoTissueError: no tissue, or no tile with enough of it.
        OutputExistsError: the output exists with other parameters (or is not a tiling output) and not ``overwrite``.
        PathError: the output folder cannot be written.
    """
    config = config or TileConfig()
    folder = Path(folder)
    with open_slide(slide_path, backend=config.backend, mpp_override=config.slide_mpp) as slide:
        if workers != 0:
            warm_up_workers(slide.backend)  # the worker server's imports overlap with the tissue mask below
        slide.require_mpp()
        grid = tile_grid(
            slide,
            target_mpp=config.target_mpp,
            tile_size=config.tile_size,
            overlap=config.overlap,
            min_tissue=config.min_tissue,
            tissue_mpp=config.tissue_mpp,
            use_pyramid=config.use_pyramid,
        )
        if not grid.tissue_mask.any() and config.min_tissue > 0:  # --min-tissue 0 asks for every tile regardless
            raise NoTissueError(
                slide.path,
                "no tissue found: the thumbnail is blank glass (no stained pixels)",
                "Check that this is the right slide; faint stains may need a lower tissue threshold.",
            )
        if not grid.tiles:
            raise NoTissueError(
                slide.path,
                f"has {grid.tissue_area_mm2:.3f} mm² of tissue, but no {config.tile_size}-px tile at "
                f"{config.target_mpp:g} um/px is {config.min_tissue:.0%} tissue",
                "Lower --min-tissue or --tile-size.",
            )
        prepare_output_folder(folder.parent)
        return _tile_into(slide, grid, folder, config, workers, overwrite, progress, progress_label)


def _tile_into(
    slide: Slide,
    grid: TileGrid,
    final: Path,
    config: TileConfig,
    workers: int | None,
    overwrite: bool,
    progress: bool,
    progress_label: str,
) -> SlideTilingResult:
    stem = slide.path.stem
    partial_dir = partial_dir_for(final)
    header = _header(slide, config, grid, len(grid.tiles))
    writer = TileWriter(
        folder=partial_dir / TILES_FOLDER,
        name_prefix=stem,
        tile_size=config.tile_size,
        fmt=config.format,
        jpeg_quality=config.jpeg_quality,
        png_compression=config.png_compression,
    )
    if final.exists():
        stored = read_header(final / MANIFEST_JSON)
        if stored is None or not (final / MANIFEST_CSV).is_file():
            if not overwrite:
                raise OutputExistsError(
                    final,
                    "exists but is not a complete histo-daen tiling output (no manifest)",
                    "Pass --overwrite to replace it, or choose another --output.",
                )
        else:
            stored_record, requested_record = _reuse_record(stored), _reuse_record(header)
            if not (overwrite and differences(stored_record, requested_record)):
                require_same(
                    stored_record,
                    requested_record,
                    path=final,
                    subject="was tiled from another slide or with other settings",
                    hint="Pass --overwrite to replace it, or choose another --output.",
                )
                complete_writer = dataclasses.replace(writer, folder=final / TILES_FOLDER)
                return _verify_complete(
                    slide, grid, config, final, header, complete_writer, workers, progress, progress_label
                )
    if partial_dir.exists():
        stored = read_header(partial_dir / MANIFEST_JSON)
        if overwrite and (stored is None or differences(_reuse_record(stored), _reuse_record(header))):
            shutil.rmtree(partial_dir)
        elif stored is None:
            raise OutputExistsError(
                partial_dir, "holds an unfinished job without its manifest header", "Pass --overwrite to start over."
            )
        else:
            require_same(
                _reuse_record(stored),
                _reuse_record(header),
                path=partial_dir,
                subject="holds an unfinished job from another slide or with other settings",
                hint="Rerun with the same settings to finish it, or pass --overwrite to start over.",
            )

    partial_dir.mkdir(parents=True, exist_ok=True)
    tiles_dir = writer.folder
    tiles_dir.mkdir(exist_ok=True)
    # A killed job leaves temporaries of tiles and, as the pictures are drawn while tiles are cut, of pictures.
    _stale_temporaries(tiles_dir)
    _stale_temporaries(partial_dir)
    write_header(partial_dir / MANIFEST_JSON, header)
    journal_path = partial_dir / JOURNAL_NAME
    journal = read_journal(journal_path)
    records: dict[int, tuple[int, str]] = {}
    todo: list[int] = []
    for index, tile in enumerate(grid.tiles):
        entry = journal.get(index)
        if entry is not None and verify_tile_file(tiles_dir / writer.file_name(tile), *entry):
            records[index] = entry
        else:
            todo.append(index)
    n_skipped = len(records)
    if n_skipped:
        logger.info("%s: resuming, %d of %d tiles already written", slide.path.name, n_skipped, len(grid.tiles))
    require_disk(
        len(todo) * config.tile_size**2 * _TILE_FILE_BYTES_PER_PIXEL[config.format],
        final.parent,
        what=f"{slide.path.name}: {len(todo):,} {config.format.upper()} tiles of {config.tile_size} px",
        hint="Raise --target-mpp or --min-tissue, or choose an --output with more room.",
    )
    # The pictures need only the grid: drawn in a thread while the workers cut tiles (this process waits on them).
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tiling-pictures") as background:
        pictures = background.submit(write_tiling_pictures, partial_dir, slide, grid)
        _write_tiles(slide, grid, writer, todo, records, journal_path, workers, progress, progress_label)
        pictures.result()
    _finish(slide, grid, config, partial_dir, header, writer, records, pictures_done=True)
    if final.exists():  # --overwrite of a complete output: swap, then delete the old one
        old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(final, old)
        os.replace(partial_dir, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(partial_dir, final)
    make_durable([], folders=[final.parent])  # the rename itself
    (final / JOURNAL_NAME).unlink(missing_ok=True)
    return SlideTilingResult(
        slide.path, final, final / MANIFEST_CSV, len(grid.tiles), len(todo), n_skipped, grid.tissue_area_mm2
    )


def _write_tiles(
    slide: Slide,
    grid: TileGrid,
    writer: TileWriter,
    todo: Sequence[int],
    records: dict[int, tuple[int, str]],
    journal_path: Path | None,
    workers: int | None,
    progress: bool,
    progress_label: str,
) -> None:
    """Write the tiles ``todo`` (indices into the grid) in worker processes, journaling each one."""
    if not todo:
        return
    tiles = [grid.tiles[index] for index in todo]
    position = {tile: index for index, tile in zip(todo, tiles, strict=True)}
    bar = progress_bar(
        total=len(grid.tiles),
        initial=len(grid.tiles) - len(todo),
        unit="tile",
        desc=progress_label or slide.path.name,
        enabled=progress,
        leave=False,
        dynamic_ncols=True,
    )
    batch: list[tuple[int, int, str]] = []
    with bar:
        for written in map_tiles(slide.source(), tiles, partial(write_tile, writer), workers=workers):
            assert isinstance(written, TileFile)
            index = position[written.tile]
            records[index] = (written.n_bytes, written.sha256)
            batch.append((index, written.n_bytes, written.sha256))
            if len(batch) >= 32 and journal_path is not None:
                append_journal(journal_path, batch)
                batch.clear()
            bar.update(1)
        if journal_path is not None:
            append_journal(journal_path, batch)


def _finish(
    slide: Slide,
    grid: TileGrid,
    config: TileConfig,
    folder: Path,
    header: dict[str, Any],
    writer: TileWriter,
    records: dict[int, tuple[int, str]],
    *,
    pictures_done: bool = False,
) -> None:
    """Pictures (unless done), config, then, once the tiles are durable, the manifest that marks the folder complete."""
    if not pictures_done:
        write_tiling_pictures(folder, slide, grid)
    dump_config(config, folder / "config.yaml")
    rows = [
        ManifestRow(tile, f"{TILES_FOLDER}/{writer.file_name(tile)}", *records[index])
        for index, tile in enumerate(grid.tiles)
    ]
    # Tiles were written without an fsync each (atomic against kills, not power cuts). Before the manifest says they
    # are there, they and their names go to disk: an fsync of each file written (not os.sync(), which flushes every
    # filesystem and waits on whatever else the machine writes).
    make_durable((writer.folder / writer.file_name(tile) for tile in grid.tiles), folders=[writer.folder, folder])
    write_manifest(folder / MANIFEST_CSV, slide.path.name, config.target_mpp, rows)
    write_header(folder / MANIFEST_JSON, header)


def _verify_complete(
    slide: Slide,
    grid: TileGrid,
    config: TileConfig,
    final: Path,
    header: dict[str, Any],
    writer: TileWriter,
    workers: int | None,
    progress: bool,
    progress_label: str,
) -> SlideTilingResult:
    """A complete output with equal parameters: check every tile against the manifest, rewrite the broken ones."""
    rows = read_manifest(final / MANIFEST_CSV)
    tiles_dir = writer.folder
    records: dict[int, tuple[int, str]] = {}
    todo: list[int] = []
    for index, tile in enumerate(grid.tiles):
        row = rows[index] if index < len(rows) else None
        expected_name = f"{TILES_FOLDER}/{writer.file_name(tile)}"
        if (
            row is not None
            and row.get("path") == expected_name
            and verify_tile_file(final / expected_name, int(row.get("bytes") or -1), row.get("sha256", ""))
        ):
            records[index] = (int(row["bytes"]), row["sha256"])
        else:
            todo.append(index)
    if todo:
        logger.warning("%s: %d of %d tiles missing or damaged; rewriting them", slide.path.name, len(todo), len(rows))
        _stale_temporaries(tiles_dir)
        _write_tiles(slide, grid, writer, todo, records, None, workers, progress, progress_label)
        _finish(slide, grid, config, final, header, writer, records)
    return SlideTilingResult(
        slide.path,
        final,
        final / MANIFEST_CSV,
        len(grid.tiles),
        len(todo),
        len(grid.tiles) - len(todo),
        grid.tissue_area_mm2,
    )
