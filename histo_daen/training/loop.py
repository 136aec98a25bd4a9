"""``train(cfg)``: one code path for the CPU, one CUDA GPU and ``torchrun`` DistributedDataParallel; resumable.

A run folder holds ``config.yaml`` (the resolved config), ``metrics.jsonl`` (one JSON line per ``log_every``
steps) and ``last.pt`` (written atomically every ``checkpoint_every`` steps and at the end of each epoch). A folder
that already holds a run is used only with ``resume=True`` (continue from ``last.pt``; the requested config must
equal the stored one except for the fields in :data:`RESUMABLE_CHANGES`) or ``overwrite=True`` (start again).

What makes a resumed run equal an uninterrupted one: the checkpoint holds the weights, the optimiser and schedule
state and every rank's RNG state; data order comes from DistributedSampler seeded by (seed, epoch), and each
patch's augmentation and twin transform from a generator keyed by (seed, epoch, index), so the run restarts at
the exact step, on any number of loader workers. Under torchrun the global batch is split over the ranks, which
makes a run on N processes train on the same patches per step as one process (``OptimConfig`` docstring).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from histo_daen.atomic import atomic_write_text, check_output
from histo_daen.config.load import dump_config, to_plain_dict
from histo_daen.config.schema import TrainConfig
from histo_daen.data.patch_dataset import PatchDataset, loader_batches
from histo_daen.data.registry import dataset_spec, load_splits
from histo_daen.data.transforms import PatchAugment
from histo_daen.devices import autocast_settings, resolve_device
from histo_daen.errors import (
    CheckpointError,
    ConfigError,
    DatasetError,
    OutputExistsError,
    TrainingDivergedError,
    WeightsError,
)
from histo_daen.models.cam_net import CamNet
from histo_daen.models.checkpoint import (
    checkpoint_state,
    peek_run_config,
    read_checkpoint,
    restore_weights,
    save_checkpoint,
)
from histo_daen.models.registry import build_model
from histo_daen.progress import progress_bar
from histo_daen.provenance import require_same
from histo_daen.resources import require_workers
from histo_daen.seeding import get_rng_state, seed_everything, set_rng_state
from histo_daen.training.affine import TwinTransform
from histo_daen.training.distributed import (
    DistributedContext,
    all_gather_objects,
    barrier,
    distributed_context,
    mean_over_ranks,
)
from histo_daen.training.objective import LossTerms, TwinNetwork, classification_objective, seam_objective
from histo_daen.training.recipe import resolve_recipe
from histo_daen.training.sampling import EpochBatchSampler
from histo_daen.training.schedule import build_optimizer, build_schedule

__all__ = [
    "CHECKPOINT_NAME",
    "CONFIG_NAME",
    "METRICS_NAME",
    "RESUMABLE_CHANGES",
    "MetricsLog",
    "TrainResult",
    "resolve_objective",
    "train",
]

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "last.pt"
CONFIG_NAME = "config.yaml"
METRICS_NAME = "metrics.jsonl"
_RUN_FILES = (CHECKPOINT_NAME, CONFIG_NAME, METRICS_NAME)
# Fields that do not change what is computed (or name the same data/weights at another place): a resumed run may
# differ in them. Everything else must equal the checkpoint's config.
RESUMABLE_CHANGES = frozenset(
    {
        "data.workers",
        "data.validate",
        "data.verify",
        "data.root",
        "data.labels_csv",
        "pretrained",
        "checkpoint_every",
        "log_every",
    }
)


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced.

    Attributes:
        output_dir: the run folder.
        checkpoint: ``output_dir / "last.pt"``.
        step: optimiser steps completed; equals ``max_steps`` for a finished run.
        max_steps: the schedule's length.
        epoch: epochs completed.
        losses: the last logged loss terms (``loss`` = weighted total), averaged over ranks.
        images_per_second: mean training throughput of this invocation (all ranks), 0 if no step ran.
        resumed_from: the step the run resumed from, or None for a fresh run.
        objective: "seam" or "classification".
    """

    output_dir: Path
    checkpoint: Path
    step: int
    max_steps: int
    epoch: int
    losses: dict[str, float]
    images_per_second: float
    resumed_from: int | None
    objective: str


