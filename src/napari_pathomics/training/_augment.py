"""Strong, deterministic (seeded) augmentation of H&E tiles for training with very little data.

Applied after Macenko normalisation (which runs once per training tile, as at inference), so the
stain jitter models the residual stain variation the normaliser leaves behind. Geometry:
random resized crops (0.5-1.0 of the area, aspect 3/4-4/3 → up to ~1.4× zoom, i.e. µm/px
jitter), flips and 90° rotations. Colour: HED jitter, brightness/contrast/saturation; blur.

Two stronger stain augmentations (off by default; ``benchmarks/bench_generalise.py`` compares
them on a split by source): a stronger HED jitter (``hed_sigma``/``hed_bias``, e.g. Tellez et
al.'s "HED-strong" 0.2/0.05), and **Macenko with a jittered reference** (``macenko_jitter_deg``):
the tile's stain is estimated (Macenko), its H and E vectors are each turned by up to that many
degrees in a random direction and its stain concentrations scaled by up to ±``macenko_jitter_conc``,
and the tile is recomposed with them — another stain batch of the same tissue.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.ndimage import gaussian_filter
from skimage.color import hed_from_rgb, rgb_from_hed

from ..inference.preprocess import resize_batch_uint8
from ..inference.stain import MacenkoNormalizer, estimate_stain

__all__ = ["AugmentConfig", "augment_tile", "augment_batch", "macenko_jitter"]


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation strengths (recorded in the run record)."""

    crop_scale: tuple[float, float] = (0.5, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hed_sigma: float = 0.05  # multiplicative jitter of each HED channel
    hed_bias: float = 0.02  # additive jitter of each HED channel
    brightness: float = 0.1
    contrast: float = 0.1
    saturation: float = 0.1
    blur_p: float = 0.3
    blur_sigma: tuple[float, float] = (0.1, 1.2)
    macenko_jitter_deg: float = 0.0  # turn the tile's H and E vectors by up to this (0 = off)
    macenko_jitter_conc: float = 0.3  # and scale its stain concentrations by up to ± this

    def to_dict(self) -> dict:
        return asdict(self)


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    return resize_batch_uint8(img[None], size)[0]


def _hed_jitter(img: np.ndarray, rng: np.random.Generator, sigma: float, bias: float) -> np.ndarray:
    """Scale and shift the H, E, D optical densities (Ruifrok colour deconvolution), as one 3x3 map."""
    alpha = rng.uniform(1 - sigma, 1 + sigma, size=3)
    beta = rng.uniform(-bias, bias, size=3)
    od_lut = -np.log(np.maximum(np.arange(256, dtype=np.float32), 1.0) / 255.0)
    od = od_lut[img.reshape(-1, 3)]
    m = (hed_from_rgb * alpha[None, :]) @ rgb_from_hed
    od2 = od @ m.astype(np.float32) + (beta @ rgb_from_hed).astype(np.float32)
    rgb = np.exp(-np.maximum(od2, 0.0)) * 255.0
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8).reshape(img.shape)


def _turn(v: np.ndarray, rng: np.random.Generator, max_deg: float) -> np.ndarray:
    """Unit vector ``v`` turned by up to ``max_deg`` degrees in a random direction (kept a positive OD)."""
    u = rng.standard_normal(3)
    u -= (u @ v) * v
    u /= max(float(np.linalg.norm(u)), 1e-12)
    t = np.deg2rad(rng.uniform(0.0, max_deg))
    w = np.maximum(np.cos(t) * v + np.sin(t) * u, 1e-3)
    return w / np.linalg.norm(w)


def macenko_jitter(img: np.ndarray, rng: np.random.Generator, max_deg: float, conc: float = 0.3) -> np.ndarray:
    """The tile recomposed with its own Macenko stain vectors turned and concentrations scaled (unchanged
    when its stain cannot be estimated, as Macenko normalisation leaves such tiles)."""
    est = estimate_stain(img)
    if est is None:
        return img
    he = np.stack(
        [_turn(est.stain_matrix[:, k] / np.linalg.norm(est.stain_matrix[:, k]), rng, max_deg) for k in range(2)], axis=1
    )
    mc = est.max_concentrations * rng.uniform(1 - conc, 1 + conc, size=2)
    out, _ = MacenkoNormalizer(he, np.maximum(mc, 1e-3)).normalize(img)
    return out


def augment_tile(
    img: np.ndarray, size: int, rng: np.random.Generator, cfg: AugmentConfig = AugmentConfig()
) -> np.ndarray:
    """One augmented view (size, size, 3) uint8 of an RGB uint8 tile."""
    h, w = img.shape[:2]
    area = h * w
    for _ in range(10):
        target = area * rng.uniform(*cfg.crop_scale)
        ratio = np.exp(rng.uniform(np.log(cfg.crop_ratio[0]), np.log(cfg.crop_ratio[1])))
        cw = int(round(np.sqrt(target * ratio)))
        ch = int(round(np.sqrt(target / ratio)))
        if 0 < cw <= w and 0 < ch <= h:
            break
    else:
        cw, ch = w, h
    y0 = int(rng.integers(0, h - ch + 1))
    x0 = int(rng.integers(0, w - cw + 1))
    out = _resize(np.ascontiguousarray(img[y0 : y0 + ch, x0 : x0 + cw]), size)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    if rng.random() < 0.5:
        out = out[::-1]
    out = np.rot90(out, int(rng.integers(0, 4)))
    out = np.ascontiguousarray(out)
    if cfg.macenko_jitter_deg > 0:
        out = macenko_jitter(out, rng, cfg.macenko_jitter_deg, cfg.macenko_jitter_conc)
    if cfg.hed_sigma > 0 or cfg.hed_bias > 0:
        out = _hed_jitter(out, rng, cfg.hed_sigma, cfg.hed_bias)
    f = out.astype(np.float32)
    f *= rng.uniform(1 - cfg.brightness, 1 + cfg.brightness)
    mean = f.mean()
    f = (f - mean) * rng.uniform(1 - cfg.contrast, 1 + cfg.contrast) + mean
    gray = f.mean(axis=2, keepdims=True)
    f = (f - gray) * rng.uniform(1 - cfg.saturation, 1 + cfg.saturation) + gray
    if rng.random() < cfg.blur_p:
        s = rng.uniform(*cfg.blur_sigma)
        f = gaussian_filter(f, sigma=(s, s, 0))
    return np.clip(f + 0.5, 0, 255).astype(np.uint8)


def augment_batch(
    tiles: list[np.ndarray] | np.ndarray, size: int, rng: np.random.Generator, cfg: AugmentConfig = AugmentConfig()
) -> np.ndarray:
    """Augmented views (B, size, size, 3) uint8, one per input tile."""
    return np.stack([augment_tile(t, size, rng, cfg) for t in tiles])
