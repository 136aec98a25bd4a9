"""Configuration: frozen dataclasses (schema) and the one strict loader (load)."""

from histo_daen.config.load import (
    config_from_mapping,
    diff_configs,
    dump_config,
    load_config,
    parse_overrides,
    read_yaml_mapping,
    to_plain_dict,
)
from histo_daen.config.schema import ModelConfig, TileConfig

__all__ = [
    "ModelConfig",
    "TileConfig",
    "config_from_mapping",
    "diff_configs",
    "dump_config",
    "load_config",
    "parse_overrides",
    "read_yaml_mapping",
    "to_plain_dict",
]