class MetricsLog:
    """``metrics.jsonl``: one JSON object per line, appended (rank 0 only); cut back to a step on resume.

    When the ``tensorboard`` package is installed (it is not a dependency), the numbers also go to
    ``<run>/tensorboard/`` for ``tensorboard --logdir``.
    """

    def __init__(self, path: Path, *, enabled: bool) -> None:
        self.path = path
        self.enabled = enabled
        self._board: Any = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                pass
            else:
                self._board = SummaryWriter(log_dir=str(path.parent / "tensorboard"))

    def truncate_after(self, step: int) -> None:
        """Drop lines of steps after ``step`` (written by a run killed between two checkpoints)."""
        if not self.enabled or not self.path.exists():
            return
        kept = [line for line in self.path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        atomic_write_text(self.path, "".join(line + "\n" for line in kept))

    def append(self, record: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(dict(record), sort_keys=False) + "\n")
            handle.flush()
        if self._board is not None:
            for key, value in record.items():
                if key not in ("step", "epoch") and isinstance(value, int | float):
                    self._board.add_scalar(key, value, global_step=int(record["step"]))
            self._board.flush()


def resolve_objective(cfg: TrainConfig, model: CamNet) -> str:
    """ "seam" or "classification": ``loss.objective``, with "auto" meaning seam exactly when the model has a PCM."""
    has_pcm = model.abilities.pcm
    objective = cfg.loss.objective
    if objective == "auto":
        return "seam" if has_pcm else "classification"
    if objective == "seam" and not has_pcm:
        raise ConfigError(
            f"loss.objective: 'seam' needs a network with a PCM, but variant {cfg.model.variant!r} has none; "
            "use loss.objective=classification (or auto)"
        )
    return objective


def _check_config(cfg: TrainConfig, ctx: DistributedContext) -> int:
    """Cross-section checks; returns the per-rank micro-batch."""
    optim = cfg.optim
    split = ctx.world_size * optim.accumulation_steps
    if optim.batch_size % split:
        raise ConfigError(
            f"optim.batch_size {optim.batch_size} cannot be split over {ctx.world_size} process(es) x "
            f"{optim.accumulation_steps} accumulation step(s); use a multiple of {split}"
        )
    spec = dataset_spec(cfg.data.dataset)
    if spec.class_set.name != cfg.model.class_set or len(spec.class_set) != cfg.model.num_classes:
        raise ConfigError(
            f"model.class_set {cfg.model.class_set!r} with num_classes {cfg.model.num_classes} does not fit the "
            f"{spec.title} classes ({spec.class_set.name}: {', '.join(spec.class_set.codes)}); "
            f"set model.class_set={spec.class_set.name} model.num_classes={len(spec.class_set)}"
        )
    if spec.native_mpp is not None:
        expected = spec.native_mpp / cfg.data.input_scale
        if not math.isclose(cfg.model.input_mpp, expected, rel_tol=1e-3):
            raise ConfigError(
                f"model.input_mpp {cfg.model.input_mpp} does not match the data: {spec.title} patches are "
                f"{spec.native_mpp} um/px and data.input_scale {cfg.data.input_scale} makes them {expected:g} um/px; "
                f"set model.input_mpp={expected:g} (slide inference reads slides at it)"
            )
    return optim.batch_size // split


def _prepare_run_folder(output_dir: Path, *, resume: bool, overwrite: bool) -> tuple[Path | None, tuple[str, ...]]:
    """Decide fresh / resume / refuse (every rank alike), deleting nothing yet.

    Returns:
        The checkpoint to resume from (or None), and the files of an earlier run to remove once this run has its
        data and model and is about to write (so a run that fails to start loses nothing).
    """
    check_output(output_dir, kind="folder")
    checkpoint = output_dir / CHECKPOINT_NAME
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite contradict each other; pass one")
    if overwrite:
        return None, (*_RUN_FILES, "tensorboard")
    if resume and checkpoint.exists():
        return checkpoint, ()
    if resume:
        logger.warning("%s: no %s to resume from; starting a new run", output_dir, CHECKPOINT_NAME)
        return None, (METRICS_NAME,)
    if output_dir.exists() and any(output_dir.iterdir()):
        what = "holds a training run" if any((output_dir / n).exists() for n in _RUN_FILES) else "is not empty"
        raise OutputExistsError(
            output_dir,
            what,
            "Pass --resume to continue it, --overwrite to start again, or choose another -o folder.",
        )
    return None, ()


def _load_pretrained(model: CamNet, cfg: TrainConfig, ctx: DistributedContext) -> None:
    if cfg.pretrained is None:
        if ctx.is_main:
            logger.warning(
                "NO PRETRAINED WEIGHTS: the %s backbone starts from random weights, with the %r recipe "
                "(freeze_batchnorm=%s, freeze_stem=%s, momentum %s, attention_form %s). The paper fine-tunes "
                "ImageNet weights: pass --pretrained FILE (e.g. SEAM's ilsvrc-cls_rna-a1_cls1000_ep-0001.params "
                "for resnet38) for its recipe.%s",
                cfg.model.backbone,
                cfg.recipe,
                cfg.model.freeze_batchnorm,
                cfg.model.freeze_stem,
                cfg.optim.momentum,
                cfg.model.attention_form,
                " Frozen random BatchNorm does not learn: use recipe=scratch." if cfg.model.freeze_batchnorm else "",
            )
        return
    try:
        from histo_daen.models.weights import load_pretrained
    except ImportError as err:
        raise WeightsError(
            cfg.pretrained,
            "cannot be loaded: this installation has no pretrained-weights loader (histo_daen.models.weights)",
            "Train without --pretrained, or update histo-daen.",
        ) from err
    load_pretrained(model, cfg.pretrained)


def _find_unused_parameters(model: CamNet, objective: str, cfg: TrainConfig) -> bool:
    """Whether DDP must look for parameters without gradient: the PCM layers when no loss term reaches them."""
    has_pcm = model.abilities.pcm
    pcm_trained = objective == "seam" and (cfg.loss.cross_equivariant_weight > 0 or cfg.loss.rvmin_weight > 0)
    return has_pcm and not pcm_trained


def _restore(
    path: Path,
    cfg: TrainConfig,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    max_steps: int,
    ctx: DistributedContext,
) -> tuple[int, dict[str, float], LogWindow]:
    """Load ``last.pt`` into the run's objects after checking its config.

    Returns:
        Its step, its last logged losses, and this rank's log window (the loss terms since that log line).
    """
    state = read_checkpoint(path, expected_model=cfg.model)
    require_same(
        state.get("config", {}),
        to_plain_dict(cfg),
        path=path,
        subject="was written by a run with another configuration",
        hint="Resume with the run's own config (its config.yaml), or start a new run with another -o folder.",
        error=CheckpointError,
        ignore=RESUMABLE_CHANGES,
    )
    for key in ("optimizer", "scheduler", "rng"):
        if key not in state:
            raise CheckpointError(path, f"holds no {key} state (not a training checkpoint)", "Start a new run.")
    if state.get("max_steps", max_steps) != max_steps:
        raise CheckpointError(
            path,
            f"belongs to a run of {state['max_steps']} steps, but the dataset now gives {max_steps} "
            "(patches were added or removed)",
            "Resume with the dataset the run started with, or start a new run.",
        )
    restore_weights(model, state, path=path)
    try:
        optimizer.load_state_dict(state["optimizer"])
    except (ValueError, KeyError) as err:
        raise CheckpointError(
            path, f"has optimiser state that does not fit this model ({err})", "Start a new run."
        ) from err
    schedule.load_state_dict(state["scheduler"])
    rng_states = state["rng"]
    if isinstance(rng_states, list) and len(rng_states) == ctx.world_size:
        set_rng_state(rng_states[ctx.rank])
    else:
        # Another process count: data order and augmentation are unchanged (keyed), dropout draws are not.
        saved = len(rng_states) if isinstance(rng_states, list) else "?"
        if ctx.is_main:
            logger.warning(
                "%s was written by %s process(es), this run has %d: resuming with fresh dropout randomness "
                "(data order and augmentation are unchanged)",
                path,
                saved,
                ctx.world_size,
            )
        seed_everything(cfg.seed + int(state["step"]) * 1009, ctx.rank)
    step = int(state["step"])
    if ctx.is_main:
        logger.info("resuming %s at step %d (epoch %d)", path.parent, step, int(state["epoch"]))
    stored_losses = state.get("metrics")
    losses = {str(k): float(v) for k, v in stored_losses.items()} if isinstance(stored_losses, dict) else {}
    windows = state.get("metrics_windows")
    # Another process count splits the batch otherwise: its windows do not carry over (that line then differs).
    if isinstance(windows, list) and len(windows) == ctx.world_size:
        window = LogWindow.from_plain(windows[ctx.rank])
    else:
        window = LogWindow()
    return step, losses, window


def _save(
    path: Path,
    cfg: TrainConfig,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    step: int,
    epoch: int,
    max_steps: int,
    losses: Mapping[str, float],
    window: LogWindow,
    ctx: DistributedContext,
) -> None:
    # Collective: every rank takes part. States travel as torch.save bytes: all_gather_object cannot carry tensors.
    buffer = io.BytesIO()
    torch.save(get_rng_state(), buffer)
    gathered = all_gather_objects(buffer.getvalue(), ctx)
    windows = all_gather_objects(window.losses_as_plain(), ctx)
    if not ctx.is_main:
        return
    rng_states = [torch.load(io.BytesIO(blob), weights_only=True) for blob in gathered]
    state = checkpoint_state(
        model,
        config=cfg,
        epoch=epoch,
        step=step,
        optimizer=optimizer.state_dict(),
        scheduler=schedule.state_dict(),
        rng=rng_states,
        world_size=ctx.world_size,
        max_steps=max_steps,
        metrics={key: float(value) for key, value in losses.items()},
        metrics_windows=windows,
    )
    save_checkpoint(path, state)


def train(
    cfg: TrainConfig,
    *,
    output_dir: str | os.PathLike[str],
    device: torch.device | str = "auto",
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = False,
) -> TrainResult:
    """Train a CAM network on patch-level labels.

    Run as a plain process (CPU or one GPU) or under ``torchrun --nproc_per_node=N`` (one process per GPU, or
    several CPU processes with gloo); the same call serves all three.

    Args:
        cfg: the resolved training config (``load_config(TrainConfig, path, overrides=...)``).
        output_dir: the run folder (created).
        device: "auto", "cpu", "cuda" or a torch.device; under torchrun CUDA runs on ``cuda:LOCAL_RANK``.
        resume: continue the run in ``output_dir`` from its ``last.pt``.
        overwrite: discard a run already in ``output_dir``.
        progress: tqdm bar (rank 0) with loss terms and images/s.

    Returns:
        A :class:`TrainResult`.

    Raises:
        OutputExistsError: ``output_dir`` holds a run and neither ``resume`` nor ``overwrite`` was given.
        DatasetError: the dataset is missing or has problems (all listed at once), or is smaller than a batch.
        CheckpointError: ``last.pt`` is unreadable or was written with another configuration (fields named).
        ConfigError: inconsistent settings (batch split, classes, resolution, objective).
    """
    resolved = resolve_device(device) if isinstance(device, str) else device
    with distributed_context(resolved) as ctx:
        return _train(cfg, Path(output_dir), ctx=ctx, resume=resume, overwrite=overwrite, progress=progress)


def _train(
    cfg: TrainConfig, output_dir: Path, *, ctx: DistributedContext, resume: bool, overwrite: bool, progress: bool
) -> TrainResult:
    micro_batch = _check_config(cfg, ctx)
    require_workers(cfg.data.workers, setting="data.workers (--workers)")
    resume_from, replaced = _prepare_run_folder(output_dir, resume=resume, overwrite=overwrite)
    stored = peek_run_config(resume_from) if resume_from is not None else None
    cfg, recipe_note = resolve_recipe(cfg, stored_recipe=(stored or {}).get("recipe"))
    if ctx.is_main:
        logger.info("%s", recipe_note)
    records = load_splits(cfg.data, ("train",), progress=progress and ctx.is_main)["train"]
    optim = cfg.optim
    steps_per_epoch = len(records) // optim.batch_size
    if steps_per_epoch == 0:
        raise DatasetError(
            cfg.data.root or ".",
            f"has {len(records)} training patches, fewer than one batch of {optim.batch_size}",
            "Lower optim.batch_size (--batch-size) or add patches.",
        )
    max_steps = steps_per_epoch * optim.epochs
    if optim.max_steps is not None:
        max_steps = min(max_steps, optim.max_steps)

    previous_determinism = torch.are_deterministic_algorithms_enabled()
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True)
    try:
        seed_everything(cfg.seed, ctx.rank)
        model = build_model(cfg.model)
        _load_pretrained(model, cfg, ctx)
        model.to(ctx.device)
        model.train()
        objective = resolve_objective(cfg, model)
        twin = TwinTransform(cfg.twin) if objective == "seam" else None
        network: nn.Module = TwinNetwork(model, twin)
        if ctx.is_distributed:
            network = nn.parallel.DistributedDataParallel(
                network,
                device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
                find_unused_parameters=_find_unused_parameters(model, objective, cfg),
            )
        optimizer = build_optimizer(model.parameter_groups(), optim)
        schedule = build_schedule(optimizer, max_steps=max_steps, power=optim.poly_power)
        start_step, stored_losses, stored_window = 0, dict[str, float](), LogWindow()
        if resume_from is not None:
            start_step, stored_losses, stored_window = _restore(
                resume_from, cfg, model=model, optimizer=optimizer, schedule=schedule, max_steps=max_steps, ctx=ctx
            )
        if ctx.is_main:
            for name in replaced:  # the earlier run goes only now that this one has started (the barrier waits)
                stale = output_dir / name
                if stale.is_dir():
                    shutil.rmtree(stale)
                else:
                    stale.unlink(missing_ok=True)
            output_dir.mkdir(parents=True, exist_ok=True)
            dump_config(cfg, output_dir / CONFIG_NAME)
        metrics = MetricsLog(output_dir / METRICS_NAME, enabled=ctx.is_main)
        metrics.truncate_after(start_step)
        barrier(ctx)

        dataset = PatchDataset(
            records,
            n_classes=cfg.model.num_classes,
            augment=PatchAugment(cfg.augment),
            input_scale=cfg.data.input_scale,
            seed=cfg.seed,
        )
        stepper = TrainingStep(cfg, ctx, model, network, objective, twin, optimizer, schedule)
        plan = StepPlan(micro_batch, steps_per_epoch, max_steps, start_step)
        run = _run_steps(
            cfg,
            ctx=ctx,
            stepper=stepper,
            model=model,
            dataset=dataset,
            plan=plan,
            start_losses=stored_losses,
            start_window=stored_window,
            output_dir=output_dir,
            metrics=metrics,
            progress=progress,
        )
        return TrainResult(
            output_dir=output_dir,
            checkpoint=output_dir / CHECKPOINT_NAME,
            step=run.step,
            max_steps=max_steps,
            epoch=run.step // steps_per_epoch,
            losses=run.losses,
            images_per_second=run.images_per_second,
            resumed_from=start_step if resume_from is not None else None,
            objective=objective,
        )
    finally:
        torch.use_deterministic_algorithms(previous_determinism)


