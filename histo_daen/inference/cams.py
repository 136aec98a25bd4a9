"""Class activation maps for a batch of patches: test-time views, label masking, normalisation (reference.md §5).

One entry point, :func:`compute_cams`, for every model variant and every caller (patch evaluation, slide
streaming). It dispatches on the model, so callers never ask which method they hold:

- CAM networks (``cam``, ``seam``, ``daen``, ``cm``, ``sm``): the PCM-refined CAMs (``cam_source="refined"``, as
  SEAM/DAEN ``infer_SEAM.py``) or the raw fc8 CAMs (``"raw"``, as MLPS), summed over the test-time views, masked
  by the image-level labels, clamped at 0 and min-max normalised per class (SEAM) or over all classes at once
  (MLPS ``infer_fun``).
- HistoSegNet (:class:`histo_daen.models.histosegnet.HistoSegNet`, reference.md §7): Grad-CAM at the last
  activation, summed over the same views, each class divided by its maximum and multiplied by its confidence,
  then the white-background map and class subtraction. No dense CRF (see ``histosegnet.py``).

Test-time views are every combination of ``settings.scales`` (input resized by that factor), a left-right mirror
(``flip``) and 90-degree rotations (``rotate``). Each view's maps are upsampled to the view's own size, the mirror
and rotation are undone there (an exact pixel permutation), and the result is resized to the input size.

Image-level labels decide which classes may appear (``settings.label_source``): ``"predicted"`` thresholds the
classifier's probabilities (MLPS: 0.25; the only choice on unlabelled test patches and slides); ``"dataset"`` and
``"masks"`` use the ``image_labels`` the caller passes (patch labels from file names, or the classes present in
the ground-truth mask: optimistic, as TPRO does). The choice is returned in :attr:`CamResult.label_source`.

Predicted labels come from the views named by ``settings.label_views``, by default the x1 view alone (the patch at
the model's own resolution, no mirror), as MLPS decides them. Averaging the probabilities of every view instead
(``"all"``) lets the wrong classes through: the logits are average-pooled CAMs, and their size changes with the
input scale, so the 0.25 threshold means something else at x0.5 and at x2. Label views that are not CAM views (the
x1 view when ``scales`` lacks 1.0, the mirror when ``flip`` is off) cost one extra forward pass each.

``input_scale`` is the factor that brings a batch to the model's resolution (a model trained on patches resized by
``data.input_scale``): every view's scale is multiplied by it, so "x1" means the model's resolution, not the file's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms.v2.functional import gaussian_blur

from histo_daen.config.schema import InferenceConfig
from histo_daen.models.cam_net import CamNet, GradCamModel, MapKind

__all__ = [
    "CamResult",
    "CamSettings",
    "InferenceView",
    "TileScores",
    "cam_kind",
    "compute_cams",
    "compute_tile_scores",
    "describe_cams",
    "inference_views",
    "label_views",
    "normalise_cams",
    "select_labels",
    "subtract_classes",
    "white_background_score",
]

# The settings of compute_cams are the ``inference`` config section (defaults live once, in the schema).
CamSettings = InferenceConfig

# SEAM infer_SEAM.py: (s - min - 1e-5) / (max - min + 1e-5), values at or below the minimum set to 0.
_NORMALISATION_EPS = 1e-5


@dataclass(frozen=True)
class CamResult:
    """CAMs of a batch at input resolution, with the image-level labels that masked them.

    Attributes:
        cams: (B, K, H, W) float32 in [0, 1], input resolution, on the images' device; 0 for unused classes.
        probabilities: (B, K) float32 classifier probabilities (sigmoid of the logits), mean over the label views
            (``settings.label_views``; by default the x1 view alone).
        labels_used: (B, K) bool, the classes allowed to appear in each image.
        label_source: "predicted" | "dataset" | "masks", as in the settings.
        background: (B, 1, H, W) float32 in [0, 1], HistoSegNet's white-background map after class subtraction;
            ``None`` for CAM networks. :func:`histo_daen.inference.labels.cams_to_label_map` labels pixels where it
            wins as exclude.
    """

    cams: torch.Tensor
    probabilities: torch.Tensor
    labels_used: torch.Tensor
    label_source: str
    background: torch.Tensor | None = None


@dataclass(frozen=True)
class InferenceView:
    """One test-time view: resize by ``scale``, then mirror left-right if ``flip``, then rotate ``quarter_turns``."""

    scale: float = 1.0
    flip: bool = False
    quarter_turns: int = 0  # counter-clockwise, as torch.rot90

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, h, w) the view of the batch (h, w swapped by odd quarter turns)."""
        view = images
        if self.scale != 1.0:
            height, width = images.shape[-2:]
            shape_hw = (max(1, round(height * self.scale)), max(1, round(width * self.scale)))
            view = F.interpolate(view, size=shape_hw, mode="bilinear", align_corners=False, antialias=self.scale < 1)
        if self.flip:
            view = view.flip(-1)
        if self.quarter_turns:
            view = torch.rot90(view, self.quarter_turns, dims=(-2, -1))
        return view

    def invert(self, maps: torch.Tensor, view_shape_hw: tuple[int, int], shape_hw: tuple[int, int]) -> torch.Tensor:
        """Maps computed on the view, at any resolution, -> (B, C, *shape_hw) in the frame of the original batch.

        Args:
            maps: (B, C, h', w') float, any grid covering the view (e.g. stride-8 CAMs).
            view_shape_hw: the (height, width) of the view the maps were computed on.
            shape_hw: the (height, width) of the original batch.
        """
        restored = F.interpolate(maps, size=view_shape_hw, mode="bilinear", align_corners=False)
        if self.quarter_turns:
            restored = torch.rot90(restored, -self.quarter_turns, dims=(-2, -1))
        if self.flip:
            restored = restored.flip(-1)
        if tuple(restored.shape[-2:]) != tuple(shape_hw):
            shrinking = restored.shape[-2] > shape_hw[0]
            restored = F.interpolate(restored, size=shape_hw, mode="bilinear", align_corners=False, antialias=shrinking)
        return restored


