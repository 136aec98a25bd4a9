"""The option rules, once for every command: help defaults come from the schema, flag and KEY=VALUE must agree."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from histo_daen.cli import cli
from histo_daen.cli.options import Setting, schema_default

HAND_WRITTEN_DEFAULT = re.compile(r"\[default", re.IGNORECASE)


def _commands() -> list[tuple[str, click.Command]]:
    context = click.Context(cli)
    found = []
    for name in cli.list_commands(context):
        command = cli.get_command(context, name)
        assert command is not None
        if isinstance(command, click.Group):
            found += [(f"{name} {sub}", command.get_command(context, sub)) for sub in command.list_commands(context)]
        else:
            found.append((name, command))
    return [(name, command) for name, command in found if command is not None]


@pytest.mark.parametrize(("name", "command"), _commands(), ids=[name for name, _ in _commands()])
def test_help_defaults_are_the_schema_defaults(name: str, command: click.Command) -> None:
    settings = [param for param in command.params if isinstance(param, Setting)]
    schema = getattr(command, "config_class", None)
    assert schema is not None or not settings, f"{name}: settings without @options.config_command"
    help_text = CliRunner().invoke(cli, [*name.split(), "--help"], terminal_width=200).output
    flat = " ".join(help_text.split())
    for param in settings:
        value = schema_default(schema, param.key)
        if value is None and param.default_text is None:
            assert param.schema_default_text is None  # nothing to show: the help says what absence means
            continue
        assert param.schema_default_text is not None
        if isinstance(value, bool) and param.secondary_opts:
            expected = param.opts[0] if value else param.secondary_opts[0]
        elif isinstance(value, bool):
            expected = "on" if value else "off"
        elif value is None:
            expected = param.default_text
        else:
            expected = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
        assert param.schema_default_text == expected, f"{name} {param.opts[0]}"
        shown = re.search(rf"\[default: {re.escape(expected)}[;\]]", flat)  # click adds a range after a ';'
        assert shown, f"{name} {param.opts[0]}: {expected!r} not in the help"
    for param in command.params:
        text = getattr(param, "help", None) or ""
        assert not HAND_WRITTEN_DEFAULT.search(text), f"{name} {param.name}: a hand-written default in its help"


def test_the_rule_is_tested_on_every_command_that_has_settings() -> None:
    with_settings = {name for name, command in _commands() if any(isinstance(p, Setting) for p in command.params)}
    assert {"tile", "segment", "train", "evaluate", "export geojson", "import-checkpoint"} <= with_settings


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["train", "-o", "run", "--epochs", "2", "optim.epochs=3"], "--epochs 2 and optim.epochs=3 set optim.epochs"),
        (
            ["segment", "s.svs", "--checkpoint", "c.pt", "-o", "o", "--batch-size", "4", "batch_size=8"],
            "--batch-size 4 and batch_size=8 set batch_size",
        ),
        (["tile", "s.svs", "-o", "o", "--level0", "use_pyramid=true"], "--level0 and use_pyramid=true set use_pyramid"),
        (
            ["evaluate", "--checkpoint", "c.pt", "--data-root", ".", "-o", "o", "--split", "val", "split=test"],
            "--split val and split=test set split",
        ),
    ],
)
def test_a_flag_and_a_key_value_that_disagree_are_an_error_naming_both(
    arguments: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, arguments)
    assert result.exit_code == 1 and result.output.startswith("Error: ") and message in result.output
    assert "give one of them" in result.output and not any(tmp_path.iterdir())  # refused before any work


def test_a_flag_and_a_key_value_that_agree_are_fine() -> None:
    from histo_daen.config.load import load_config
    from histo_daen.config.schema import TrainConfig

    cfg = load_config(
        TrainConfig, overrides=["optim.epochs=2", "data.workers=0"], flags={"optim.epochs": ("--epochs 2", 2)}
    )
    assert cfg.optim.epochs == 2 and cfg.data.workers == 0
