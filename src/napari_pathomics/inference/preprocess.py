"""Tile preprocessing shared by training, the inference engine and ``classify-tiles``.

uint8 RGB tiles (B, H, W, 3) → resize to the bundle's input size → Macenko onto the bundle's
reference → per-channel z-score with the bundle's mean/std → float32 (B, 3, S, S) in
channels_last memory format (faster convolutions on CPU).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np

from ..bundle import Bundle
from ..errors import BundleError
from .stain import MacenkoNormalizer

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["preprocess_batch", "resize_batch_uint8", "to_tensor", "bundle_normalizer"]

_NORMALIZERS: dict[str, MacenkoNormalizer] = {}
_NORMALIZERS_LOCK = threading.Lock()


def bundle_normalizer(bundle: Bundle) -> MacenkoNormalizer | None:
    """The Macenko normaliser of a bundle's reference (one per bundle id), or None if it has none."""
    spec = bundle.macenko
    if not spec:
        return None
    with _NORMALIZERS_LOCK:
        norm = _NORMALIZERS.get(bundle.bundle_id)
        if norm is None:
            try:
                norm = MacenkoNormalizer.from_dict(spec)
            except (ValueError, KeyError) as exc:
                raise BundleError(f"manifest.json: bad model.normalization.macenko ({exc})") from None
            _NORMALIZERS[bundle.bundle_id] = norm
        return norm


def resize_batch_uint8(tiles: np.ndarray, size: int) -> np.ndarray:
    """Resize (B, H, W, 3) uint8 to (B, size, size, 3) uint8 (antialiased bilinear); no-op if equal."""
    import torch  # heavy: torch loads with the first batch
    import torch.nn.functional as F  # heavy

    if tiles.shape[1] == size and tiles.shape[2] == size:
        return tiles
    t = torch.from_numpy(np.ascontiguousarray(tiles)).permute(0, 3, 1, 2).float()
    down = tiles.shape[1] > size or tiles.shape[2] > size
    r = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=down)
    return r.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def to_tensor(tiles: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> "torch.Tensor":
    """(B, H, W, 3) uint8 → z-scored float32 (B, 3, H, W), channels_last."""
    import torch  # heavy

    t = torch.from_numpy(np.ascontiguousarray(tiles)).permute(0, 3, 1, 2).float().div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return ((t - m) / s).contiguous(memory_format=torch.channels_last)


def preprocess_batch(
    tiles_uint8: np.ndarray,
    bundle: Bundle,
    normalizer: MacenkoNormalizer | Literal[False] | None = None,
    return_fallback: bool = False,
):
    """Model input for a batch of RGB tiles, exactly as the bundle was trained.

    ``normalizer``: None → the bundle's own Macenko normaliser (if it has one); a
    MacenkoNormalizer → that one; False → skip stain normalisation. With ``return_fallback``
    returns ``(tensor, fallback)`` where ``fallback`` (B,) bool marks tiles whose stain could not
    be estimated (left unnormalised).
    """
    arr = np.asarray(tiles_uint8)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"expected (B, H, W, 3) uint8 tiles, got {arr.shape} {arr.dtype}")
    arr = resize_batch_uint8(arr, bundle.input_size)
    norm = bundle_normalizer(bundle) if normalizer is None else (normalizer or None)
    fallback = np.zeros(arr.shape[0], dtype=bool)
    if norm is not None and arr.shape[0]:
        arr, fallback = norm.normalize(arr)
    x = to_tensor(arr, bundle.mean, bundle.std)
    return (x, fallback) if return_fallback else x
