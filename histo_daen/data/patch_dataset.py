"""A torch ``Dataset`` over patch records: RGB in [0, 1], the patch label, and the mask when there is one.

Augmentation randomness is keyed, not streamed: item ``(epoch, index)`` draws from
``np.random.default_rng([seed, epoch, index])``. A patch therefore gets the same augmentation whatever the number
of loader workers or torchrun processes, and a resumed run can skip to the middle of an epoch and still see
exactly what the uninterrupted run saw.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from histo_daen.data.masks import read_mask
from histo_daen.data.patch_folder import PatchRecord, label_from_mask
from histo_daen.data.transforms import PatchAugment, resize_patch
from histo_daen.errors import DatasetError
from histo_daen.interrupts import interruptions_held

__all__ = ["PatchDataset", "loader_batches", "read_rgb"]


def read_rgb(path: str) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB (grey and RGBA are converted; alpha composited on white)."""
    try:
        with Image.open(path) as opened:
            image: Image.Image = opened
            if image.mode == "RGBA":
                white = Image.new("RGBA", image.size, (255, 255, 255, 255))
                image = Image.alpha_composite(white, image)
            return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    except (OSError, SyntaxError, ValueError) as err:
        raise DatasetError(path, f"cannot be read as an image ({err})", "Replace or remove the file.") from err


class PatchDataset(Dataset[dict[str, Any]]):
    """Patches of one split, ready for a CAM network.

    Items are dicts (collated by the default ``DataLoader`` collate):

    - ``"image"``: (3, H, W) float32 RGB in [0, 1] (the model normalises internally), H = W = patch side x scale.
    - ``"label"``: (K,) float32 0/1 patch label; from the file name, else (val/test) the classes in the mask.
    - ``"label_from_name"``: bool, whether ``"label"`` came from the file name.
    - ``"mask"``: (H, W) int64 dataset indices (K..: exclude), only when ``with_masks``.
    - ``"index"``: int, position in ``records``.

    Args:
        records: the split's patches (``histo_daen.data.registry.load_split``).
        n_classes: K, the foreground classes.
        augment: training augmentation, or None for evaluation.
        input_scale: resize factor applied last (SEAM's reference LUAD geometry: 2.0).
        seed: base of the keyed augmentation generator.
        with_masks: return masks (every record must have one).
    """

    def __init__(
        self,
        records: Sequence[PatchRecord],
        *,
        n_classes: int,
        augment: PatchAugment | None = None,
        input_scale: float = 1.0,
        seed: int = 0,
        with_masks: bool = False,
    ) -> None:
        self.records = list(records)
        self.n_classes = n_classes
        self.augment = augment
        self.input_scale = input_scale
        self.seed = seed
        self.with_masks = with_masks
        if with_masks and any(r.mask is None for r in self.records):
            raise ValueError("with_masks=True but some records have no mask (training patches have none)")

    def __len__(self) -> int:
        return len(self.records)

    def labels(self) -> np.ndarray:
        """(N, K) uint8 patch labels from the file names (records without one give zeros)."""
        rows = [r.label if r.label is not None else (0,) * self.n_classes for r in self.records]
        return np.asarray(rows, dtype=np.uint8).reshape(len(rows), self.n_classes)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        """Item ``index``, or ``(epoch, index)`` for keyed augmentation (the training sampler yields those)."""
        epoch, index = key if isinstance(key, tuple) else (0, key)
        record = self.records[index]
        image = read_rgb(str(record.image))
        mask = (
            read_mask(record.mask) if (record.mask is not None and (self.with_masks or record.label is None)) else None
        )
        label = record.label
        if label is None:
            if mask is None:
                raise DatasetError(record.image, "has no label in its name and no mask", "Use a labelled split.")
            label = label_from_mask(mask, self.n_classes)
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, epoch, index])
            image, mask = self.augment(image, mask, rng)
        image_t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)  # (3, H, W)
        mask_t = torch.from_numpy(mask.astype(np.int64)) if mask is not None else None
        image_t, mask_t = resize_patch(image_t, mask_t, self.input_scale)
        item: dict[str, Any] = {
            "image": image_t,
            "label": torch.tensor(label, dtype=torch.float32),
            "label_from_name": record.label is not None,
            "index": index,
        }
        if self.with_masks:
            assert mask_t is not None  # guaranteed by the constructor check
            item["mask"] = mask_t
        return item


@contextmanager
def loader_batches(loader: DataLoader[Any]) -> Iterator[Iterator[Any]]:
    """``with loader_batches(loader) as batches:``: ``iter(loader)``, its worker processes started and, when the
    block ends, shut down, both out of SIGTERM's reach (:func:`~histo_daen.interrupts.interruptions_held`).

    Left to the garbage collector, a loader's workers are shut down in a finaliser, where a SIGTERM's exception
    would be printed as "Exception ignored" and lost; here it is raised once they are gone.
    """
    with interruptions_held():
        batches = iter(loader)
    try:
        yield batches
    finally:
        with interruptions_held():
            # torch's own clean-up (what the finaliser would run); a loader without workers has none.
            shutdown = getattr(batches, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()
