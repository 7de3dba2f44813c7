"""Classify loose tile images with a bundle (``pathomics classify-tiles``).

Tiles are taken to be at the bundle's µm/px; each is resized to the bundle's input size,
Macenko-normalised and z-scored by :func:`~.preprocess.preprocess_batch`, the same path the
slide inference engine uses.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

from ..errors import PathomicsError
from .bundle import Bundle
from .preprocess import preprocess_batch, resize_batch_uint8

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["IMAGE_SUFFIXES", "list_images", "read_image", "classify_arrays", "classify_files"]

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")


def list_images(path: str | Path) -> list[Path]:
    """Image files under a folder (recursive, sorted) or the single file given."""
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise PathomicsError(f"no such file or folder: {p}")
    files = sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise PathomicsError(f"{p}: no PNG/TIFF/JPEG images found")
    return files


def read_image(path: Path) -> np.ndarray:
    """RGB uint8 (H, W, 3) from PNG/TIFF/JPEG (alpha dropped, greyscale expanded)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except Exception as exc:
        raise PathomicsError(f"{path}: cannot read image ({exc})") from None


def classify_arrays(
    images: Iterable[np.ndarray],
    bundle: Bundle,
    model: "torch.nn.Module | None" = None,
    batch_size: int = 32,
    device: str = "cpu",
) -> np.ndarray:
    """Class probabilities (N, C) float32 for RGB uint8 images of any size."""
    import torch

    model = model if model is not None else bundle.create_model(device)
    size = bundle.input_size
    resized = [resize_batch_uint8(np.asarray(im, dtype=np.uint8)[None], size)[0] for im in images]
    out = []
    for i in range(0, len(resized), batch_size):
        x = preprocess_batch(np.stack(resized[i : i + batch_size]), bundle).to(device)
        with torch.inference_mode():
            out.append(model(x).float().softmax(1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, bundle.num_classes), dtype=np.float32)


def classify_files(
    paths: Sequence[Path], bundle: Bundle, batch_size: int = 32, device: str = "cpu"
) -> list[dict]:
    """One record per file: {"file", "class", "probabilities": {class: p}}."""
    probs = classify_arrays((read_image(p) for p in paths), bundle, batch_size=batch_size, device=device)
    names = bundle.class_names
    return [
        {
            "file": str(p),
            "class": names[int(pr.argmax())],
            "probabilities": {n: round(float(v), 6) for n, v in zip(names, pr)},
        }
        for p, pr in zip(paths, probs)
    ]
