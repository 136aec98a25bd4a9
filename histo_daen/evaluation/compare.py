"""Side-by-side comparison of evaluated methods, with published LUAD-HistoSeg numbers clearly marked as such.

``compare_evaluations`` reads the ``metrics.json`` of each evaluation folder and writes, atomically into one folder:

- ``comparison.md``: a markdown table (per-class IoU, mIoU, FwIoU, pixel accuracy in percent) of the measured
  methods, then the published rows of reference.md §8.1 marked "published, not measured here", with footnotes on
  their protocols;
- ``comparison.csv``: the same rows, one per method, with a ``source`` column (measured | published);
- ``iou_by_class.png``: a grouped bar chart, one group per class plus the mean, one bar per method (published
  bars hatched and pale).

Published numbers are shown only when every evaluation used the LUAD class set. Every row names its dataset and
split; evaluations of different datasets or splits are refused (their scores do not rank) unless ``allow_mixed``,
and then the table says so.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from histo_daen.atomic import check_output
from histo_daen.classes import LUAD
from histo_daen.errors import ConfigError
from histo_daen.evaluation.folders import replace_folder
from histo_daen.evaluation.report import read_metrics

__all__ = ["PUBLISHED_LUAD", "CompareResult", "MethodRow", "compare_evaluations", "rows_from_evaluations"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MethodRow:
    """One line of the comparison: scores as fractions in [0, 1] (None where unknown).

    Attributes:
        name: the method's label in tables and the chart.
        source: "measured" (an evaluation folder here) or "published" (a paper or log; not measured here).
        iou: per-class IoU by class code.
        miou, fw_iou, pixel_accuracy: the summary scores.
        protocol: how the numbers were scored and with which labels, in a few words.
        reference: the evaluation folder, or the exact published source.
        note: footnote marker text for published rows.
        dataset, split: what was scored ("luad", "test"); "?" where the record or source does not say.
    """

    name: str
    source: Literal["measured", "published"]
    iou: dict[str, float | None]
    miou: float | None
    fw_iou: float | None = None
    pixel_accuracy: float | None = None
    protocol: str = ""
    reference: str = ""
    note: str = ""
    dataset: str = "?"
    split: str = "?"


_DAEN_TABLE6 = (
    "DAEN paper (Huang et al., Appl. Sci. 2025, 15(12), 6474), Table 6: split, stage (CAM or retrained), label "
    "source and background handling are not stated; its SEAM/DAEN means sit ~22 points below plain ResNet38 CAMs "
    "scored with the MLPS protocol, which suggests a harsher protocol. Not directly comparable."
)
_MLPS_LOGS = (
    "Third-party run logs of the WSSS-Tissue (MLPS) code, repository liujk-kjuil/Weakly-supervised-semantic-"
    "segmentation, logs/stage1/luad/exp13 and exp14/stdout.txt: stage-1 ResNet38 CAMs, test split, MLPS protocol "
    "(ground-truth exclude ignored, argmax over 4 classes, predicted labels at 0.25, single scale). Logs, not a paper."
)


def _published(
    name: str,
    te: float,
    nec: float,
    lym: float,
    tas: float,
    mean: float,
    *,
    fw: float | None = None,
    pa: float | None = None,
    protocol: str,
    reference: str,
    note: str,
    split: str = "?",
) -> MethodRow:
    def fraction(value: float | None) -> float | None:
        return None if value is None else value / 100

    iou = {"TE": fraction(te), "NEC": fraction(nec), "LYM": fraction(lym), "TAS": fraction(tas)}
    return MethodRow(
        name=name,
        source="published",
        iou=iou,
        miou=fraction(mean),
        fw_iou=fraction(fw),
        pixel_accuracy=fraction(pa),
        protocol=protocol,
        reference=reference,
        note=note,
        dataset="luad",
        split=split,
    )


# Reference.md §8.1, IoU % on LUAD-HistoSeg. Published elsewhere, not measured by this tool.
PUBLISHED_LUAD: tuple[MethodRow, ...] = (
    _published("HistoSegNet", 45.6, 36.3, 58.3, 50.8, 47.7, protocol="unstated", reference="DAEN Table 6", note="a"),
    _published("SEAM", 47.6, 49.5, 48.3, 56.9, 50.6, protocol="unstated", reference="DAEN Table 6", note="a"),
    _published("DAEN", 48.2, 51.1, 49.4, 58.7, 51.9, protocol="unstated", reference="DAEN Table 6", note="a"),
    _published(
        "MLPS stage-1 CAM (exp14)",
        75.34,
        79.28,
        73.78,
        69.25,
        74.41,
        fw=73.16,
        pa=84.41,
        protocol="mlps, predicted labels",
        reference="third-party log exp14",
        note="b",
        split="test",
    ),
    _published(
        "MLPS stage-1 CAM (exp13)",
        72.58,
        78.93,
        70.73,
        67.74,
        72.49,
        fw=71.01,
        protocol="mlps, predicted labels",
        reference="third-party log exp13",
        note="b",
        split="test",
    ),
)
_FOOTNOTES = {"a": _DAEN_TABLE6, "b": _MLPS_LOGS}


@dataclass(frozen=True)
class CompareResult:
    """What ``compare_evaluations`` wrote."""

    output_dir: Path
    rows: tuple[MethodRow, ...]
    markdown: Path
    csv: Path
    chart: Path


def _protocol_summary(record: dict[str, Any]) -> str:
    protocol = record["protocol"]
    parts = [str(protocol.get("name", "?")), f"{protocol.get('label_source', '?')} labels"]
    if protocol.get("label_source") == "predicted":
        # Records written before label_views existed decided the labels on the mean of all views.
        views = {"x1": "x1 view", "x1_flip": "x1 + mirror", "all": "all views"}.get(protocol.get("label_views", "all"))
        parts[-1] += f" > {protocol.get('label_threshold')} ({views})"
    used = protocol.get("cams_used", protocol.get("cam_source"))
    if used is not None:
        parts.append("Grad-CAM" if used == "grad-cam" else f"{used} CAMs")
    scales = protocol.get("scales")
    if scales is not None:
        parts.append(f"{len(scales)} scale{'s' if len(scales) > 1 else ''}{' + flips' if protocol.get('flip') else ''}")
    if protocol.get("background_alpha") is not None:
        parts.append(f"alpha {protocol['background_alpha']}")
    if protocol.get("white_exclude"):
        parts.append("white glass excluded")
    return ", ".join(parts)


def rows_from_evaluations(
    eval_dirs: Sequence[str | os.PathLike[str]], *, allow_mixed: bool = False
) -> tuple[tuple[MethodRow, ...], str]:
    """Read each evaluation folder into a measured row; returns the rows and the common class set name.

    Rows are named by their folder (``eval/daen`` -> ``daen``), or by the parent and folder when names repeat.

    Raises:
        PathError: a folder holds no readable metrics record.
        ConfigError: no folder given, the evaluations used different class sets, or (without ``allow_mixed``)
            different datasets or splits.
    """
    if not eval_dirs:
        raise ConfigError("compare needs at least one evaluation folder (written by 'histo-daen evaluate -o DIR')")
    folders = [Path(d) for d in eval_dirs]
    records = [read_metrics(folder) for folder in folders]
    class_sets = {record.get("class_set", "luad") for record in records}
    if len(class_sets) > 1:
        raise ConfigError(f"the evaluations use different class sets ({', '.join(sorted(class_sets))}); compare one")
    names = [folder.resolve().name for folder in folders]
    if len(set(names)) < len(names):
        names = [f"{folder.resolve().parent.name}/{folder.resolve().name}" for folder in folders]
    rows = []
    for name, folder, record in zip(names, folders, records, strict=True):
        scores = record["scores"]
        variant = record.get("method", "?")
        label = name if name == variant else f"{name} ({variant})"
        scored = record.get("dataset")
        if not isinstance(scored, dict):
            scored = {}
        rows.append(
            MethodRow(
                name=label,
                source="measured",
                iou={code: scores["iou"].get(code) for code in record["classes"]},
                miou=scores.get("miou"),
                fw_iou=scores.get("fw_iou"),
                pixel_accuracy=scores.get("pixel_accuracy"),
                protocol=_protocol_summary(record),
                reference=str(folder),
                dataset=str(scored.get("name", "?")),
                split=str(scored.get("split", "?")),
            )
        )
    scored_on = {(row.dataset, row.split) for row in rows}
    if len(scored_on) > 1 and not allow_mixed:
        listed = ", ".join(f"{row.reference}: {row.dataset} {row.split}" for row in rows)
        raise ConfigError(
            f"the evaluations scored different datasets or splits ({listed}), whose scores do not rank against each "
            "other; compare evaluations of one split, or pass --allow-mixed to put them side by side anyway"
        )
    return tuple(rows), class_sets.pop()


def _percent(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else f"{100 * value:.1f}"


def _is_mixed(rows: Sequence[MethodRow]) -> bool:
    return len({(row.dataset, row.split) for row in rows if row.source == "measured"}) > 1


def _markdown(rows: Sequence[MethodRow], codes: Sequence[str]) -> str:
    header = ["Method", "Source", "Dataset", "Split", *codes, "mIoU", "FwIoU", "PixAcc", "Protocol"]
    lines = [
        "# Tissue segmentation: IoU per class (%)",
        "",
        "Measured rows were scored here with `histo-daen evaluate` (LUAD protocol: one confusion matrix over the "
        "split, ground-truth exclude pixels ignored, mIoU = mean over the tissue classes). Rows marked "
        "**published** are copied from the sources in the footnotes: **not measured here**, on the real "
        "LUAD-HistoSeg, under protocols that may differ from ours; read them as context, not as a like-for-like "
        "comparison.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] * 4 + ["---:"] * (len(codes) + 3) + ["---"]) + "|",
    ]
    if _is_mixed(rows):
        lines[3:3] = [
            "**The measured rows scored different datasets or splits (see the Dataset and Split columns): their "
            "numbers do not rank against each other.**",
            "",
        ]
    for row in rows:
        source = "measured" if row.source == "measured" else f"**published, not measured here** [{row.note}]"
        cells = [
            row.name,
            source,
            row.dataset,
            row.split,
            *(_percent(row.iou.get(code)) for code in codes),
            f"**{_percent(row.miou)}**",
            _percent(row.fw_iou),
            _percent(row.pixel_accuracy),
            row.protocol,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    notes = sorted({row.note for row in rows if row.note})
    if notes:
        lines.append("")
        lines.extend(f"[{note}] {_FOOTNOTES[note]}" for note in notes)
    lines.append("")
    for row in rows:
        if row.source == "measured":
            lines.append(f"- {row.name}: `{row.reference}`")
    return "\n".join(lines) + "\n"


def _csv(rows: Sequence[MethodRow], codes: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        [
            "method",
            "source",
            "dataset",
            "split",
            *(f"iou_{c}" for c in codes),
            "miou",
            "fw_iou",
            "pixel_accuracy",
            "protocol",
            "reference",
        ]
    )
    for row in rows:
        reference = row.reference if row.source == "measured" else f"{row.reference}: {_FOOTNOTES[row.note]}"
        writer.writerow(
            [
                row.name,
                "measured" if row.source == "measured" else "published (not measured here)",
                row.dataset,
                row.split,
                *(_percent(row.iou.get(code)) for code in codes),
                _percent(row.miou),
                _percent(row.fw_iou),
                _percent(row.pixel_accuracy),
                row.protocol,
                reference,
            ]
        )
    return buffer.getvalue()


def _chart(path: Path, rows: Sequence[MethodRow], codes: Sequence[str]) -> None:
    """Grouped bars: x = classes and mIoU, one bar per method; published bars hatched."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    groups = [*codes, "mIoU"]
    n_rows = len(rows)
    width = 0.8 / max(n_rows, 1)
    figure_width = min(14.0, max(8.0, 2.0 + 0.16 * n_rows * len(groups)))
    figure = Figure(figsize=(figure_width, 5.5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    colours = [f"C{i % 10}" for i in range(n_rows)]
    positions = np.arange(len(groups))
    for i, row in enumerate(rows):
        values = [row.iou.get(code) for code in codes] + [row.miou]
        heights = [np.nan if v is None else 100 * v for v in values]
        published = row.source == "published"
        axes.bar(
            positions - 0.4 + width * (i + 0.5),
            heights,
            width,
            label=f"{row.name} (published)" if published else row.name,
            color=colours[i],
            alpha=0.45 if published else 1.0,
            hatch="//" if published else None,
            edgecolor="black" if published else colours[i],
            linewidth=0.5,
        )
    axes.set_xticks(positions, groups)
    axes.set_ylabel("IoU (%)")
    axes.set_ylim(0, 100)
    axes.set_title("IoU per tissue class (hatched: published, not measured here)")
    axes.grid(axis="y", alpha=0.3)
    figure.legend(fontsize="small", ncols=min(4, n_rows), loc="outside lower center", frameon=False)
    figure.savefig(path, dpi=120)


def compare_evaluations(
    eval_dirs: Sequence[str | os.PathLike[str]],
    output_dir: str | os.PathLike[str],
    *,
    include_published: bool = True,
    overwrite: bool = False,
    allow_mixed: bool = False,
) -> CompareResult:
    """Write the comparison table (markdown, CSV) and bar chart of several evaluations into ``output_dir``.

    Args:
        eval_dirs: folders written by ``histo-daen evaluate`` (each holds ``metrics.json``).
        output_dir: created; must not exist unless ``overwrite``.
        include_published: add the published LUAD-HistoSeg rows (reference.md §8.1), marked as published.
        overwrite: replace an existing ``output_dir``.
        allow_mixed: put evaluations of different datasets or splits side by side (the table says so).

    Raises:
        OutputExistsError: ``output_dir`` exists and ``overwrite`` is off.
        PathError, ConfigError: see :func:`rows_from_evaluations`.
    """
    measured, class_set_name = rows_from_evaluations(eval_dirs, allow_mixed=allow_mixed)
    target = check_output(output_dir, kind="folder", overwrite=overwrite, inputs=eval_dirs)
    codes = tuple(measured[0].iou)
    rows = measured
    if include_published and class_set_name == LUAD.name:
        rows = measured + PUBLISHED_LUAD
    elif include_published:
        logger.info("no published numbers for class set %r; the table holds measured rows only", class_set_name)
    with replace_folder(target, overwrite=overwrite) as building:
        (building / "comparison.md").write_text(_markdown(rows, codes), encoding="utf-8")
        (building / "comparison.csv").write_text(_csv(rows, codes), encoding="utf-8")
        _chart(building / "iou_by_class.png", rows, codes)
    return CompareResult(
        output_dir=target,
        rows=rows,
        markdown=target / "comparison.md",
        csv=target / "comparison.csv",
        chart=target / "iou_by_class.png",
    )
