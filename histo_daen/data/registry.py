"""The ``--dataset`` registry: a name -> how to find, validate and list a dataset's patches.

The training loop only calls :func:`load_splits`; adding a dataset means one :func:`register_dataset` call
with a loader that returns :class:`~histo_daen.data.patch_folder.PatchRecord` lists, nothing in the loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from difflib import get_close_matches

from histo_daen.classes import BCSS, LUAD, ClassSet
from histo_daen.config.schema import DataConfig
from histo_daen.data.bcss import check_bcss
from histo_daen.data.luad import LUAD_MPP, check_luad
from histo_daen.data.patch_folder import PatchRecord, Split
from histo_daen.data.tiles import check_tiles
from histo_daen.errors import ConfigError

__all__ = ["DatasetSpec", "dataset_names", "dataset_spec", "load_splits", "register_dataset"]

# (config, splits, required splits, open every file, progress bar) -> records per split; raises DatasetError.
SplitLoader = Callable[[DataConfig, Sequence[Split], Sequence[Split], bool, bool], dict[Split, list[PatchRecord]]]


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset kind.

    Attributes:
        name: the ``--dataset`` value.
        title: for messages and help.
        class_set: classes in label order (the model's ``class_set`` must name the same).
        native_mpp: microns per pixel of its patches, when the dataset fixes one (checked against the model's
            ``input_mpp`` / ``data.input_scale``).
        load: lists (and validates) the splits.
    """

    name: str
    title: str
    class_set: ClassSet
    native_mpp: float | None
    load: SplitLoader


_REGISTRY: dict[str, DatasetSpec] = {}


def register_dataset(spec: DatasetSpec) -> None:
    """Add a dataset kind; names are unique."""
    if spec.name in _REGISTRY:
        raise ValueError(f"dataset {spec.name!r} registered twice")
    _REGISTRY[spec.name] = spec


def dataset_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def dataset_spec(name: str) -> DatasetSpec:
    """The registered dataset ``name``; a ConfigError lists the valid names (and the nearest) otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        nearest = get_close_matches(name, list(_REGISTRY), n=1)
        hint = f" Did you mean '{nearest[0]}'?" if nearest else ""
        raise ConfigError(f"data.dataset: unknown dataset {name!r}.{hint} Valid: {', '.join(_REGISTRY)}.") from None


def load_splits(
    cfg: DataConfig,
    splits: Sequence[Split] = ("train",),
    *,
    required: Sequence[Split] | None = None,
    progress: bool = False,
) -> dict[Split, list[PatchRecord]]:
    """Validate the dataset of ``cfg`` and list the patches of ``splits``.

    Args:
        cfg: ``dataset`` picks the kind, ``root`` the folder, ``validate`` whether every file is opened first.
        splits: the splits wanted.
        required: splits that must exist (default: all of ``splits``).
        progress: tqdm bar while files are checked.

    Raises:
        ConfigError: unknown dataset or no ``root``.
        DatasetError: one message listing every problem found (see ``patch_folder.check_patch_folder``).
    """
    spec = dataset_spec(cfg.dataset)
    if cfg.root is None:
        raise ConfigError(f"data.root: no dataset folder given for {spec.title}; pass --data-root DIR")
    return spec.load(cfg, splits, tuple(splits) if required is None else required, cfg.validate, progress)


def _load_luad(
    cfg: DataConfig, splits: Sequence[Split], required: Sequence[Split], open_files: bool, progress: bool
) -> dict[Split, list[PatchRecord]]:
    assert cfg.root is not None  # checked by load_splits
    return check_luad(cfg.root, splits=splits, required=required, open_files=open_files, progress=progress)


def _load_bcss(
    cfg: DataConfig, splits: Sequence[Split], required: Sequence[Split], open_files: bool, progress: bool
) -> dict[Split, list[PatchRecord]]:
    assert cfg.root is not None
    return check_bcss(cfg.root, splits=splits, required=required, open_files=open_files, progress=progress)


def _load_tiles(
    cfg: DataConfig, splits: Sequence[Split], required: Sequence[Split], open_files: bool, progress: bool
) -> dict[Split, list[PatchRecord]]:
    assert cfg.root is not None
    return check_tiles(
        cfg.root, cfg.labels_csv, splits=splits, open_files=open_files, verify=cfg.verify, progress=progress
    )


register_dataset(DatasetSpec("luad", "LUAD-HistoSeg", LUAD, LUAD_MPP, _load_luad))
register_dataset(DatasetSpec("bcss", "BCSS-WSSS", BCSS, None, _load_bcss))
# The tiles' resolution is whatever `histo-daen tile --mpp` used: model.input_mpp must be set to it by the user.
register_dataset(DatasetSpec("tiles", "tiled slides with a label CSV", LUAD, None, _load_tiles))
