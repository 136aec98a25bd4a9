"""``histo-daen export``: redo an export from a finished tissue map without running the model again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from histo_daen.cli import options

from histo_daen.config.schema import SegmentConfig

__all__ = ["export_group"]


@click.group("export")
def export_group() -> None:
    """Write other formats from a tissue map (map.zarr) that `histo-daen segment` made."""


@options.config_command(SegmentConfig)
@click.command("geojson")
@click.argument("map_path", metavar="MAP.zarr", type=click.Path(file_okay=False, path_type=Path))
@options.output(
    "GeoJSON file to write; a .gz suffix writes gzip (QuPath 0.4+).",
    file_output=True,
    default_text="map.geojson beside MAP.zarr",
)
@options.setting(
    "--object-type",
    key="geojson_object_type",
    type=click.Choice(["annotation", "detection"]),
    help="One locked annotation per class, or one detection per region (for very many objects).",
)
@options.setting(
    "--simplify",
    key="geojson_simplify",
    type=click.FloatRange(min=0),
    help="Simplification tolerance in map pixels (0 keeps every pixel corner).",
)
@options.setting(
    "--min-area",
    key="geojson_min_area_um2",
    type=click.FloatRange(min=0),
    help="Regions and holes smaller than this many µm² are dropped.",
)
@options.setting(
    "--bounds-offset/--no-bounds-offset",
    key="geojson_bounds_offset",
    help="Subtract the slide's bounds-x/-y corner, as QuPath crops such slides (MRXS) to their bounds.",
)
@options.config()
@options.overwrite("Replace an existing GeoJSON file at --output.")
@options.overrides()
def geojson_command(
    map_path: Path,
    output: Path | None,
    config_path: Path | None,
    overwrite: bool,
    overrides: tuple[str, ...],
    **settings: Any,
) -> None:
    """Vectorise MAP.zarr into QuPath GeoJSON (level-0 pixel coordinates; drag the file onto the slide in QuPath).

    \b
    Examples:
      histo-daen export geojson maps/slide/map.zarr
      histo-daen export geojson maps/slide/map.zarr -o slide_detections.geojson.gz --object-type detection
      histo-daen export geojson maps/slide/map.zarr -o coarse.geojson --simplify 2 --min-area 5000 --overwrite
    """
    from histo_daen.atomic import check_output
    from histo_daen.export.geojson import geojson_options, write_geojson
    from histo_daen.export.zarr_map import read_tissue_map

    cfg = options.load_command_config(SegmentConfig, config_path, overrides)
    tissue_map = read_tissue_map(map_path)
    target = check_output(
        output if output is not None else map_path.with_name("map.geojson"),
        kind="file",
        overwrite=overwrite,
        inputs=(map_path,),
    )
    chosen = geojson_options(cfg, tissue_map)
    write_geojson(tissue_map, target, options=chosen)
    click.echo(f"GeoJSON ({chosen.object_type}s, level-0 pixel coordinates) written to {target}")


export_group.add_command(geojson_command)
