"""The one file hash: SHA-256 of a file's bytes, read in blocks (tile verification, checkpoint and weights records)."""

from __future__ import annotations

import hashlib
import os

__all__ = ["file_sha256"]

_BLOCK = 1 << 22  # 4 MiB: large enough to be fast, small enough that a multi-GB checkpoint never sits in memory


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file's bytes, as 64 lowercase hex digits.

    Raises:
        OSError: the file cannot be read (callers that check files turn this into their own error or a mismatch).
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()