def _loader(
    dataset: PatchDataset, sampler: EpochBatchSampler, *, workers: int, seed: int, pin_memory: bool
) -> DataLoader[Any]:
    # An own generator: creating the iterator draws the workers' base seed from it, not from the global torch RNG,
    # whose state the checkpoint restores for dropout (a resumed run creates its iterator at another moment).
    generator = torch.Generator().manual_seed(seed * 7919 + sampler.epoch)
    return DataLoader(dataset, batch_sampler=sampler, num_workers=workers, pin_memory=pin_memory, generator=generator)


@dataclass(frozen=True)
class StepPlan:
    """Where a run's optimiser steps go.

    Attributes:
        micro_batch: patches per micro-batch on this rank (``batch_size / (world_size * accumulation_steps)``).
        steps_per_epoch: optimiser steps in one pass over the training set.
        max_steps: the schedule's length (``epochs * steps_per_epoch``, or ``optim.max_steps`` if fewer).
        start_step: where this call starts (0, or the step a resumed run stopped at).
    """

    micro_batch: int
    steps_per_epoch: int
    max_steps: int
    start_step: int


@dataclass(frozen=True)
class StepResult:
    """One optimiser step.

    Attributes:
        terms: loss terms averaged over the step's micro-batches (``loss`` = the weighted total).
        lr: the base (backbone) learning rate the step used.
        seconds: wall time of the step; data_seconds: the part spent waiting for batches.
    """

    terms: dict[str, float]
    lr: float
    seconds: float
    data_seconds: float


