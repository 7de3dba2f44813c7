"""Write pyramidal test slides (Aperio SVS, OME-TIFF, generic tiled TIFF) with tifffile.

Tests, benchmarks and the semi-synthetic cohort generator need real pyramid files that
tiffslide reads exactly as it reads scanner output; these writers follow the layouts that
tiffslide detects (Aperio thumbnail as page 1, level pages not marked "reduced",
``metadata=None`` on every page).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import tifffile

SlideFormat = Literal["svs", "ome", "tiff"]


def downsample2(img: np.ndarray) -> np.ndarray:
    """Halve an RGB image with area averaging (what scanners do for pyramid levels)."""
    h, w = img.shape[:2]
    return cv2.resize(img, (max(1, w // 2), max(1, h // 2)), interpolation=cv2.INTER_AREA)


def build_pyramid(level0: np.ndarray, min_size: int = 512, max_levels: int = 8) -> list[np.ndarray]:
    """Successive 2× (area) downsamples of ``level0`` until the longer side is < ``min_size``.

    Downsamples are integer halvings, so level ``k`` has downsample exactly ``2**k`` only when
    level-0 sides are divisible by ``2**k``; tiffslide reports the true ratio either way.
    """
    levels = [np.ascontiguousarray(level0)]
    while max(levels[-1].shape[:2]) >= 2 * min_size and len(levels) < max_levels:
        levels.append(downsample2(levels[-1]))
    return levels


def _thumbnail(img: np.ndarray, max_side: int = 768) -> np.ndarray:
    h, w = img.shape[:2]
    f = max_side / max(h, w)
    if f >= 1:
        return img
    return cv2.resize(img, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)


def write_slide(
    path: str | Path,
    level0: np.ndarray,
    mpp: float | None = 0.25,
    *,
    fmt: SlideFormat = "svs",
    tile: int = 256,
    compression: str = "jpeg",
    min_size: int = 512,
    levels: list[np.ndarray] | None = None,
    label: np.ndarray | None = None,
    macro: np.ndarray | None = None,
    objective_power: int | None = None,
) -> Path:
    """Write ``level0`` (H, W, 3 uint8) as a tiled pyramid slide and return its path.

    ``fmt="svs"`` writes an Aperio layout (MPP and AppMag in the description, thumbnail page,
    optional label/macro); ``"ome"`` an OME-TIFF with SubIFD levels and PhysicalSizeX/Y;
    ``"tiff"`` a generic tiled pyramid with no pixel size at all. ``mpp=None`` omits the
    pixel size (for "missing mpp" cases).
    """
    path = Path(path)
    if level0.dtype != np.uint8 or level0.ndim != 3 or level0.shape[2] != 3:
        raise ValueError("level0 must be an (H, W, 3) uint8 RGB array")
    pyramid = levels if levels is not None else build_pyramid(level0, min_size=min_size)
    comp = None if compression in ("none", None) else compression
    opts: dict = dict(photometric="rgb", compression=comp, metadata=None)
    if comp == "jpeg":
        opts["compressionargs"] = {"level": 85}
    h, w = level0.shape[:2]
    if objective_power is None and mpp is not None:
        objective_power = int(round(10.0 / mpp)) if mpp > 0 else None

    if fmt == "svs":
        with tifffile.TiffWriter(path, bigtiff=level0.nbytes > 2**31) as tw:
            desc = f"Aperio Image Library v12.0.0 \n{w}x{h} ({tile}x{tile}) JPEG/RGB Q=85"
            if objective_power is not None:
                desc += f"|AppMag = {objective_power}"
            if mpp is not None:
                desc += f"|MPP = {mpp:.6f}"
            tw.write(pyramid[0], tile=(tile, tile), description=desc, subfiletype=0, **opts)
            thumb = _thumbnail(level0)
            tw.write(
                thumb,
                description=f"Aperio Image Library v12.0.0 \n{w}x{h} -> {thumb.shape[1]}x{thumb.shape[0]} - ",
                photometric="rgb",
                compression=comp,
                metadata=None,
            )
            for lvl in pyramid[1:]:
                lh, lw = lvl.shape[:2]
                tw.write(
                    lvl,
                    tile=(tile, tile),
                    subfiletype=0,
                    description=f"Aperio Image Library v12.0.0 \n{w}x{h} -> {lw}x{lh} - ",
                    **opts,
                )
            if label is not None:
                tw.write(
                    label,
                    subfiletype=1,
                    description="Aperio Image Library v12.0.0\nlabel ",
                    photometric="rgb",
                    compression=None,
                    metadata=None,
                )
            if macro is not None:
                tw.write(
                    macro,
                    subfiletype=9,
                    description="Aperio Image Library v12.0.0\nmacro ",
                    photometric="rgb",
                    compression=comp,
                    metadata=None,
                )
        return path

    if fmt == "ome":
        meta: dict = {"axes": "YXS"}
        if mpp is not None:
            meta.update(PhysicalSizeX=mpp, PhysicalSizeXUnit="µm", PhysicalSizeY=mpp, PhysicalSizeYUnit="µm")
        with tifffile.TiffWriter(path, bigtiff=level0.nbytes > 2**31, ome=True) as tw:
            tw.write(
                pyramid[0],
                tile=(tile, tile),
                subifds=len(pyramid) - 1,
                photometric="rgb",
                compression=comp,
                metadata=meta,
                compressionargs=opts.get("compressionargs"),
            )
            for lvl in pyramid[1:]:
                tw.write(
                    lvl,
                    tile=(tile, tile),
                    subfiletype=1,
                    photometric="rgb",
                    compression=comp,
                    compressionargs=opts.get("compressionargs"),
                )
        return path

    if fmt == "tiff":
        with tifffile.TiffWriter(path, bigtiff=level0.nbytes > 2**31) as tw:
            tw.write(pyramid[0], tile=(tile, tile), subifds=len(pyramid) - 1, **opts)
            for lvl in pyramid[1:]:
                tw.write(lvl, tile=(tile, tile), subfiletype=1, **opts)
        return path

    raise ValueError(f"unknown slide format {fmt!r}")


def synthetic_he(height: int, width: int, seed: int = 0, tissue_fraction: float = 0.6) -> np.ndarray:
    """An H&E-looking RGB image: pink stroma blobs with purple nuclei on white glass.

    Cheap enough for 32k² benchmarks (built at 1/8 resolution, then upsampled, plus
    full-resolution nuclei noise) and structured enough for tissue detection to mean something.
    """
    rng = np.random.default_rng(seed)
    sh, sw = max(4, height // 64), max(4, width // 64)
    field = cv2.GaussianBlur(rng.random((sh, sw), dtype=np.float32), (0, 0), sigmaX=2.0)
    thr = np.quantile(field, 1.0 - tissue_fraction)
    mask_small = (field > thr).astype(np.float32)
    mask = cv2.resize(mask_small, (width, height), interpolation=cv2.INTER_LINEAR) > 0.5
    out = np.full((height, width, 3), 243, dtype=np.uint8)
    pink = np.array([232, 160, 200], dtype=np.uint8)
    out[mask] = pink
    # nuclei: sparse purple dots, only on tissue
    n = int(mask.sum() / 400)
    if n:
        ys = rng.integers(0, height, n)
        xs = rng.integers(0, width, n)
        keep = mask[ys, xs]
        for y, x in zip(ys[keep], xs[keep]):
            cv2.circle(out, (int(x), int(y)), 3, (90, 40, 140), -1)
    noise = rng.integers(-12, 13, size=(height, width, 1), dtype=np.int16)
    out = np.clip(out.astype(np.int16) + noise * mask[..., None], 0, 255).astype(np.uint8)
    return out