def inference_views(settings: CamSettings, *, input_scale: float = 1.0) -> tuple[InferenceView, ...]:
    """Every combination of the settings' scales (times ``input_scale``), mirror and rotations (SEAM: 8 views)."""
    flips = (False, True) if settings.flip else (False,)
    turns = (0, 1, 2, 3) if settings.rotate else (0,)
    return tuple(
        InferenceView(scale=float(scale) * input_scale, flip=flip, quarter_turns=turn)
        for scale in settings.scales
        for flip in flips
        for turn in turns
    )


def label_views(settings: CamSettings, *, input_scale: float = 1.0) -> tuple[InferenceView, ...]:
    """The views whose probabilities decide the predicted classes (``settings.label_views``; module docstring).

    ``"x1"``: the batch at the model's resolution (``input_scale``), unmirrored; ``"x1_flip"``: that and its
    mirror; ``"all"``: every CAM view of :func:`inference_views`.
    """
    if settings.label_views == "all":
        return inference_views(settings, input_scale=input_scale)
    unit = InferenceView(scale=float(input_scale))
    if settings.label_views == "x1_flip":
        return (unit, InferenceView(scale=float(input_scale), flip=True))
    return (unit,)


def select_labels(
    probabilities: torch.Tensor, *, settings: CamSettings, image_labels: torch.Tensor | None = None
) -> torch.Tensor:
    """The classes allowed in each image, from the label source of the settings.

    Args:
        probabilities: (B, K) float classifier probabilities.
        settings: ``label_source`` and ``label_threshold``.
        image_labels: (B, K) bool or 0/1, required for the "dataset" and "masks" sources, ignored for "predicted".

    Returns:
        (B, K) bool. With "predicted", a class counts when its probability exceeds the threshold; an image with no
        class above it keeps its most probable class (every patch shows some tissue; MLPS would leave it empty and
        label it all TE by argmax over zeros).
    """
    if settings.label_source == "predicted":
        chosen = probabilities > settings.label_threshold
        best = F.one_hot(probabilities.argmax(dim=1), probabilities.shape[1]).bool()
        return torch.where(chosen.any(dim=1, keepdim=True), chosen, best)
    if image_labels is None:
        raise ValueError(f"label_source={settings.label_source!r} needs image_labels (B, K); none were given")
    if tuple(image_labels.shape) != tuple(probabilities.shape):
        raise ValueError(f"image_labels has shape {tuple(image_labels.shape)}, expected {tuple(probabilities.shape)}")
    return image_labels.to(device=probabilities.device).bool()


