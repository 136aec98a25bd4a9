"""The H&E renderer: classes differ by structure as described, sizes are physical, windows join seamlessly."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import measure

from histo_daen.data.synthetic_tissue import (
    GLASS_INDEX,
    RegionLayout,
    TissueAppearance,
    TissueStyle,
    random_region_map,
    render_tissue,
)

TE, NEC, LYM, TAS = 0, 1, 2, 3
# No noise, blur or random stain variation: pixels can be unmixed back into stain densities exactly.
PLAIN = TissueStyle(noise=0, blur_um=0, stain_jitter=0, texture_scale_jitter=0, mixing=0, stain_drift=0)
_STAINS = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11]])
_STAINS /= np.linalg.norm(_STAINS, axis=1, keepdims=True)


def _stain_densities(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Beer-Lambert unmixing with the renderer's default stains and glass level: (haematoxylin, eosin)."""
    optical_density = -np.log(np.maximum(rgb.astype(float), 1.0) / 240.0)
    densities = optical_density.reshape(-1, 3) @ np.linalg.pinv(_STAINS)
    return densities[:, 0].reshape(rgb.shape[:2]), densities[:, 1].reshape(rgb.shape[:2])


def _class_facts(class_index: int, mpp: float) -> dict[str, float]:
    side = round(224 / mpp)
    rgb = render_tissue(np.full((side, side), class_index), mpp=mpp, rng=np.random.default_rng(1), style=PLAIN)
    haematoxylin, eosin = _stain_densities(rgb)
    nuclei = haematoxylin > 0.6
    blobs = [p for p in measure.regionprops(measure.label(nuclei)) if p.area * mpp * mpp >= 3]
    return {
        "haematoxylin": float(haematoxylin.mean()),
        "eosin": float(eosin.mean()),
        "nuclear_fraction": float(nuclei.mean()),
        "median_area_um2": float(np.median([p.area * mpp * mpp for p in blobs])),
        "median_elongation": float(np.median([p.axis_major_length / max(p.axis_minor_length, 1e-3) for p in blobs])),
    }


@pytest.fixture(scope="module")
def facts() -> dict[int, dict[str, float]]:
    return {class_index: _class_facts(class_index, 1.0) for class_index in (TE, NEC, LYM, TAS)}


def test_lymphocytes_are_the_darkest_and_most_crowded(facts: dict[int, dict[str, float]]) -> None:
    assert (
        facts[LYM]["haematoxylin"] > facts[TE]["haematoxylin"] > facts[NEC]["haematoxylin"] > facts[TAS]["haematoxylin"]
    )
    assert facts[LYM]["nuclear_fraction"] > 0.4
    assert facts[LYM]["eosin"] < 0.6 * min(facts[c]["eosin"] for c in (TE, NEC, TAS))  # scant cytoplasm


def test_tumour_nuclei_are_large_and_necrosis_holds_only_fragments(facts: dict[int, dict[str, float]]) -> None:
    assert facts[TE]["nuclear_fraction"] > 0.25
    assert facts[TE]["median_area_um2"] > 40  # large pleomorphic nuclei (radius about 4.4 um)
    assert facts[NEC]["median_area_um2"] < 8  # karyorrhectic dust
    assert facts[NEC]["nuclear_fraction"] < 0.1


def test_stroma_nuclei_are_sparse_and_spindle_shaped(facts: dict[int, dict[str, float]]) -> None:
    assert facts[TAS]["nuclear_fraction"] < 0.1
    assert facts[TAS]["median_elongation"] > 3.5
    assert facts[TE]["median_elongation"] < 2.2


@pytest.mark.parametrize("class_index", [TE, NEC, LYM, TAS])
def test_structure_sizes_are_physical_not_pixels(class_index: int, facts: dict[int, dict[str, float]]) -> None:
    at_half_micron = _class_facts(class_index, 0.5)
    assert at_half_micron["nuclear_fraction"] == pytest.approx(
        facts[class_index]["nuclear_fraction"], rel=0.15, abs=0.01
    )
    assert at_half_micron["haematoxylin"] == pytest.approx(facts[class_index]["haematoxylin"], rel=0.1, abs=0.01)


