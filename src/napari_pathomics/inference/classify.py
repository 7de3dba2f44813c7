"""Classify loose tile images with a bundle (``pathomics classify-tiles``).

Tiles are taken to be at the bundle's µm/px; each is resized to the bundle's input size,
Macenko-normalised and z-scored by :func:`~.preprocess.preprocess_batch`, the same path the
slide inference engine uses.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from ..bundle import Bundle
from ..wsi.images import read_rgb
from .backbones import PatchModel, build_model
from .preprocess import preprocess_batch, resize_batch_uint8

__all__ = ["classify_arrays", "classify_files"]


def classify_arrays(
    images: Iterable[np.ndarray],
    bundle: Bundle,
    model: PatchModel | None = None,
    batch_size: int = 32,
    device: str = "cpu",
) -> np.ndarray:
    """Class probabilities (N, C) float32 for RGB uint8 images of any size."""
    import torch  # heavy

    model = model if model is not None else build_model(bundle, device)
    size = bundle.input_size
    resized = [resize_batch_uint8(np.asarray(im, dtype=np.uint8)[None], size)[0] for im in images]
    out = []
    for i in range(0, len(resized), batch_size):
        x = preprocess_batch(np.stack(resized[i : i + batch_size]), bundle).to(device)
        with torch.inference_mode():
            out.append(model(x).float().softmax(1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, bundle.num_classes), dtype=np.float32)


def classify_files(paths: Sequence[Path], bundle: Bundle, batch_size: int = 32, device: str = "cpu") -> list[dict]:
    """One record per file: {"file", "class", "probabilities": {class: p}}."""
    probs = classify_arrays((read_rgb(p) for p in paths), bundle, batch_size=batch_size, device=device)
    names = bundle.class_names
    return [
        {
            "file": str(p),
            "class": names[int(pr.argmax())],
            "probabilities": {n: round(float(v), 6) for n, v in zip(names, pr)},
        }
        for p, pr in zip(paths, probs)
    ]
