"""The ``histo-daen`` command line: a click group whose commands load lazily, so ``--help`` is instant.

Exit codes: 0 success; 1 an ``Error:`` (bad input, nothing done for it; also a cohort command's only input
failing); 2 usage error (click); 3 a cohort command finished but some of its inputs failed (each reported on its
own ``Error:`` line); 130 / 143 interrupted by Ctrl-C (SIGINT) / SIGTERM, after the command's workers were stopped
and its outputs left resumable. Commands parse options, call one job of :mod:`histo_daen.jobs` and echo its result.
"""

from __future__ import annotations

import importlib
import logging
import signal
import sys
from typing import Any

import click

from histo_daen import __version__
from histo_daen.errors import HistoDaenError
from histo_daen.interrupts import Terminated, defer_if_held

__all__ = ["EXIT_SOME_FAILED", "Terminated", "main"]

EXIT_SOME_FAILED = 3


# Set when SIGTERM arrives: its exception can be swallowed (raised inside a __del__), held back to the end of a
# moment that must not be cut (histo_daen.interrupts) or replaced (see _interruption_behind), but the command was
# still interrupted.
_sigterm_received = False


def _ignore_signal(signum: int, frame: Any) -> None:
    pass


def _raise_terminated(signum: int, frame: Any) -> None:
    global _sigterm_received
    _sigterm_received = True
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM during the clean-up ends the process at once
    # Sent to the whole process group (timeout, schedulers, kill -- -PGID), SIGTERM also kills a data loader's
    # workers; torch's SIGCHLD handler would then raise "DataLoader worker ... killed by signal" in the middle of
    # the clean-up and again at exit. Their death is this signal's doing, not an error of its own.
    # (A no-op, not SIG_DFL: a SIGCHLD already caught but not yet handled would raise 'ignored due to race'.)
    signal.signal(signal.SIGCHLD, _ignore_signal)
    if not defer_if_held():
        raise Terminated()


def _interruption_behind(err: BaseException) -> KeyboardInterrupt | None:
    """The Ctrl-C or SIGTERM that ``err`` is or was raised while unwinding from (e.g. a data loader whose workers the
    same signal killed); None if the command was not interrupted."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, KeyboardInterrupt):
            return seen
        seen = seen.__context__
    return Terminated() if _sigterm_received else None


# name -> "module:attribute"; each command lives in its own module under cli/ and imports heavy libraries lazily.
_COMMANDS: dict[str, str] = {}


def register_command(name: str, target: str) -> None:
    """Add a lazily imported command (used only in this module, below)."""
    if name in _COMMANDS:
        raise ValueError(f"command {name!r} registered twice")
    _COMMANDS[name] = target


for _name, _target in [
    ("tile", "histo_daen.cli.tile:tile_command"),
    ("synth-slide", "histo_daen.cli.synth_slide:synth_slide_command"),
    ("demo", "histo_daen.cli.demo:demo_command"),
    ("evaluate", "histo_daen.cli.evaluate:evaluate_command"),
    ("compare", "histo_daen.cli.compare:compare_command"),
    ("train", "histo_daen.cli.train:train_command"),
    ("synth-dataset", "histo_daen.cli.synth_dataset:synth_dataset_command"),
    ("segment", "histo_daen.cli.segment:segment_command"),
    ("export", "histo_daen.cli.export:export_group"),
    ("import-checkpoint", "histo_daen.cli.import_checkpoint:import_checkpoint_command"),
]:
    register_command(_name, _target)


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(_COMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in _COMMANDS:
            module_name, attribute = _COMMANDS[cmd_name].split(":")
            return getattr(importlib.import_module(module_name), attribute)
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        global _sigterm_received
        _sigterm_received = False
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
        previous_sigchld = signal.getsignal(signal.SIGCHLD)
        try:
            return super().invoke(ctx)
        except (HistoDaenError, KeyboardInterrupt, RuntimeError) as err:
            interruption = _interruption_behind(err)
            if interruption is None and isinstance(err, HistoDaenError):
                # One line, no traceback: the message names the file, what is wrong and what to do.
                raise click.ClickException(str(err)) from err
            if interruption is None or isinstance(err, click.exceptions.Exit):
                raise
            terminated = isinstance(interruption, Terminated)
            click.echo(
                f"Interrupted by {'SIGTERM' if terminated else 'Ctrl-C'}: workers stopped; finished outputs are kept "
                "and unfinished ones left to resume. Rerun the same command to continue (train: add --resume).",
                err=True,
            )
            ctx.exit(128 + (signal.SIGTERM if terminated else signal.SIGINT))
        finally:
            signal.signal(signal.SIGTERM, previous)
            signal.signal(signal.SIGCHLD, previous_sigchld)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="histo-daen")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option(
    "-q", "--quiet", is_flag=True, help="Only warnings and errors on stderr: no progress bars, no info lines."
)
def cli(verbose: int, quiet: bool) -> None:
    """histo-daen: weakly supervised tissue maps of H&E whole-slide images.

    \b
    Typical session:
      histo-daen tile slides/*.svs -o tiles/
      histo-daen synth-dataset -o LUAD-synth/
      histo-daen train --dataset luad --data-root LUAD-HistoSeg/ --variant daen -o runs/daen
      histo-daen evaluate --checkpoint runs/daen/last.pt --data-root LUAD-HistoSeg/ --split test -o eval/daen
      histo-daen compare eval/daen eval/seam -o compare/
      histo-daen segment slide.svs --checkpoint runs/daen/last.pt -o maps/
    """
    level = logging.WARNING if quiet else (logging.INFO if verbose <= 1 else logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr, force=True)
    if not verbose and not quiet:
        logging.getLogger("histo_daen").setLevel(logging.INFO)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="histo-daen")