def normalise_cams(cams: torch.Tensor, *, mode: str) -> torch.Tensor:
    """Min-max normalise summed CAMs to [0, 1], per class (SEAM) or jointly over the classes (MLPS).

    Args:
        cams: (B, K, H, W) float, already clamped at 0.
        mode: "per_class": each (image, class) map on its own range; "global": one range per image.

    Returns:
        (B, K, H, W) float in [0, 1]; a constant map becomes 0.
    """
    if mode == "per_class":
        dims: tuple[int, ...] = (2, 3)
    elif mode == "global":
        dims = (1, 2, 3)
    else:
        raise ValueError(f"normalisation {mode!r} is not one of per_class, global")
    low = cams.amin(dim=dims, keepdim=True)
    high = cams.amax(dim=dims, keepdim=True)
    scaled = (cams - low - _NORMALISATION_EPS) / (high - low + _NORMALISATION_EPS)
    return scaled.clamp(0.0, 1.0)


def white_background_score(images: torch.Tensor) -> torch.Tensor:
    """HistoSegNet's white-background map (reference.md §7): 0.75 * sigmoid(4 * (mean RGB - 240)), blurred.

    Args:
        images: (B, 3, H, W) float RGB in [0, 1].

    Returns:
        (B, 1, H, W) float32 in [0, 0.75]: about 0.75 on glass brighter than 241/255, 0 on stained tissue. Gaussian
        blur with sigma 2 px. (HistoSegNet also subtracts the maps of background-like classes such as adipose;
        LUAD-HistoSeg has none.)
    """
    mean_rgb = images.float().mean(dim=1, keepdim=True) * 255.0  # (B, 1, H, W)
    score = 0.75 * torch.sigmoid(4.0 * (mean_rgb - 240.0))
    return gaussian_blur(score, kernel_size=[13, 13], sigma=[2.0, 2.0]).clamp(0.0, 1.0)  # 13 = 2 * ceil(3 sigma) + 1


def subtract_classes(maps: torch.Tensor) -> torch.Tensor:
    """HistoSegNet class subtraction: each map minus the maximum of the other maps, clipped to [0, 1].

    Args:
        maps: (B, C, H, W) float scores, C >= 2.

    Returns:
        (B, C, H, W) float: at each pixel at most the strongest map stays positive (by its margin over the next).
    """
    if maps.shape[1] < 2:
        return maps.clamp(0.0, 1.0)
    top2 = maps.topk(2, dim=1).values  # (B, 2, H, W)
    best, second = top2[:, :1], top2[:, 1:]
    others_max = torch.where(maps >= best, second, best)  # for the winner the runner-up, for the rest the winner
    return (maps - others_max).clamp(0.0, 1.0)


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Dropout off for inference, and the caller's training flag restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def cam_kind(model: CamNet, settings: CamSettings) -> MapKind:
    """Which maps :func:`compute_cams` computes for this model: "grad-cam", "refined" (PCM) or "raw" (fc8).

    Read from what the model declares (``model.abilities``): variants without a PCM give "raw" whatever
    ``settings.cam_source`` asks; outputs record this, not the wish.
    """
    if model.abilities.grad_cam:
        return "grad-cam"
    return "refined" if settings.cam_source == "refined" and model.abilities.pcm else "raw"


