"""The haematoxylin channel of an H&E image: colour deconvolution with the slide's own stains.

Nuclei are where haematoxylin is. Optical density ``OD = −log(I / I0)`` is linear in the stain
concentrations, so the haematoxylin concentration of a pixel is one row of the pseudo-inverse
of the (3 × 2) stain matrix applied to its OD. The matrix is the slide's own Macenko estimate
(``wsi.stain``) when one is given or can be made, else Ruifrok & Johnston's (2001) standard H&E
vectors (scikit-image's ``rgb_from_hed``). An estimate whose haematoxylin vector lies far from
any plausible haematoxylin (a mis-ordered or non-H&E estimate) falls back to Ruifrok.

The channel is three table look-ups per pixel (the OD of each uint8 value, pre-multiplied by
the unmixing weight of its channel) and two additions: no float image of OD is built.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from skimage.color import rgb_from_hed

from ..wsi.stain import DEFAULT_IO, StainEstimate, estimate_stain, od_lut

__all__ = ["RUIFROK_HE", "StainVectors", "haematoxylin", "eosin", "slide_stain", "MAX_H_ANGLE_DEG"]

#: Ruifrok & Johnston's H and E optical-density vectors (unit columns), as scikit-image ships them.
RUIFROK_HE: np.ndarray = (rgb_from_hed[:2] / np.linalg.norm(rgb_from_hed[:2], axis=1, keepdims=True)).T.astype(
    np.float32
)
#: An estimated haematoxylin vector further than this from Ruifrok's is not trusted.
MAX_H_ANGLE_DEG = 30.0


@dataclass(frozen=True)
class StainVectors:
    """The (3, 2) H, E stain matrix a segmentation unmixed with, and where it came from."""

    matrix: np.ndarray
    source: str  # "macenko" (the image's or slide's own estimate) or "ruifrok"
    io: float = float(DEFAULT_IO)

    @property
    def h_weights(self) -> np.ndarray:
        """(3,) weights giving the haematoxylin concentration from an OD pixel (least squares)."""
        return np.linalg.pinv(self.matrix.astype(np.float64))[0].astype(np.float32)

    @property
    def e_weights(self) -> np.ndarray:
        """(3,) weights giving the eosin concentration from an OD pixel (least squares)."""
        return np.linalg.pinv(self.matrix.astype(np.float64))[1].astype(np.float32)

    def to_json(self) -> dict[str, object]:
        return {"source": self.source, "io": self.io, "matrix": [[float(v) for v in r] for r in self.matrix]}

    @classmethod
    def ruifrok(cls) -> StainVectors:
        return cls(RUIFROK_HE.copy(), "ruifrok")

    @classmethod
    def from_estimate(cls, est: StainEstimate | None, io: float = float(DEFAULT_IO)) -> StainVectors:
        """The estimate if its haematoxylin is plausible, else Ruifrok's vectors."""
        if est is None:
            return cls.ruifrok()
        h = np.asarray(est.stain_matrix[:, 0], dtype=np.float64)
        cos = float(h @ RUIFROK_HE[:, 0].astype(np.float64) / max(float(np.linalg.norm(h)), 1e-12))
        if not np.isfinite(cos) or np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))) > MAX_H_ANGLE_DEG:
            return cls.ruifrok()
        return cls(np.asarray(est.stain_matrix, dtype=np.float32), "macenko", io)


def slide_stain(samples: np.ndarray) -> StainVectors:
    """The stain of an image or of tiles sampled across a slide (``(..., H, W, 3)`` uint8)."""
    arr = np.asarray(samples)
    flat = arr.reshape(1, -1, 3) if arr.ndim != 3 else arr
    return StainVectors.from_estimate(estimate_stain(np.ascontiguousarray(flat)))


def _unmix(rgb: np.ndarray, lut: np.ndarray, w: np.ndarray) -> np.ndarray:
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    out = (lut * w[0])[r]
    out += (lut * w[1])[g]
    out += (lut * w[2])[b]
    return out


def haematoxylin(rgb: np.ndarray, stain: StainVectors | None = None) -> np.ndarray:
    """(H, W) float32 haematoxylin concentration of an RGB uint8 image (0 = none)."""
    stain = stain or StainVectors.ruifrok()
    return _unmix(rgb, od_lut(stain.io), stain.h_weights)


def eosin(rgb: np.ndarray, stain: StainVectors | None = None) -> np.ndarray:
    """(H, W) float32 eosin concentration of an RGB uint8 image (0 = none)."""
    stain = stain or StainVectors.ruifrok()
    return _unmix(rgb, od_lut(stain.io), stain.e_weights)
