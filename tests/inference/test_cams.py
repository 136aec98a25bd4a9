"""compute_cams with models whose output is known: exact inverse views, label masking, normalisation, dispatch."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from histo_daen.config.schema import InferenceConfig
from histo_daen.inference.cams import (
    InferenceView,
    cam_kind,
    compute_cams,
    compute_tile_scores,
    describe_cams,
    inference_views,
    label_views,
    normalise_cams,
    select_labels,
    subtract_classes,
    white_background_score,
)
from histo_daen.models.cam_net import CamNetOutput, ModelAbilities
from histo_daen.models.histosegnet import HistoSegNet
from histo_daen.models.registry import build_model

SINGLE_VIEW = InferenceConfig(scales=(1.0,), flip=False)


class PixelCams(nn.Module):
    """A 'model' whose raw CAMs are the image's RGB channels plus their mean, at full resolution (stride 1).

    Equivariant to flips and rotations, so every view's maps, once undone, equal the plain view's maps. The
    refined CAMs are 1 - raw, so the CAM source is visible; logits are fixed per class.
    """

    abilities = ModelAbilities(pcm=True)  # what CamNet declares: refined CAMs exist

    def __init__(self, logits: tuple[float, ...] = (2.0, -2.0, 1.0, -3.0)) -> None:
        super().__init__()
        self.register_buffer("fixed_logits", torch.tensor(logits))

    def forward(self, x: torch.Tensor) -> CamNetOutput:
        cams = torch.cat([x, x.mean(dim=1, keepdim=True)], dim=1)  # (B, 4, H, W)
        logits = self.fixed_logits.expand(x.shape[0], -1)
        return CamNetOutput(logits=logits, cams=cams, cams_refined=1.0 - cams)


def _images(batch: int = 2, shape_hw: tuple[int, int] = (24, 40)) -> torch.Tensor:
    return torch.rand(batch, 3, *shape_hw, generator=torch.Generator().manual_seed(0))


ALL_CLASSES = torch.ones(2, 4, dtype=torch.bool)


def test_default_views_are_seams_scales_with_flips() -> None:
    views = inference_views(InferenceConfig())
    assert len(views) == 8
    assert {v.scale for v in views} == {0.5, 1.0, 1.5, 2.0}
    assert len(inference_views(InferenceConfig(rotate=True))) == 32


@pytest.mark.parametrize("view", [InferenceView(flip=True), InferenceView(quarter_turns=1), InferenceView(True, 3)])
def test_flip_and_rotation_views_invert_exactly(view: InferenceView) -> None:
    images = _images()
    shown = view.apply(images)
    assert torch.equal(view.invert(shown, tuple(shown.shape[-2:]), (24, 40)), images)


def test_flip_and_rotation_views_average_to_the_plain_view_for_an_equivariant_model() -> None:
    images = _images()
    settings = dataclasses.replace(SINGLE_VIEW, label_source="dataset", cam_source="raw")
    plain = compute_cams(PixelCams(), images, settings=settings, image_labels=ALL_CLASSES)
    augmented = compute_cams(
        PixelCams(), images, settings=dataclasses.replace(settings, flip=True, rotate=True), image_labels=ALL_CLASSES
    )
    torch.testing.assert_close(augmented.cams, plain.cams, atol=1e-4, rtol=0)  # 1e-5: the normaliser's epsilon


def test_rescaled_views_come_back_at_input_resolution() -> None:
    ramp = torch.linspace(0, 1, 32)
    images = torch.stack([ramp[None, :].expand(32, 32), ramp[:, None].expand(32, 32), 1 - ramp[None, :].expand(32, 32)])
    images = images[None].expand(2, 3, 32, 32)  # smooth: resizing keeps it
    settings = InferenceConfig(scales=(0.5, 2.0), label_source="dataset", cam_source="raw")
    result = compute_cams(PixelCams(), images, settings=settings, image_labels=ALL_CLASSES)
    assert result.cams.shape == (2, 4, 32, 32)
    plain = compute_cams(
        PixelCams(), images, settings=dataclasses.replace(settings, scales=(1.0,)), image_labels=ALL_CLASSES
    )
    # Resizing a smooth image and its maps back loses little and moves nothing.
    assert (result.cams - plain.cams).abs().max() < 0.05


def test_cam_source_picks_refined_or_raw() -> None:
    images = _images()
    raw = compute_cams(PixelCams(), images, settings=dataclasses.replace(SINGLE_VIEW, cam_source="raw"))
    refined = compute_cams(PixelCams(), images, settings=SINGLE_VIEW)
    # Per-class min-max of 1 - x is 1 - (min-max of x) for used classes (TE and LYM are predicted).
    torch.testing.assert_close(refined.cams[:, 0], 1.0 - raw.cams[:, 0], atol=1e-4, rtol=0)


def test_predicted_labels_use_the_threshold_and_zero_the_other_classes() -> None:
    # sigmoid(2) = 0.88, sigmoid(-2) = 0.12, sigmoid(1) = 0.73, sigmoid(-3) = 0.05 -> TE and LYM at 0.25
    result = compute_cams(PixelCams(), _images(), settings=SINGLE_VIEW)
    assert result.label_source == "predicted"
    assert result.labels_used.tolist() == [[True, False, True, False]] * 2
    assert result.cams[:, 1].abs().max() == 0 and result.cams[:, 3].abs().max() == 0
    torch.testing.assert_close(result.probabilities[0], torch.sigmoid(torch.tensor([2.0, -2.0, 1.0, -3.0])))


class ViewDependentLogits(PixelCams):
    """Logits that change with the view, as average-pooled CAMs do: the answer of each label rule is known.

    TE is always present (logit 2), TAS never (-3). NEC's logit grows with the input width: -2 at the 32-px x1
    view (p 0.12), -3.5 / -0.5 / +1 at x0.5 / x1.5 / x2 (mean p over SEAM's views 0.31). LYM's logit is
    -2.2 x (left half brighter than right half): p 0.10 on a bright-left patch, 0.90 on its mirror (mean 0.5).
    Every forward records the input width.
    """

    def __init__(self) -> None:
        super().__init__()
        self.widths: list[int] = []

    def forward(self, x: torch.Tensor) -> CamNetOutput:
        self.widths.append(int(x.shape[-1]))
        half = x.shape[-1] // 2
        contrast = x[..., :half].mean(dim=(1, 2, 3)) - x[..., half:].mean(dim=(1, 2, 3))  # (B,)
        logits = torch.stack(
            [
                torch.full_like(contrast, 2.0),
                torch.full_like(contrast, -2.0 + 3.0 * (x.shape[-1] / 32 - 1)),
                -2.2 * contrast,
                torch.full_like(contrast, -3.0),
            ],
            dim=1,
        )
        cams = torch.cat([x, x.mean(dim=1, keepdim=True)], dim=1)
        return CamNetOutput(logits=logits, cams=cams, cams_refined=cams)


def _bright_left(width: int = 32) -> torch.Tensor:
    images = torch.zeros(1, 3, width, width)
    images[..., : width // 2] = 1.0
    return images


@pytest.mark.parametrize(
    ("label_views", "expected"),
    [
        ("x1", [True, False, False, False]),  # NEC at x1: 0.12; LYM unmirrored: 0.10
        ("x1_flip", [True, False, True, False]),  # LYM: mean of 0.10 and 0.90
        ("all", [True, True, True, False]),  # NEC: the mean over scales passes 0.25, LYM too (flips)
    ],
)
def test_label_views_decide_the_predicted_classes(label_views: str, expected: list[bool]) -> None:
    settings = InferenceConfig(label_views=label_views)  # SEAM's 8 CAM views
    result = compute_cams(ViewDependentLogits(), _bright_left(), settings=settings)
    assert result.labels_used[0].tolist() == expected


def test_label_views_missing_from_the_cam_views_run_once_for_the_labels() -> None:
    model = ViewDependentLogits()
    settings = InferenceConfig(scales=(0.5, 2.0), flip=False, label_views="x1")
    result = compute_cams(model, _bright_left(), settings=settings)
    assert model.widths == [16, 64, 32]  # the two CAM views, then x1 for the labels only
    assert result.labels_used[0].tolist() == [True, False, False, False]  # x1's labels, not the scales' mean
    torch.testing.assert_close(result.probabilities[0, 1], torch.sigmoid(torch.tensor(-2.0)))
    model.widths.clear()
    compute_cams(model, _bright_left(), settings=InferenceConfig(label_views="x1_flip"))
    assert model.widths == [16, 16, 32, 32, 48, 48, 64, 64]  # x1 and its mirror are CAM views: no extra pass


def test_x1_is_the_models_resolution_when_patches_are_rescaled() -> None:
    model = ViewDependentLogits()
    settings = InferenceConfig(scales=(1.0,), flip=False)
    result = compute_cams(model, _bright_left(16), settings=settings, input_scale=2.0)
    assert model.widths == [32]  # the 16-px patch is shown to the model at 32 px
    assert result.cams.shape[-1] == 16  # and its maps come back at the patch size
    assert result.labels_used[0].tolist() == [True, False, False, False]
    assert {v.scale for v in label_views(InferenceConfig(), input_scale=2.0)} == {2.0}


def test_describe_cams_says_which_views_chose_the_labels() -> None:
    described = describe_cams(InferenceConfig(), kind="refined")
    assert "exceeds 0.25 on the x1 view" in described["image_labels"]
    assert described["cams"].startswith("PCM-refined CAMs summed over 8 views (scales 0.5, 1, 1.5, 2")
    mlps = InferenceConfig(cam_source="raw", scales=(1.0,), flip=False, normalisation="global")
    mlps_cams = describe_cams(mlps, kind="raw")["cams"]
    assert "1 view" in mlps_cams and "all classes at once" in mlps_cams
    assert "every CAM view" in describe_cams(InferenceConfig(label_views="all"), kind="raw")["image_labels"]
    masks = describe_cams(InferenceConfig(label_source="masks"), kind="raw")["image_labels"]
    assert "ground-truth mask" in masks


def test_predicted_labels_keep_the_most_probable_class_when_none_passes() -> None:
    probabilities = torch.tensor([[0.1, 0.2, 0.05, 0.01], [0.9, 0.1, 0.3, 0.0]])
    chosen = select_labels(probabilities, settings=InferenceConfig())
    assert chosen.tolist() == [[False, True, False, False], [True, False, True, False]]


def test_dataset_labels_replace_the_predictions() -> None:
    labels = torch.tensor([[0, 1, 0, 1], [1, 0, 0, 0]])
    settings = dataclasses.replace(SINGLE_VIEW, label_source="masks")
    result = compute_cams(PixelCams(), _images(), settings=settings, image_labels=labels)
    assert result.label_source == "masks"
    assert result.labels_used.tolist() == [[False, True, False, True], [True, False, False, False]]
    assert result.cams[0, 0].max() == 0
    assert float(result.cams[0, 1].max()) == pytest.approx(1.0, abs=1e-4)


def test_label_sources_other_than_predicted_need_image_labels() -> None:
    with pytest.raises(ValueError, match="label_source='dataset' needs image_labels"):
        compute_cams(PixelCams(), _images(), settings=dataclasses.replace(SINGLE_VIEW, label_source="dataset"))


def test_per_class_normalisation_spans_zero_to_one_per_class() -> None:
    cams = torch.stack([torch.linspace(0, 2, 16), torch.linspace(0, 8, 16)]).reshape(1, 2, 4, 4)
    normalised = normalise_cams(cams, mode="per_class")
    assert normalised.amin(dim=(2, 3)).tolist() == [[0.0, 0.0]]
    torch.testing.assert_close(normalised.amax(dim=(2, 3)), torch.ones(1, 2), atol=1e-4, rtol=0)


def test_global_normalisation_keeps_the_ratio_between_classes() -> None:
    cams = torch.stack([torch.linspace(0, 2, 16), torch.linspace(0, 8, 16)]).reshape(1, 2, 4, 4)
    normalised = normalise_cams(cams, mode="global")
    torch.testing.assert_close(normalised.amax(dim=(2, 3)), torch.tensor([[0.25, 1.0]]), atol=1e-5, rtol=0)


def test_class_subtraction_keeps_only_the_margin_of_the_winner() -> None:
    maps = torch.tensor([0.9, 0.5, 0.2]).reshape(1, 3, 1, 1)
    torch.testing.assert_close(subtract_classes(maps).flatten(), torch.tensor([0.4, 0.0, 0.0]))
    tied = torch.tensor([0.6, 0.6, 0.1]).reshape(1, 3, 1, 1)
    assert subtract_classes(tied).max() == 0


def test_white_background_score_is_high_on_glass_only() -> None:
    images = torch.full((1, 3, 32, 32), 0.6)  # stained tissue, mean 153
    images[..., :, :16] = 1.0  # glass on the left half
    score = white_background_score(images)
    assert score.shape == (1, 1, 32, 32)
    assert score[0, 0, :, :8].min() == pytest.approx(0.75, abs=1e-3)
    assert score[0, 0, :, 24:].max() < 1e-6


def test_compute_cams_restores_the_training_flag_and_leaves_the_images_alone() -> None:
    model = PixelCams().train()
    images = _images()
    before = images.clone()
    compute_cams(model, images, settings=InferenceConfig())
    assert model.training
    assert torch.equal(images, before)


@pytest.fixture(scope="module")
def tiny_daen() -> nn.Module:
    torch.manual_seed(0)
    return build_model(variant="daen", backbone="resnet18", width=0.25)


@pytest.mark.slow
def test_real_network_batch_equals_single_images(tiny_daen: nn.Module) -> None:
    images = _images(shape_hw=(48, 48))
    settings = InferenceConfig(scales=(1.0, 1.5))
    batch = compute_cams(tiny_daen, images, settings=settings)
    singles = [compute_cams(tiny_daen, images[i : i + 1], settings=settings) for i in range(2)]
    assert batch.cams.shape == (2, 4, 48, 48) and batch.cams.dtype == torch.float32
    assert float(batch.cams.min()) >= 0.0 and float(batch.cams.max()) <= 1.0
    torch.testing.assert_close(batch.cams, torch.cat([s.cams for s in singles]), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(batch.probabilities, torch.cat([s.probabilities for s in singles]))


def test_histosegnet_is_dispatched_to_grad_cam_with_a_background_map() -> None:
    torch.manual_seed(0)
    model = build_model(variant="histosegnet", backbone="resnet18", width=0.25)
    assert isinstance(model, HistoSegNet)
    images = _images(shape_hw=(48, 48))
    images[0, :, :, :24] = 1.0  # glass on the left of image 0
    result = compute_cams(model, images, settings=InferenceConfig(scales=(1.0,), flip=False))
    assert result.background is not None and result.background.shape == (2, 1, 48, 48)
    assert result.background[0, 0, :, :16].min() > 0.0  # glass: the background map survives subtraction there
    winners = (torch.cat([result.cams, result.background], dim=1) > 0).sum(dim=1)
    assert winners.max() <= 1  # class subtraction: at most one positive map per pixel
    # Confidence scaling: no class map exceeds its class probability.
    assert (result.cams.amax(dim=(2, 3)) <= result.probabilities + 1e-6).all()


def test_grad_cam_of_a_dense_head_matches_the_analytic_gradient() -> None:
    torch.manual_seed(0)
    model = build_model(variant="histosegnet", backbone="resnet18", width=0.25).eval()
    images = _images(batch=1, shape_hw=(32, 32))
    logits, maps = model.grad_cams(images)
    activation = model.forward_features(images).conv6.detach()  # (1, C, h, w)
    pooled = activation.mean(dim=(2, 3))
    hidden_active = (model.fc_hidden(pooled) > 0).float()  # ReLU gate
    # d logit_c / d activation = (W_out[c] * gate) @ W_hidden / (h * w), the same at every pixel.
    gradient = (model.fc_out.weight * hidden_active) @ model.fc_hidden.weight  # (K, C)
    expected = F.relu(torch.einsum("kc,chw->khw", gradient, activation[0]))
    for c in range(4):
        if expected[c].max() > 0:
            torch.testing.assert_close(
                maps[0, c] / maps[0, c].max(), expected[c] / expected[c].max(), atol=1e-4, rtol=0
            )
    torch.testing.assert_close(logits, model(images).logits)


@pytest.mark.parametrize(
    ("variant", "cam_source", "expected"),
    [
        ("seam", "refined", "refined"),
        ("seam", "raw", "raw"),
        ("cam", "refined", "raw"),
        ("histosegnet", "raw", "grad-cam"),
    ],
)
def test_cam_kind_says_what_actually_runs(variant: str, cam_source: str, expected: str) -> None:
    model = build_model(variant=variant, backbone="resnet18", width=0.125)
    assert cam_kind(model, InferenceConfig(cam_source=cam_source)) == expected


def test_tile_scores_of_overlapping_tiles_agree_where_they_overlap() -> None:
    """What slides need: a pixel's score does not depend on the rest of its tile (compute_cams rescales per tile)."""
    image = _images(batch=1, shape_hw=(32, 48))
    left, right = image[..., :32], image[..., 16:]  # two tiles sharing columns 16-31
    for settings in (SINGLE_VIEW, dataclasses.replace(SINGLE_VIEW, cam_source="raw")):
        a = compute_tile_scores(PixelCams(), left, settings=settings).scores
        b = compute_tile_scores(PixelCams(), right, settings=settings).scores
        torch.testing.assert_close(a[..., 16:], b[..., :16])
    per_tile = [compute_cams(PixelCams(), tile, settings=SINGLE_VIEW).cams for tile in (left, right)]
    assert not torch.allclose(per_tile[0][..., 16:], per_tile[1][..., :16])  # min-max per tile: they disagree


def test_tile_scores_are_the_refined_cams_or_the_sigmoid_of_the_raw_ones() -> None:
    images = _images()
    refined = compute_tile_scores(PixelCams(), images, settings=SINGLE_VIEW)
    raw_cams = torch.cat([images, images.mean(dim=1, keepdim=True)], dim=1)
    torch.testing.assert_close(refined.scores, (1.0 - raw_cams).clamp(0.0, 1.0))
    raw = compute_tile_scores(PixelCams(), images, settings=dataclasses.replace(SINGLE_VIEW, cam_source="raw"))
    torch.testing.assert_close(raw.scores, torch.sigmoid(raw_cams))
    expected = torch.sigmoid(torch.tensor([2.0, -2.0, 1.0, -3.0])).expand(2, -1)
    torch.testing.assert_close(refined.probabilities, expected)  # every class kept: presence is decided later


def test_tile_scores_average_the_views() -> None:
    images = _images()
    flipped = compute_tile_scores(PixelCams(), images, settings=dataclasses.replace(SINGLE_VIEW, flip=True))
    single = compute_tile_scores(PixelCams(), images, settings=SINGLE_VIEW)
    torch.testing.assert_close(flipped.scores, single.scores)  # a pixel-wise model: every view agrees


def test_tile_scores_take_the_presence_probabilities_from_the_label_views() -> None:
    """Slides decide presence like evaluation decides labels: from the x1 view by default, not the mean of all."""
    settings = InferenceConfig()  # SEAM's 8 CAM views, labels from x1
    x1 = compute_tile_scores(ViewDependentLogits(), _bright_left(), settings=settings).probabilities
    cams = compute_cams(ViewDependentLogits(), _bright_left(), settings=settings).probabilities
    torch.testing.assert_close(x1, cams)
    torch.testing.assert_close(x1[0, 1], torch.sigmoid(torch.tensor(-2.0)))  # NEC at x1, not the scales' mean
    every = compute_tile_scores(ViewDependentLogits(), _bright_left(), settings=InferenceConfig(label_views="all"))
    assert float(every.probabilities[0, 1]) > 0.25  # the former rule lets NEC through


def test_tile_scores_refuse_histosegnet() -> None:
    model = build_model(variant="histosegnet", backbone="resnet18", width=0.25)
    with pytest.raises(ValueError, match="use compute_cams"):
        compute_tile_scores(model, _images(), settings=SINGLE_VIEW)