@dataclass
class TrainingStep:
    """What one optimiser step needs, and the step itself: micro-batches -> objective -> backward -> optimiser.

    Gradient accumulation: ``accumulation`` micro-batches per step, each loss divided by their number; DDP
    synchronises gradients on the last micro-batch only (``no_sync`` before).
    """

    cfg: TrainConfig
    ctx: DistributedContext
    model: CamNet
    network: nn.Module  # the model in the twin-branch wrapper, in DistributedDataParallel under torchrun
    objective: str
    twin: TwinTransform | None
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler

    def run(self, batches: Iterator[dict[str, Any]], epoch: int, *, step: int, saved_step: int | None) -> StepResult:
        """Take ``accumulation_steps`` micro-batches from ``batches`` and make optimiser step number ``step``.

        Raises:
            TrainingDivergedError: the loss or the gradients are not finite (checked before the optimiser applies
                them; ``saved_step`` is the step ``last.pt`` holds, named in the message).
        """
        device = self.ctx.device
        accumulation = self.cfg.optim.accumulation_steps
        autocast = autocast_settings(device, amp=self.cfg.amp, cpu_bf16=self.cfg.cpu_bf16)
        started = time.perf_counter()
        data_seconds = 0.0
        self.optimizer.zero_grad(set_to_none=True)
        terms: dict[str, float] = {}
        for micro in range(accumulation):
            waited = time.perf_counter()
            batch = next(batches)
            data_seconds += time.perf_counter() - waited
            images = batch["image"].to(device, non_blocking=True)
            labels = batch["label"].to(device, non_blocking=True)
            params = self.twin.draw(batch["index"].tolist(), seed=self.cfg.seed, epoch=epoch) if self.twin else None
            # DDP averages gradients over ranks on the last micro-batch of the step only.
            network, last_micro = self.network, micro == accumulation - 1
            sync: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
            if isinstance(network, nn.parallel.DistributedDataParallel) and not last_micro:
                sync = network.no_sync()
            with sync:
                with torch.autocast(**autocast.kwargs):  # type: ignore[arg-type]
                    first, second = network(images, params)
                loss = _objective(
                    first,
                    second,
                    labels,
                    objective=self.objective,
                    twin=self.twin,
                    params=params,
                    cfg=self.cfg,
                    images=images,
                )
                (loss.total / accumulation).backward()
            for key, value in {"loss": loss.total, **loss.terms}.items():
                terms[key] = terms.get(key, 0.0) + float(value.detach()) / accumulation
        lr = self.optimizer.param_groups[0]["lr"]  # the base (backbone) rate of this step
        _stop_if_diverged(step, terms, self.model, cfg=self.cfg, ctx=self.ctx, lr=lr, saved_step=saved_step)
        self.optimizer.step()
        self.schedule.step()
        return StepResult(terms, lr, time.perf_counter() - started, data_seconds)


