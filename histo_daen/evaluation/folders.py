"""Folder outputs of evaluate and compare: built aside, swapped in whole, replaced only with ``overwrite``."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from histo_daen.atomic import atomic_dir, check_output, partial_dir_for

__all__ = ["replace_folder"]


@contextlib.contextmanager
def replace_folder(target: str | os.PathLike[str], *, overwrite: bool) -> Iterator[Path]:
    """Yield an empty folder to fill; when the block finishes, it replaces ``target`` whole.

    The folder is built as ``.<name>.new.partial`` beside the target and removed if the block raises, so a failed
    run leaves the previous output (if any) untouched. These outputs are cheap to recompute, so nothing resumes.
    """
    path = check_output(target, kind="folder", overwrite=overwrite)
    staged = path.parent / f".{path.name}.new"
    shutil.rmtree(partial_dir_for(staged), ignore_errors=True)
    shutil.rmtree(staged, ignore_errors=True)
    with atomic_dir(staged, keep_partial=False) as building:
        yield building
    if path.exists():
        shutil.rmtree(path)
    os.replace(staged, path)
