"""``metrics.json``, the record an evaluation leaves behind: written by ``evaluate``, read back by ``compare``.

Everything needed to put a number in a paper travels in it: the scores (fractions in [0, 1]), the scoring
protocol, the label source and CAM settings, the checkpoint's variant and full run config, the dataset split.
Torch-free, so ``histo-daen compare`` starts fast.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from histo_daen.atomic import atomic_write_text
from histo_daen.errors import PathError

__all__ = [
    "METRICS_FILE",
    "METRICS_FORMAT",
    "METRICS_FORMAT_VERSION",
    "format_scores_table",
    "read_metrics",
    "write_metrics",
]

METRICS_FILE = "metrics.json"
METRICS_FORMAT = "histo-daen-evaluation"
METRICS_FORMAT_VERSION = 1
_REQUIRED_KEYS = ("method", "classes", "scores", "protocol")


def write_metrics(output_dir: str | os.PathLike[str], record: Mapping[str, Any]) -> Path:
    """Write ``record`` (JSON types only) as ``output_dir/metrics.json`` atomically, format fields first."""
    body = {"format": METRICS_FORMAT, "format_version": METRICS_FORMAT_VERSION, **record}
    text = json.dumps(body, indent=2, allow_nan=False) + "\n"
    return atomic_write_text(Path(output_dir) / METRICS_FILE, text)


def read_metrics(eval_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The metrics record of one evaluation folder, checked for the fields ``compare`` needs.

    Raises:
        PathError: the folder has no ``metrics.json``, or it is not JSON, or not one of ours.
    """
    folder = Path(eval_dir)
    path = folder / METRICS_FILE
    hint = "Pass folders written by 'histo-daen evaluate ... -o EVAL_DIR'."
    if not folder.is_dir():
        raise PathError(folder, "is not a folder", hint)
    if not path.is_file():
        raise PathError(path, "does not exist (not an evaluation folder, or the evaluation did not finish)", hint)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PathError(path, f"cannot be read as JSON ({err})", "Rerun the evaluation with --overwrite.") from err
    if not isinstance(record, dict) or record.get("format") != METRICS_FORMAT:
        raise PathError(path, "is not a histo-daen evaluation record", hint)
    if record.get("format_version") != METRICS_FORMAT_VERSION:
        raise PathError(
            path,
            f"has format version {record.get('format_version')}, this histo-daen reads {METRICS_FORMAT_VERSION}",
            "Rerun the evaluation with this version.",
        )
    missing = [key for key in _REQUIRED_KEYS if key not in record]
    if missing:
        raise PathError(path, f"lacks the fields {', '.join(missing)}", "Rerun the evaluation with --overwrite.")
    return record


def _percent(value: float | None) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f}"


def format_scores_table(scores: Mapping[str, Any], codes: Sequence[str]) -> str:
    """A one-screen text table of one evaluation's scores (percent), for the terminal.

    Args:
        scores: the ``scores`` entry of a metrics record (``Scores.as_dict``).
        codes: class codes in channel order.
    """
    lines = [f"{'class':<8}{'IoU %':>8}{'pixels':>12}"]
    for code in codes:
        lines.append(f"{code:<8}{_percent(scores['iou'].get(code)):>8}{scores['class_pixels'].get(code, 0):>12}")
    lines.append("-" * 28)
    for label, key in (
        ("mIoU", "miou"),
        ("FwIoU", "fw_iou"),
        ("PixAcc", "pixel_accuracy"),
        ("MeanAcc", "mean_class_accuracy"),
    ):
        lines.append(f"{label:<8}{_percent(scores.get(key)):>8}")
    return "\n".join(lines)