def test_glass_is_light_grey_with_faint_noise() -> None:
    rgb = render_tissue(np.full((64, 64), GLASS_INDEX), mpp=1.0, rng=np.random.default_rng(0))
    assert 230 <= rgb.mean() <= 250
    assert 1.0 < rgb.astype(float).std() < 6.0
    assert np.abs(rgb[..., 0].astype(int) - rgb[..., 2].astype(int)).mean() < 5  # grey


def test_same_generator_state_gives_the_same_pixels() -> None:
    labels = random_region_map((96, 96), mpp=1.0, mean_region_um=50, rng=np.random.default_rng(3))
    first = render_tissue(labels, mpp=1.0, rng=np.random.default_rng(4))
    assert np.array_equal(first, render_tissue(labels, mpp=1.0, rng=np.random.default_rng(4)))
    assert not np.array_equal(first, render_tissue(labels, mpp=1.0, rng=np.random.default_rng(5)))


def test_neighbouring_windows_agree_where_they_overlap() -> None:
    appearance = TissueAppearance(seed=9)
    style = TissueStyle(noise=0, blur_um=0)
    labels = RegionLayout(seed=2, mean_region_um=120).label_map((300, 600), mpp=0.5)
    whole = render_tissue(labels, mpp=0.5, rng=np.random.default_rng(0), style=style, appearance=appearance)
    right = render_tissue(
        labels[:, 250:], mpp=0.5, rng=np.random.default_rng(0), style=style, appearance=appearance, origin_um=(125.0, 0)
    )
    np.testing.assert_array_equal(whole[:, 250:], right)


def test_region_map_uses_the_requested_classes_in_irregular_regions() -> None:
    labels = random_region_map((400, 400), classes=(0, 2, 4), mean_region_um=80, mpp=1.0, rng=np.random.default_rng(1))
    assert set(np.unique(labels)) == {0, 2, 4}
    horizontal = (labels[:, 1:] != labels[:, :-1]).sum()
    vertical = (labels[1:] != labels[:-1]).sum()
    assert 0.6 < horizontal / vertical < 1.6  # borders run in every direction, not along one axis
    rows_with_a_border = (labels[:, 1:] != labels[:, :-1]).any(axis=1).mean()
    assert rows_with_a_border > 0.9


def test_region_size_follows_mean_region_um() -> None:
    def count(mean_um: float) -> int:
        labels = RegionLayout(seed=4, classes=(0, 1, 2, 3, 4), mean_region_um=mean_um).label_map((600, 600), mpp=1.0)
        return int(sum(measure.label(labels == c).max() for c in range(5)))

    assert 2.5 < count(60.0) / count(120.0) < 6.0  # half the diameter: about four times the regions


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="label_map must be a"):
        render_tissue(np.zeros((4, 4)), mpp=1.0, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="mixing must be in"):
        TissueStyle(mixing=2.0)


def test_the_renderer_numbers_classes_as_the_class_table() -> None:
    from histo_daen.classes import LUAD
    from histo_daen.data import synthetic_tissue

    codes = {synthetic_tissue.TE: "TE", synthetic_tissue.NEC: "NEC", synthetic_tissue.LYM: "LYM"}
    assert all(LUAD.classes[index].code == code for index, code in codes.items())
    assert LUAD.classes[synthetic_tissue.TAS].code == "TAS" and LUAD.exclude_index == synthetic_tissue.GLASS_INDEX


def test_one_interpolation_gives_the_same_values_on_a_grid_and_at_points() -> None:
    from histo_daen.data.synthetic_tissue import _bilinear

    rng = np.random.default_rng(0)
    table = rng.random((5, 6), dtype=np.float32)
    rows, cols = np.array([0, 1, 3]), np.array([0, 2, 4, 4])
    row_weight, col_weight = rng.random(3, dtype=np.float32), rng.random(4, dtype=np.float32)
    grid = _bilinear(table, rows, row_weight, cols, col_weight)
    r, c = np.meshgrid(rows, cols, indexing="ij")
    rw, cw = np.meshgrid(row_weight, col_weight, indexing="ij")
    assert np.array_equal(grid, _bilinear(table, r, rw, c, cw, points=True))  # bit for bit
    assert grid[0, 0] == pytest.approx(
        (1 - row_weight[0]) * ((1 - col_weight[0]) * table[0, 0] + col_weight[0] * table[0, 1])
        + row_weight[0] * ((1 - col_weight[0]) * table[1, 0] + col_weight[0] * table[1, 1])
    )
