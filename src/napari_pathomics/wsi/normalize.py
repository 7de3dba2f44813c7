"""Vectorised Macenko stain normalisation (H&E), fast enough to run per tile at inference.

The stain of each tile is estimated with ``wsi.stain`` (Macenko et al. 2009, the one owner of
the estimate); concentrations are then rescaled so that their 99th percentile matches a
reference image's, and recomposed with the reference stain vectors.

Speed tricks: OD of uint8 values comes from a 256-entry lookup table; a batch is estimated tile
by tile (3×3 eigen problems) but unmixed and recomposed in one einsum. A tile whose stain
cannot be estimated is returned unchanged and flagged, never raised.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..resources import STAIN_REFERENCE
from .images import read_rgb
from .stain import (
    DEFAULT_ALPHA,
    DEFAULT_BETA,
    DEFAULT_IO,
    StainEstimate,
    as_uint8_rgb,
    estimate_from_od,
    estimate_stain,
    od_lut,
    stain_reference_problem,
)

__all__ = [
    "StainEstimate",
    "estimate_stain",
    "MacenkoNormalizer",
    "DEFAULT_IO",
    "DEFAULT_ALPHA",
    "DEFAULT_BETA",
]

#: Tiles normalised together (bounded temporary memory, cache friendly).
_CHUNK: int = 8


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
        self._lut = od_lut(self.io)

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
        """From the manifest form (see :meth:`to_dict`); ValueError when it is no H&E reference."""
        why = stain_reference_problem(d["stain_matrix"], d["max_concentrations"])
        if why:
            raise ValueError(why)
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
        arr = as_uint8_rgb(img)
        return estimate_from_od(self._lut[arr.reshape(-1, 3)], self.alpha, self.beta)

    def normalize(self, img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Normalise (H, W, 3) or (B, H, W, 3) uint8.

        Returns ``(out, fallback)``: ``out`` has the input's shape and dtype uint8; ``fallback`` is
        a bool array (shape () for one image, (B,) for a batch) that is True where the tile's stain
        could not be estimated and the tile was returned unchanged.
        """
        arr = as_uint8_rgb(img)
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
            est = estimate_from_od(od[i], self.alpha, self.beta)
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
