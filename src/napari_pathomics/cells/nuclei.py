"""Nuclei of an H&E region: haematoxylin, an adaptive foreground, and touching nuclei split.

The pipeline, in physical units so one parameter set serves 0.25 and 0.5 µm/px:

1. **Haematoxylin** by colour deconvolution with the slide's own Macenko stain vectors or
   Ruifrok's (``cells.stain``), smoothed by a Gaussian of ``smooth_um``.
2. **Foreground** by Otsu's threshold on the haematoxylin of the stained pixels of this region,
   kept within ``threshold_bounds`` × a reference threshold when one is given (the slide's, so
   that a tile of pure stroma, whose Otsu splits cytoplasm from cytoplasm, cannot invent nuclei)
   and never below ``min_threshold``. Pale centres of vesicular nuclei (holes up to
   ``max_hole_um2``) are filled, specks below ``min_area_um2`` dropped.
3. **Splitting** by a marker-based watershed of the distance transform: markers are the
   regional maxima of the (lightly smoothed) distance map at least ``min_marker_um`` deep.
   The baseline's failure is over-splitting, so a second pass *merges* fragments back: two
   touching fragments are one nucleus when the distance map's saddle on their shared border is
   at least ``merge_ratio`` of the smaller fragment's peak (a wide neck, not a constriction
   between two round bodies). Two touching discs of radius r with centres d apart have a neck
   ratio ``sqrt(1 − (d / 2r)²)``; the default 0.9 keeps them apart down to d ≈ 0.9 r (the saddle is
   measured on pixels, about a pixel above the continuous neck).

``segment_nuclei`` returns instance labels at the input's size (0 = background) plus what the
features need (haematoxylin, stained pixels). Large images are segmented in overlapping blocks
(``segment_blocks``): a nucleus belongs to the block that holds its centroid, so memory stays
bounded by the block size and nothing is counted twice.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import cv2
import numpy as np
from scipy import ndimage as ndi
from scipy import sparse
from scipy.sparse.csgraph import connected_components
from skimage.filters import rank, threshold_otsu
from skimage.morphology import disk, remove_small_holes, remove_small_objects
from skimage.segmentation import watershed

from ..errors import CancelledError, NucleiError
from ..wsi.tissue import stained_pixels
from .stain import StainVectors, eosin, haematoxylin, slide_stain

__all__ = [
    "NucleiParams",
    "Segmentation",
    "segment_nuclei",
    "segment_blocks",
    "check_he",
    "foreground_threshold",
    "MIN_MPP",
    "MAX_MPP",
]

#: Finer input is averaged down to ``MIN_MPP`` first (nuclei do not need more pixels than that).
MIN_MPP = 0.2
#: Coarser than this, a lymphocyte is under 3 px across: nuclei cannot be segmented.
MAX_MPP = 2.0


@dataclass(frozen=True)
class NucleiParams:
    """Everything that changes the segmentation (recorded with every result and in cache keys)."""

    smooth_um: float = 0.5
    min_area_um2: float = 8.0
    min_half_width_um: float = 1.0  # a nucleus is at least 2 µm across at its widest inscribed circle
    max_hole_um2: float = 50.0
    min_threshold: float = 0.15  # haematoxylin concentration below which nothing is a nucleus
    min_contrast: float = 0.03  # haematoxylin share above the local background, at least
    min_h_contrast: float = 0.15  # a nucleus's haematoxylin above its surroundings, at least (OD)
    min_stain: float = 0.3  # H + E concentration below which the haematoxylin share is damped (glass)
    threshold_bounds: tuple[float, float] = (0.75, 1.5)  # × the reference threshold
    background_um: float = 40.0  # window of the local background (several nuclei across)
    background_quantile: float = 0.3  # the background is this quantile of the window (nuclei are the top)
    low_fraction: float = 0.5  # seeds and regions need a contrast of at least this × the threshold
    background_fraction: float = 0.25  # contrast below this × the threshold is background
    peak_quantile: float = 0.75  # a region's haematoxylin "peak", robust to chromatin clumps
    share_edge_level: float = 0.5  # the same on the haematoxylin share, for pale nuclei
    pale_fraction: float = 0.7  # a region whose haematoxylin extent is under this × its share extent is pale
    edge_level: float = 0.5  # a nucleus ends where its contrast falls below this × its peak
    edge_smooth_um: float = 0.5  # extra smoothing of the contrast whose gradient the regions follow
    region_mpp: float = 0.5  # resolution of the region-growing watershed (extents are full resolution)
    seed_radii_um: tuple[float, ...] = (2.5, 3.5, 5.0)  # LoG scales: lymphocyte to large tumour nucleus
    seed_spacing_um: float = 2.0  # seeds closer than this are one
    seed_response: float = 0.3  # a seed's LoG response at least this × the threshold
    seed_disc_um: float = 1.0  # seeds grow to discs of this radius where the contrast allows
    edge_band_um: float = 1.5  # the background marker keeps this far from candidate nuclei
    close_um: float = 1.0  # closing radius that bridges gaps in the rim of a vesicular nucleus
    open_um: float = 0.5  # morphological opening radius (detaches thin haematoxylin threads)
    min_marker_um: float = 1.0  # a marker's distance-map depth (nucleus radius) at least this
    marker_smooth_um: float = 0.5
    merge_ratio: float = 0.9
    cell_expansion_um: float = 5.0  # QuPath's default cell expansion
    large_quantile: float = 0.9  # "large/atypical": nuclear area above this quantile of the slide
    lymph_max_area_um2: float = 45.0  # lymphocyte-like: small,
    lymph_max_eccentricity: float = 0.75  # round,
    lymph_min_solidity: float = 0.9  # smooth,
    lymph_darkness: float = 1.15  # and darker than this × the median nucleus

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> NucleiParams:
        known = {f for f in cls.__dataclass_fields__}
        kw: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v) for k, v in obj.items() if k in known}
        return cls(**kw)


@dataclass
class Segmentation:
    """Instance labels of one region and the channels its features are measured on."""

    labels: np.ndarray  # (H, W) int32, 0 = background, 1..n nuclei
    h: np.ndarray  # (H, W) float32 haematoxylin concentration (unsmoothed)
    stained: np.ndarray  # (H, W) bool stained (non-glass) pixels: tissue for cells and densities
    mpp: float  # µm per px of these arrays
    threshold: float
    stain: StainVectors
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return int(self.labels.max(initial=0))


def check_he(rgb: np.ndarray, what: str = "the image") -> None:
    """Refuse what is not a brightfield H&E image, with the reason (NucleiError)."""
    arr = np.asarray(rgb)
    if arr.ndim != 3 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise NucleiError(f"{what}: expected an RGB uint8 image, got shape {arr.shape} {arr.dtype}")
    sub = arr[:: max(1, arr.shape[0] // 256), :: max(1, arr.shape[1] // 256)].astype(np.int16)
    mx, mn = sub.max(axis=-1), sub.min(axis=-1)
    if float(np.mean(mx < 50)) > 0.5:
        raise NucleiError(f"{what} is mostly black: a fluorescence or dark-field image is not H&E brightfield")
    if float(np.mean(mn > 215)) > 0.97:
        raise NucleiError(f"{what} is all white: glass, no stained tissue")
    chroma = mx - mn
    if float(np.percentile(chroma, 99)) < 12:
        raise NucleiError(f"{what} has no colour (greyscale?): nuclei need an H&E-stained RGB image")
    if float(np.mean(stained_pixels(sub))) < 0.005:
        raise NucleiError(f"{what} shows no stained tissue (all white or glass)")


def foreground_threshold(
    values: np.ndarray, stained: np.ndarray, params: NucleiParams, reference: float | None = None, floor: float = 0.0
) -> float:
    """Otsu's threshold of the stained pixels' values, bounded by ``reference`` (module docstring)."""
    vals = values[stained]
    if vals.size < 64:
        vals = values.ravel()
    # the background (cytoplasm, stroma) is the bulk of the pixels, centred on 0 by the local
    # background; nuclei are the upper tail, so Otsu splits the pixels above the background
    vals = vals[vals > 0]
    if vals.size < 16:
        return max(floor, float("inf") if reference is None else reference)
    vals = vals[:: max(1, vals.size // 262_144)]
    lo, hi = (float(v) for v in np.percentile(vals, [0.5, 99.5]))
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi - lo <= 1e-6:
        thr = hi if np.isfinite(hi) else floor
    else:
        hist, edges = np.histogram(np.clip(vals, lo, hi), bins=256, range=(lo, hi))
        centres = (edges[:-1] + edges[1:]) / 2
        thr = float(threshold_otsu(hist=(hist, centres))) if np.count_nonzero(hist) > 1 else hi
    if reference is not None and np.isfinite(reference):
        lo_b, hi_b = params.threshold_bounds
        thr = float(np.clip(thr, lo_b * reference, hi_b * reference))
    return max(thr, floor)


def local_background(
    values: np.ndarray, stained: np.ndarray, mpp: float, window_um: float, quantile: float = 0.3
) -> np.ndarray:
    """Large-scale low quantile of the stained pixels' values around each pixel (float32, input size).

    Computed on an 8× smaller image (a rank filter there) and interpolated back. Nuclei are the
    upper part of every window; in a dense tumour nest they cover half of it, so the median would
    sit on them and a lower quantile is the cytoplasm level they stand out from.
    """
    f = 8
    hh, ww = values.shape
    sh, sw = max(1, hh // f), max(1, ww // f)
    small = cv2.resize(np.where(stained, values, np.nan).astype(np.float32), (sw, sh), interpolation=cv2.INTER_AREA)
    valid = np.isfinite(small)
    if not valid.any():
        return np.zeros_like(values)
    fill = float(np.quantile(small[valid], quantile))
    lo, hi = float(np.nanmin(small)), float(np.nanmax(small))
    radius = int(round(window_um / (2 * mpp * f)))
    if hi > lo and radius >= 1:
        q = np.round((np.where(valid, small, fill) - lo) / (hi - lo) * 255).astype(np.uint8)
        q = rank.percentile(q, disk(radius), mask=valid, p0=quantile)
        small = lo + q.astype(np.float32) * ((hi - lo) / 255)
    else:
        small = np.full((sh, sw), fill, dtype=np.float32)
    return cv2.resize(small, (ww, hh), interpolation=cv2.INTER_LINEAR)


def _disk(radius_px: float) -> np.ndarray:
    r = max(0, int(round(radius_px)))
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def _merge_fragments(labels: np.ndarray, dist: np.ndarray, ratio: float) -> np.ndarray:
    """Merge touching watershed fragments joined by a wide neck (saddle ≥ ratio × smaller peak)."""
    n = int(labels.max(initial=0))
    if n < 2:
        return labels
    peaks = np.zeros(n + 1, dtype=np.float64)
    peaks[1:] = ndi.maximum(dist, labels, index=np.arange(1, n + 1))
    pa, pb, pv = [], [], []
    for a, b, da, db in (
        (labels[:, :-1], labels[:, 1:], dist[:, :-1], dist[:, 1:]),
        (labels[:-1, :], labels[1:, :], dist[:-1, :], dist[1:, :]),
    ):
        m = (a != b) & (a > 0) & (b > 0)
        if m.any():
            x, y = a[m], b[m]
            pa.append(np.minimum(x, y))
            pb.append(np.maximum(x, y))
            pv.append(np.minimum(da[m], db[m]))
    if not pa:
        return labels
    a, b, v = np.concatenate(pa), np.concatenate(pb), np.concatenate(pv)
    key = a.astype(np.int64) * (n + 1) + b
    order = np.argsort(key, kind="stable")
    key, v = key[order], v[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    saddle = np.maximum.reduceat(v, starts)
    ka = key[starts] // (n + 1)
    kb = key[starts] % (n + 1)
    merge = saddle >= ratio * np.minimum(peaks[ka], peaks[kb])
    if not merge.any():
        return labels
    graph = sparse.coo_matrix((np.ones(int(merge.sum())), (ka[merge], kb[merge])), shape=(n + 1, n + 1))
    _, comp = connected_components(graph, directed=False)
    # component ids → 1..k in order of first appearance, background stays 0
    comp = comp.astype(np.int64)
    uniq, inv = np.unique(comp[1:], return_inverse=True)
    lut = np.zeros(n + 1, dtype=np.int32)
    lut[1:] = inv + 1
    lut[0] = 0
    return lut[labels]


def _fill_label_holes(labels: np.ndarray, max_hole: int) -> np.ndarray:
    """Holes of the foreground up to ``max_hole`` px take the label around them (nearest label)."""
    fg = labels > 0
    holes = remove_small_holes(fg, max_size=max_hole) & ~fg
    if not holes.any():
        return labels
    _, (iy, ix) = ndi.distance_transform_edt(~fg, return_indices=True)
    out = labels.copy()
    out[holes] = labels[iy[holes], ix[holes]]
    return out


def _relabel_sequential(labels: np.ndarray) -> np.ndarray:
    present = np.zeros(int(labels.max(initial=0)) + 1, dtype=bool)
    present[labels.ravel()] = True
    present[0] = False
    lut = np.zeros(present.size, dtype=np.int32)
    lut[present] = np.arange(1, int(present.sum()) + 1, dtype=np.int32)
    return lut[labels]


def segment_nuclei(
    rgb: np.ndarray,
    mpp: float,
    *,
    stain: StainVectors | None = None,
    params: NucleiParams | None = None,
    reference_threshold: float | None = None,
    check: bool = True,
) -> Segmentation:
    """Instance labels of the nuclei of one RGB region at ``mpp`` µm/px (module docstring).

    ``stain`` None estimates the region's own Macenko vectors (Ruifrok when that fails);
    ``check`` refuses images that are not H&E with a NucleiError saying why.
    """
    p = params or NucleiParams()
    if not (isinstance(mpp, (int, float)) and math.isfinite(mpp) and mpp > 0):
        raise NucleiError(f"µm/px must be a positive number, got {mpp!r}")
    if mpp > MAX_MPP:
        raise NucleiError(
            f"{mpp:g} µm/px is too coarse to segment nuclei (needs ≤ {MAX_MPP:g} µm/px; "
            "0.25–0.5 µm/px, i.e. 20–40×, is best)"
        )
    arr = np.asarray(rgb)
    if check:
        check_he(arr)
    elif arr.ndim != 3 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise NucleiError(f"expected an RGB uint8 image, got shape {arr.shape} {arr.dtype}")
    full_shape = arr.shape[:2]
    work_mpp = float(mpp)
    if mpp < MIN_MPP:
        f = MIN_MPP / mpp
        size = (max(1, int(round(full_shape[1] / f))), max(1, int(round(full_shape[0] / f))))
        arr = cv2.resize(arr, size, interpolation=cv2.INTER_AREA)
        work_mpp = full_shape[1] * mpp / size[0]
    stain = stain or slide_stain(arr)
    h = haematoxylin(arr, stain)
    stained = stained_pixels(arr)
    labels, thr = _segment_h(h, eosin(arr, stain), stained, work_mpp, p, reference_threshold)
    if labels.shape != full_shape:
        labels = cv2.resize(
            labels.astype(np.float32), (full_shape[1], full_shape[0]), interpolation=cv2.INTER_NEAREST
        ).astype(np.int32)
        labels = _relabel_sequential(labels)
    return Segmentation(
        labels=labels,
        h=h,
        stained=stained,
        mpp=work_mpp,
        threshold=thr,
        stain=stain,
        info={"work_shape": list(h.shape), "input_mpp": float(mpp)},
    )


def nuclear_contrast(
    h: np.ndarray, e: np.ndarray, stained: np.ndarray, mpp: float, p: NucleiParams
) -> tuple[np.ndarray, np.ndarray]:
    """How much more a pixel is nucleus than its surroundings, and the smoothed haematoxylin.

    The feature is the haematoxylin *share* of the stain, ``H / (H + E)``: the cytoplasm of a
    dense tumour carries much haematoxylin too, but with eosin, while a nucleus, even a pale
    vesicular one, is mostly haematoxylin. Its contrast is taken to a robust large-scale median
    of the stained pixels (``local_background``). Below ``min_stain`` total stain (glass) the
    share is damped towards 0.
    """
    sigma = p.smooth_um / mpp
    hs = cv2.GaussianBlur(h, (0, 0), sigma) if sigma >= 0.3 else h
    es = cv2.GaussianBlur(e, (0, 0), sigma) if sigma >= 0.3 else e
    share = hs / np.maximum(hs + np.maximum(es, 0.0), p.min_stain)
    return share - local_background(share, stained, mpp, p.background_um, p.background_quantile), hs


def _region_quantile(labels: np.ndarray, values: np.ndarray, n: int, q: float) -> np.ndarray:
    """(n,) the ``q`` quantile of ``values`` within each label (0 where a label is absent)."""
    sel = labels > 0
    lab, val = labels[sel], values[sel]
    out = np.zeros(n, dtype=np.float32)
    if lab.size == 0:
        return out
    order = np.lexsort((val, lab))
    lab, val = lab[order], val[order]
    starts = np.flatnonzero(np.r_[True, lab[1:] != lab[:-1]])
    counts = np.diff(np.r_[starts, lab.size])
    out[lab[starts]] = val[starts + np.floor(q * (counts - 1)).astype(np.int64)]
    return out


def _blob_seeds(c: np.ndarray, mpp: float, p: NucleiParams, thr: float) -> np.ndarray:
    """Bool mask of nucleus seeds: maxima of the scale-normalised Laplacian of Gaussian.

    At the scale of a nucleus (σ = r/√2) the LoG responds to the whole body, so a pale
    vesicular nucleus with a dark rim gives one strong response where a threshold sees a ring.
    """
    resp = np.full(c.shape, -np.inf, dtype=np.float32)
    for r_um in p.seed_radii_um:
        sig = r_um / math.sqrt(2.0) / mpp
        g = cv2.GaussianBlur(c, (0, 0), sig)
        np.maximum(resp, -(sig * sig) * cv2.Laplacian(g, cv2.CV_32F, ksize=1), out=resp)
    rmin = max(1, int(round(p.seed_spacing_um / mpp)))
    local_max = resp >= cv2.dilate(resp, _disk(rmin))
    return local_max & (resp > p.seed_response * thr)


def _grow_regions(
    cs: np.ndarray, markers: np.ndarray, background: np.ndarray, n: int, mpp: float, p: NucleiParams
) -> np.ndarray:
    """Seeds grown to their membranes: a watershed of the contrast's gradient, background marker n + 1.

    Regions only say which pixels belong to which seed; their exact extent is decided at full
    resolution afterwards, so this flooding (the costliest step) runs at ``region_mpp`` or coarser.
    """
    f = max(1, int(round(p.region_mpp / mpp)))
    full = cs.shape
    if f > 1:
        small = (full[1] // f, full[0] // f)
        cs_s = cv2.resize(cs, small, interpolation=cv2.INTER_AREA)
        bg_s = cv2.resize(background.astype(np.uint8), small, interpolation=cv2.INTER_NEAREST).astype(bool)
        mk_s = np.zeros(cs_s.shape, dtype=np.int32)
        ys, xs = np.nonzero((markers > 0) & (markers <= n))
        mk_s[np.minimum(ys // f, cs_s.shape[0] - 1), np.minimum(xs // f, cs_s.shape[1] - 1)] = markers[ys, xs]
        mk_s[bg_s & (mk_s == 0)] = n + 1
    else:
        cs_s, bg_s, mk_s = cs, background, markers
    grad = cv2.magnitude(cv2.Sobel(cs_s, cv2.CV_32F, 1, 0), cv2.Sobel(cs_s, cv2.CV_32F, 0, 1))
    # markers are imposed minima: a seed on a textured (high-gradient) pixel must start flooding
    # with the background, not after the background has flooded its nucleus through the interior
    grad[mk_s > 0] = 0.0
    regions = watershed(grad, mk_s).astype(np.int32)  # every pixel goes to a seed or the background
    regions[regions == n + 1] = 0
    if f > 1:
        up = np.zeros(full, dtype=np.int32)
        h_s, w_s = regions.shape
        up[: h_s * f, : w_s * f] = np.repeat(np.repeat(regions, f, axis=0), f, axis=1)
        regions = up
    return regions


def _segment_h(
    h: np.ndarray, e: np.ndarray, stained: np.ndarray, mpp: float, p: NucleiParams, reference: float | None
) -> tuple[np.ndarray, float]:
    """Labels and the threshold used (steps 2 and 3 of the module docstring).

    Foreground: a marker-controlled watershed of the contrast's gradient grows each seed
    (``_blob_seeds``) to its nuclear membrane, against a background marker where the contrast is
    low; regions whose mean contrast stays under half the threshold are not nuclei. Splitting:
    the distance transform of that foreground, its regional maxima as markers, and the merge of
    fragments joined by a wide neck (``_merge_fragments``).
    """
    contrast, hs = nuclear_contrast(h, e, stained, mpp, p)
    thr = foreground_threshold(contrast, stained, p, reference, floor=p.min_contrast)
    px_area = mpp * mpp
    min_px = max(1, int(p.min_area_um2 / px_area))
    max_hole = max(1, int(p.max_hole_um2 / px_area))
    sig = p.edge_smooth_um / mpp
    cs = cv2.GaussianBlur(contrast, (0, 0), sig) if sig >= 0.3 else contrast
    seeds = _blob_seeds(contrast, mpp, p, thr) & (cs > p.low_fraction * thr) & (hs > p.min_threshold)
    markers, n = ndi.label(seeds, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return np.zeros(h.shape, dtype=np.int32), thr
    # a seed is a small disc inside its nucleus, not one pixel that texture can wall in
    r_seed = p.seed_disc_um / mpp
    if r_seed >= 1.0:
        grown = cv2.dilate(markers.astype(np.float32), _disk(r_seed)).astype(np.int32)
        markers = np.where((markers == 0) & (cs > p.low_fraction * thr), grown, markers)
    # low contrast is background, except the pale chromatin a nucleus's rim encloses (a small hole);
    # the background marker keeps a band of ``edge_band_um`` from every candidate, so the line
    # between a nucleus and its surroundings is drawn at the strongest edge within that band
    background = ~remove_small_holes((cs >= p.background_fraction * thr) & stained, max_size=max_hole)
    r_band = p.edge_band_um / mpp
    marker_bg = cv2.erode(background.astype(np.uint8), _disk(r_band)).astype(bool) if r_band >= 1.0 else background
    marker_bg |= ~stained  # glass is background right up to the tissue's edge
    markers[marker_bg & (markers == 0)] = n + 1
    regions = _grow_regions(cs, markers, marker_bg, n, mpp, p)
    flat = regions.ravel()
    area = np.bincount(flat, minlength=n + 1)
    mean_c = np.bincount(flat, weights=contrast.ravel(), minlength=n + 1) / np.maximum(area, 1)
    ok = (mean_c >= p.low_fraction * thr) & (area >= min_px)
    ok[0] = False
    # each region's extent is where its contrast is above half its own peak (the half-maximum
    # of a blurred edge, for a pale nucleus as for a dark one); its pale centre is a hole, filled below
    # (judged on the haematoxylin itself, which mixes linearly across a blurred edge; the share does not)
    # the "peak" is a high quantile, not the maximum, so one dark chromatin clump does not set it
    ch = hs - local_background(hs, stained, mpp, p.background_um, p.background_quantile)
    peak = _region_quantile(regions[::2, ::2].ravel(), ch[::2, ::2].ravel(), n + 1, p.peak_quantile)
    ok &= peak >= p.min_h_contrast  # an absolute floor: stain noise in stroma is not a nucleus
    ext_h = ok[regions] & (ch > p.edge_level * peak[regions])
    peak_s = _region_quantile(regions[::2, ::2].ravel(), cs[::2, ::2].ravel(), n + 1, p.peak_quantile)
    ext_s = ok[regions] & (cs > p.share_edge_level * peak_s[regions])
    a_h = np.bincount(flat, weights=ext_h.ravel(), minlength=n + 1)
    a_s = np.bincount(flat, weights=ext_s.ravel(), minlength=n + 1)
    use_s = a_h < p.pale_fraction * a_s
    fg = np.where(use_s[regions], ext_s, ext_h).astype(np.uint8)
    r_open = p.open_um / mpp
    if r_open >= 1.0:
        fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, _disk(r_open))
    fg_b = remove_small_holes(fg.astype(bool), max_size=max_hole)
    fg_b = remove_small_objects(fg_b, max_size=min_px)
    if not fg_b.any():
        return np.zeros(h.shape, dtype=np.int32), thr
    labels = split_touching(fg_b, mpp, p)
    # fragments smaller than a nucleus, and threads thinner than one (collagen, keratin), are not nuclei
    n_lab = int(labels.max(initial=0))
    area = np.bincount(labels.ravel(), minlength=n_lab + 1)
    dist = cv2.distanceTransform((labels > 0).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    half_width = np.zeros(n_lab + 1, dtype=np.float64)
    if n_lab:
        half_width[1:] = ndi.maximum(dist, labels, index=np.arange(1, n_lab + 1))
    drop = (area < min_px) | (half_width < p.min_half_width_um / mpp)
    drop[0] = False
    if drop.any():
        labels[drop[labels]] = 0
    return _relabel_sequential(labels), thr


def markers_of_single(markers: np.ndarray, comp: np.ndarray, n_comp: int) -> np.ndarray:
    """(n_comp + 1,) the marker id of each component (the last one seen; used where there is one)."""
    lut = np.zeros(n_comp + 1, dtype=np.int32)
    m = markers > 0
    lut[comp[m]] = markers[m]
    return lut


def split_touching(fg: np.ndarray, mpp: float, p: NucleiParams) -> np.ndarray:
    """Instance labels of a nuclear foreground: distance-transform watershed, then wide necks merged."""
    dist = cv2.distanceTransform(fg.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    s = p.marker_smooth_um / mpp
    dist_s = cv2.GaussianBlur(dist, (0, 0), s) if s >= 0.3 else dist
    dist_s = np.where(fg, dist_s, 0).astype(np.float32)
    depth = p.min_marker_um / mpp
    # regional maxima: equal to their 3×3 neighbourhood maximum, deep enough, inside the nucleus
    peak = (dist_s >= cv2.dilate(dist_s, np.ones((3, 3), np.uint8))) & (dist_s >= depth) & fg
    markers, n_markers = ndi.label(peak, structure=np.ones((3, 3), dtype=bool))
    # components without a deep enough peak (small round nuclei) keep one marker each
    comp, n_comp = ndi.label(fg)
    has = np.zeros(n_comp + 1, dtype=bool)
    has[comp[markers > 0]] = True
    missing = np.flatnonzero(~has[1:]) + 1
    if missing.size:
        pos = ndi.maximum_position(dist_s, comp, missing)
        ys, xs = np.array(pos, dtype=np.int64).reshape(-1, 2).T
        markers[ys, xs] = n_markers + np.arange(1, missing.size + 1)
    # only components holding two or more markers need a watershed, each in its own bounding box
    per_comp = np.bincount(comp[markers > 0], minlength=n_comp + 1)
    labels = np.zeros(fg.shape, dtype=np.int32)
    single = per_comp[comp] == 1
    labels[single] = markers_of_single(markers, comp, n_comp)[comp[single]]
    multi = np.flatnonzero(per_comp[1:] > 1) + 1
    for i, sl in enumerate(ndi.find_objects(comp)):
        if sl is None or per_comp[i + 1] < 2:
            continue
        inside = comp[sl] == i + 1
        ws = watershed(-dist_s[sl], np.where(inside, markers[sl], 0), mask=inside)
        labels[sl][inside] = ws[inside]
    del multi
    return _merge_fragments(labels, dist, p.merge_ratio)


def segment_blocks(
    rgb: np.ndarray,
    mpp: float,
    *,
    block_px: int = 2048,
    margin_um: float = 16.0,
    stain: StainVectors | None = None,
    params: NucleiParams | None = None,
    progress: Callable[[int, int], None] | None = None,
    cancel: threading.Event | None = None,
) -> tuple[np.ndarray, StainVectors, float]:
    """Labels of a large image segmented block by block (bounded memory; see the module docstring).

    Returns the labels (int32, input size), the stain used and the image-wide threshold that
    every block's threshold was bounded by.
    """
    p = params or NucleiParams()
    arr = np.asarray(rgb)
    check_he(arr)
    hgt, wid = arr.shape[:2]
    sub = arr[:: max(1, hgt // 1024), :: max(1, wid // 1024)]
    stain = stain or slide_stain(sub)
    hs = haematoxylin(sub, stain)
    sigma = p.smooth_um / (mpp * max(1, hgt // 1024))
    hs = cv2.GaussianBlur(hs, (0, 0), sigma) if sigma >= 0.3 else hs
    reference = _image_threshold(sub, stain, mpp * max(1, hgt // 1024), p)
    if hgt * wid <= block_px * block_px * 1.5:
        seg = segment_nuclei(arr, mpp, stain=stain, params=p, reference_threshold=None, check=False)
        return seg.labels, stain, seg.threshold
    out = np.zeros((hgt, wid), dtype=np.int32)
    margin = int(math.ceil(margin_um / mpp))
    ys, xs = range(0, hgt, block_px), range(0, wid, block_px)
    total, done, next_id = len(ys) * len(xs), 0, 1
    for y0 in ys:
        for x0 in xs:
            if cancel is not None and cancel.is_set():
                raise CancelledError("nuclei segmentation cancelled")
            y1, x1 = min(hgt, y0 + block_px), min(wid, x0 + block_px)
            ry0, rx0 = max(0, y0 - margin), max(0, x0 - margin)
            ry1, rx1 = min(hgt, y1 + margin), min(wid, x1 + margin)
            block = arr[ry0:ry1, rx0:rx1]
            if float(np.mean(stained_pixels(block[::4, ::4]))) < 0.005:
                lab = np.zeros(block.shape[:2], dtype=np.int32)
            else:
                lab = segment_nuclei(
                    block, mpp, stain=stain, params=p, reference_threshold=reference, check=False
                ).labels
            keep = _core_nuclei(lab, (y0 - ry0, x0 - rx0, y1 - ry0, x1 - rx0))
            if keep.size:
                lut = np.zeros(int(lab.max()) + 1, dtype=np.int32)
                lut[keep] = np.arange(next_id, next_id + keep.size, dtype=np.int32)
                new = lut[lab]
                dst = out[ry0:ry1, rx0:rx1]
                free = (dst == 0) & (new > 0)
                dst[free] = new[free]
                next_id += keep.size
            done += 1
            if progress is not None:
                progress(done, total)
    return _relabel_sequential(out), stain, reference


def _image_threshold(rgb: np.ndarray, stain: StainVectors, mpp: float, p: NucleiParams) -> float:
    """The foreground threshold of a whole (subsampled) image: the bound of its blocks' thresholds."""
    h, e = haematoxylin(rgb, stain), eosin(rgb, stain)
    stained = stained_pixels(rgb)
    contrast, _ = nuclear_contrast(h, e, stained, mpp, p)
    return foreground_threshold(contrast, stained, p, None, floor=p.min_contrast)


def _core_nuclei(labels: np.ndarray, core: tuple[int, int, int, int]) -> np.ndarray:
    """Label ids whose centroid lies in the core box (y0, x0, y1, x1) of a block."""
    n = int(labels.max(initial=0))
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    flat = labels.ravel()
    yy, xx = np.divmod(np.arange(flat.size), labels.shape[1])
    area = np.bincount(flat, minlength=n + 1).astype(np.float64)
    cy = np.bincount(flat, weights=yy, minlength=n + 1) / np.maximum(area, 1) + 0.5
    cx = np.bincount(flat, weights=xx, minlength=n + 1) / np.maximum(area, 1) + 0.5
    y0, x0, y1, x1 = core
    ok = (area > 0) & (cy >= y0) & (cy < y1) & (cx >= x0) & (cx < x1)
    ok[0] = False
    return np.flatnonzero(ok)