@dataclass
class LogWindow:
    """Steps since the last ``metrics.jsonl`` line: their summed loss terms and times (one rank's).

    The loss part is kept in ``last.pt`` (``metrics_windows``, one per rank): a run resumed between two log lines
    then writes the next line from the same steps as an uninterrupted run, so ``metrics.jsonl`` comes out the same
    (timings apart: ``timed_steps``, ``seconds`` and ``data_seconds`` count this process's steps only).
    """

    terms: dict[str, float] = field(default_factory=dict)
    steps: int = 0
    timed_steps: int = 0
    seconds: float = 0.0
    data_seconds: float = 0.0

    def add(self, step: StepResult) -> None:
        for key, value in step.terms.items():
            self.terms[key] = self.terms.get(key, 0.0) + value
        self.steps += 1
        self.timed_steps += 1
        self.seconds += step.seconds
        self.data_seconds += step.data_seconds

    def mean_terms(self) -> dict[str, float]:
        return {key: value / self.steps for key, value in self.terms.items()}

    def losses_as_plain(self) -> dict[str, Any]:
        """What ``last.pt`` keeps of the window: the summed terms and their step count."""
        return {"steps": self.steps, "terms": dict(self.terms)}

    @classmethod
    def from_plain(cls, plain: Any) -> LogWindow:
        """From :meth:`losses_as_plain`'s dict; anything else (an older checkpoint) is an empty window."""
        if not isinstance(plain, Mapping) or not isinstance(plain.get("terms"), Mapping):
            return cls()
        return cls({str(k): float(v) for k, v in plain["terms"].items()}, int(plain.get("steps", 0)))


