"""H&E-like synthetic tissue for a class label map: the texture shared by synthetic slides and synthetic datasets.

Every structure is defined in micrometres and drawn procedurally from hashes of lattice coordinates, so

- a slide at 0.25 or 0.5 um/px read at 1 um/px looks like a patch rendered at 1 um/px (same physical sizes);
- any window of a slide renders the same wherever it is cut (``origin_um``): big slides are written band by band
  with no seams, and a patch is just a small window.

The four LUAD-HistoSeg classes differ in structure, not only colour, as a pathologist sees them:

- TE (tumour epithelium): acinar nests of crowded, large, pleomorphic, vesicular nuclei with nucleoli, pink
  cytoplasm and cell borders around pale lumens, thin stroma between nests;
- NEC (necrosis): pale, granular eosinophilic debris with scattered pyknotic/karyorrhectic nuclear dust, ghost cell
  outlines, few intact nuclei;
- LYM (lymphocytes): dense sheets of small, round, very dark nuclei with hardly any cytoplasm;
- TAS (tumour-associated stroma): wavy pink collagen fibres with sparse, elongated spindle nuclei along them.

Beside them, adipose tissue (index 5, :data:`ADIPOSE_INDEX`, not a LUAD class): large empty fat cells whose thin
pink membranes are all there is to see, the palest tissue on a slide. White glass (index 4, or any value outside
0..3 and 5) is the illumination level (about 240) with faint noise.
Colour comes from Beer-Lambert mixing of haematoxylin and eosin optical densities (Ruifrok & Johnston's stain
vectors), jittered per draw (:class:`TissueAppearance`) and varied smoothly in space (stain drift between regions).
:class:`TissueStyle` holds the difficulty knobs; a dataset generator tunes them, not this code.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from histo_daen.classes import LUAD

__all__ = [
    "ADIPOSE_INDEX",
    "GLASS_INDEX",
    "RENDER_PIXEL_BYTES",
    "RegionLayout",
    "TissueAppearance",
    "TissueStyle",
    "random_region_map",
    "render_tissue",
    "smooth_noise",
]

# Dataset class indices from the one class table (0 TE, 1 NEC, 2 LYM, 3 TAS); its exclude index is white glass.
TE, NEC, LYM, TAS = (LUAD.by_code(code).index for code in ("TE", "NEC", "LYM", "TAS"))
GLASS_INDEX = LUAD.exclude_index
# Fat: tissue, but none of the four classes (synthetic slides label it TAS, the stroma it lies in).
ADIPOSE_INDEX = 5

# Stain optical-density directions (R, G, B) from Ruifrok & Johnston (2001), the values scikit-image's rgb2hed uses.
_HAEMATOXYLIN_OD = (0.65, 0.70, 0.29)
_EOSIN_OD = (0.07, 0.99, 0.11)

_MASK32 = 0xFFFFFFFF

# Windows are drawn in square blocks of this many pixels (see render_tissue).
_BLOCK_PX = 256
# Peak memory per pixel of one render_tissue call (label map, float planes, output): 89-174 bytes measured on
# 512- and 256-px patches, rounded up. Callers estimate an allocation with it before rendering.
RENDER_PIXEL_BYTES = 192


# ----------------------------------------------------------------------------------------------------------------
# Knobs and random draws
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TissueStyle:
    """Difficulty knobs of the renderer, with defaults that look like 10x-20x H&E.

    Attributes:
        stain_jitter: relative spread of stain amounts and hues between draws (slides / patches), e.g. 0.15 = 15 %.
        stain_drift: relative spread of the smooth stain variation within one draw, over ``stain_drift_um``.
        stain_drift_um: length scale of that variation, micrometres.
        texture_scale_jitter: spread (log scale) of the size of every structure between draws.
        blur_um: Gaussian blur sigma in micrometres (focus, optics); 0 for none.
        noise: standard deviation of per-pixel noise, in 0-255 intensity units.
        mixing: how much foreign structure each class carries (lymphocytes in stroma and tumour, fibres among
            lymphocytes, intact cells in necrosis), 0 to 1; higher is harder to classify.
        glass_level: mean intensity of empty glass, 0-255.
    """

    stain_jitter: float = 0.15
    stain_drift: float = 0.12
    stain_drift_um: float = 250.0
    texture_scale_jitter: float = 0.12
    blur_um: float = 0.4
    noise: float = 3.0
    mixing: float = 0.15
    glass_level: float = 240.0

    def __post_init__(self) -> None:
        for name in ("stain_jitter", "stain_drift", "texture_scale_jitter", "blur_um", "noise", "mixing"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.mixing <= 1:
            raise ValueError(f"mixing must be in [0, 1], got {self.mixing}")
        if not 100 <= self.glass_level <= 255:
            raise ValueError(f"glass_level must be in [100, 255], got {self.glass_level}")
        if self.stain_drift_um <= 0:
            raise ValueError(f"stain_drift_um must be positive, got {self.stain_drift_um}")


@dataclass(frozen=True)
class TissueAppearance:
    """One random draw of the look of a slide (or patch): stains, structure size, and the texture seed.

    Keep one appearance for a whole slide (so its bands match) and draw a new one per patch for variety.

    Attributes:
        seed: 32-bit seed of every procedural structure (nuclei, glands, fibres).
        haematoxylin_od: (R, G, B) optical density of one unit of haematoxylin (unit vector).
        eosin_od: (R, G, B) optical density of one unit of eosin (unit vector).
        haematoxylin_amount: multiplier of all haematoxylin densities (1 = default staining).
        eosin_amount: multiplier of all eosin densities.
        texture_scale: multiplier of every structure size (1 = default sizes in micrometres).
        illumination: intensity of empty glass, 0-255.
    """

    seed: int
    haematoxylin_od: tuple[float, float, float] = _HAEMATOXYLIN_OD
    eosin_od: tuple[float, float, float] = _EOSIN_OD
    haematoxylin_amount: float = 1.0
    eosin_amount: float = 1.0
    texture_scale: float = 1.0
    illumination: float = 240.0

    @classmethod
    def draw(cls, rng: np.random.Generator, style: TissueStyle | None = None) -> TissueAppearance:
        """A random appearance around the defaults, spread by ``style``'s jitter knobs."""
        style = style or TissueStyle()
        jitter = style.stain_jitter

        def jittered_direction(base: tuple[float, float, float]) -> tuple[float, float, float]:
            vector = np.asarray(base) * np.exp(rng.normal(0.0, 0.5 * jitter, 3))
            vector /= np.linalg.norm(vector)
            return (float(vector[0]), float(vector[1]), float(vector[2]))

        return cls(
            seed=int(rng.integers(0, 2**32)),
            haematoxylin_od=jittered_direction(_HAEMATOXYLIN_OD),
            eosin_od=jittered_direction(_EOSIN_OD),
            haematoxylin_amount=float(np.exp(rng.normal(0.0, jitter))),
            eosin_amount=float(np.exp(rng.normal(0.0, jitter))),
            texture_scale=float(np.exp(rng.normal(0.0, style.texture_scale_jitter))),
            illumination=float(np.clip(style.glass_level + rng.normal(0.0, 3.0 * jitter / 0.15), 200.0, 252.0)),
        )


