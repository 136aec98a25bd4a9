"""YAML and ``key=value`` overrides -> frozen dataclasses, strictly: unknown keys and wrong types are errors.

Defaults live once, in the dataclasses of :mod:`histo_daen.config.schema`; a YAML file lists only what differs.
"""

from __future__ import annotations

import dataclasses
import os
import types
from collections.abc import Mapping, Sequence
from difflib import get_close_matches
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, cast, get_args, get_origin, get_type_hints

import yaml

from histo_daen.atomic import atomic_write_text
from histo_daen.errors import ConfigError

__all__ = [
    "SHIPPED_CONFIGS",
    "config_file",
    "config_from_mapping",
    "diff_configs",
    "dump_config",
    "load_config",
    "parse_overrides",
    "read_yaml_mapping",
    "shipped_configs",
    "to_plain_dict",
]

T = TypeVar("T")

SHIPPED_CONFIGS = "histo_daen.configs"  # the package the YAML files of configs/ install into


def to_plain_dict(cfg: Any) -> dict[str, Any]:
    """A dataclass as nested dicts of JSON types only (tuples become lists): what checkpoints and YAML store."""
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise TypeError(f"expected a dataclass instance, got {type(cfg).__name__}")
    return _plain(dataclasses.asdict(cfg))


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def diff_configs(
    stored: Mapping[str, Any], requested: Mapping[str, Any], prefix: str = ""
) -> dict[str, tuple[Any, Any]]:
    """Fields whose values differ, as ``{"section.key": (stored, requested)}``; keys missing on one side count."""
    differing: dict[str, tuple[Any, Any]] = {}
    for key in sorted(set(stored) | set(requested)):
        a, b = stored.get(key), requested.get(key)
        name = f"{prefix}{key}"
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            differing.update(diff_configs(a, b, prefix=f"{name}."))
        elif a != b:
            differing[name] = (a, b)
    return differing


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (ints are accepted for floats); return the typed value."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            nearest = get_close_matches(str(value), [str(c) for c in choices], n=1)
            hint = f" Did you mean '{nearest[0]}'?" if nearest else ""
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(str, choices))}.{hint}")
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[-1] if len(errors) == 1 else f"{where}: {value!r} does not fit {_type_name(tp)}")
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
            items = [_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))]
        else:
            item_tp = args[0] if args else Any
            items = [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        section = cast(type[Any], tp)  # an annotation: the dataclass itself, never an instance of it
        if isinstance(value, section):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a section of keys for {section.__name__}, got {value!r}")
        return config_from_mapping(section, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            # PyYAML (YAML 1.1) reads "5e-3" without a dot as a string; users write it that way.
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{where}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if tp is Path:
        if not isinstance(value, str | os.PathLike):
            raise ConfigError(f"{where}: expected a path, got {value!r}")
        return Path(value)
    raise TypeError(f"{where}: unsupported annotation {tp!r} in a config dataclass")


def config_from_mapping(cls: type[T], raw: Mapping[str, Any], source: str) -> T:
    """Build ``cls`` from a mapping, refusing unknown keys (with the nearest valid key) and wrong types."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: expected a mapping of keys for {cls.__name__}, got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in fields:
            nearest = get_close_matches(str(key), list(fields), n=1)
            hint = f" Did you mean '{nearest[0]}'?" if nearest else ""
            raise ConfigError(f"{source}: unknown key '{key}' for {cls.__name__}.{hint} Valid: {', '.join(fields)}.")
        kwargs[key] = _coerce(value, hints[key], f"{source}: {key}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"{source}: {err}") from err


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["optim.lr=0.01", "model.variant=seam"]`` -> nested dict; values are parsed as YAML scalars/lists."""
    nested: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. optim.lr=0.01 or batch_size=8")
        dotted, _, text = item.partition("=")
        keys = [k.strip() for k in dotted.split(".")]
        if not all(keys):
            raise ConfigError(f"override {item!r}: empty key")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({err})") from err
        node = nested
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: '{key}' is a value, not a section")
        node[keys[-1]] = value
    return nested


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def _drop_none(mapping: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, Mapping):
            inner = _drop_none(value)
            if inner:
                out[key] = inner
        elif value is not None:
            out[key] = value
    return out


def _field_type(cls: type[Any], dotted: str) -> Any:
    """The annotation of ``section.key`` in the config dataclass ``cls`` (KeyError for an unknown key)."""
    tp: Any = cls
    for part in dotted.split("."):
        if not dataclasses.is_dataclass(tp):
            raise KeyError(dotted)
        tp = get_type_hints(tp)[part]
    return tp


def _nested(dotted: str, value: Any) -> dict[str, Any]:
    head, _, rest = dotted.partition(".")
    return {head: _nested(rest, value) if rest else value}


def _find(nested: Mapping[str, Any], dotted: str) -> tuple[bool, Any]:
    node: Any = nested
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _flag_values(cls: type[Any], flags: Mapping[str, tuple[str, Any]], overrides: Sequence[str]) -> dict[str, Any]:
    """The flags given (value not None) as a nested mapping, after refusing any that a KEY=VALUE contradicts."""
    parsed = parse_overrides(overrides)
    given: dict[str, Any] = {}
    for key, (flag, value) in flags.items():
        if value is None:
            continue
        found, override = _find(parsed, key)
        if found:
            tp = _field_type(cls, key)
            if _coerce(value, tp, key) != _coerce(override, tp, key):
                text = next(item for item in reversed(overrides) if item.partition("=")[0].strip() == key)
                raise ConfigError(f"{flag} and {text} set {key} to different values; give one of them")
        given = _merge(given, _nested(key, value))
    return given


def read_yaml_mapping(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A YAML file's top-level mapping, with errors naming the file."""
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{source}: config file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{source}: cannot read the config file ({err})") from err
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: not valid YAML ({err})") from err
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of keys at the top level, got {type(raw).__name__}")
    return raw


def shipped_configs() -> dict[str, Path]:
    """The configs installed with the package, by name: ``{"luad_daen": .../luad_daen.yaml, ...}``."""
    folder = resources.files(SHIPPED_CONFIGS)
    return {
        entry.name.removesuffix(".yaml"): Path(str(entry))
        for entry in sorted(folder.iterdir(), key=lambda entry: entry.name)
        if entry.name.endswith(".yaml")
    }


def config_file(reference: str | os.PathLike[str]) -> Path:
    """A config file by path, or by the name of a shipped config (``"luad_daen"`` or ``"luad_daen.yaml"``).

    An existing file wins over a shipped config of the same name; a name works from any folder and from an
    installed wheel.

    Raises:
        ConfigError: neither a file nor a shipped config (the message lists the shipped names).
    """
    path = Path(reference)
    if path.is_file():
        return path
    shipped = shipped_configs()
    name = str(reference).removesuffix(".yaml")
    if path.parent == Path(".") and name in shipped:
        return shipped[name]
    if path.exists():
        raise ConfigError(f"{path}: is not a config file (a folder?); pass a YAML file or a shipped config's name")
    raise ConfigError(
        f"{reference}: config file not found, and not the name of a shipped config ({', '.join(shipped)})"
    )


def load_config(
    cls: type[T],
    path: str | os.PathLike[str] | None = None,
    *,
    overrides: Sequence[str] | Mapping[str, Any] = (),
    base: T | Mapping[str, Any] | None = None,
    flags: Mapping[str, tuple[str, Any]] | None = None,
) -> T:
    """The one config loader: defaults <- ``base`` <- YAML file <- flags and overrides, validated strictly.

    Args:
        cls: the config dataclass.
        path: optional YAML file, or the name of a shipped config (:func:`config_file`); keys must be fields of
            ``cls`` (nested sections for nested dataclasses).
        overrides: ``"section.key=value"`` strings (from the command line), or a mapping of CLI options
            where ``None`` means "not given" and is not an override.
        base: a config (or mapping) to start from instead of the defaults.
        flags: command-line options that set config keys, ``{"section.key": ("--flag 4", value)}``; a None value
            is "not given". A flag and a ``"section.key=value"`` override of the same key may both be given only
            when their values agree.

    Raises:
        ConfigError: a file or key that does not exist, a value of the wrong type or range, or a flag and an
            override that disagree (``"--batch-size 4 and batch_size=8 set batch_size to different values"``).
    """
    raw: dict[str, Any] = {}
    if base is not None:
        raw = to_plain_dict(base) if dataclasses.is_dataclass(base) else dict(base)  # type: ignore[arg-type]
    source = cls.__name__
    if path is not None:
        path = config_file(path)
        raw = _merge(raw, read_yaml_mapping(path))
        source = str(path)
    if isinstance(overrides, Mapping):
        given = _drop_none(overrides)
        if given:
            raw = _merge(raw, given)
            source = f"{source} + options" if path is not None else "options"
    elif overrides or flags:
        strings = list(overrides)
        raw = _merge(raw, _flag_values(cls, flags or {}, strings))
        raw = _merge(raw, parse_overrides(strings))
        # Flags and KEY=VALUE alike: what the command line gave, on top of the file.
        source = f"{source} + options" if path is not None else "options"
    return config_from_mapping(cls, raw, source)


def dump_config(cfg: Any, path: str | os.PathLike[str]) -> Path:
    """Write the resolved config as YAML, atomically (``config.yaml`` beside every output)."""
    text = yaml.safe_dump(to_plain_dict(cfg), sort_keys=False, allow_unicode=True)
    return atomic_write_text(path, text)
