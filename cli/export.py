"""``histo-daen export``: redo an export from a finished tissue map without running the model again."""

from __future__ import annotations

from pathlib import Path

import click
from histo_daen.cli import options

__all__ = ["export_group"]


@click.group("export")
def export_group() -> None:
    """Write other formats from a tissue map (map.zarr) that `histo-daen segment` made."""


@export_group.command("geojson")
@click.argument("map_path", metavar="MAP.zarr", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="GeoJSON file to write; a .gz suffix writes gzip (QuPath 0.4+). [default: map.geojson beside MAP.zarr]",
)
@click.option(
    "--object-type",
    type=click.Choice(["annotation", "detection"]),
    default=None,
    help="One locked annotation per class, or one detection per region (for very many objects). [default: annotation]",
)
@click.option(
    "--simplify",
    type=click.FloatRange(min=0),
    default=None,
    help="Simplification tolerance in map pixels (0 keeps every pixel corner). [default: 0.5]",
)
@click.option(
    "--min-area",
    type=click.FloatRange(min=0),
    default=None,
    help="Regions and holes smaller than this many µm² are dropped. [default: 500]",
)
@click.option(
    "--bounds-offset/--no-bounds-offset",
    default=None,
    help="Subtract the slide's bounds-x/-y corner, as QuPath crops such slides (MRXS) to their bounds. [default: on]",
)
@options.config()
@options.overwrite()
def geojson_command(
    map_path: Path,
    output: Path | None,
    object_type: str | None,
    simplify: float | None,
    min_area: float | None,
    bounds_offset: bool | None,
    config_path: Path | None,
    overwrite: bool,
) -> None:
    """Vectorise MAP.zarr into QuPath GeoJSON (level-0 pixel coordinates; drag the file onto the slide in QuPath).

    \b
    Examples:
      histo-daen export geojson maps/slide/map.zarr
      histo-daen export geojson maps/slide/map.zarr -o slide_detections.geojson.gz --object-type detection
      histo-daen export geojson maps/slide/map.zarr -o coarse.geojson --simplify 2 --min-area 5000 --overwrite
    """
    from histo_daen.config import load_config
    from histo_daen.config.schema import SegmentConfig
    from histo_daen.errors import OutputExistsError
    from histo_daen.export.geojson import geojson_options, write_geojson
    from histo_daen.export.zarr_map import read_tissue_map

    cfg = load_config(
        SegmentConfig,
        config_path,
        overrides={
            "geojson_object_type": object_type,
            "geojson_simplify": simplify,
            "geojson_min_area_um2": min_area,
            "geojson_bounds_offset": bounds_offset,
        },
    )
    tissue_map = read_tissue_map(map_path)
    target = output if output is not None else map_path.with_name("map.geojson")
    if target.exists() and not overwrite:
        raise OutputExistsError(target, "exists", "Pass --overwrite to replace it, or choose another file with -o.")
    options_chosen = geojson_options(cfg, tissue_map)
    write_geojson(tissue_map, target, options=options_chosen)
    click.echo(f"GeoJSON ({options_chosen.object_type}s, level-0 pixel coordinates) written to {target}")
