"""Plain RGB images (tiles, crops, reference images): listing and reading them as uint8 RGB."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from ..errors import PathomicsError

__all__ = ["IMAGE_SUFFIXES", "ImageError", "list_images", "read_rgb"]

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")


class ImageError(PathomicsError):
    """An image file cannot be read, or a folder holds none."""

    exit_code = 14


def read_rgb(path: str | Path) -> np.ndarray:
    """RGB uint8 (H, W, 3): alpha dropped, greyscale expanded; tifffile reads what PIL cannot."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for bad files
        try:
            arr = tifffile.imread(path)
            if arr.ndim == 3 and arr.shape[-1] >= 3 and arr.dtype == np.uint8:
                return np.ascontiguousarray(arr[..., :3])
        except Exception:  # noqa: BLE001, S110 - the PIL error is the one worth reporting
            pass
        raise ImageError(f"{path}: cannot read image ({exc})") from None


def list_images(path: str | Path) -> list[Path]:
    """Image files under a folder (recursive, sorted) or the single file given."""
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise ImageError(f"no such file or folder: {p}")
    files = sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ImageError(f"{p}: no PNG/TIFF/JPEG images found")
    return files