def _view_maps(model: CamNet, view: torch.Tensor, kind: MapKind) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits (B, K), maps (B, K, h, w)) of one view, of the ``kind`` :func:`cam_kind` chose."""
    if kind == "grad-cam":
        if not isinstance(model, GradCamModel):
            raise TypeError(f"{type(model).__name__} declares grad_cam but has no grad_cams(x)")
        with torch.enable_grad():
            logits, maps = model.grad_cams(view)
        return logits.detach(), maps.detach()
    with torch.no_grad():
        out = model(view)
    if kind == "refined" and out.cams_refined is not None:
        return out.logits, out.cams_refined
    return out.logits, out.cams


def compute_cams(
    model: CamNet,
    images: torch.Tensor,
    *,
    settings: CamSettings,
    image_labels: torch.Tensor | None = None,
    input_scale: float = 1.0,
) -> CamResult:
    """CAMs of a batch at input resolution, aggregated over test-time views and masked by image-level labels.

    Pure with respect to its inputs: the model's training flag is restored, the images are not changed, and the
    result lies on the images' device. Batches of any size (including 1) give the same per-image result, because
    the model runs in eval mode and every step below is per image.

    Args:
        model: a CAM network whose forward returns ``CamNetOutput`` (``logits``, ``cams``, ``cams_refined``), or a
            :class:`~histo_daen.models.histosegnet.HistoSegNet`; on the same device as ``images``.
        images: (B, 3, H, W) float32 RGB in [0, 1] (the model normalises internally).
        settings: the ``inference`` config section (views, CAM source, normalisation, label source and views).
        image_labels: (B, K) bool or 0/1, the allowed classes for label sources "dataset" and "masks".
        input_scale: factor from the images to the model's resolution; multiplies every view's scale.

    Returns:
        A :class:`CamResult`. Variants without a PCM use their raw CAMs whatever ``cam_source`` says.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
    if input_scale <= 0:
        raise ValueError(f"input_scale must be positive, got {input_scale}")
    kind = cam_kind(model, settings)
    cam_views = inference_views(settings, input_scale=input_scale)
    probability_views = label_views(settings, input_scale=input_scale)
    summed, probabilities = _run_views(model, images, kind, cam_views, probability_views)
    labels_used = select_labels(probabilities, settings=settings, image_labels=image_labels)
    label_mask = labels_used[:, :, None, None].to(summed.dtype)
    if model.abilities.grad_cam:
        cams, background = _histosegnet_maps(summed, probabilities, label_mask, images)
        return CamResult(cams, probabilities, labels_used, settings.label_source, background)
    cams = normalise_cams((summed * label_mask).clamp(min=0.0), mode=settings.normalisation)
    return CamResult(cams, probabilities, labels_used, settings.label_source)