@dataclass(frozen=True)
class StepsRun:
    """What the step loop reached: the last step, the last logged losses, mean images/s of this invocation."""

    step: int
    losses: dict[str, float]
    images_per_second: float


def _run_steps(
    cfg: TrainConfig,
    *,
    ctx: DistributedContext,
    stepper: TrainingStep,
    model: CamNet,
    dataset: PatchDataset,
    plan: StepPlan,
    start_losses: dict[str, float],
    start_window: LogWindow,
    output_dir: Path,
    metrics: MetricsLog,
    progress: bool,
) -> StepsRun:
    """The optimiser steps from ``plan.start_step`` to ``plan.max_steps``: log, warn, checkpoint on schedule."""
    checkpoint_path = output_dir / CHECKPOINT_NAME
    step, losses = plan.start_step, dict(start_losses)
    saved_step = plan.start_step if plan.start_step > 0 else None  # the step last.pt holds
    window = start_window  # restored on resume: the next log line averages the same steps as without the stop
    warned_collapse = False
    total_images, total_seconds = 0, 0.0
    bar = progress_bar(
        total=plan.max_steps, initial=step, unit="step", desc="training", enabled=progress and ctx.is_main
    )
    with bar, contextlib.ExitStack() as open_loader:
        while step < plan.max_steps:
            epoch = step // plan.steps_per_epoch
            epoch_end = min((epoch + 1) * plan.steps_per_epoch, plan.max_steps)
            open_loader.close()  # the previous epoch's loader: its workers stop before the next one's start
            batches = open_loader.enter_context(_epoch_batches(cfg, ctx, dataset, plan, epoch, step))
            while step < epoch_end:
                result = stepper.run(batches, epoch, step=step + 1, saved_step=saved_step)
                step += 1
                total_images += cfg.optim.batch_size
                total_seconds += result.seconds
                window.add(result)
                bar.update(1)
                if step % cfg.log_every == 0 or step == plan.max_steps:
                    losses = _log_window(cfg, ctx, metrics, bar, window, step=step, epoch=epoch, lr=result.lr)
                    window = LogWindow()
                    if not warned_collapse and _collapsed(losses, step, plan.max_steps):
                        warned_collapse = True
                        if ctx.is_main:
                            logger.warning(
                                "step %d: only %.1f %% of the pixels of present classes light up in the CAMs: they "
                                "have collapsed onto a few peaks, which satisfies the equivariant loss trivially "
                                "(DAEN's coded attention does this from random weights, model.attention_form="
                                "reference). Use the scratch recipe's residual attention or pretrained weights.",
                                step,
                                100 * losses["cam_coverage"],
                            )
                if step % cfg.checkpoint_every == 0 or step == epoch_end:
                    _save(
                        checkpoint_path,
                        cfg,
                        model=model,
                        optimizer=stepper.optimizer,
                        schedule=stepper.schedule,
                        step=step,
                        epoch=step // plan.steps_per_epoch,
                        max_steps=plan.max_steps,
                        losses=losses,
                        window=window,
                        ctx=ctx,
                    )
                    saved_step = step
    throughput = total_images / total_seconds if total_seconds > 0 else 0.0
    if ctx.is_main and step > plan.start_step:
        logger.info("trained %d steps to %s (%.1f images/s)", step - plan.start_step, checkpoint_path, throughput)
    return StepsRun(step, losses, throughput)


