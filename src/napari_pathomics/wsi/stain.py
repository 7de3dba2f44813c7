"""Macenko stain estimation of H&E pixels: the slide's own haematoxylin and eosin vectors.

Macenko et al. (2009): convert RGB to optical density (OD), drop nearly transparent pixels,
take the plane of the two main OD directions (eigenvectors of the OD covariance), and find the
two extreme stain directions there as robust angle percentiles. The result (the stain matrix
and the 99th-percentile concentrations) is what stain normalisation maps onto a reference
(``inference.stain``) and what nuclei segmentation unmixes haematoxylin with (``cells``); it
lives here, below both, so it has one owner.

OD of uint8 values comes from a 256-entry lookup table and the estimate uses a fixed-stride
subsample of pixels (deterministic and fast). An image whose stain cannot be estimated
(background, too few tissue pixels, degenerate geometry, non-finite values) gives None.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "StainEstimate",
    "estimate_stain",
    "od_lut",
    "as_uint8_rgb",
    "estimate_from_od",
    "stain_reference_problem",
    "DEFAULT_IO",
    "DEFAULT_ALPHA",
    "DEFAULT_BETA",
]

DEFAULT_IO: int = 240
DEFAULT_ALPHA: float = 1.0
DEFAULT_BETA: float = 0.15
#: Pixels used for estimation (a fixed stride subsample keeps it deterministic and fast).
_MAX_ESTIMATE_PIXELS: int = 16384
#: Fewer tissue pixels than this (absolute, and as a fraction) → no estimate.
_MIN_TISSUE_PIXELS: int = 200
_MIN_TISSUE_FRACTION: float = 0.02
#: Two stain vectors closer than this (|cos|) cannot be unmixed (the estimate refuses them too).
MAX_STAIN_COSINE: float = 0.999
#: A stored reference's stain vectors are unit OD vectors up to this rounding.
_UNIT_TOLERANCE: float = 0.02
#: 99th-percentile concentrations of a real reference (H&E OD units are ~0.5-3).
_CONCENTRATION_RANGE: tuple[float, float] = (1e-6, 1e3)


@dataclass(frozen=True)
class StainEstimate:
    """Stain matrix (3, 2) with H then E as unit OD column vectors, and their 99th pct concentrations."""

    stain_matrix: np.ndarray
    max_concentrations: np.ndarray

    def to_dict(self, io: float = DEFAULT_IO, alpha: float = DEFAULT_ALPHA, beta: float = DEFAULT_BETA) -> dict:
        """The manifest form (``model.normalization.macenko``)."""
        return {
            "stain_matrix": [[float(v) for v in row] for row in self.stain_matrix],
            "max_concentrations": [float(v) for v in self.max_concentrations],
            "io": int(io),
            "alpha": float(alpha),
            "beta": float(beta),
        }


def stain_reference_problem(stain_matrix: object, max_concentrations: object) -> str | None:
    """Why a stored (3, 2) stain matrix and its max concentrations are no H&E reference (None if they are).

    What an estimate gives: two finite unit OD vectors (H then E) pointing into positive OD,
    far enough apart to unmix, and positive finite concentrations. A matrix of zeros or two
    collinear vectors would turn every tile into background after normalisation.
    """
    try:
        he = np.asarray(stain_matrix, dtype=np.float64)
        mc = np.asarray(max_concentrations, dtype=np.float64)
    except (TypeError, ValueError):
        return "stain_matrix and max_concentrations must be numbers"
    if he.shape != (3, 2) or mc.shape != (2,):
        return f"stain_matrix must be 3 x 2 and max_concentrations 2 numbers, got {he.shape} and {mc.shape}"
    if not (np.all(np.isfinite(he)) and np.all(np.isfinite(mc))):
        return "stain_matrix and max_concentrations must be finite"
    norms = np.linalg.norm(he, axis=0)
    if np.any(np.abs(norms - 1.0) > _UNIT_TOLERANCE):
        return f"stain vectors must be unit OD vectors, their lengths are {[round(float(n), 3) for n in norms]}"
    if np.any(he.sum(axis=0) <= 0):
        return "stain vectors must point into positive optical density"
    cos = abs(float(he[:, 0] @ he[:, 1])) / float(norms[0] * norms[1])
    if cos > MAX_STAIN_COSINE:
        return f"the two stain vectors are collinear (|cos| = {cos:.4f}); they cannot be unmixed"
    lo, hi = _CONCENTRATION_RANGE
    if np.any(mc < lo) or np.any(mc > hi):
        return f"max_concentrations must lie in [{lo:g}, {hi:g}], got {mc.tolist()}"
    return None


def od_lut(io: float) -> np.ndarray:
    """OD of every uint8 value: -log((v + 1) / io), clipped at 0 (brighter than io = no stain)."""
    v = np.arange(256, dtype=np.float64)
    return np.maximum(-np.log((v + 1.0) / io), 0.0).astype(np.float32)


def as_uint8_rgb(img: np.ndarray) -> np.ndarray:
    arr = np.asarray(img)
    if arr.dtype != np.uint8:
        raise TypeError(f"expected uint8 RGB, got {arr.dtype}")
    if arr.ndim < 3 or arr.shape[-1] != 3:
        raise ValueError(f"expected (..., H, W, 3) RGB, got shape {arr.shape}")
    return arr


def estimate_from_od(
    od: np.ndarray, alpha: float, beta: float, max_pixels: int = _MAX_ESTIMATE_PIXELS
) -> StainEstimate | None:
    """Estimate from flat OD pixels (N, 3) float32; None if the tile has no usable stain."""
    n_total = od.shape[0]
    if n_total == 0:
        return None
    stride = max(1, n_total // max_pixels)
    sub = od[::stride]
    tissue = sub[(sub > beta).all(axis=1)]
    if tissue.shape[0] < max(_MIN_TISSUE_PIXELS // stride, 16) or tissue.shape[0] < _MIN_TISSUE_FRACTION * sub.shape[0]:
        return None
    t64 = tissue.astype(np.float64)
    cov = np.cov(t64, rowvar=False)
    if not np.all(np.isfinite(cov)):
        return None
    evals, evecs = np.linalg.eigh(cov)  # ascending
    if evals[2] <= 1e-12 or evals[1] <= 1e-12 * max(evals[2], 1.0):
        return None
    plane = evecs[:, 1:3][:, ::-1].copy()  # (3, 2): main direction first
    if plane[:, 0].sum() < 0:
        plane[:, 0] *= -1
    if plane[:, 1].sum() < 0:
        plane[:, 1] *= -1
    proj = t64 @ plane
    phi = np.arctan2(proj[:, 1], proj[:, 0])
    lo, hi = np.percentile(phi, [alpha, 100.0 - alpha])
    v_lo = plane @ np.array([np.cos(lo), np.sin(lo)])
    v_hi = plane @ np.array([np.cos(hi), np.sin(hi)])
    # Haematoxylin absorbs more red (OD channel 0) than eosin: put it first.
    he = np.stack([v_lo, v_hi], axis=1) if v_lo[0] > v_hi[0] else np.stack([v_hi, v_lo], axis=1)
    for k in range(2):
        if he[:, k].sum() < 0:
            he[:, k] *= -1
    norms = np.linalg.norm(he, axis=0)
    if np.any(norms < 1e-8):
        return None
    he = he / norms
    # Two stain vectors too close to each other → unmixing is ill-conditioned.
    if abs(float(he[:, 0] @ he[:, 1])) > MAX_STAIN_COSINE:
        return None
    pinv = np.linalg.pinv(he).astype(np.float32)  # (2, 3); least-squares unmixing
    conc = sub @ pinv.T  # (n, 2)
    max_c = np.percentile(conc, 99, axis=0).astype(np.float64)
    if not (np.all(np.isfinite(he)) and np.all(np.isfinite(max_c))) or np.any(max_c <= 1e-6):
        return None
    return StainEstimate(stain_matrix=he, max_concentrations=max_c)


def estimate_stain(
    img: np.ndarray, io: float = DEFAULT_IO, alpha: float = DEFAULT_ALPHA, beta: float = DEFAULT_BETA
) -> StainEstimate | None:
    """Macenko stain matrix and max concentrations of one RGB uint8 image; None if not estimable."""
    arr = as_uint8_rgb(img)
    if arr.ndim != 3:
        raise ValueError(f"expected one (H, W, 3) image, got shape {arr.shape}")
    od = od_lut(io)[arr.reshape(-1, 3)]
    return estimate_from_od(od, alpha, beta)