def _run_views(
    model: CamNet,
    images: torch.Tensor,
    kind: MapKind,
    cam_views: tuple[InferenceView, ...],
    probability_views: tuple[InferenceView, ...],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each view run once: CAM views first, then label-only views, whatever each is used for.

    Returns:
        The CAM views' maps mapped back to the input grid and summed, (B, K, H, W) float32, and the label views'
        class probabilities averaged, (B, K).
    """
    shape_hw = (int(images.shape[-2]), int(images.shape[-1]))
    summed: torch.Tensor | None = None
    probability_sum: torch.Tensor | None = None
    with _eval_mode(model):
        for view in dict.fromkeys((*cam_views, *probability_views)):
            view_images = view.apply(images)
            logits, maps = _view_maps(model, view_images, kind)
            if view in cam_views:
                view_hw = (int(view_images.shape[-2]), int(view_images.shape[-1]))
                restored = view.invert(maps.float(), view_hw, shape_hw)  # (B, K, H, W)
                summed = restored if summed is None else summed + restored
            if view in probability_views:
                probabilities = torch.sigmoid(logits.float())
                probability_sum = probabilities if probability_sum is None else probability_sum + probabilities
    assert summed is not None and probability_sum is not None  # settings guarantee at least one view of each
    return summed, probability_sum / len(probability_views)


def _number(value: float) -> str:
    return f"{value:g}"


def describe_cams(settings: CamSettings, *, kind: str, input_scale: float = 1.0) -> dict[str, str]:
    """What :func:`compute_cams` does with these settings, in words, for ``metrics.json`` and map provenance.

    Args:
        settings: the ``inference`` section.
        kind: :func:`cam_kind` of the model ("grad-cam", "refined" or "raw").
        input_scale: as given to :func:`compute_cams`.

    Returns:
        ``{"image_labels": ..., "cams": ...}``: which classes may appear in a patch, and how its maps are made.
    """
    at = "the model's resolution" if input_scale == 1.0 else f"the patch resized x{_number(input_scale)}"
    if settings.label_source == "predicted":
        views = {
            "x1": f"the x1 view ({at}, unmirrored)",
            "x1_flip": f"the mean of the x1 view ({at}) and its mirror",
            "all": "the mean over every CAM view below",
        }[settings.label_views]
        labels = (
            f"classes whose classifier probability exceeds {_number(settings.label_threshold)} on {views}; "
            "the most probable class when none does"
        )
    elif settings.label_source == "dataset":
        labels = "the patch label in the file name"
    else:
        labels = "the classes present in the ground-truth mask (optimistic: the test labels are given)"
    n_views = len(inference_views(settings, input_scale=input_scale))
    scales = ", ".join(_number(s) for s in settings.scales)
    extras = [text for on, text in ((settings.flip, "mirrored"), (settings.rotate, "turned by 90, 180, 270")) if on]
    view_text = f"{n_views} view{'s' if n_views > 1 else ''} (scale{'s' if len(settings.scales) > 1 else ''} {scales}"
    view_text += f" x {at}" + (f", each also {' and '.join(extras)}" if extras else "") + ")"
    if kind == "grad-cam":
        cams = (
            f"HistoSegNet Grad-CAM summed over {view_text}, other classes zeroed, each class divided by its "
            "maximum and multiplied by its probability; white-background map; class subtraction"
        )
    else:
        source = "PCM-refined CAMs" if kind == "refined" else "raw CAMs (fc8)"
        norm = "per class" if settings.normalisation == "per_class" else "over all classes at once"
        cams = f"{source} summed over {view_text}, other classes zeroed, clamped at 0, min-max normalised {norm}"
    return {"image_labels": labels, "cams": cams}


def _histosegnet_maps(
    summed: torch.Tensor, probabilities: torch.Tensor, label_mask: torch.Tensor, images: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference.md §7 step 2-3: ReLU, divide by the max, times the confidence; white map; class subtraction."""
    grad_cams = summed.clamp(min=0.0) * label_mask
    grad_cams = grad_cams / (grad_cams.amax(dim=(2, 3), keepdim=True) + _NORMALISATION_EPS)
    grad_cams = grad_cams * probabilities[:, :, None, None]  # confidence scaling
    background = white_background_score(images)
    subtracted = subtract_classes(torch.cat([grad_cams, background], dim=1))
    return subtracted[:, :-1], subtracted[:, -1:]


@dataclass(frozen=True)
class TileScores:
    """Class scores of slide tiles that mean the same thing in every tile, for blending across tiles.

    Attributes:
        scores: (B, K, H, W) float32 in [0, 1] at input resolution: the PCM-refined CAMs as the network gives them
            (``cam_kind`` "refined"), or the sigmoid of the raw CAMs ("raw"), mean over the test-time views.
            Neither rescaled per tile nor masked by the tile's predicted classes.
        probabilities: (B, K) float32 classifier probabilities (sigmoid of the logits), mean over the label views
            (``settings.label_views``; by default the x1 view alone), as in :class:`CamResult`.
    """

    scores: torch.Tensor
    probabilities: torch.Tensor


def compute_tile_scores(model: CamNet, images: torch.Tensor, *, settings: CamSettings) -> TileScores:
    """Scores of a batch of slide tiles on one scale for every tile, so overlapping tiles can be blended first.

    :func:`compute_cams` rescales each patch's CAMs to its own [0, 1] range and zeroes the classes its classifier
    does not predict: right for a patch judged alone, but two tiles overlapping on the same tissue then disagree
    (a class weak in one tile is stretched to 1; a class predicted in one tile is cut in the next), and a slide map
    stitched from them shows the tile grid. Here nothing depends on the rest of the tile beyond what the network
    itself computes: refined CAMs are the PCM's output (the PCM normalises its seeds inside the network, as SEAM
    trained it), raw CAMs go through the sigmoid the classifier applies to its logits (a logit is the mean of its
    CAM over the tile, so this is the probability a tile like that pixel would get). The class probabilities go
    with them, for the slide's presence decision after blending.

    Args:
        model: a CAM network whose forward returns ``CamNetOutput`` (not HistoSegNet: its Grad-CAMs are scaled per
            image by design; use :func:`compute_cams`).
        images: (B, 3, H, W) float32 RGB in [0, 1].
        settings: views and ``cam_source``.

    Returns:
        A :class:`TileScores` on the images' device.
    """
    kind = cam_kind(model, settings)
    if kind == "grad-cam":
        raise ValueError(f"{type(model).__name__}'s Grad-CAMs are scaled per image; use compute_cams for it")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
    cam_views = inference_views(settings)
    probability_views = label_views(settings)
    summed, probabilities = _run_views(model, images, kind, cam_views, probability_views)
    mean = summed / len(cam_views)
    scores = mean.clamp(0.0, 1.0) if kind == "refined" else torch.sigmoid(mean)
    return TileScores(scores, probabilities)
