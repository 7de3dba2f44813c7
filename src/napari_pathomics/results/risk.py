"""The one definition of a tile's patch risk, shared by the engine, Grad-CAM and every layer.

A tile's risk is its class probabilities weighted per class and rescaled to 0..1:
``(Σ_c w_c p_c − min w) / (max w − min w)`` (exact min-max because a tile's probabilities sum
to 1). The weights are the bundle's signature's ``patch_risk_weights`` when it has them (so the
heatmap and the risk activation map show what drives *that* signature), else 1 for the model's
high-risk classes and 0 for the others. A bundle with a risk head replaces this by the head's
output (``inference.risk_head``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..bundle import Bundle
from ..errors import BundleError, SignatureError
from ..signature.model import read_patch_risk_weights

__all__ = ["class_risk_weights", "patch_risk_weights", "patch_risk", "risk_range", "weighted_risk"]


def class_risk_weights(bundle: Bundle) -> np.ndarray:
    """Per-class weights (C,) of the model alone: 1 for its high-risk classes, else 0."""
    hr = set(bundle.high_risk_classes)
    return np.array([1.0 if n in hr else 0.0 for n in bundle.class_names], dtype=np.float32)


def patch_risk_weights(bundle: Bundle) -> np.ndarray:
    """Per-class patch-risk weights (C,): the signature's if the bundle has one, else the model's.

    Classes the signature does not name weigh 0.
    """
    names = list(bundle.class_names)
    path = bundle.file("signature")
    if path is not None:
        try:
            spec = read_patch_risk_weights(path)
        except SignatureError as exc:
            raise BundleError(f"{path.name}: unusable signature ({exc})") from None
        if spec:
            unknown = sorted(set(spec) - set(names))
            if unknown:
                raise BundleError(f"{path.name}: patch_risk_weights names unknown classes {unknown}")
            w = np.array([float(spec.get(n, 0.0)) for n in names], dtype=np.float64)
            if not np.all(np.isfinite(w)):
                raise BundleError(f"{path.name}: patch_risk_weights must be finite numbers")
            return w.astype(np.float32)
    return class_risk_weights(bundle).reshape(len(names))


def risk_range(weights: np.ndarray) -> tuple[float, float]:
    """(min w, max w): the range a weighted probability vector can take."""
    w = np.asarray(weights, dtype=np.float64)
    return float(w.min()), float(w.max())


def weighted_risk(probs: Any, weights: Any, lo: float, hi: float) -> Any:
    """``(Σ_c w_c p_c − lo) / (hi − lo)`` for numpy arrays or torch tensors alike (no clipping)."""
    return ((probs * weights).sum(-1) - lo) / (hi - lo)


def patch_risk(probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Risk in [0, 1] per tile; all-equal weights give 0; NaN rows (tiles not done) stay NaN."""
    p = np.asarray(probs, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    lo, hi = risk_range(w)
    if hi - lo <= 0:
        out = np.zeros(p.shape[:-1])
        out[np.isnan(p).any(axis=-1)] = np.nan
        return out.astype(np.float32)
    return np.clip(weighted_risk(p, w, lo, hi), 0.0, 1.0).astype(np.float32)