def _epoch_batches(
    cfg: TrainConfig, ctx: DistributedContext, dataset: PatchDataset, plan: StepPlan, epoch: int, step: int
) -> contextlib.AbstractContextManager[Iterator[dict[str, Any]]]:
    """``with``: this rank's micro-batches of ``epoch`` from ``step`` on (a resumed run starts inside an epoch); the
    loader's workers are shut down when the block ends (:func:`~histo_daen.data.patch_dataset.loader_batches`)."""
    accumulation = cfg.optim.accumulation_steps
    steps_this_epoch = min(plan.steps_per_epoch, plan.max_steps - epoch * plan.steps_per_epoch)
    sampler = EpochBatchSampler(
        len(dataset),
        epoch=epoch,
        micro_batch=plan.micro_batch,
        n_micro_batches=steps_this_epoch * accumulation,
        rank=ctx.rank,
        world_size=ctx.world_size,
        seed=cfg.seed,
        start=(step - epoch * plan.steps_per_epoch) * accumulation,
    )
    loader = _loader(dataset, sampler, workers=cfg.data.workers, seed=cfg.seed, pin_memory=ctx.device.type == "cuda")
    return loader_batches(loader)


def _log_window(
    cfg: TrainConfig,
    ctx: DistributedContext,
    metrics: MetricsLog,
    bar: Any,
    window: LogWindow,
    *,
    step: int,
    epoch: int,
    lr: float,
) -> dict[str, float]:
    """One ``metrics.jsonl`` line for the steps of ``window`` (loss terms averaged over ranks); returns the terms."""
    averaged = mean_over_ranks(window.mean_terms(), ctx)
    images_per_second = cfg.optim.batch_size * window.timed_steps / max(window.seconds, 1e-9)
    metrics.append(
        {
            "step": step,
            "epoch": epoch,
            "lr": lr,
            **{k: round(v, 6) for k, v in averaged.items()},
            "images_per_second": round(images_per_second, 3),
            "data_time_share": round(window.data_seconds / max(window.seconds, 1e-9), 4),
        }
    )
    bar.set_postfix(
        {_SHORT.get(k, k): f"{v:.3f}" for k, v in averaged.items()} | {"img/s": f"{images_per_second:.1f}"},
        refresh=False,
    )
    return averaged


