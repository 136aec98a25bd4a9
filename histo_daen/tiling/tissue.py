"""Tissue or glass: a boolean mask from a low-resolution picture of the slide. Pure: arrays in, arrays out.

Everything on a slide that stops light is either stained tissue or something else: marker ink, dust, the edge of an
air bubble, debris. Colour alone cannot tell them apart at thumbnail scale (dense haematoxylin is nearly black,
anthracotic pigment *is* black and is tissue, ink over tissue takes the tissue's colour), so here colour proposes
and shape decides:

1. **Evidence**: a pixel is coloured (chroma, max - min of RGB, at least ``min_chroma`` of the glass brightness:
   pale eosin stroma is nearly as bright as glass but still pink) or dark in every channel (pigment, ink, dust).
2. **Marks**: pixels whose colour no H&E stain has (neutral grey/black, the hues of blue or green marker, or a
   saturated red) are grouped into connected pieces. A piece is a mark, not tissue, if it is a *stroke* (long and
   thin: a pen line or circle, a bubble edge) or lies on glass (a blob whose surroundings are mostly glass). A
   compact dark piece inside tissue (pigment, a lymphoid aggregate that looks almost black) stays tissue, however
   dark. Red is as red as blood in a congested vessel, so a red stroke is a mark only where it reaches the glass.
3. **Pieces and holes**: pieces smaller than ``min_object_um2`` are dust (a sliver cut off by a stroke counts with
   the section the stroke crosses); fat, whose empty cells are white even at 8 um/px, is found as the faint
   lattice of membranes that closes cells off; holes up to ``max_hole_um2`` (lumens, fat cells) are tissue.
4. **Borders**: a border pixel is tissue when it absorbs at least 40 % as much light as the tissue beside it, so
   the mask follows partly covered pixels (leaning to keep them) and does not grow by a pixel all round.

Units: the thumbnail is ``thumbnail_mpp`` microns per pixel; areas and lengths are given in micrometres.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["pen_mask", "tissue_mask"]

# Below this many glass brightness units of chroma a pixel is grey: glass, dust, black ink (JPEG noise on glass
# reaches about 0.03 at thumbnail scale).
_MIN_CHROMA = 0.05
# Dark in every channel (1 - brightest channel / glass): evidence of something on the glass, tissue or not.
_MIN_DARKNESS = 0.2
# Pixel colours that no H&E stain gives (see _mark_colours).
_NEUTRAL_RATIO = 0.68  # smallest / largest optical density at least this: grey or black
_NEUTRAL_DARKNESS = 0.3  # ... and this dark (paler grey is glass or dust, judged by size)
_NEAR_BLACK = 0.8  # darker than this in every channel: ink, pigment or overlapping strokes, whatever the hue
# Shape of a mark.
_STROKE_ELONGATION = 3.0  # area / (pi * (largest inscribed radius)^2): 1 for a disc, 4R/w for a ring
_STROKE_MIN_UM = 250.0  # a stroke at least this long (area / width)
_RING_PX = 3  # the surroundings of a piece: pixels within this distance
_GLASS_BLOB = 0.6  # a candidate piece whose surroundings are at least this much glass lies on the glass
_DUST_ON_GLASS = 0.3  # ... or this much, for a grey one smaller than the dust limit (a speck beside the tissue)
_SPECK_ON_GLASS = 0.9  # ... and this much for a small coloured one
_RED_ON_GLASS = 0.02  # a red stroke is ink only if this much of its surroundings is glass
_SLIVER_MIN_PX = 8  # tissue cut off by a stroke counts with its section if at least this big
# Fat: membrane pixels are faintly coloured, the cells they close off at least this big.
_FAINT_CHROMA = 0.025
_FAT_CELL_MIN_UM2 = 770.0  # 12 pixels at 8 um/px: a cell about 30 um across
# A border pixel stays tissue if it absorbs this share of what the tissue within 2 pixels absorbs (0.5 would be the
# unbiased cut for a pixel half covered; measured on the synthetic cases, 0.4 keeps 0.1 % more tissue for 0.1 % less
# precision).
_BORDER_SHARE = 0.4


@dataclass(frozen=True)
class _Colours:
    """Per-pixel colour measures of an (h, w, 3) thumbnail, each (h, w) float32 (``density`` (h, w, 3)).

    Attributes:
        chroma: (max - min of RGB) / glass brightness; 0 on grey.
        darkness: 1 - (brightest channel / glass brightness); 0 on glass, 1 on black.
        absorbance: sum over channels of (glass - pixel) / glass: linear in the share of the pixel covered.
        density: optical density per channel, -ln(pixel / glass), clipped at 0.
        saturation: HSV saturation in [0, 1].
        blue_hue: HSV hue in 195-245 degrees (marker blue; haematoxylin's violet is 250-290).
        red_hue: hue in 335-20 degrees (red marker, blood; eosin's pink is about 290-335).
        stain_hue: hue in 250-20 degrees, through violet, pink and red: the hues of H&E.
    """

    chroma: np.ndarray
    darkness: np.ndarray
    absorbance: np.ndarray
    density: np.ndarray
    saturation: np.ndarray
    blue_hue: np.ndarray
    red_hue: np.ndarray
    stain_hue: np.ndarray


def _measure(thumbnail: np.ndarray) -> _Colours:
    planes = [thumbnail[..., channel] for channel in range(3)]
    # Glass brightness per channel: the bright end of the picture (clipped so a dark, tissue-filled picture still
    # has a sensible reference). A strided sample is plenty for a percentile and keeps big thumbnails cheap.
    step = max(1, int(np.sqrt(planes[0].size / 250_000)))
    glass = [float(np.clip(np.percentile(plane[::step, ::step], 99.0), 150.0, 255.0)) for plane in planes]
    reference = np.float32(max(glass))
    # Per-channel quantities of a uint8 value are table look-ups: no logarithm per pixel.
    values = np.arange(256, dtype=np.float32)
    absorbance = np.zeros(planes[0].shape, dtype=np.float32)
    density = np.empty((*planes[0].shape, 3), dtype=np.float32)
    for channel, (plane, level) in enumerate(zip(planes, glass, strict=True)):
        absorbance += ((np.float32(level) - values) / np.float32(level))[plane]
        density[..., channel] = np.maximum(-np.log((values + 1.0) / np.float32(level + 1.0)), 0.0)[plane]
    red, green, blue = planes
    brightest = np.maximum(np.maximum(red, green), blue)
    spread = (brightest - np.minimum(np.minimum(red, green), blue)).astype(np.float32)
    brightest_f = brightest.astype(np.float32)
    safe = np.maximum(spread, np.float32(1e-6))
    # Hue bands without computing hue: with blue brightest, hue = 240 + 60 (R - G) / spread; with red brightest,
    # hue = 60 (G - B) / spread (mod 360).
    blue_top = blue == brightest
    red_top = (red == brightest) & ~blue_top
    toward_red = (red.astype(np.float32) - green) / safe  # where blue is brightest
    toward_yellow = (green.astype(np.float32) - blue) / safe  # where red is brightest
    return _Colours(
        chroma=spread / reference,
        darkness=1.0 - brightest_f / reference,
        absorbance=absorbance,
        density=density,
        saturation=spread / np.maximum(brightest_f, np.float32(1.0)),
        blue_hue=blue_top & (toward_red >= -45.0 / 60.0) & (toward_red <= 5.0 / 60.0),
        red_hue=red_top & (toward_yellow >= -25.0 / 60.0) & (toward_yellow <= 20.0 / 60.0),
        stain_hue=(blue_top & (toward_red >= 10.0 / 60.0)) | (red_top & (toward_yellow <= 20.0 / 60.0)),
    )


_EIGHT = np.ones((3, 3), dtype=bool)


# Morphology with the 3 x 3 cross (the disc of radius 1) by shifted slices: several times faster than scipy's
# general binary morphology on big thumbnails. Outside the picture counts as background.


def _grow(mask: np.ndarray) -> np.ndarray:
    """Dilation by the cross: ``mask`` and its four neighbours."""
    grown = mask.copy()
    grown[1:] |= mask[:-1]
    grown[:-1] |= mask[1:]
    grown[:, 1:] |= mask[:, :-1]
    grown[:, :-1] |= mask[:, 1:]
    return grown


def _shrink(mask: np.ndarray) -> np.ndarray:
    """Erosion by the cross: pixels whose four neighbours are all in ``mask`` (the picture's edge is not)."""
    shrunk = mask.copy()
    shrunk[1:] &= mask[:-1]
    shrunk[:-1] &= mask[1:]
    shrunk[:, 1:] &= mask[:, :-1]
    shrunk[:, :-1] &= mask[:, 1:]
    shrunk[0] = shrunk[-1] = False
    shrunk[:, 0] = shrunk[:, -1] = False
    return shrunk


def _close(mask: np.ndarray) -> np.ndarray:
    """``mask`` with one-pixel gaps closed (closing by the cross), never smaller than ``mask``."""
    return _shrink(_grow(mask)) | mask


def _mark_colours(colours: _Colours) -> tuple[np.ndarray, np.ndarray]:
    """(non-H&E, red): pixels whose colour could be a mark. Both (h, w) bool.

    Haematoxylin absorbs red and green about equally and blue least; eosin absorbs green. So a pixel absorbing red
    clearly more than green (blue or green marker), absorbing all channels alike while dark (black ink, pigment,
    bubble edges), or being saturated blue of a hue bluer than haematoxylin's violet is not H&E. Nor is a near-black
    pixel: whatever its hue, only ink, pigment or overlapping strokes get that dark at thumbnail scale. Red is kept
    apart: blood in a vessel is as red as red marker.
    """
    density = colours.density
    red_od, green_od, blue_od = density[..., 0], density[..., 1], density[..., 2]
    strongest = np.maximum(np.maximum(red_od, green_od), blue_od)
    weakest = np.minimum(np.minimum(red_od, green_od), blue_od)
    neutral = (weakest >= _NEUTRAL_RATIO * strongest) & (colours.darkness >= _NEUTRAL_DARKNESS)
    near_black = colours.darkness >= _NEAR_BLACK
    blue_or_green = (red_od > 1.2 * green_od) & (strongest >= 0.4)
    marker_blue = colours.blue_hue & (colours.saturation >= 0.5) & (colours.chroma >= 0.25)
    red = colours.red_hue & (colours.saturation >= 0.55) & (colours.chroma >= 0.2)
    return neutral | near_black | blue_or_green | marker_blue, red


def _marks_among(
    candidates: np.ndarray,
    evidence: np.ndarray,
    colours: _Colours,
    thumbnail_mpp: float,
    dust_pixels: int,
    *,
    red: bool,
) -> np.ndarray:
    """The candidate pieces that are marks: strokes, and (not for red) blobs lying on glass. (h, w) bool.

    ``dust_pixels``: grey pieces smaller than this lie on the glass already when a third of their surroundings is
    glass (dust beside the tissue); coloured ones only when the glass nearly surrounds them (a dark, coloured speck
    on the tissue's edge is its own darkest pixels).
    """
    closed = _close(candidates)
    labels, count = ndimage.label(closed, structure=_EIGHT)
    if count == 0:
        return np.zeros(candidates.shape, dtype=bool)
    areas = np.bincount(labels.ravel(), minlength=count + 1)
    # The surroundings of each piece (a ring a few pixels wide) and how much of it is glass.
    nearest = ndimage.maximum_filter(labels, size=2 * _RING_PX + 1)  # a square ring: separable, cheap
    ring = (labels == 0) & (nearest > 0)
    ring_pixels = np.bincount(nearest[ring], minlength=count + 1)
    ring_glass = np.bincount(nearest[ring & ~evidence], minlength=count + 1)
    glass_share = ring_glass / np.maximum(ring_pixels, 1)
    chroma = np.bincount(labels.ravel(), weights=colours.chroma.ravel(), minlength=count + 1) / np.maximum(areas, 1)
    small = areas < dust_pixels
    grey = chroma < _MIN_CHROMA
    # Grey specks beside the tissue are dust; a small coloured piece on the tissue's edge is its own darkest
    # pixels (dense haematoxylin), off the glass unless the glass nearly surrounds it.
    share_needed = np.where(small, np.where(grey, _DUST_ON_GLASS, _SPECK_ON_GLASS), _GLASS_BLOB)
    on_glass = glass_share >= share_needed
    is_mark = np.zeros(count + 1, dtype=bool)
    min_stroke_px = _STROKE_MIN_UM / thumbnail_mpp
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None or (areas[index] < min_stroke_px and (red or not on_glass[index])):
            continue
        piece = np.pad(labels[box] == index, 1)
        radius = float(ndimage.distance_transform_edt(piece).max())
        elongation = areas[index] / (np.pi * radius * radius)
        length_px = areas[index] / (2.0 * radius)
        stroke = elongation >= _STROKE_ELONGATION and length_px >= min_stroke_px
        if red:
            is_mark[index] = stroke and glass_share[index] >= _RED_ON_GLASS
        else:
            is_mark[index] = stroke or bool(on_glass[index])
    return is_mark[labels]


def _find_marks(colours: _Colours, evidence: np.ndarray, thumbnail_mpp: float, dust_pixels: int) -> np.ndarray:
    """Marker ink, bubble edges and debris on glass, with the blended rim of each: (h, w) bool."""
    non_he, red = _mark_colours(colours)
    marks = _marks_among(non_he, evidence, colours, thumbnail_mpp, dust_pixels, red=False)
    red_marks = _marks_among(red, evidence, colours, thumbnail_mpp, dust_pixels, red=True)
    # The rim of a stroke is paler but still ink (and JPEG bleeds its colour a pixel out): one pixel more, except
    # where that pixel is clearly stained tissue beside the stroke. Red's rim looks like eosin: it goes regardless.
    stained = colours.stain_hue & (colours.chroma >= _MIN_CHROMA) & ~non_he & ~red
    return marks | (_grow(marks) & ~stained) | _grow(red_marks)


def _pieces_at_least(mask: np.ndarray, min_pixels: int, *, joined_by: np.ndarray) -> np.ndarray:
    """``mask`` without pieces of fewer than ``min_pixels`` pixels. A piece joined to others through ``joined_by``
    (marks lying over tissue) counts with them, if it is a sliver of real size: a few pixels left beside a
    stroke are its rim, not tissue."""
    own, count = ndimage.label(mask)
    if count == 0:
        return mask
    own_sizes = np.bincount(own.ravel(), minlength=count + 1)
    joined, joined_count = ndimage.label(mask | joined_by)
    joined_sizes = np.bincount(joined[mask], minlength=joined_count + 1)
    # Each piece lies within one joined component: map piece -> component through any of its pixels.
    component = np.zeros(count + 1, dtype=np.int64)
    component[own[mask]] = joined[mask]
    via = joined_sizes[component]
    keep = (own_sizes >= min_pixels) | ((via >= min_pixels) & (own_sizes >= min(min_pixels, _SLIVER_MIN_PX)))
    keep[0] = False
    return keep[own]


def _enclosed(mask: np.ndarray, min_pixels: int, max_pixels: int, *, open_to: np.ndarray) -> np.ndarray:
    """Holes of ``mask``: pieces of the rest, of ``min_pixels`` to ``max_pixels``, touching neither the picture's
    border nor ``open_to`` (a glass pocket between a stroke and the tissue is no hole). (h, w) bool."""
    labels, count = ndimage.label(~mask)
    if count == 0:
        return np.zeros(mask.shape, dtype=bool)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    hole = (sizes >= min_pixels) & (sizes <= max_pixels)
    hole[0] = False
    hole[np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])] = False
    hole[labels[open_to]] = False
    return hole[labels]


def _with_fat(tissue: np.ndarray, colours: _Colours, marks: np.ndarray, cell_pixels: int, max_hole: int) -> np.ndarray:
    """Add fat: faint lines (membranes) that, with the tissue, close off cells; the cells and the lines are tissue.

    Faint colour alone is no evidence (JPEG rims and glass noise reach it); lines that enclose cells are.
    """
    faint = (colours.chroma >= _FAINT_CHROMA) & ~tissue & ~marks
    if not faint.any():
        return tissue
    faint = _close(faint) & ~tissue & ~marks
    cells = _enclosed(tissue | faint, cell_pixels, max_hole, open_to=marks)
    if not cells.any():
        return tissue
    lines, count = ndimage.label(faint)
    membrane = np.zeros(count + 1, dtype=bool)
    membrane[lines[_grow(cells) & faint]] = True
    membrane[0] = False
    return tissue | cells | membrane[lines]


def _follow_borders(mask: np.ndarray, absorbance: np.ndarray) -> np.ndarray:
    """Drop border pixels that absorb less than ``_BORDER_SHARE`` of what the tissue within 2 pixels absorbs."""
    inner = _shrink(mask)
    weight = ndimage.uniform_filter(inner.astype(np.float32), 5)
    beside = ndimage.uniform_filter(absorbance * inner, 5) / np.maximum(weight, np.float32(1e-6))
    border = mask & ~inner & (weight > 0)
    return mask & ~(border & (absorbance < _BORDER_SHARE * beside))


def pen_mask(thumbnail: np.ndarray, *, thumbnail_mpp: float = 8.0, min_object_um2: float = 20_000.0) -> np.ndarray:
    """Where a thumbnail shows marks that are not tissue: marker ink strokes and circles (blue, green, black, and
    red ones that reach the glass), air-bubble edges, and dark or ink-coloured blobs lying on glass.

    Args:
        thumbnail: (h, w, 3) uint8 RGB.
        thumbnail_mpp: microns per pixel of the thumbnail (strokes must be 250 um long).
        min_object_um2: the dust limit of :func:`tissue_mask` (dark specks this small beside tissue are dust).

    Returns:
        (h, w) bool, True on marks (and the blended rim around them).
    """
    _check(thumbnail, thumbnail_mpp)
    colours = _measure(thumbnail)
    evidence = (colours.chroma >= _MIN_CHROMA) | (colours.darkness >= _MIN_DARKNESS)
    return _find_marks(colours, evidence, thumbnail_mpp, _pixels(min_object_um2, thumbnail_mpp))


def _pixels(area_um2: float, thumbnail_mpp: float) -> int:
    """Whole thumbnail pixels in an area, at least 1."""
    return max(1, round(area_um2 / (thumbnail_mpp * thumbnail_mpp)))


def _check(thumbnail: np.ndarray, thumbnail_mpp: float) -> None:
    if thumbnail.ndim != 3 or thumbnail.shape[2] != 3 or thumbnail.dtype != np.uint8:
        raise ValueError(f"expected an (h, w, 3) uint8 thumbnail, got {thumbnail.shape} {thumbnail.dtype}")
    if not thumbnail_mpp > 0:
        raise ValueError(f"thumbnail_mpp must be positive, got {thumbnail_mpp}")


def tissue_mask(
    thumbnail: np.ndarray,
    *,
    thumbnail_mpp: float = 8.0,
    min_chroma: float = _MIN_CHROMA,
    min_object_um2: float = 20_000.0,
    max_hole_um2: float = 40_000.0,
    remove_marks: bool = True,
) -> np.ndarray:
    """Tell tissue from glass and marks on a low-resolution picture of a slide (see the module docstring).

    Args:
        thumbnail: (h, w, 3) uint8 RGB, transparent pixels composited on white (what ``Slide`` returns).
        thumbnail_mpp: microns per pixel of the thumbnail, to size pieces, holes, strokes and fat cells.
        min_chroma: (max - min of RGB) / glass brightness above which a pixel counts as stained. Glass is about
            0.00-0.03 (JPEG noise); pale eosin stroma about 0.08-0.2.
        min_object_um2: pieces smaller than this (square micrometres) are dust, not tissue (default: a 160-um disc).
        max_hole_um2: holes smaller than this inside tissue are filled (default: a 225-um disc).
        remove_marks: drop marker ink, bubble edges and debris on glass (see :func:`pen_mask`).

    Returns:
        (h, w) bool, True on tissue. An all-False mask is a valid answer; callers decide if it is an error.
    """
    _check(thumbnail, thumbnail_mpp)
    colours = _measure(thumbnail)
    evidence = (colours.chroma >= min_chroma) | (colours.darkness >= _MIN_DARKNESS)
    dust_pixels = _pixels(min_object_um2, thumbnail_mpp)
    marks = _find_marks(colours, evidence, thumbnail_mpp, dust_pixels) if remove_marks else np.zeros_like(evidence)
    mask = evidence & ~marks
    # Close one-pixel gaps (nuclei-poor seams between regions) before judging sizes.
    mask = _close(mask) & ~marks
    mask = _pieces_at_least(mask, dust_pixels, joined_by=marks & evidence)
    max_hole = round(max_hole_um2 / (thumbnail_mpp * thumbnail_mpp))
    mask = _with_fat(mask, colours, marks, _pixels(_FAT_CELL_MIN_UM2, thumbnail_mpp), max_hole)
    if max_hole > 0:
        mask |= _enclosed(mask, 1, max_hole, open_to=marks)
    return _follow_borders(mask, colours.absorbance)