# ----------------------------------------------------------------------------------------------------------------
# Procedural noise from hashed lattice coordinates (window-independent, hence seamless)
# ----------------------------------------------------------------------------------------------------------------


def _mix_int(value: int) -> int:
    """lowbias32 (Chris Wellons' integer hash) on a Python int: for scalar keys, no numpy overflow warnings."""
    value &= _MASK32
    value ^= value >> 16
    value = (value * 0x7FEB352D) & _MASK32
    value ^= value >> 15
    value = (value * 0x846CA68B) & _MASK32
    value ^= value >> 16
    return value


def _mix_array(values: np.ndarray) -> np.ndarray:
    """lowbias32 on a uint32 array (wrapping multiplication is what the hash wants)."""
    values = values ^ (values >> np.uint32(16))
    values *= np.uint32(0x7FEB352D)
    values ^= values >> np.uint32(15)
    values *= np.uint32(0x846CA68B)
    values ^= values >> np.uint32(16)
    return values


def _key(seed: int, salt: int) -> int:
    return _mix_int(_mix_int(seed) ^ ((salt * 0x9E3779B9) & _MASK32))


def _lattice_uniform(ix: np.ndarray, iy: np.ndarray, key: int) -> np.ndarray:
    """Uniform [0, 1) float32 per integer lattice point; ``ix``/``iy`` broadcast (e.g. (1, nx) and (ny, 1))."""
    hx = _mix_array(ix.astype(np.uint32) ^ np.uint32(key))
    hashed = _mix_array(hx + iy.astype(np.uint32) * np.uint32(0x85EBCA77))
    return (hashed >> np.uint32(8)).astype(np.float32) * np.float32(1.0 / (1 << 24))


def _attribute_key(key: int, salt: int) -> int:
    return _mix_int(key ^ ((salt * 0x27D4EB2F) & _MASK32))


def _lattice_table(u0: int, v0: int, width: int, height: int, key: int) -> np.ndarray:
    """(height, width) float32 uniforms of lattice points u0..u0+width-1 by v0..v0+height-1."""
    us = np.arange(u0, u0 + width, dtype=np.int64)[None, :]
    vs = np.arange(v0, v0 + height, dtype=np.int64)[:, None]
    return _lattice_uniform(us, vs, key)


def _fade(t: np.ndarray) -> np.ndarray:
    return t * t * (3.0 - 2.0 * t)


def _lattice_cell(coords: np.ndarray, scale_um: float) -> tuple[np.ndarray, np.ndarray]:
    """Micrometres -> (lattice cell index as int64, smoothed position inside the cell in [0, 1])."""
    scaled = coords * np.float32(1.0 / scale_um)
    index = np.floor(scaled)
    return index.astype(np.int64), _fade(scaled - index)


def _bilinear(
    table: np.ndarray,
    rows: np.ndarray,
    row_weight: np.ndarray,
    cols: np.ndarray,
    col_weight: np.ndarray,
    *,
    points: bool = False,
) -> np.ndarray:
    """Bilinear interpolation of ``table`` between its entries [r, c], [r, c + 1], [r + 1, c] and [r + 1, c + 1].

    The one interpolation of the renderer (value noise and coarse fields). Two layouts of the same arithmetic:

    - a grid (default): ``table`` (..., R, C); ``rows``/``row_weight`` (h,), ``cols``/``col_weight`` (w,) ->
      (..., h, w), separable (along x on the table's rows first, then along y): a few whole-window operations;
    - ``points=True``: ``table`` (R, C); the four index/weight arrays of the points' shape -> that shape.

    Weights are in [0, 1] (linear, or smoothed by the caller); results are bit-identical between the layouts.
    """
    if not points:
        left = table[..., cols]
        along_x = left + (table[..., cols + 1] - left) * col_weight
        top = along_x[..., rows, :]
        return top + (along_x[..., rows + 1, :] - top) * row_weight[:, None]
    width = table.shape[1]
    flat = table.ravel()
    base = rows * width + cols
    top = flat[base]
    top += (flat[base + 1] - top) * col_weight
    bottom = flat[base + width]
    bottom += (flat[base + width + 1] - bottom) * col_weight
    return top + (bottom - top) * row_weight


