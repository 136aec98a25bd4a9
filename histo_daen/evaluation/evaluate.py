"""The ``histo-daen evaluate`` job: a checkpoint's tissue maps on a labelled split, scored the LUAD way.

For every patch of the split: CAMs (:func:`histo_daen.inference.cams.compute_cams`, batched, on the chosen device),
the label map (:func:`histo_daen.inference.labels.cams_to_label_map`), and one confusion matrix accumulated over the
whole split (:mod:`histo_daen.evaluation.metrics`). The output folder holds:

- ``metrics.json``: per-class IoU, mIoU, FwIoU, pixel and mean class accuracy, the confusion matrix, the protocol,
  label source and CAM settings, the checkpoint's variant, model config and full run config, the dataset split;
- ``config.yaml``: the resolved evaluation config;
- ``confusion_matrix.png`` and ``examples/<patch>.png`` (image | ground truth | prediction);
- ``masks/<patch>.png`` with ``save_masks``: predicted palette masks, same names as the dataset's.

The folder is built aside and moved into place when complete (an interrupted run leaves nothing half-written);
an existing folder is replaced only with ``overwrite``.

Patches are scored at their own resolution. A model trained on rescaled patches (``data.input_scale`` in its run
config, e.g. SEAM's 2.0) sees them at that scale: the inference scales are multiplied by it (so the "x1" view that
decides the predicted classes is the model's own resolution) and the maps come back at the patch size.

``metrics.json``'s ``protocol`` says in words what ran: how the classes of a patch were chosen, how the CAMs were
made, the label-map rule and the scoring rule, beside the raw settings.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from histo_daen import __version__
from histo_daen.atomic import check_output
from histo_daen.classes import ClassSet, class_set
from histo_daen.config.load import dump_config, to_plain_dict
from histo_daen.config.schema import DataConfig, EvaluateConfig, InferenceConfig
from histo_daen.data.masks import write_mask
from histo_daen.data.patch_dataset import PatchDataset, loader_batches
from histo_daen.data.registry import dataset_names, dataset_spec, load_splits
from histo_daen.errors import CheckpointError, ConfigError, DatasetError
from histo_daen.evaluation.folders import replace_folder
from histo_daen.evaluation.metrics import PROTOCOL, Scores, confusion_matrix, scores
from histo_daen.evaluation.pictures import save_confusion_matrix, save_example
from histo_daen.evaluation.report import format_scores_table, write_metrics
from histo_daen.inference.cams import cam_kind, compute_cams, describe_cams
from histo_daen.inference.labels import cams_to_label_map, describe_label_map
from histo_daen.models.checkpoint import LoadedModel, load_model
from histo_daen.progress import progress_bar
from histo_daen.resources import require_workers

__all__ = ["EvaluationResult", "evaluate", "evaluate_model"]

logger = logging.getLogger(__name__)

_MASK_DATASETS = ("luad", "bcss")  # registered datasets whose val/test splits carry masks


@dataclass(frozen=True)
class EvaluationResult:
    """What an evaluation measured and where it wrote it.

    Attributes:
        output_dir: the evaluation folder (``None`` for :func:`evaluate_model` without an output folder).
        scores: the split's scores.
        matrix: (K + 1, K + 1) int64 confusion matrix summed over the split.
        record: the ``metrics.json`` content.
        n_images: patches scored.
    """

    output_dir: Path | None
    scores: Scores
    matrix: np.ndarray
    record: dict[str, Any]
    n_images: int

    def table(self) -> str:
        """The one-screen text table of the scores."""
        return format_scores_table(self.record["scores"], self.record["classes"])


def _dataset_name(cfg: EvaluateConfig, run_config: dict[str, Any]) -> str:
    if cfg.dataset is not None:
        if cfg.dataset not in _MASK_DATASETS:
            valid = ", ".join(n for n in dataset_names() if n in _MASK_DATASETS)
            raise ConfigError(f"dataset: {cfg.dataset!r} has no masks to score against; valid: {valid}")
        return cfg.dataset
    trained_on = (run_config.get("data") or {}).get("dataset")
    return trained_on if trained_on in _MASK_DATASETS else "luad"


def _input_scale(run_config: dict[str, Any]) -> float:
    scale = (run_config.get("data") or {}).get("input_scale", 1.0)
    return float(scale) if isinstance(scale, int | float) and scale > 0 else 1.0


def _example_indices(n_images: int, n_examples: int) -> set[int]:
    """Evenly spread over the split (sorted by name), so examples are the same on every run."""
    if n_examples <= 0 or n_images == 0:
        return set()
    return {int(i) for i in np.linspace(0, n_images - 1, min(n_examples, n_images)).round()}


def _batches(loaded_batches: Iterator[list[dict[str, Any]]]) -> Iterator[list[dict[str, Any]]]:
    """Items grouped by image size within each loaded batch, so a split of mixed patch sizes still stacks."""
    for items in loaded_batches:
        by_shape: dict[tuple[int, ...], list[dict[str, Any]]] = {}
        for item in items:
            by_shape.setdefault(tuple(item["image"].shape), []).append(item)
        yield from by_shape.values()


def _image_labels(items: Sequence[dict[str, Any]], settings: InferenceConfig, n_classes: int) -> torch.Tensor | None:
    """(B, K) bool labels for the "dataset" and "masks" label sources; None for "predicted"."""
    if settings.label_source == "predicted":
        return None
    if settings.label_source == "dataset":
        unlabelled = [item for item in items if not item["label_from_name"]]
        if unlabelled:
            raise DatasetError(
                unlabelled[0]["path"],
                "has no patch label in its file name, which label_source=dataset needs",
                "Use --label-source predicted (the classifier's own labels) or masks (the classes in each mask).",
            )
        return torch.stack([item["label"] for item in items]).bool()
    rows = [torch.bincount(item["mask"].flatten(), minlength=n_classes + 1)[:n_classes] > 0 for item in items]
    return torch.stack(rows)


def evaluate_model(
    loaded: LoadedModel,
    records: Sequence[Any],
    cfg: EvaluateConfig,
    *,
    classes: ClassSet,
    device: torch.device,
    output_dir: Path | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Run the model over a split's records and accumulate the confusion matrix; write masks and examples.

    Args:
        loaded: the model and its configs (``histo_daen.models.checkpoint.load_model``).
        records: the split's ``PatchRecord`` s, each with a mask.
        cfg: batch size, workers, inference settings, which pictures to write.
        classes: the dataset's classes (colours, exclude index).
        device: where the model runs (it must already be there).
        output_dir: the folder being built, for ``masks/`` and ``examples/``; None writes nothing.
        progress: tqdm bar over patches.

    Returns:
        The (K + 1, K + 1) confusion matrix and statistics of the image-level labels used (agreement with the
        classes present in the masks).
    """
    n_classes = len(classes)
    input_scale = _input_scale(loaded.config)
    settings = cfg.inference
    dataset = PatchDataset(records, n_classes=n_classes, with_masks=True)
    loader: DataLoader[Any] = DataLoader(
        dataset, batch_size=cfg.batch_size, shuffle=False, num_workers=cfg.workers, collate_fn=list
    )
    examples = _example_indices(len(dataset), cfg.n_examples) if output_dir is not None else set()
    matrix = np.zeros((n_classes + 1, n_classes + 1), dtype=np.int64)
    labels_agree = 0
    label_counts = np.zeros(n_classes, dtype=np.int64)
    with (
        progress_bar(total=len(dataset), unit="patch", desc="evaluating", enabled=progress) as bar,
        loader_batches(loader) as loaded_batches,
    ):
        for items in _batches(loaded_batches):
            for item in items:
                item["path"] = records[item["index"]].image
            images = torch.stack([item["image"] for item in items]).to(device)  # (B, 3, H, W) in [0, 1]
            masks = torch.stack([item["mask"] for item in items])  # (B, H, W) int64, CPU
            result = compute_cams(
                loaded.model,
                images,
                settings=settings,
                image_labels=_image_labels(items, settings, n_classes),
                input_scale=input_scale,
            )
            predicted = cams_to_label_map(
                result.cams,
                images,
                settings=settings,
                labels_used=result.labels_used,
                background=result.background,
                exclude_index=classes.exclude_index,
            ).cpu()
            truth_np, predicted_np = masks.numpy(), predicted.numpy()
            matrix += confusion_matrix(
                truth_np, predicted_np, num_classes=n_classes, exclude_index=classes.exclude_index
            )
            present = np.stack([np.bincount(m.ravel(), minlength=n_classes + 1)[:n_classes] > 0 for m in truth_np])
            used = result.labels_used.cpu().numpy()
            labels_agree += int((used == present).all(axis=1).sum())
            label_counts += used.sum(axis=0)
            if output_dir is not None:
                _write_outputs(output_dir, items, records, predicted_np, truth_np, used, examples, cfg, classes)
            bar.update(len(items))
    n_images = len(dataset)
    label_stats = {
        "images_whose_labels_match_their_mask": labels_agree,
        "fraction_matching": labels_agree / n_images if n_images else None,
        "images_per_class": dict(zip(classes.codes, (int(v) for v in label_counts), strict=True)),
    }
    return matrix, label_stats


