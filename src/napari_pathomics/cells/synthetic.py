"""Planted nuclei with known instance masks, rendered as H&E through Beer–Lambert.

Tests and ``benchmarks/bench_nuclei.py`` need images whose every nucleus is known: where it
is, how large, which pixels are its own where two touch. Each scene draws elliptical nuclei of
log-normal size (some small, round and dark like lymphocytes, some large and vesicular with a
pale centre and a dark rim), lets a share of them touch or overlap in clusters, and renders
optical density ``OD = c_H·h + c_E·e`` with Ruifrok's stain vectors, chromatin texture, a blurred
edge and sensor noise. Where nuclei overlap, the pixels belong to the one drawn last (on top),
as an annotator outlines them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from .stain import RUIFROK_HE

__all__ = ["SyntheticScene", "plant_nuclei", "render_he", "disc_scene"]


@dataclass
class SyntheticScene:
    """An RGB image and its truth: instance labels (0 = background) and per-nucleus facts."""

    rgb: np.ndarray  # (H, W, 3) uint8
    labels: np.ndarray  # (H, W) int32 instance labels of the planted nuclei
    mpp: float
    kind: np.ndarray  # (N,) str: "epithelial", "lymphocyte", "vesicular"
    touching: np.ndarray  # (N,) bool: planted touching or overlapping another nucleus

    @property
    def count(self) -> int:
        return int(self.kind.size)


def _ellipse_mask(
    shape: tuple[int, int], cy: float, cx: float, a: float, b: float, theta: float
) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray]:
    """Pixels (by centre) inside an ellipse: the bounding-box slices, the mask and the radial coordinate."""
    r = max(a, b) + 2
    y0, y1 = max(0, int(cy - r)), min(shape[0], int(cy + r) + 2)
    x0, x1 = max(0, int(cx - r)), min(shape[1], int(cx + r) + 2)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dy, dx = yy + 0.5 - cy, xx + 0.5 - cx
    c, s = math.cos(theta), math.sin(theta)
    u, v = (dx * c + dy * s) / a, (-dx * s + dy * c) / b
    rho = np.sqrt(u * u + v * v)
    return (slice(y0, y1), slice(x0, x1)), rho <= 1.0, rho


def plant_nuclei(
    height: int,
    width: int,
    mpp: float = 0.5,
    *,
    n: int | None = None,
    seed: int = 0,
    touching_fraction: float = 0.35,
    lymphocyte_fraction: float = 0.25,
    vesicular_fraction: float = 0.2,
    density_per_mm2: float = 3500.0,
) -> SyntheticScene:
    """A scene of planted nuclei on eosin-stained tissue (see the module docstring).

    Sizes are physical: epithelial nuclei ~ 6–12 µm across, lymphocytes ~ 5–7 µm, so the same
    call at 0.25 and 0.5 µm/px plants the same tissue at two resolutions.
    """
    rng = np.random.default_rng(seed)
    area_mm2 = height * width * (mpp * 1e-3) ** 2
    n = int(round(density_per_mm2 * area_mm2)) if n is None else int(n)
    labels = np.zeros((height, width), dtype=np.int32)
    c_h = np.zeros((height, width), dtype=np.float32)
    kinds: list[str] = []
    touching: list[bool] = []
    centres: list[tuple[float, float, float]] = []  # cy, cx, radius (px)
    occupied = np.zeros((height, width), dtype=bool)
    attempts = 0
    while len(kinds) < n and attempts < 50 * max(n, 1):
        attempts += 1
        u = rng.random()
        kind = (
            "lymphocyte"
            if u < lymphocyte_fraction
            else ("vesicular" if u < lymphocyte_fraction + vesicular_fraction else "epithelial")
        )
        # haematoxylin concentrations (Ruifrok units) as measured on real 20-40x H&E: cytoplasm and
        # stroma ~0.5, epithelial nuclei ~1.1, lymphocytes ~1.6, a vesicular nucleus's rim ~1.0
        # around chromatin barely darker than the cytoplasm
        if kind == "lymphocyte":
            d_um = rng.uniform(5.0, 7.0)
            ratio = rng.uniform(0.85, 1.0)
            dark = rng.uniform(1.4, 1.9)
        elif kind == "vesicular":
            d_um = float(np.exp(rng.normal(math.log(11.0), 0.15)))
            ratio = rng.uniform(0.6, 0.9)
            dark = rng.uniform(0.9, 1.1)
        else:
            d_um = float(np.exp(rng.normal(math.log(8.5), 0.18)))
            ratio = rng.uniform(0.5, 0.9)
            dark = rng.uniform(0.9, 1.3)
        a = d_um / 2 / mpp
        b = a * ratio
        want_touch = bool(centres) and rng.random() < touching_fraction
        if want_touch:
            cy0, cx0, r0 = centres[int(rng.integers(len(centres)))]
            ang = rng.uniform(0, 2 * math.pi)
            dist = (r0 + (a + b) / 2) * rng.uniform(0.8, 1.0)  # centres closer than the radii: contact
            cy, cx = cy0 + dist * math.sin(ang), cx0 + dist * math.cos(ang)
        else:
            cy, cx = rng.uniform(a, height - a), rng.uniform(a, width - a)
        if not (a <= cy < height - a and a <= cx < width - a):
            continue
        sl, inside, rho = _ellipse_mask((height, width), cy, cx, a, b, rng.uniform(0, math.pi))
        if not inside.any():
            continue
        overlap = occupied[sl][inside].mean()
        if (not want_touch and overlap > 0) or overlap > 0.2:
            continue  # isolated nuclei stay isolated; touching ones overlap a little at most
        idx = len(kinds) + 1
        texture = rng.normal(1.0, 0.12, size=inside.shape).astype(np.float32)
        profile = np.where(rho < 0.75, 0.6, 1.0) if kind == "vesicular" else np.ones_like(rho)
        conc = (dark * profile * texture).astype(np.float32)
        region = labels[sl]
        region[inside] = idx
        c_h[sl][inside] = conc[inside]
        occupied[sl] |= inside
        kinds.append(kind)
        touching.append(want_touch)
        centres.append((cy, cx, (a + b) / 2))
    # every planted nucleus keeps at least one pixel of its own; a fully covered one is dropped
    present = np.zeros(len(kinds) + 1, dtype=bool)
    present[np.unique(labels)] = True
    keep = np.flatnonzero(present[1:])
    remap = np.zeros(len(kinds) + 1, dtype=np.int32)
    remap[keep + 1] = np.arange(1, keep.size + 1)
    labels = remap[labels]
    kind_arr = np.asarray(kinds, dtype=object)[keep].astype(str)
    touch_arr = np.asarray(touching, dtype=bool)[keep]
    # contact in the final masks (a planted "touch" may end up apart, an isolated one may be touched)
    touch_arr = _touching(labels, keep.size)
    rgb = render_he(c_h, rng, mpp)
    return SyntheticScene(rgb=rgb, labels=labels, mpp=mpp, kind=kind_arr, touching=touch_arr)


def _touching(labels: np.ndarray, n: int) -> np.ndarray:
    """(n,) bool: the label shares an edge with another label."""
    out = np.zeros(n + 1, dtype=bool)
    for a, b in ((labels[:, :-1], labels[:, 1:]), (labels[:-1, :], labels[1:, :])):
        m = (a != b) & (a > 0) & (b > 0)
        out[a[m]] = True
        out[b[m]] = True
    return out[1:]


def render_he(
    c_h: np.ndarray,
    rng: np.random.Generator,
    mpp: float,
    *,
    eosin: float = 0.4,
    background_h: float = 0.45,
    blur_um: float = 0.35,
    noise: float = 3.0,
) -> np.ndarray:
    """RGB of nuclear haematoxylin on cytoplasm/stroma (Beer–Lambert, Ruifrok vectors).

    Where a nucleus is, its concentration replaces the background's haematoxylin; eosin is
    everywhere (nuclei carry about as much as the cytoplasm, as measured on real slides).
    """
    h, w = c_h.shape
    small = rng.random((max(2, h // 32), max(2, w // 32))).astype(np.float32)
    field = cv2.resize(cv2.GaussianBlur(small, (0, 0), 1.5), (w, h), interpolation=cv2.INTER_CUBIC)
    c_e = eosin * (0.6 + 0.8 * field) * rng.normal(1.0, 0.06, size=(h, w)).astype(np.float32)
    back = background_h * (0.6 + 0.8 * field[::-1, ::-1]) * rng.normal(1.0, 0.08, size=(h, w)).astype(np.float32)
    sigma = max(0.3, blur_um / mpp)
    c_hb = cv2.GaussianBlur(np.where(c_h > 0, c_h, back).astype(np.float32), (0, 0), sigma)
    od = c_hb[..., None] * RUIFROK_HE[:, 0] + np.clip(c_e, 0, None)[..., None] * RUIFROK_HE[:, 1]
    rgb = 245.0 * np.exp(-od) + rng.normal(0.0, noise, size=(h, w, 3))
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def disc_scene(
    shape: tuple[int, int],
    discs: list[tuple[float, float, float]],
    *,
    background: tuple[int, int, int] = (235, 175, 205),
    nucleus: tuple[int, int, int] = (70, 40, 120),
) -> tuple[np.ndarray, np.ndarray]:
    """Flat-coloured discs (cy, cx, r in px) on a flat eosin background, and their labels.

    No blur, no noise: the exact arithmetic of areas and N:C ratios is testable on it.
    """
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    labels = np.zeros(shape, dtype=np.int32)
    for i, (cy, cx, r) in enumerate(discs, start=1):
        labels[(yy + 0.5 - cy) ** 2 + (xx + 0.5 - cx) ** 2 <= r * r] = i
    rgb = np.empty(shape + (3,), dtype=np.uint8)
    rgb[:] = background
    rgb[labels > 0] = nucleus
    return rgb, labels