def _grid_value_noise(xs: np.ndarray, ys: np.ndarray, scale_um: float, key: int) -> np.ndarray:
    """Smooth noise in [0, 1], features about ``scale_um`` across, on the grid ``ys`` x ``xs`` (micrometres).

    Separable: interpolates lattice rows along x first (a small array), then along y, so it costs a few
    whole-window operations whatever the scale.

    Returns:
        (len(ys), len(xs)) float32.
    """
    iu, su = _lattice_cell(xs, scale_um)
    iv, sv = _lattice_cell(ys, scale_um)
    u0, v0 = int(iu.min()), int(iv.min())
    table = _lattice_table(u0, v0, int(iu.max()) - u0 + 2, int(iv.max()) - v0 + 2, key)
    return _bilinear(table, iv - v0, sv, iu - u0, su)


def _point_value_noise(x: np.ndarray, y: np.ndarray, scale_um: float, key: int) -> np.ndarray:
    """:func:`_grid_value_noise` at arbitrary points (x, y) of equal shapes (e.g. rotated coordinates)."""
    iu, su = _lattice_cell(x, scale_um)
    iv, sv = _lattice_cell(y, scale_um)
    u0, v0 = int(iu.min()), int(iv.min())
    table = _lattice_table(u0, v0, int(iu.max()) - u0 + 2, int(iv.max()) - v0 + 2, key)
    return _bilinear(table, iv - v0, sv, iu - u0, su, points=True)


class _GridCells:
    """Worley (cellular) noise on a grid: the nearest jittered lattice point to each pixel, with its attributes.

    One point per lattice cell of side ``spacing_um``, displaced by up to ``jitter`` / 2 cell. ``search=3`` looks
    at the 3 x 3 neighbouring cells (exact); ``search=2`` at the 2 x 2 cells nearest the pixel (2.25x cheaper,
    exact within ``(1 - jitter) / 2 + 0.5`` cell of a point: enough to draw nuclei smaller than that).

    Masked numpy writes (``copyto(where=)``, ``where``) cost ten times plain arithmetic on random masks, so the
    nearest point is tracked by blending with 0/1 factors, and the eight per-point attributes come packed in one
    uint64 per cell (8 bits each) so a single gather serves all of them.
    """

    def __init__(
        self,
        xs: np.ndarray,
        ys: np.ndarray,
        spacing_um: float,
        key: int,
        *,
        jitter: float = 0.9,
        search: int = 2,
        second: bool = False,
    ) -> None:
        inv = np.float32(1.0 / spacing_um)
        # First cell of the search block: the pixel's cell minus 1 (3 x 3), or the cell left/above the nearest
        # cell corner (2 x 2).
        shift = np.float32(0.5) if search == 2 else np.float32(0.0)
        bu = np.floor(xs * inv - shift).astype(np.int64) - (1 if search == 3 else 0)
        bv = np.floor(ys * inv - shift).astype(np.int64) - (1 if search == 3 else 0)
        self.u0, self.v0 = int(bu.min()), int(bv.min())
        self.width = int(bu.max()) - self.u0 + search
        self.height = int(bv.max()) - self.v0 + search
        self.key = key
        spacing = np.float32(spacing_um)
        table_u = np.arange(self.u0, self.u0 + self.width, dtype=np.float32)[None, :]
        table_v = np.arange(self.v0, self.v0 + self.height, dtype=np.float32)[:, None]
        point_x = (table_u + 0.5 + jitter * (self._table(101) - 0.5)) * spacing  # (table h, table w) micrometres
        point_y = (table_v + 0.5 + jitter * (self._table(102) - 0.5)) * spacing
        cols0, rows0 = bu - self.u0, bv - self.v0
        shape = (ys.size, xs.size)
        best_d2 = np.full(shape, np.inf, dtype=np.float32)
        second_d2 = np.full(shape, np.inf, dtype=np.float32) if second else None
        best_x = np.zeros(shape, dtype=np.float32)
        best_y = np.zeros(shape, dtype=np.float32)
        best_index = np.zeros(shape, dtype=np.int32)
        for dv in range(search):
            rows = rows0 + dv
            px_rows, py_rows = point_x[rows], point_y[rows]  # (H, table w)
            index_rows = (rows * self.width).astype(np.int32)[:, None]
            for du in range(search):
                cols = cols0 + du
                px = px_rows[:, cols]
                py = py_rows[:, cols]
                dx = xs[None, :] - px
                dy = ys[:, None] - py
                d2 = dx * dx
                d2 += dy * dy
                closer = d2 < best_d2
                if second_d2 is not None:
                    # Nearer than the best: the old best becomes second; else maybe a new second.
                    np.minimum(second_d2, np.maximum(d2, best_d2), out=second_d2)
                np.minimum(best_d2, d2, out=best_d2)
                factor = closer.astype(np.float32)
                best_x += factor * (px - best_x)
                best_y += factor * (py - best_y)
                best_index += closer * ((index_rows + cols.astype(np.int32)[None, :]) - best_index)
        self.index = best_index
        self.dx = xs[None, :] - best_x  # pixel minus its nearest point, micrometres
        self.dy = ys[:, None] - best_y
        self.distance = np.sqrt(best_d2)
        self.second_distance = None if second_d2 is None else np.sqrt(second_d2)
        self._packed: np.ndarray | None = None

    def _table(self, salt: int) -> np.ndarray:
        return _lattice_table(self.u0, self.v0, self.width, self.height, _attribute_key(self.key, salt))

    def attribute(self, number: int) -> np.ndarray:
        """Attribute ``number`` (0-7) of each pixel's nearest point: float32 in (0, 1), 8-bit steps."""
        if not 0 <= number < 8:
            raise ValueError(f"attribute number must be in 0..7, got {number}")
        if self._packed is None:
            low = (self._table(103) * (1 << 24)).astype(np.uint64)
            high = (self._table(104) * (1 << 24)).astype(np.uint64)
            packed = (low | (high << np.uint64(24))).ravel()  # 48 random bits per cell
            extra = (self._table(105) * (1 << 16)).astype(np.uint64).ravel() << np.uint64(48)
            self._packed = np.take(packed | extra, self.index)
        byte = (self._packed >> np.uint64(8 * number)) & np.uint64(0xFF)
        return (byte.astype(np.float32) + np.float32(0.5)) * np.float32(1.0 / 256.0)


