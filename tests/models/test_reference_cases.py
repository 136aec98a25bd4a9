"""Small cases computed by hand that pin SEAM's CAM arithmetic (reference.md section 2.2) in our seam variant.

The full-size check against the SEAM and MLPS code themselves is in docs/reference-checkpoints.md (it needs the
reference repositories, which never enter this one); these cases keep the same behaviour from drifting.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from histo_daen.models import CamNet, build_model, load_model
from histo_daen.models.backbone import BackboneFeatures
from histo_daen.models.pcm import pcm_seed_cams
from histo_daen.models.weights import import_reference_checkpoint

EPS = 1e-5  # SEAM's epsilon in the CAM normalisation, the embedding normalisation and the affinity normaliser


def _seam(num_classes: int) -> CamNet:
    model = build_model(variant="seam", backbone="resnet38", width=0.0625, num_classes=num_classes)
    assert isinstance(model, CamNet)
    return model.eval()


def test_seed_background_is_one_minus_the_foreground_peak_and_winners_take_all() -> None:
    # Two foreground classes on a 3x3 map, both with peak 4, so each normalises as f(v) = (v - eps) / (4 + eps).
    c1 = [[2.0, 1.0, 0.0], [-1.0, 4.0, 2.0], [0.0, 3.0, 1.0]]
    c2 = [[2.0, 3.0, -3.0], [4.0, 0.0, 2.0], [0.0, 1.0, 0.0]]

    seed = pcm_seed_cams(torch.tensor([[c1, c2]]))  # (1, 3, 3, 3): background, class 1, class 2

    def f(v: float) -> float:
        return max(v - EPS, 0.0) / (4.0 + EPS)

    # By hand, pixel by pixel: ties (0,0) and (1,2) keep both values; elsewhere the loser becomes 0; negative
    # scores count as 0 and a pixel where both are 0 keeps both 0.
    expected_c1 = [[f(2), 0.0, 0.0], [0.0, f(4), f(2)], [0.0, f(3), f(1)]]
    expected_c2 = [[f(2), f(3), 0.0], [f(4), 0.0, f(2)], [0.0, 0.0, 0.0]]
    # Background from the normalised scores *before* winner-take-all: 1 - f(max(c1, c2)).
    expected_bg = [[1 - f(2), 1 - f(3), 1.0], [1 - f(4), 1 - f(4), 1 - f(2)], [1.0, 1 - f(3), 1 - f(1)]]
    torch.testing.assert_close(seed[0, 0], torch.tensor(expected_bg), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(seed[0, 1], torch.tensor(expected_c1), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(seed[0, 2], torch.tensor(expected_c2), rtol=1e-6, atol=1e-7)


def _hand_pcm(raw: list[list[float]], directions: list[tuple[float, float]]) -> tuple[list[float], list[float]]:
    """SEAM's PCM for one foreground class on a 3x3 map whose columns have unit embeddings ``directions``.

    Returns (background, class) refined scores in row-major pixel order, from the formulas of reference.md 2.2.
    """
    peak = max(max(row) for row in raw)
    fg = [max(v - EPS, 0.0) / (peak + EPS) for row in raw for v in row]
    seed = [[1.0 - v for v in fg], fg]  # one class: winner-take-all changes nothing
    scale = 1.0 / (1.0 + EPS)  # a unit vector divided by (norm + eps)
    embed = [tuple(scale * d for d in directions[p % 3]) for p in range(9)]
    affinity = [
        [max(sum(a * b for a, b in zip(embed[i], embed[j], strict=True)), 0.0) for j in range(9)] for i in range(9)
    ]
    column_sums = [sum(affinity[i][j] for i in range(9)) + EPS for j in range(9)]
    return tuple(  # type: ignore[return-value]
        [sum(channel[i] * affinity[i][j] / column_sums[j] for i in range(9)) for j in range(9)] for channel in seed
    )


def test_pcm_on_a_two_channel_3x3_example_computed_by_hand() -> None:
    # One class + the synthetic background. Embeddings by column: left (1, 0), middle at 60 degrees, right (-1, 0):
    # cos(left, middle) = 0.5, cos(left, right) = -1 and cos(middle, right) = -0.5 are clipped to 0 by the ReLU.
    directions = [(1.0, 0.0), (0.5, math.sqrt(3) / 2), (-1.0, 0.0)]
    raw = [[0.0, 3.0, 0.0], [2.0, 3.0, 1.0], [0.0, 1.0, 3.0]]
    model = _seam(num_classes=1)
    with torch.no_grad():
        model.f9.weight.zero_()
        model.f9.weight[0, 0] = 1.0  # embedding = the first two channels of the (already normalised) image
        model.f9.weight[1, 1] = 1.0
    image = torch.zeros(1, 3, 3, 3)
    for column, (x, y) in enumerate(directions):
        image[0, 0, :, column], image[0, 1, :, column] = x, y
    channels = model.backbone.feature_channels
    features = BackboneFeatures(  # conv4/conv5 = 0, so the PCM's f8_3/f8_4 embeddings are ReLU(0) = 0
        conv4=torch.zeros(1, channels["conv4"], 3, 3),
        conv5=torch.zeros(1, channels["conv5"], 3, 3),
        conv6_pre_relu=torch.zeros(1, channels["conv6"], 3, 3),
    )

    with torch.no_grad():
        refined = model.forward_pcm(image, features, torch.tensor([[raw]]))  # (1, 2, 3, 3)

    # Without the epsilons: seed columns sum to L, M, R; a pixel's score is (L + M/2)/4.5 in the left column,
    # (L/2 + M)/4.5 in the middle and R/3 on the right. Class: L, M, R = 2/3, 7/3, 4/3; background: 7/3, 2/3, 5/3.
    ideal_class = torch.tensor([11 / 27, 16 / 27, 4 / 9]).repeat(3, 1)
    ideal_background = torch.tensor([16 / 27, 11 / 27, 5 / 9]).repeat(3, 1)
    torch.testing.assert_close(refined[0, 1], ideal_class, rtol=0, atol=1e-4)
    torch.testing.assert_close(refined[0, 0], ideal_background, rtol=0, atol=1e-4)
    # With the epsilons, as the reference code computes it.
    background, cls = _hand_pcm(raw, directions)
    torch.testing.assert_close(refined[0, 0].flatten(), torch.tensor(background), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(refined[0, 1].flatten(), torch.tensor(cls), rtol=1e-6, atol=1e-7)


def test_imported_seam_checkpoint_discards_fc8_channel_0_and_keeps_class_order(tmp_path: Path) -> None:
    source = _seam(num_classes=2).state_dict()  # fc8: background, class A, class B
    changed_background = dict(source, **{"fc8.weight": source["fc8.weight"].clone()})
    changed_background["fc8.weight"][0] *= -7.0
    changed_class_a = dict(source, **{"fc8.weight": source["fc8.weight"].clone()})
    changed_class_a["fc8.weight"][1] *= -7.0
    outputs = {}
    for name, state in [("source", source), ("background", changed_background), ("class_a", changed_class_a)]:
        torch.save(state, tmp_path / f"{name}.pth")
        imported = import_reference_checkpoint(tmp_path / f"{name}.pth", tmp_path / f"{name}.pt", classes="A,B")
        with torch.no_grad():
            outputs[name] = load_model(imported.output).model(torch.rand(1, 3, 32, 32, generator=torch.Generator()))

    for field in ("logits", "cams", "cams_refined", "background_refined"):
        assert torch.equal(getattr(outputs["source"], field), getattr(outputs["background"], field)), field
    assert not torch.equal(outputs["source"].cams[:, 0], outputs["class_a"].cams[:, 0])  # class A = fc8 channel 1
    assert torch.equal(outputs["source"].cams[:, 1], outputs["class_a"].cams[:, 1])


@pytest.mark.parametrize("side", [224, 448])
def test_refinement_works_at_the_cam_size_of_a_patch_and_a_crop(side: int) -> None:
    # At 28 x 28 (224 patch) and 56 x 56 (448 crop) a seed that is constant per class stays constant: every column
    # of the affinity sums to 1 (up to the 1e-5 guard), so refined = seed.
    model = _seam(num_classes=2)
    cams_side = side // 8
    raw = torch.ones(1, 2, cams_side, cams_side)
    raw[:, 1] = 0.5  # class 1 loses everywhere: winner-take-all zeroes it
    channels = model.backbone.feature_channels
    features = BackboneFeatures(
        conv4=torch.rand(1, channels["conv4"], cams_side, cams_side),
        conv5=torch.rand(1, channels["conv5"], cams_side, cams_side),
        conv6_pre_relu=torch.zeros(1, channels["conv6"], cams_side, cams_side),
    )
    image = torch.rand(1, 3, side, side)

    with torch.no_grad():
        refined = model.forward_pcm(image, features, raw)

    f1 = (1 - EPS) / (1 + EPS)  # the normalised score of class 0, whose peak is its value everywhere
    torch.testing.assert_close(refined[0, 1], torch.full((cams_side, cams_side), f1), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(refined[0, 0], torch.full((cams_side, cams_side), 1 - f1), rtol=0, atol=1e-5)
    assert refined[0, 2].abs().max() == 0
