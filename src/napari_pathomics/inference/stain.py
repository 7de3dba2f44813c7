"""Vectorised Macenko stain normalisation (H&E), fast enough to run per tile at inference.

Macenko et al. (2009): convert RGB to optical density (OD), drop nearly transparent pixels,
take the plane of the two main OD directions (eigenvectors of the OD covariance), and find the
two extreme stain directions there as robust angle percentiles. Concentrations of each pixel
are then rescaled so that their 99th percentile matches a reference image's, and recomposed
with the reference stain vectors.

Speed tricks: OD of uint8 values comes from a 256-entry lookup table; the stain estimate uses
a fixed-stride subsample of pixels; a batch is estimated tile by tile (3×3 eigen problems) but
unmixed and recomposed in one einsum. A tile whose stain cannot be estimated (background,
too few tissue pixels, degenerate geometry, non-finite values) is returned unchanged and
flagged, never raised.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..resources import STAIN_REFERENCE
from ..wsi.images import read_rgb

__all__ = [
    "StainEstimate",
    "estimate_stain",
    "MacenkoNormalizer",
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
#: Tiles normalised together (bounded temporary memory, cache friendly).
_CHUNK: int = 8


@dataclass(frozen=True)
class StainEstimate:
    """Stain matrix (3, 2) with H then E as unit OD column vectors, and their 99th pct concentrations."""

    stain_matrix: np.ndarray
    max_concentrations: np.ndarray

    def to_dict(self, io: int = DEFAULT_IO, alpha: float = DEFAULT_ALPHA, beta: float = DEFAULT_BETA) -> dict:
        """The manifest form (``model.normalization.macenko``)."""
        return {
            "stain_matrix": [[float(v) for v in row] for row in self.stain_matrix],
            "max_concentrations": [float(v) for v in self.max_concentrations],
            "io": int(io),
            "alpha": float(alpha),
            "beta": float(beta),
        }


def _od_lut(io: float) -> np.ndarray:
    """OD of every uint8 value: -log((v + 1) / io), clipped at 0 (brighter than io = no stain)."""
    v = np.arange(256, dtype=np.float64)
    return np.maximum(-np.log((v + 1.0) / io), 0.0).astype(np.float32)


def _as_uint8_rgb(img: np.ndarray) -> np.ndarray:
    arr = np.asarray(img)
    if arr.dtype != np.uint8:
        raise TypeError(f"expected uint8 RGB, got {arr.dtype}")
    if arr.ndim < 3 or arr.shape[-1] != 3:
        raise ValueError(f"expected (..., H, W, 3) RGB, got shape {arr.shape}")
    return arr


def _estimate_from_od(
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
    if abs(float(he[:, 0] @ he[:, 1])) > 0.999:
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
    arr = _as_uint8_rgb(img)
    if arr.ndim != 3:
        raise ValueError(f"expected one (H, W, 3) image, got shape {arr.shape}")
    od = _od_lut(io)[arr.reshape(-1, 3)]
    return _estimate_from_od(od, alpha, beta)


class MacenkoNormalizer:
    """Maps H&E tiles onto a reference stain appearance (Macenko), one tile or a batch at a time."""

    def __init__(
        self,
        stain_matrix: np.ndarray,
        max_concentrations: np.ndarray,
        io: float = DEFAULT_IO,
        alpha: float = DEFAULT_ALPHA,
        beta: float = DEFAULT_BETA,
    ) -> None:
        he = np.asarray(stain_matrix, dtype=np.float64)
        mc = np.asarray(max_concentrations, dtype=np.float64)
        if he.shape != (3, 2) or mc.shape != (2,):
            raise ValueError(f"stain matrix must be (3, 2) and max concentrations (2,), got {he.shape}, {mc.shape}")
        if not (np.all(np.isfinite(he)) and np.all(np.isfinite(mc))) or np.any(mc <= 0):
            raise ValueError("reference stain matrix / max concentrations must be finite and positive")
        self.stain_matrix = he
        self.max_concentrations = mc
        self.io = float(io)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self._lut = _od_lut(self.io)

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_image(
        cls, img: np.ndarray, io: float = DEFAULT_IO, alpha: float = DEFAULT_ALPHA, beta: float = DEFAULT_BETA
    ) -> "MacenkoNormalizer":
        """Reference taken from an RGB image; raises ValueError if its stain cannot be estimated."""
        est = estimate_stain(img, io=io, alpha=alpha, beta=beta)
        if est is None:
            raise ValueError("cannot estimate the stain of the reference image (too little tissue?)")
        return cls(est.stain_matrix, est.max_concentrations, io=io, alpha=alpha, beta=beta)

    @classmethod
    def from_reference_file(cls, path: str | Path | None = None, **kw: float) -> "MacenkoNormalizer":
        """Reference from an image file; default the shipped ``Ref.png`` (resources.STAIN_REFERENCE)."""
        return cls.from_image(read_rgb(STAIN_REFERENCE if path is None else path), **kw)

    @classmethod
    def from_dict(cls, d: dict) -> "MacenkoNormalizer":
        """From the manifest form (see :meth:`to_dict`)."""
        return cls(
            np.asarray(d["stain_matrix"], dtype=np.float64),
            np.asarray(d["max_concentrations"], dtype=np.float64),
            io=d.get("io", DEFAULT_IO),
            alpha=d.get("alpha", DEFAULT_ALPHA),
            beta=d.get("beta", DEFAULT_BETA),
        )

    def to_dict(self) -> dict:
        """Manifest form: reference stain matrix, max concentrations and parameters."""
        return StainEstimate(self.stain_matrix, self.max_concentrations).to_dict(self.io, self.alpha, self.beta)

    # ---- normalisation ------------------------------------------------------------------
    def estimate(self, img: np.ndarray) -> StainEstimate | None:
        """Stain of one tile with this normaliser's parameters (None if not estimable)."""
        arr = _as_uint8_rgb(img)
        return _estimate_from_od(self._lut[arr.reshape(-1, 3)], self.alpha, self.beta)

    def normalize(self, img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Normalise (H, W, 3) or (B, H, W, 3) uint8.

        Returns ``(out, fallback)``: ``out`` has the input's shape and dtype uint8; ``fallback`` is
        a bool array (shape () for one image, (B,) for a batch) that is True where the tile's stain
        could not be estimated and the tile was returned unchanged.
        """
        arr = _as_uint8_rgb(img)
        single = arr.ndim == 3
        batch = arr[None] if single else arr
        if batch.ndim != 4:
            raise ValueError(f"expected (H, W, 3) or (B, H, W, 3), got shape {arr.shape}")
        b, h, w, _ = batch.shape
        out = batch.copy()
        fallback = np.ones(b, dtype=bool)
        if b == 0 or h * w == 0:
            return (out[0] if single else out), (fallback[0] if single else fallback)
        # Chunks of a few tiles keep the float32 OD arrays in cache (faster than one huge array).
        for s0 in range(0, b, _CHUNK):
            s1 = min(b, s0 + _CHUNK)
            fallback[s0:s1] = self._normalize_chunk(batch[s0:s1], out[s0:s1])
        return (out[0] if single else out), (fallback[0] if single else fallback)

    __call__ = normalize

    def _normalize_chunk(self, batch: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Normalise (b, H, W, 3) into ``out`` (a view); return the (b,) fallback flags."""
        b, h, w, _ = batch.shape
        fallback = np.ones(b, dtype=bool)
        od = self._lut[batch.reshape(b, -1, 3)]  # (b, N, 3) float32
        inv = np.zeros((b, 2, 3), dtype=np.float32)
        scale = np.zeros((b, 2), dtype=np.float32)
        for i in range(b):
            est = _estimate_from_od(od[i], self.alpha, self.beta)
            if est is None:
                continue
            fallback[i] = False
            inv[i] = np.linalg.pinv(est.stain_matrix).astype(np.float32)
            scale[i] = (self.max_concentrations / est.max_concentrations).astype(np.float32)
        ok = np.flatnonzero(~fallback)
        if ok.size:
            # Unmix, rescale and recompose with the reference stains as one 3x3 map per tile:
            # od_norm = od @ (inv^T * scale) @ HE_ref^T
            ref_t = self.stain_matrix.T.astype(np.float32)  # (2, 3)
            m = np.einsum("bkc,bk,kd->bcd", inv[ok], scale[ok], ref_t)  # (b', 3, 3)
            od_n = np.matmul(od[ok], m)
            np.negative(od_n, out=od_n)
            np.exp(od_n, out=od_n)
            od_n *= self.io
            np.clip(od_n, 0.0, 255.0, out=od_n)
            np.rint(od_n, out=od_n)
            out[ok] = od_n.reshape(ok.size, h, w, 3).astype(np.uint8)
        return fallback
