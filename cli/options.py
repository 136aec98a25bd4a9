"""Options shared by several commands, each defined once, and the one rule that joins flags, KEY=VALUE and --config.

Where a setting comes from: the schema's default (``histo_daen/config/schema.py``), then ``--config`` (a YAML file
or a shipped config's name), then the command line. On the command line a flag (``--batch-size 4``) and a
``KEY=VALUE`` override (``batch_size=8``) of the same key may both be given only if they agree; if they disagree the
command stops with an error naming both. A flag that sets a config key is a :func:`setting`: its default in
``--help`` is read from the schema by :func:`config_command`, never typed by hand (``tests/cli/test_help.py``
checks every command).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

__all__ = [
    "Setting",
    "backend",
    "config",
    "config_command",
    "device",
    "load_command_config",
    "output",
    "overrides",
    "overwrite",
    "schema_default",
    "seed",
    "setting",
    "shard",
    "show_progress",
    "slide_mpp",
    "split_inputs",
    "workers",
]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

# KEY=VALUE config overrides mixed in with input files: a dotted or plain config key, '=', a value.
_OVERRIDE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*=")


class Setting(click.Option):
    """A flag that sets one config key (dotted, e.g. ``optim.batch_size``); not given, it leaves the key alone.

    Its ``--help`` default is the schema's value for the key, filled in by :func:`config_command`.
    """

    def __init__(self, *args: Any, key: str, default_text: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, default=None, **kwargs)
        self.key = key
        self.default_text = default_text  # for schema defaults of None, which mean something ("all cores")
        self.schema_default_text: str | None = None

    def get_help_extra(self, ctx: click.Context) -> Any:
        extra = super().get_help_extra(ctx)
        if self.schema_default_text is not None:
            extra["default"] = self.schema_default_text
        return extra

    def spelled(self, value: Any) -> str:
        """How the user wrote this flag with ``value``: ``--batch-size 4``, ``--level0``, ``--save-masks``."""
        if self.is_flag:
            return self.opts[0] if value or not self.secondary_opts else self.secondary_opts[0]
        return f"{self.opts[-1]} {value}"


def setting(*decls: str, key: str, help: str, default_text: str | None = None, **kwargs: Any) -> Callable[[F], F]:
    """A :class:`Setting` flag for the config key ``key`` (declare its type, choices or ``is_flag`` in kwargs)."""
    return click.option(*decls, cls=Setting, key=key, default_text=default_text, help=help, **kwargs)


def schema_default(cls: type[Any], key: str) -> Any:
    """The default of ``section.key`` in the config dataclass ``cls``."""
    value: Any = cls()
    for part in key.split("."):
        if not dataclasses.is_dataclass(value) or part not in {f.name for f in dataclasses.fields(value)}:
            raise KeyError(f"{cls.__name__} has no key {key!r}")
        value = getattr(value, part)
    return value


def _default_text(option: Setting, value: Any) -> str | None:
    if value is None:
        return option.default_text  # None: the help says what an absent value means
    if isinstance(value, bool):
        if option.secondary_opts:
            return option.opts[0] if value else option.secondary_opts[0]
        return "on" if value else "off"
    if isinstance(value, tuple | list):
        return ",".join(str(item) for item in value)
    return str(value)


def config_command(cls: type[Any]) -> Callable[[click.Command], click.Command]:
    """Mark a command as loading the config dataclass ``cls``; its settings show the schema's defaults.

    Put it above ``@click.command``. Raises KeyError at import for a setting whose key ``cls`` does not have.
    """

    def mark(command: click.Command) -> click.Command:
        command.config_class = cls  # type: ignore[attr-defined]
        for param in command.params:
            if isinstance(param, Setting):
                param.schema_default_text = _default_text(param, schema_default(cls, param.key))
        return command

    return mark


def load_command_config(cls: type[T], config_path: str | os.PathLike[str] | None, overrides: Sequence[str] = ()) -> T:
    """The config of the running command: schema <- ``--config`` <- its settings and ``KEY=VALUE`` overrides.

    Raises:
        ConfigError: a setting and an override disagree (both named), an unknown key, a bad value.
    """
    from histo_daen.config import load_config

    context = click.get_current_context()
    flags = {
        param.key: (param.spelled(context.params[param.name]), context.params[param.name])
        for param in context.command.params
        if isinstance(param, Setting) and param.name is not None and context.params.get(param.name) is not None
    }
    return load_config(cls, config_path, overrides=list(overrides), flags=flags)


def show_progress() -> bool:
    """Whether the running command shows progress bars: yes, unless ``histo-daen -q/--quiet``.

    Where they go (a live bar on a terminal, a line every few seconds in a log) is histo_daen.progress's business.
    """
    return not click.get_current_context().find_root().params.get("quiet", False)


def split_inputs(inputs: Sequence[str]) -> tuple[list[str], list[str]]:
    """Slides (files, folders, globs) and KEY=VALUE overrides; an existing file whose name has '=' is a slide.

    Raises:
        click.UsageError: only overrides were given, no slide.
    """
    files: list[str] = []
    found: list[str] = []
    for item in inputs:
        (found if _OVERRIDE.match(item) and not os.path.exists(item) else files).append(item)
    if not files:
        raise click.UsageError("no SLIDE given (only KEY=VALUE overrides)")
    return files, found


# -- options shared by several commands -----------------------------------------------------------------------------


def config() -> Callable[[F], F]:
    return click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        metavar="FILE|NAME",
        help="YAML file with settings, or the name of a shipped config (e.g. luad_daen, demo, segment; the files of "
        "configs/). Options and KEY=VALUE overrides win over it; an option and a KEY=VALUE for one key must agree.",
    )


def overrides() -> Callable[[F], F]:
    return click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")


def output(
    help: str, *, file_output: bool = False, default: Path | None = None, default_text: str | None = None
) -> Callable[[F], F]:
    """``-o/--output``: the folder (or, with ``file_output``, the file) a command writes; required without a
    ``default`` or ``default_text`` (what happens when it is not given)."""
    # No file_okay/dir_okay here: histo_daen.atomic.check_output, the one output check, says what is wrong.
    kind = click.Path(path_type=Path)
    required = default is None and default_text is None
    shown: bool | str = default_text if default_text is not None else default is not None
    return click.option(
        "-o",
        "--output",
        required=required,
        type=kind,
        metavar="FILE" if file_output else "FOLDER",
        default=default,
        show_default=shown,
        help=help,
    )


def overwrite(
    help: str = "Replace outputs made with other settings. Without it, a rerun with equal settings resumes.",
) -> Callable[[F], F]:
    return click.option("--overwrite", is_flag=True, help=help)


def backend() -> Callable[[F], F]:
    return setting(
        "--backend",
        key="backend",
        type=click.Choice(["auto", "openslide", "tiffslide"]),
        help="Slide reader. auto: OpenSlide, or tiffslide for files OpenSlide cannot open.",
    )


def slide_mpp() -> Callable[[F], F]:
    return setting(
        "--slide-mpp",
        key="slide_mpp",
        type=click.FloatRange(min=0, min_open=True),
        default_text="from the slide's metadata",
        help="Microns per pixel of the slides' level 0, for files whose metadata has none or an implausible value "
        "(e.g. 0.25 for a 40x scan, 0.5 for 20x).",
    )


def device() -> Callable[[F], F]:
    return click.option(
        "--device",
        default="auto",
        show_default=True,
        help="auto (a CUDA GPU if present, else CPU), cpu, cuda or cuda:N. Under torchrun, auto and cuda mean each "
        "process's own GPU (cuda:LOCAL_RANK).",
    )


def seed(
    help: str = "Random seed: the same seed and settings give the same run.",
    *,
    key: str | None = "seed",
    default: int = 0,
) -> Callable[[F], F]:
    """``--seed N``: a config key's setting (``key``), or a command's own argument with ``default``."""
    if key is not None:
        return setting("--seed", key=key, type=int, help=help)
    return click.option("--seed", type=int, default=default, show_default=True, help=help)


def workers(help: str, *, key: str | None = None, default_text: str = "all cores") -> Callable[[F], F]:
    """``--workers N``: a config key's setting (``key``), or a job argument whose default is ``default_text``."""
    if key is not None:
        return setting("--workers", key=key, type=click.IntRange(min=0), help=help)
    return click.option("--workers", type=click.IntRange(min=0), default=None, show_default=default_text, help=help)


def shard() -> Callable[[F], F]:
    return click.option(
        "--shard",
        default=None,
        metavar="K/N",
        help="Process only shard K of N (0-based) of the sorted inputs, to split a cohort over machines, e.g. "
        "--shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT. Under torchrun, RANK/WORLD_SIZE are used by default.",
    )
