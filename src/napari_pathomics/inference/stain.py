"""Macenko stain normalisation for the patch model: the one implementation lives in ``wsi.normalize``
(the learned nuclei model, a lower stage, normalises with it too)."""

from __future__ import annotations

from ..wsi.normalize import DEFAULT_ALPHA, DEFAULT_BETA, DEFAULT_IO, MacenkoNormalizer, StainEstimate, estimate_stain

__all__ = [
    "StainEstimate",
    "estimate_stain",
    "MacenkoNormalizer",
    "DEFAULT_IO",
    "DEFAULT_ALPHA",
    "DEFAULT_BETA",
]
