"""Where there is stained tissue, not glass: the one tissue rule, at two scales.

* Slide mask: Otsu on the saturation of a ~8 µm/px overview (H&E is saturated, glass and dust
  are not), excluding near-black pen/shadow pixels, then morphological clean-up. The mask is
  small (a 100k² slide gives ~6k² at most) and editable as a napari Labels layer.
* Per tile: the fraction of stained pixels of a tile as read for the model; a tile that passed
  the mask but is mostly glass at full resolution is background and never reaches the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from .slide import Slide

#: Resolution of the tissue mask in µm/px; coarse enough to be instant, fine enough for tiles.
TISSUE_MPP = 8.0
#: Used when the slide has no µm/px: the mask's level-0 px per mask px.
FALLBACK_DOWNSAMPLE = 16.0
#: Eosin-stained stroma has HSV saturation ≳ 0.2; glass, dust and blur stay below ~0.08.
MAX_SATURATION_THRESHOLD = 0.15
#: A tile with less than this fraction of stained pixels is background (glass).
DEFAULT_MIN_TILE_TISSUE = 0.05
#: Per-tile rule: a pixel is stained when (max − min) of its RGB exceeds this share of its max.
TILE_SATURATION_MIN = 0.08


@dataclass
class TissueMask:
    """A boolean mask where mask pixel (r, c) covers level-0 px [c·d, (c+1)·d) × [r·d, (r+1)·d).

    ``origin`` (rows, cols) says which mask px ``mask[0, 0]`` is when only a window of a huge
    slide was detected; outside the window there is no tissue.
    """

    mask: np.ndarray
    downsample: float
    origin: tuple[int, int] = (0, 0)
    #: Mask px whose pixels could not be decoded (None: all were readable); planned as if tissue,
    #: so the engine tries them and reports them failed instead of dropping them silently.
    unreadable: np.ndarray | None = None
    #: Mask px of file tiles a bounded overview did not decode (a huge single-level slide);
    #: planned as if tissue like ``unreadable``, the engine's per-tile rule then drops glass.
    unsampled: np.ndarray | None = None

    def window(self, rows: slice, cols: slice, with_unreadable: bool = False) -> np.ndarray:
        """A copy of mask px ``rows`` × ``cols`` (global indices); False outside what is stored."""
        out = np.zeros((rows.stop - rows.start, cols.stop - cols.start), dtype=bool)
        r0, c0 = self.origin
        h, w = self.mask.shape
        sr0, sr1 = max(rows.start, r0), min(rows.stop, r0 + h)
        sc0, sc1 = max(cols.start, c0), min(cols.stop, c0 + w)
        if sr1 > sr0 and sc1 > sc0:
            src = self.mask[sr0 - r0 : sr1 - r0, sc0 - c0 : sc1 - c0]
            for extra in (self.unreadable, self.unsampled) if with_unreadable else ():
                if extra is not None:
                    src = src | extra[sr0 - r0 : sr1 - r0, sc0 - c0 : sc1 - c0]
            out[sr0 - rows.start : sr1 - rows.start, sc0 - cols.start : sc1 - cols.start] = src
        return out

    def unreadable_mm2(self, mpp: float) -> float:
        """Area of the slide that could not be decoded, in mm² (0 when all was readable)."""
        if self.unreadable is None:
            return 0.0
        return float(self.unreadable.sum()) * (self.downsample * mpp) ** 2 / 1e6

    @property
    def shape(self) -> tuple[int, int]:
        return self.mask.shape

    @property
    def fraction(self) -> float:
        return float(self.mask.mean()) if self.mask.size else 0.0

    @classmethod
    def from_labels(cls, labels: np.ndarray, downsample: float) -> TissueMask:
        """Read back a (possibly hand-edited) Labels layer: any non-zero label is tissue."""
        return cls(np.asarray(labels) > 0, float(downsample))

    @classmethod
    def full(cls, slide: Slide, downsample: float | None = None) -> TissueMask:
        """Everything counts as tissue (for ROI-only tiling)."""
        d = downsample or mask_downsample(slide)
        h, w = int(np.ceil(slide.height / d)), int(np.ceil(slide.width / d))
        return cls(np.ones((h, w), dtype=bool), d)


def mask_downsample(slide: Slide) -> float:
    """Level-0 px per mask px for ``TISSUE_MPP`` (or a fixed factor without µm/px)."""
    if slide.has_mpp:
        return max(1.0, TISSUE_MPP / slide.mpp[0])
    return FALLBACK_DOWNSAMPLE


#: A whole-slide mask larger than this (px) is not built when only the ROIs' box is needed.
MAX_FULL_MASK_PX = 16_000_000


def detect_tissue(
    slide: Slide,
    downsample: float | None = None,
    min_saturation: float = 0.05,
    min_object_um2: float = 20_000.0,
    within: tuple[float, float, float, float] | None = None,
) -> TissueMask:
    """Detect tissue from an overview; returns an empty mask for an all-glass slide.

    ``within`` (level-0 x0, y0, x1, y1): the only part planning needs. On a slide whose whole
    mask would exceed ``MAX_FULL_MASK_PX`` only that box is read and thresholded, so planning a
    few tiles of a huge slide reads and holds a few tiles' worth of overview.
    """
    d = downsample or mask_downsample(slide)
    if within is None and downsample is None and slide.width * slide.height > MAX_FULL_MASK_PX * d * d:
        d = math.sqrt(slide.width * slide.height / MAX_FULL_MASK_PX)  # a whole mask of a huge slide stays small
    um = d * (slide.mpp[0] if slide.has_mpp else 1.0)
    full_h, full_w = int(np.ceil(slide.height / d)), int(np.ceil(slide.width / d))
    if within is None or full_h * full_w <= MAX_FULL_MASK_PX:
        rgb, origin = slide.overview(d), (0, 0)
    else:
        x0, y0, x1, y1 = within
        c0, r0 = max(0, int(x0 // d)), max(0, int(y0 // d))
        c1, r1 = min(full_w, int(np.ceil(x1 / d))), min(full_h, int(np.ceil(y1 / d)))
        rgb, origin = slide.overview_window((r0, r1), (c0, c1), d), (r0, c0)
    unsampled = _boxes_mask(slide.unsampled_boxes(), rgb.shape[:2], d, origin)
    mask = tissue_from_rgb(rgb, um, min_saturation, min_object_um2, assume=unsampled)
    return TissueMask(
        mask,
        d,
        origin=origin,
        unreadable=_boxes_mask(slide.unreadable_boxes(), mask.shape, d, origin),
        unsampled=unsampled,
    )


def _boxes_mask(
    boxes: list[tuple[float, float, float, float]], shape: tuple[int, int], d: float, origin: tuple[int, int]
) -> np.ndarray | None:
    """Mask px over level-0 ``boxes`` (file tiles that failed to decode or were skipped), None if none."""
    if not boxes:
        return None
    out = np.zeros(shape, dtype=bool)
    for x0, y0, x1, y1 in boxes:
        r0, r1 = int(y0 // d) - origin[0], int(np.ceil(y1 / d)) - origin[0]
        c0, c1 = int(x0 // d) - origin[1], int(np.ceil(x1 / d)) - origin[1]
        out[max(0, r0) : max(0, r1), max(0, c0) : max(0, c1)] = True
    return out if out.any() else None


def tissue_from_rgb(
    rgb: np.ndarray,
    mpp: float,
    min_saturation: float = 0.05,
    min_object_um2: float = 20_000.0,
    assume: np.ndarray | None = None,
) -> np.ndarray:
    """Tissue mask of an RGB overview at ``mpp`` µm/px (pure function, for tests and tiles).

    ``assume``: px taken as tissue without looking (not decoded), so that tissue cut by them is
    not dropped as a small object.
    """
    from skimage import morphology  # heavy (~0.5 s): opening a slide needs no tissue detection
    from skimage.filters import threshold_otsu  # heavy, as above

    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    sat = hsv[..., 1].astype(np.float32) / 255.0
    val = hsv[..., 2].astype(np.float32) / 255.0
    valid = val > 0.15  # pen marks, shadows and scanner borders are near-black
    seen = valid if assume is None else valid & ~assume
    if sat[seen].size == 0 or np.ptp(sat[seen]) < 1e-3:
        return np.zeros(rgb.shape[:2], dtype=bool) if assume is None else assume.copy()
    # Otsu separates glass from stain; when tissue fills the view it splits the stain itself
    # (e.g. at a saturated pen mark), so the threshold is capped at a level all H&E exceeds.
    thr = min(max(min_saturation, float(threshold_otsu(sat[seen]))), MAX_SATURATION_THRESHOLD)
    mask = (sat > thr) & valid
    if assume is not None:
        mask |= assume
    radius = 1
    mask = morphology.closing(mask, morphology.disk(radius))
    mask = morphology.opening(mask, morphology.disk(radius))
    min_px = max(1, int(min_object_um2 / (mpp * mpp)))
    mask = morphology.remove_small_objects(mask, max_size=min_px)
    mask = morphology.remove_small_holes(mask, max_size=min_px)
    return mask


def stained_pixels(rgb: np.ndarray) -> np.ndarray:
    """Bool mask (..., H, W) of stained pixels: the per-pixel rule behind the per-tile one.

    A pixel is stained when its HSV saturation exceeds ``TILE_SATURATION_MIN`` and it is neither
    near-black (pen, shadow) nor near-white (glass).
    """
    arr = np.asarray(rgb).astype(np.int16)
    mx = arr.max(axis=-1)
    mn = arr.min(axis=-1)
    return ((mx - mn) > TILE_SATURATION_MIN * mx) & (mx > 40) & (mn < 235)


def tissue_fraction(tiles: np.ndarray, stride: int = 4) -> np.ndarray:
    """Fraction of stained pixels per tile (B,) from a strided subsample: the per-tile rule
    (``stained_pixels``)."""
    stained = stained_pixels(np.asarray(tiles)[:, ::stride, ::stride])
    return stained.reshape(stained.shape[0], -1).mean(axis=1)


def is_background(tiles: np.ndarray, min_tissue: float = DEFAULT_MIN_TILE_TISSUE) -> np.ndarray:
    """(B,) bool: tiles whose stained fraction is below ``min_tissue`` (never sent to the model)."""
    if min_tissue <= 0 or len(tiles) == 0:
        return np.zeros(len(tiles), dtype=bool)
    return tissue_fraction(tiles) < min_tissue