def _point_cells_attribute(
    x: np.ndarray, y: np.ndarray, spacing_um: float, key: int, salt: int, *, jitter: float
) -> tuple[np.ndarray, np.ndarray]:
    """Exact Worley at arbitrary points: (distance to the nearest point, that point's attribute ``salt``)."""
    inv = np.float32(1.0 / spacing_um)
    iu = np.floor(x * inv).astype(np.int64)
    iv = np.floor(y * inv).astype(np.int64)
    u0, v0 = int(iu.min()) - 1, int(iv.min()) - 1
    width, height = int(iu.max()) - u0 + 2, int(iv.max()) - v0 + 2
    spacing = np.float32(spacing_um)
    table_u = np.arange(u0, u0 + width, dtype=np.float32)[None, :]
    table_v = np.arange(v0, v0 + height, dtype=np.float32)[:, None]
    point_x = (
        (table_u + 0.5 + jitter * (_lattice_table(u0, v0, width, height, _attribute_key(key, 101)) - 0.5)) * spacing
    ).ravel()
    point_y = (
        (table_v + 0.5 + jitter * (_lattice_table(u0, v0, width, height, _attribute_key(key, 102)) - 0.5)) * spacing
    ).ravel()
    base = (iv - v0) * width + (iu - u0)
    best_d2 = np.full(x.shape, np.inf, dtype=np.float32)
    best_index = base.copy()
    for dv in (-1, 0, 1):
        for du in (-1, 0, 1):
            neighbour = base + (dv * width + du)
            dx = x - point_x[neighbour]
            dy = y - point_y[neighbour]
            d2 = dx * dx + dy * dy
            closer = d2 < best_d2
            np.copyto(best_d2, d2, where=closer)
            np.copyto(best_index, neighbour, where=closer)
    values = _lattice_table(u0, v0, width, height, _attribute_key(key, salt)).ravel()
    return np.sqrt(best_d2), values[best_index]


def smooth_noise(x_um: np.ndarray, y_um: np.ndarray, *, scale_um: float, seed: int) -> np.ndarray:
    """Smooth value noise in [0, 1] at points (x, y) in micrometres, features about ``scale_um`` across.

    A pure function of position and seed (any window of a plane agrees with any other), float32, shape of ``x_um``.
    """
    x = np.asarray(x_um, dtype=np.float32)
    y = np.asarray(y_um, dtype=np.float32)
    if x.size == 0:
        return np.zeros(x.shape, dtype=np.float32)
    return _point_value_noise(x.ravel(), y.ravel(), scale_um, _key(seed, 7)).reshape(x.shape)


def _smooth_step_edge(signed_um: np.ndarray, edge_um: float) -> np.ndarray:
    """Coverage in [0, 1] of a shape given the signed distance inside its border (micrometres, > 0 inside)."""
    return np.clip(signed_um * np.float32(1.0 / edge_um) + 0.5, 0.0, 1.0)