def _collapsed(losses: Mapping[str, float], step: int, max_steps: int) -> bool:
    """CAMs lit on too few pixels, a quarter of the way into training or later (see COLLAPSED_COVERAGE)."""
    coverage = losses.get("cam_coverage")
    return coverage is not None and coverage < COLLAPSED_COVERAGE and step >= max_steps // 4


def _stop_if_diverged(
    step: int,
    terms: Mapping[str, float],
    model: nn.Module,
    *,
    cfg: TrainConfig,
    ctx: DistributedContext,
    lr: float,
    saved_step: int | None,
) -> None:
    """Stop before ``optimizer.step()`` applies a non-finite loss or gradient (every rank alike under DDP).

    Raises:
        TrainingDivergedError: naming the step, the terms, the likely cause and the last good checkpoint.
    """
    gradients = [p.grad for p in model.parameters() if p.grad is not None]
    gradient_norm = float(torch.nn.utils.get_total_norm(gradients)) if gradients else 0.0
    bad_terms = {key: value for key, value in terms.items() if not math.isfinite(value)}
    diverged = bool(bad_terms) or not math.isfinite(gradient_norm)
    if ctx.is_distributed:  # the loss is per rank: one rank's NaN must stop them all, or the others hang
        diverged = mean_over_ranks({"diverged": float(diverged)}, ctx)["diverged"] > 0
    if not diverged:
        return
    if bad_terms:
        what = f"the loss is not finite ({', '.join(f'{k} {v}' for k, v in bad_terms.items())})"
    elif not math.isfinite(gradient_norm):
        what = f"the gradients are not finite (norm {gradient_norm}, loss {terms.get('loss', 0.0):.4g})"
    else:
        what = "another process's loss or gradients are not finite"
    kept = (
        f"{CHECKPOINT_NAME} still holds step {saved_step}, the last good checkpoint"
        if saved_step is not None
        else f"No {CHECKPOINT_NAME} was written before it"
    )
    raise TrainingDivergedError(
        f"training diverged at step {step}: {what}; stopped before applying it. Likely cause: a learning rate too "
        f"high for this model and batch (this step: {lr:g}; optim.lr={cfg.optim.lr:g}, optim.momentum="
        f"{cfg.optim.momentum:g}) or too-large loss weights; if lowering them does not help, check the data for "
        f"broken patches. {kept}. Start a new run (another -o, or --overwrite) with a lower --lr."
    )


_SHORT = {
    "loss": "loss",
    "classification": "cls",
    "rvmin": "rvmin",
    "equivariant": "er",
    "cross_equivariant": "ecr",
    "cam_coverage": "cover",
}
# Below this share of lit pixels (cam_coverage) the CAMs have collapsed; SEAM on synthetic patches keeps ~0.27.
COLLAPSED_COVERAGE = 0.03


def _objective(
    first: Any,
    second: Any,
    labels: torch.Tensor,
    *,
    objective: str,
    twin: TwinTransform | None,
    params: Any,
    cfg: TrainConfig,
    images: torch.Tensor,
) -> LossTerms:
    if objective == "seam":
        assert twin is not None and second is not None  # the seam objective always builds the twin
        return seam_objective(
            first,
            second,
            labels,
            image_hw=(images.shape[-2], images.shape[-1]),
            twin=twin,
            params=params,
            cfg=cfg.loss,
        )
    return classification_objective(first, labels, cfg.loss)