def _write_outputs(
    output_dir: Path,
    items: Sequence[dict[str, Any]],
    records: Sequence[Any],
    predicted: np.ndarray,
    truth: np.ndarray,
    used: np.ndarray,
    examples: set[int],
    cfg: EvaluateConfig,
    classes: ClassSet,
) -> None:
    for row, item in enumerate(items):
        record = records[item["index"]]
        if cfg.save_masks:
            write_mask(output_dir / "masks" / record.name, predicted[row].astype(np.uint8), classes)
        if item["index"] in examples:
            image = (item["image"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            labels = " ".join(code for code, on in zip(classes.codes, used[row], strict=True) if on)
            save_example(
                output_dir / "examples" / record.name,
                image,
                truth[row],
                predicted[row],
                classes,
                title=f"{record.name}  (classes used: {labels})",
            )


def evaluate(
    checkpoint: str | os.PathLike[str],
    data_root: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    cfg: EvaluateConfig,
    *,
    device: torch.device | str = "cpu",
    overwrite: bool = False,
    progress: bool = False,
) -> EvaluationResult:
    """Evaluate a checkpoint on the masks of a dataset split and write the evaluation folder.

    Args:
        checkpoint: a histo-daen checkpoint (``RUN/last.pt``).
        data_root: the dataset folder (LUAD-HistoSeg layout, or BCSS-WSSS with ``cfg.dataset="bcss"``).
        output_dir: the evaluation folder to create.
        cfg: split, batching, inference settings, outputs.
        device: where the model runs (resolve ``"auto"`` with ``histo_daen.devices.resolve_device`` first).
        overwrite: replace an existing ``output_dir``.
        progress: tqdm bars (dataset check, evaluation).

    Returns:
        The scores, the confusion matrix and the record written to ``metrics.json``.

    Raises:
        OutputExistsError: ``output_dir`` exists and ``overwrite`` is off (checked before any work).
        CheckpointError: the checkpoint is missing, corrupt or not a histo-daen checkpoint.
        DatasetError: the split is missing, empty, has images without masks, masks of the wrong size or values.
        ConfigError: the dataset's classes differ from the model's.
    """
    target = check_output(output_dir, kind="folder", overwrite=overwrite, inputs=(checkpoint, data_root))
    require_workers(cfg.workers, setting="workers")
    torch_device = torch.device(device)
    loaded = load_model(checkpoint, device=torch_device)
    name = _dataset_name(cfg, loaded.config)
    spec = dataset_spec(name)
    if spec.class_set.name != loaded.model_config.class_set:
        raise ConfigError(
            f"{checkpoint}: the model predicts the {loaded.model_config.class_set} classes but dataset {name!r} has "
            f"the {spec.class_set.name} classes; pass the matching dataset (dataset={loaded.model_config.class_set})"
        )
    if tuple(loaded.classes) != spec.class_set.codes:
        raise CheckpointError(
            checkpoint,
            f"predicts {len(loaded.classes)} classes ({', '.join(loaded.classes)}), but the {spec.title} masks have "
            f"{len(spec.class_set)} ({', '.join(spec.class_set.codes)})",
            "Evaluate a checkpoint trained on this dataset's classes.",
        )
    data_cfg = DataConfig(dataset=name, root=Path(data_root), validate=True)
    records = load_splits(data_cfg, (cfg.split,), required=(cfg.split,), progress=progress)[cfg.split]
    classes = class_set(loaded.model_config.class_set)
    logger.info("evaluating %s on %d %s patches of %s", checkpoint, len(records), cfg.split, data_root)
    with replace_folder(target, overwrite=overwrite) as building:
        matrix, label_stats = evaluate_model(
            loaded, records, cfg, classes=classes, device=torch_device, output_dir=building, progress=progress
        )
        result_scores = scores(matrix)
        record = _record(checkpoint, data_root, cfg, loaded, name, len(records), result_scores, matrix, label_stats)
        record["device"] = torch_device.type
        write_metrics(building, record)
        dump_config(cfg, building / "config.yaml")
        variant = loaded.model_config.variant
        save_confusion_matrix(
            building / "confusion_matrix.png",
            matrix,
            classes,
            title=f"{variant} on {cfg.split}: mIoU {100 * result_scores.miou:.1f}%",
        )
    return EvaluationResult(
        output_dir=target, scores=result_scores, matrix=matrix, record=record, n_images=len(records)
    )


def _record(
    checkpoint: str | os.PathLike[str],
    data_root: str | os.PathLike[str],
    cfg: EvaluateConfig,
    loaded: LoadedModel,
    dataset: str,
    n_images: int,
    result_scores: Scores,
    matrix: np.ndarray,
    label_stats: dict[str, Any],
) -> dict[str, Any]:
    codes = class_set(loaded.model_config.class_set).codes
    input_scale = _input_scale(loaded.config)
    settings = to_plain_dict(cfg.inference)
    kind = cam_kind(loaded.model, cfg.inference)
    steps = {
        **describe_cams(cfg.inference, kind=kind, input_scale=input_scale),
        "label_map": describe_label_map(cfg.inference, background_map=kind == "grad-cam"),
        "scoring": (
            "one confusion matrix over the split; ground-truth exclude pixels ignored; predicted exclude on "
            "tissue counts as a miss; mIoU = nanmean of the per-class IoU over the tissue classes"
        ),
    }
    return {
        "histo_daen_version": __version__,
        "method": loaded.model_config.variant,
        "class_set": loaded.model_config.class_set,
        "classes": list(codes),
        "scores": result_scores.as_dict(codes),
        "confusion_matrix": matrix.tolist(),
        "protocol": {
            "name": PROTOCOL,
            "description": steps["scoring"],
            "steps": steps,
            **settings,
            "cams_used": kind,  # what ran: grad-cam, refined (PCM) or raw
            "effective_scales": [s * input_scale for s in cfg.inference.scales],
        },
        "image_labels": label_stats,
        "dataset": {"name": dataset, "root": str(data_root), "split": cfg.split, "n_images": n_images},
        "checkpoint": {
            "path": str(checkpoint),
            "variant": loaded.model_config.variant,
            "epoch": loaded.state.get("epoch"),
            "step": loaded.state.get("step"),
            "source": loaded.state.get("source"),
            "model_config": to_plain_dict(loaded.model_config),
            "config": loaded.config,
        },
        "evaluate_config": to_plain_dict(cfg),
    }
