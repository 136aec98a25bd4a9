"""Every number of every config section is checked at the boundary: finite, and inside a sane range."""

from __future__ import annotations

import dataclasses
import math
import typing

import pytest

from histo_daen.config import load_config, schema
from histo_daen.errors import ConfigError

SECTIONS = [
    getattr(schema, name)
    for name in schema.__all__
    if dataclasses.is_dataclass(getattr(schema, name)) and name.endswith("Config")
]


def _float_fields() -> list[tuple[type, str, object]]:
    """(section, field, a non-finite value of the field's shape) for every float-valued field of every section."""
    found = []
    for section in SECTIONS:
        hints = typing.get_type_hints(section)
        for item in dataclasses.fields(section):
            annotation = hints[item.name]
            args = typing.get_args(annotation)
            if annotation is float or (float in args and type(None) in args):
                found.append((section, item.name, math.nan))
                found.append((section, item.name, math.inf))
            elif typing.get_origin(annotation) is tuple and args and args[0] is float:
                found.append((section, item.name, (1.0, math.nan)))
    return found


FLOAT_FIELDS = _float_fields()


def test_the_sections_have_float_fields_to_check() -> None:
    names = {(section.__name__, name) for section, name, _ in FLOAT_FIELDS}
    assert ("OptimConfig", "lr") in names and ("TileConfig", "slide_mpp") in names
    assert ("InferenceConfig", "scales") in names and ("SegmentConfig", "geojson_simplify") in names
    assert len(names) >= 30


@pytest.mark.parametrize(
    ("section", "name", "value"),
    FLOAT_FIELDS,
    ids=[f"{s.__name__}.{n}={v}" for s, n, v in FLOAT_FIELDS],
)
def test_no_float_field_accepts_nan_or_inf(section: type, name: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"^{name} must be a finite number, got (nan|inf)$"):
        section(**{name: value})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optim.lr=.nan"], "options: optim: lr must be a finite number, got nan"),
        (["optim.lr=20"], r"options: optim: lr must be in \(0, 10\], got 20"),
        (["data.input_scale=100"], r"options: data: input_scale must be in \[0.1, 8\], got 100"),
        (["model.input_size=100000"], r"options: model: input_size must be in \[16, 8192\] pixels, got 100000"),
        (["seed=-3"], r"options: seed must be in \[0, 4294967295\], got -3"),
    ],
)
def test_key_value_overrides_get_the_same_checks(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{message}$"):
        load_config(schema.TrainConfig, overrides=overrides)


def test_yaml_nan_is_refused_naming_the_file(tmp_path: typing.Any) -> None:
    path = tmp_path / "segment.yaml"
    path.write_text("inference:\n  scales: [.nan]\n")
    with pytest.raises(ConfigError, match=r"segment\.yaml: inference: scales must be a finite number, got nan$"):
        load_config(schema.SegmentConfig, path)


def test_defaults_are_inside_every_range() -> None:
    for section in SECTIONS:
        # Building a section checks every range (it raises if a default broke its own); loading with no overrides
        # goes through the same checks and must give the defaults back.
        assert load_config(section) == section()


def test_segment_stitching_defaults_and_checks() -> None:
    config = schema.SegmentConfig()
    assert config.overlap is None and config.stitching == "slide" and config.min_region_um2 == 0.0
    with pytest.raises(ConfigError, match=r"stitching: 'tiles' is not one of slide, tile\. Did you mean 'tile'\?"):
        load_config(schema.SegmentConfig, overrides=["stitching=tiles"])
    with pytest.raises(ConfigError, match=r"min_region_um2 must be in \[0, 1e\+08\] um², got -1"):
        load_config(schema.SegmentConfig, overrides=["min_region_um2=-1"])
    earlier = load_config(schema.SegmentConfig, overrides=["stitching=tile", "overlap=32"])
    assert (earlier.stitching, earlier.overlap) == ("tile", 32)