def _coarse_axis(coords: np.ndarray, step_um: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample points every ``step_um`` anchored at 0 (so every window agrees), and interpolation indices/weights."""
    position = coords * np.float32(1.0 / step_um)
    first = int(np.floor(position.min()))
    index = np.floor(position).astype(np.int64) - first
    weight = (position - np.floor(position)).astype(np.float32)
    samples = (np.arange(first, first + int(index.max()) + 2, dtype=np.float64) * step_um).astype(np.float32)
    return samples, index, weight


class _Window:
    """A rectangle of pixels being drawn: pixel centres in micrometres and the stain densities accumulated."""

    def __init__(self, xs: np.ndarray, ys: np.ndarray, seed: int, scale: float, edge_um: float, mixing: float) -> None:
        self.xs, self.ys = xs, ys
        self.seed, self.scale, self.edge_um, self.mixing = seed, scale, edge_um, mixing
        self.shape = (ys.size, xs.size)
        self.haematoxylin = np.zeros(self.shape, dtype=np.float32)
        self.eosin = np.zeros(self.shape, dtype=np.float32)
        self.pixel_um = float(xs[1] - xs[0]) if xs.size > 1 else edge_um

    def key(self, salt: int) -> int:
        return _key(self.seed, salt)

    def sub(self, rows: slice, cols: slice) -> _Window:
        """The same drawing on a rectangle of this window (fresh, empty densities)."""
        return _Window(self.xs[cols], self.ys[rows], self.seed, self.scale, self.edge_um, self.mixing)

    def where_present(self, amount: np.ndarray, draw: Callable[[_Window, np.ndarray], np.ndarray]) -> np.ndarray:
        """``draw(sub_window, amount_there)`` over the bounding box of ``amount > 0`` only, zero elsewhere.

        Optional structures (an infiltrate in one corner) then cost what they cover, and nothing when absent.
        """
        result = np.zeros(self.shape, dtype=np.float32)
        present = amount > 0
        rows = np.flatnonzero(present.any(axis=1))
        if rows.size == 0:
            return result
        cols = np.flatnonzero(present.any(axis=0))
        box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        result[box] = draw(self.sub(*box), amount[box])
        return result

    def noise(self, scale_um: float, salt: int, octaves: int = 1) -> np.ndarray:
        """Fractal value noise in about [0, 1]: octaves of half the size and half the weight."""
        total = np.zeros(self.shape, dtype=np.float32)
        weight, norm = 1.0, 0.0
        for octave in range(octaves):
            scale = scale_um * self.scale / 2**octave
            total += np.float32(weight) * _grid_value_noise(self.xs, self.ys, scale, _mix_int(self.key(salt) + octave))
            norm += weight
            weight *= 0.5
        return total * np.float32(1.0 / norm) if octaves > 1 else total

    def cells(
        self, spacing_um: float, salt: int, *, jitter: float = 0.9, search: int = 2, second: bool = False
    ) -> _GridCells:
        return _GridCells(
            self.xs, self.ys, spacing_um * self.scale, self.key(salt), jitter=jitter, search=search, second=second
        )

    def coarse(self, step_um: float, draw: Callable[[_Window], np.ndarray]) -> np.ndarray:
        """Evaluate smooth fields ``draw(sub_window) -> (..., h, w)`` every ``step_um``, interpolated to pixels.

        Smooth fields (gland shapes, fibre directions, stain drift) need not be computed per pixel; anchoring the
        samples at multiples of ``step_um`` keeps neighbouring windows identical along their common border.
        """
        step = max(step_um * self.scale, self.pixel_um)
        if step <= self.pixel_um * 1.5:
            return draw(self)
        sample_xs, col, col_w = _coarse_axis(self.xs, step)
        sample_ys, row, row_w = _coarse_axis(self.ys, step)
        coarse = draw(_Window(sample_xs, sample_ys, self.seed, self.scale, self.edge_um, self.mixing))
        return _bilinear(coarse, row, row_w, col, col_w)


def _nuclei(
    window: _Window,
    cells: _GridCells,
    *,
    radius_um: float,
    radius_spread: float,
    elongation: tuple[float, float],
    presence: float | np.ndarray,
    angle: np.ndarray | None = None,
    irregularity: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Elliptic nuclei at the cell points.

    Args:
        radius_um: median radius (of an area-equal disc), micrometres.
        radius_spread: log-uniform spread of radii (pleomorphism), e.g. 0.3 = x0.74..x1.35.
        elongation: range of long/short axis ratios.
        presence: probability a point carries a nucleus (scalar, or per pixel for clustered nuclei).
        angle: per-pixel long-axis angle (radians) to align with, else random per nucleus.
        irregularity: relative contour wobble.

    Returns:
        (coverage in [0, 1], distance from the centre relative to the radius: 0 centre, 1 rim), both (H, W).
    """
    radius = (radius_um * window.scale) * np.exp(radius_spread * (2.0 * cells.attribute(1) - 1.0))
    ratio = elongation[0] + (elongation[1] - elongation[0]) * cells.attribute(2)
    theta = cells.attribute(3) * np.float32(math.pi) if angle is None else angle
    cos, sin = np.cos(theta), np.sin(theta)
    along = cells.dx * cos + cells.dy * sin
    across = cells.dy * cos - cells.dx * sin
    root = np.sqrt(ratio)
    # Area-preserving ellipse: semi-axes radius * sqrt(ratio) and radius / sqrt(ratio).
    relative = np.sqrt((along / root) ** 2 + (across * root) ** 2) / radius
    if irregularity > 0:
        relative *= 1.0 + irregularity * (window.noise(1.5, 17) - 0.5)
    coverage = _smooth_step_edge((1.0 - relative) * radius, window.edge_um)
    coverage *= cells.attribute(4) < presence
    return coverage, relative


def _glands(window: _Window) -> tuple[np.ndarray, np.ndarray]:
    """Acinar nests: (signed distance inside the nest, signed distance inside its lumen), micrometres, (H, W)."""

    def draw(sub: _Window) -> np.ndarray:
        wobble = 10.0 * sub.scale * (sub.noise(30.0, 1) - 0.5)
        glands = _GridCells(sub.xs, sub.ys, 75.0 * sub.scale, sub.key(3), jitter=0.8, search=3)
        radius = (30.0 + 22.0 * glands.attribute(5)) * sub.scale
        lumen = radius * (0.15 + 0.3 * glands.attribute(7)) * (glands.attribute(6) < 0.7)
        return np.stack([radius - glands.distance + wobble, lumen - glands.distance + 0.5 * wobble])

    nest, lumen = window.coarse(3.0, draw)
    return nest, lumen


def _draw_te(window: _Window) -> None:
    """Acinar adenocarcinoma: nests/glands of crowded pleomorphic vesicular nuclei, pink cytoplasm, lumens."""
    nest_um, lumen_um = _glands(window)
    epithelium = _smooth_step_edge(nest_um, 2.0 * window.edge_um)
    lumen = _smooth_step_edge(lumen_um, window.edge_um)
    tumour = epithelium * (1.0 - lumen)
    stroma = 1.0 - epithelium

    cells = window.cells(9.5, 10, jitter=0.75, second=True)
    cytoplasm = 0.32 + 0.12 * window.noise(3.0, 11)
    border = _smooth_step_edge(0.6 * window.scale - (cells.second_distance - cells.distance), window.edge_um)
    coverage, relative = _nuclei(
        window, cells, radius_um=4.4, radius_spread=0.3, elongation=(1.0, 1.6), presence=0.93, irregularity=0.35
    )
    darkness = 0.75 + 0.55 * cells.attribute(0)
    chromatin = 0.55 + 0.7 * window.noise(0.9, 12)
    rim = np.exp(-(((1.0 - relative) * 5.0) ** 2))  # darker nuclear membrane: vesicular nuclei
    nucleolus = _smooth_step_edge(0.9 * window.scale - np.sqrt(cells.dx**2 + cells.dy**2), window.edge_um)
    nucleolus *= cells.attribute(5) < 0.5
    nuclear_h = coverage * (darkness * (chromatin + 0.6 * rim) + 0.9 * nucleolus)
    window.haematoxylin += tumour * (nuclear_h + 0.10)
    window.eosin += tumour * (cytoplasm * (1.0 - 0.6 * coverage) + 0.12 * border)
    # Thin fibrous stroma between nests, faint secretions in lumens.
    window.eosin += stroma * (0.30 + 0.25 * window.noise(4.0, 13, octaves=2)) + lumen * (0.06 * window.noise(6.0, 14))
    window.haematoxylin += stroma * 0.05
    if window.mixing > 0:
        infiltrate = np.clip(window.noise(50.0, 51) * 2.4 - 1.5, 0.0, 1.0) * window.mixing
        window.haematoxylin += window.where_present(infiltrate, lambda sub, there: _lymphocytes(sub, there, 52))


def _draw_nec(window: _Window) -> None:
    """Necrosis: pale granular eosinophilic debris, nuclear dust, ghost outlines, hardly any intact nuclei."""
    granular = window.noise(1.4, 21) * 0.6 + window.noise(5.0, 22) * 0.4
    window.eosin += 0.16 + 0.22 * granular + 0.10 * window.noise(25.0, 23)
    window.haematoxylin += 0.06 + 0.06 * window.noise(8.0, 24)  # a basophilic haze of dissolved chromatin
    ghosts = window.cells(11.0, 25, jitter=0.8, second=True)
    outline = _smooth_step_edge(0.8 * window.scale - (ghosts.second_distance - ghosts.distance), window.edge_um)
    window.eosin += 0.10 * outline * (ghosts.attribute(5) < 0.6)
    dust_cells = window.cells(5.0, 26)
    clustering = np.clip(window.noise(18.0, 27) * 1.6 - 0.35, 0.0, 1.0)
    dust, _ = _nuclei(
        window, dust_cells, radius_um=0.9, radius_spread=0.5, elongation=(1.0, 2.0), presence=0.55 * clustering
    )
    window.haematoxylin += dust * (1.2 + 0.8 * dust_cells.attribute(0))
    if window.mixing > 0:
        survivors = window.cells(14.0, 28)
        intact, _ = _nuclei(
            window, survivors, radius_um=3.2, radius_spread=0.2, elongation=(1.0, 1.4), presence=0.2 * window.mixing
        )
        window.haematoxylin += intact * 0.9


def _lymphocytes(window: _Window, presence: float | np.ndarray, salt: int) -> np.ndarray:
    cells = window.cells(7.0, salt, jitter=0.8)
    coverage, _ = _nuclei(window, cells, radius_um=3.0, radius_spread=0.12, elongation=(1.0, 1.15), presence=presence)
    return coverage * (1.45 + 0.5 * cells.attribute(0)) * (0.85 + 0.3 * window.noise(0.8, salt + 1))


def _fibres(window: _Window, salt: int) -> tuple[np.ndarray, np.ndarray]:
    """Wavy collagen in fascicles: (eosin density, fibre angle in radians), both (H, W).

    Each fascicle (a Worley cell about 90 um across) has its own direction; fibres are value noise stretched
    along it and crimped by a sine, drawn in the fascicle's own frame so directions never make fringes.
    """
    fascicles = window.cells(90.0, salt, jitter=0.5)
    angle = fascicles.attribute(5) * np.float32(math.pi)
    cos, sin = np.cos(angle), np.sin(angle)
    along = fascicles.dx * cos + fascicles.dy * sin
    across = fascicles.dy * cos - fascicles.dx * sin
    crimp = 2.0 * window.scale * np.sin(along * np.float32(2.0 * math.pi / (22.0 * window.scale)))
    stretch = np.float32(1.0 / 6.0)  # fibres six times longer than wide
    strands = _point_value_noise(along * stretch, across + crimp, 2.2 * window.scale, window.key(salt + 1))
    bundle = np.clip(window.noise(14.0, salt + 2) * 1.5 - 0.15, 0.0, 1.0)
    collagen = 0.16 + 0.62 * np.clip(strands * 1.6 - 0.45, 0.0, 1.0) * bundle + 0.10 * window.noise(2.5, salt + 3)
    return collagen, angle


def _draw_lym(window: _Window) -> None:
    """Lymphocytes: dense sheets of small, round, very dark nuclei, scant cytoplasm."""
    window.haematoxylin += _lymphocytes(window, 0.96, 31) + 0.12
    window.eosin += 0.12 + 0.08 * window.noise(4.0, 33)
    if window.mixing > 0:
        strands = np.clip(window.noise(40.0, 39) * 2.0 - 1.0, 0.0, 1.0) * window.mixing
        window.eosin += window.where_present(strands, lambda sub, there: there * _fibres(sub, 34)[0])


def _draw_tas(window: _Window) -> None:
    """Tumour-associated stroma: wavy pink collagen fibres, sparse spindle nuclei aligned with them."""
    collagen, angle = _fibres(window, 41)
    window.eosin += collagen
    window.haematoxylin += 0.03
    spindles = window.cells(20.0, 45, jitter=0.6)
    coverage, _ = _nuclei(
        window, spindles, radius_um=3.0, radius_spread=0.2, elongation=(4.0, 7.0), presence=0.45, angle=angle
    )
    window.haematoxylin += coverage * (0.85 + 0.45 * spindles.attribute(0))
    if window.mixing > 0:
        infiltrate = np.clip(window.noise(45.0, 46) * 2.2 - 1.2, 0.0, 1.0) * window.mixing
        window.haematoxylin += window.where_present(infiltrate, lambda sub, there: _lymphocytes(sub, there, 47))


def _draw_adipose(window: _Window) -> None:
    """Fat: polygonal cells 50-100 um across, empty (the lipid is dissolved in processing), outlined by thin pink
    membranes with a rare flattened nucleus pressed against them."""
    cells = window.cells(75.0, 61, jitter=0.7, search=3, second=True)
    # Half the gap between the two nearest cell points is the distance to the shared membrane.
    to_membrane = 0.5 * (cells.second_distance - cells.distance)
    membrane = _smooth_step_edge(0.8 * window.scale - to_membrane, window.edge_um)
    window.eosin += membrane * (0.45 + 0.2 * window.noise(20.0, 62)) + 0.01
    nuclei_cells = window.cells(40.0, 63, jitter=0.8)
    flattened, _ = _nuclei(window, nuclei_cells, radius_um=2.2, radius_spread=0.2, elongation=(3.0, 5.0), presence=0.25)
    window.haematoxylin += flattened * membrane * 1.1


_DRAWERS = {TE: _draw_te, NEC: _draw_nec, LYM: _draw_lym, TAS: _draw_tas, ADIPOSE_INDEX: _draw_adipose}


# ----------------------------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------------------------


def _pixel_centres_um(shape_hw: tuple[int, int], mpp: float, origin_um: tuple[float, float]) -> tuple[np.ndarray, ...]:
    height, width = shape_hw
    xs = (np.arange(width, dtype=np.float64) + 0.5) * mpp + origin_um[0]
    ys = (np.arange(height, dtype=np.float64) + 0.5) * mpp + origin_um[1]
    return xs.astype(np.float32), ys.astype(np.float32)


def render_tissue(
    label_map: np.ndarray,
    *,
    mpp: float,
    rng: np.random.Generator,
    style: TissueStyle | None = None,
    appearance: TissueAppearance | None = None,
    origin_um: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    """Draw H&E-like tissue for a class label map.

    Args:
        label_map: (h, w) integer dataset class indices: 0 TE, 1 NEC, 2 LYM, 3 TAS; 5 adipose; 4 (or any other
            value, e.g. -1) is white glass.
        mpp: microns per pixel of the output; every structure is sized in micrometres.
        rng: source of the per-pixel noise and, when ``appearance`` is None, of a fresh random appearance.
        style: difficulty knobs (defaults: :class:`TissueStyle`).
        appearance: the stains, structure scale and texture seed; pass the same one for every window of a slide.
        origin_um: (x, y) in micrometres of this window's top-left corner in the slide: windows of one slide
            rendered with the same appearance agree pixel for pixel where they overlap (before blur and noise).

    Returns:
        (h, w, 3) uint8 RGB.
    """
    labels = np.asarray(label_map)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"label_map must be a (h, w) integer array, got {labels.shape} {labels.dtype}")
    if not mpp > 0:
        raise ValueError(f"mpp must be positive, got {mpp}")
    style = style or TissueStyle()
    appearance = appearance or TissueAppearance.draw(rng, style)
    shape_hw = (labels.shape[0], labels.shape[1])
    xs, ys = _pixel_centres_um(shape_hw, mpp, origin_um)
    haematoxylin = np.zeros(shape_hw, dtype=np.float32)
    eosin = np.zeros(shape_hw, dtype=np.float32)
    edge_um = max(0.5, mpp)  # anti-aliasing: edges at least one pixel wide
    # Draw each class over its bounding box within blocks of the window: cost follows each class's area rather
    # than the window's, and every structure is a pointwise function of position, so blocks join seamlessly.
    for top in range(0, shape_hw[0], _BLOCK_PX):
        for left in range(0, shape_hw[1], _BLOCK_PX):
            block = np.s_[top : top + _BLOCK_PX, left : left + _BLOCK_PX]
            block_labels = labels[block]
            for class_index, draw in _DRAWERS.items():
                is_class = block_labels == class_index
                rows = np.flatnonzero(is_class.any(axis=1))
                if rows.size == 0:
                    continue
                cols = np.flatnonzero(is_class.any(axis=0))
                box = np.s_[top + rows[0] : top + rows[-1] + 1, left + cols[0] : left + cols[-1] + 1]
                window = _Window(
                    xs[box[1]], ys[box[0]], appearance.seed, appearance.texture_scale, edge_um, style.mixing
                )
                draw(window)
                inside = labels[box] == class_index
                haematoxylin[box] += window.haematoxylin * inside
                eosin[box] += window.eosin * inside
    _outline_fat(labels, eosin, mpp)
    _apply_stain_drift(haematoxylin, eosin, xs, ys, appearance, style)
    rgb = np.empty((*shape_hw, 3), dtype=np.float32)
    for channel in range(3):
        density = haematoxylin * np.float32(appearance.haematoxylin_od[channel])
        density += eosin * np.float32(appearance.eosin_od[channel])
        np.negative(density, out=density)
        np.exp(density, out=density)
        density *= np.float32(appearance.illumination)
        rgb[..., channel] = density
    rgb = _blur(rgb, style.blur_um / mpp)
    if style.noise > 0:
        # Uniform noise of the requested standard deviation: random bytes are ten times cheaper than normals.
        noise = np.frombuffer(rng.bytes(rgb.size), dtype=np.uint8).reshape(rgb.shape).astype(np.float32)
        rgb += (noise - np.float32(127.5)) * np.float32(style.noise * math.sqrt(12.0) / 256.0)
    rgb += np.float32(0.5)
    np.clip(rgb, 0, 255, out=rgb)
    return rgb.astype(np.uint8)


def _outline_fat(labels: np.ndarray, eosin: np.ndarray, mpp: float) -> None:
    """Where fat meets the glass, the outermost cells' membranes close it off: add one along that border."""
    adipose = labels == ADIPOSE_INDEX
    if not adipose.any():
        return
    glass = ~np.isin(labels, list(_DRAWERS))
    if not glass.any():
        return
    reach = max(1, round(1.6 / mpp))  # a membrane about 1.6 um thick, as inside the fat
    rim = adipose & ndimage.binary_dilation(glass, iterations=reach)
    eosin += rim.astype(np.float32) * np.float32(0.5)


def _blur(rgb: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian blur of an (h, w, 3) float32 image over its two spatial axes, edges extended."""
    if sigma_px < 0.25:
        return rgb
    radius = max(1, math.ceil(2.5 * sigma_px))  # taps beyond 2.5 sigma weigh under 4 % of the centre tap
    if radius > 3:
        return ndimage.gaussian_filter(rgb, sigma=(sigma_px, sigma_px, 0.0), mode="nearest", truncate=3.0)
    # Small kernels: shifted sums of slices beat scipy's general filter several times on patch-sized images.
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma_px) ** 2)
    taps = (taps / taps.sum()).astype(np.float32)
    height, width = rgb.shape[:2]
    padded = np.pad(rgb, ((radius, radius), (0, 0), (0, 0)), mode="edge")
    rows = padded[0:height] * taps[0]
    for offset in range(1, 2 * radius + 1):
        rows += padded[offset : offset + height] * taps[offset]
    padded = np.pad(rows, ((0, 0), (radius, radius), (0, 0)), mode="edge")
    out = padded[:, 0:width] * taps[0]
    for offset in range(1, 2 * radius + 1):
        out += padded[:, offset : offset + width] * taps[offset]
    return out


def _apply_stain_drift(
    haematoxylin: np.ndarray,
    eosin: np.ndarray,
    xs: np.ndarray,
    ys: np.ndarray,
    appearance: TissueAppearance,
    style: TissueStyle,
) -> None:
    """Scale stain densities (in place) by the appearance's amounts and a smooth spatial drift (uneven staining)."""
    h_scale = np.float32(appearance.haematoxylin_amount)
    e_scale = np.float32(appearance.eosin_amount)
    if style.stain_drift > 0:
        window = _Window(xs, ys, appearance.seed, 1.0, 1.0, 0.0)
        drift = window.coarse(
            style.stain_drift_um / 8.0,
            lambda sub: np.stack([sub.noise(style.stain_drift_um, 901), sub.noise(style.stain_drift_um, 902)]),
        )
        amplitude = np.float32(2.0 * style.stain_drift)
        haematoxylin *= h_scale * np.exp(amplitude * (drift[0] - 0.5))
        eosin *= e_scale * np.exp(amplitude * (drift[1] - 0.5))
    else:
        haematoxylin *= h_scale
        eosin *= e_scale


# ----------------------------------------------------------------------------------------------------------------
# Region layouts
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RegionLayout:
    """Smooth, irregular class regions: a Voronoi partition with warped, curved (never axis-aligned) borders.

    Evaluated at any window and resolution, so a slide's ground truth and its pixels agree everywhere.

    Attributes:
        seed: 32-bit seed of the partition.
        classes: class indices to draw regions from (4 = glass is allowed: patches with white background).
        mean_region_um: typical region diameter, micrometres.
        weights: relative frequency of each class (None: equal).
    """

    seed: int
    classes: tuple[int, ...] = (TE, NEC, LYM, TAS)
    mean_region_um: float = 250.0
    weights: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if not self.classes:
            raise ValueError("classes must not be empty")
        if self.mean_region_um <= 0:
            raise ValueError(f"mean_region_um must be positive, got {self.mean_region_um}")
        if self.weights is not None and (len(self.weights) != len(self.classes) or min(self.weights) < 0):
            raise ValueError("weights must be one non-negative number per class")

    def labels_at(self, x_um: np.ndarray, y_um: np.ndarray) -> np.ndarray:
        """Class index at points (x, y) in micrometres (any equal shapes): int64 array of that shape."""
        x = np.asarray(x_um, dtype=np.float32).ravel()
        y = np.asarray(y_um, dtype=np.float32).ravel()
        shape = np.shape(x_um)
        if x.size == 0:
            return np.zeros(shape, dtype=np.int64)
        scale = self.mean_region_um
        # Domain warp of two octaves bends the Voronoi borders into curves at two scales.
        warp_x = 0.7 * _point_value_noise(x, y, 0.8 * scale, _key(self.seed, 1))
        warp_x += 0.3 * _point_value_noise(x, y, 0.3 * scale, _key(self.seed, 11))
        warp_y = 0.7 * _point_value_noise(x, y, 0.8 * scale, _key(self.seed, 2))
        warp_y += 0.3 * _point_value_noise(x, y, 0.3 * scale, _key(self.seed, 12))
        amplitude = np.float32(0.5 * scale)
        _, choice = _point_cells_attribute(
            x + amplitude * (warp_x - 0.5), y + amplitude * (warp_y - 0.5), scale, _key(self.seed, 3), 4, jitter=1.0
        )
        weights = np.asarray(self.weights if self.weights is not None else [1.0] * len(self.classes), dtype=float)
        cumulative = np.cumsum(weights) / weights.sum()
        picked = np.searchsorted(cumulative.astype(np.float32), choice, side="right")
        picked = np.minimum(picked, len(self.classes) - 1)
        return np.asarray(self.classes, dtype=np.int64)[picked].reshape(shape)

    def label_map(
        self, shape_hw: tuple[int, int], *, mpp: float, origin_um: tuple[float, float] = (0.0, 0.0)
    ) -> np.ndarray:
        """(h, w) int64 class indices of a window whose pixels are ``mpp`` micrometres, top-left at ``origin_um``."""
        xs, ys = _pixel_centres_um(shape_hw, mpp, origin_um)
        grid_x, grid_y = np.meshgrid(xs, ys)
        return self.labels_at(grid_x, grid_y)


def random_region_map(
    shape_hw: tuple[int, int],
    *,
    classes: Sequence[int] = (TE, NEC, LYM, TAS),
    mean_region_um: float = 250.0,
    mpp: float,
    rng: np.random.Generator,
    weights: Sequence[float] | None = None,
) -> np.ndarray:
    """A random layout of smooth, irregular class regions.

    Args:
        shape_hw: (height, width) in pixels.
        classes: dataset class indices to use (include 4 for white glass).
        mean_region_um: typical region diameter in micrometres (e.g. 150 for several classes per 224-um patch).
        mpp: microns per pixel of the map.
        rng: source of the layout's seed.
        weights: relative frequency of each class.

    Returns:
        (h, w) int64 class indices.
    """
    layout = RegionLayout(
        seed=int(rng.integers(0, 2**32)),
        classes=tuple(int(c) for c in classes),
        mean_region_um=mean_region_um,
        weights=None if weights is None else tuple(float(w) for w in weights),
    )
    origin = (float(rng.uniform(0, 1e5)), float(rng.uniform(0, 1e5)))  # a fresh part of the plane per call
    return layout.label_map(shape_hw, mpp=mpp, origin_um=origin)
