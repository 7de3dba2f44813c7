"""A bundle's optional patch-risk head: logistic regression on the backbone's pooled features.

Bundles made by ``pathomics train-signature`` declare it in their manifest::

    "risk_head": {"weights": "risk_head.safetensors", "input": "pre_logits", "dim": D,
                  "definition": "sigmoid(((emb - mean) / scale) · weight + bias)", ...}

The engine evaluates it in the same forward pass as the classifier, so the viewer, ``pathomics
score`` and ``score-cohort`` all see the same per-patch risk. Whether a bundle's patch risk is
its head or its class weights is decided in one place, ``bundle_patch_risk``, and computed by
one function, ``PatchRisk.__call__``: the engine's forward pass and a head applied to cached
embeddings (``inference.head.apply_head``) both go through it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from safetensors.numpy import save

from ..bundle import Bundle
from ..errors import BundleError
from ..results.risk import patch_risk, patch_risk_weights

__all__ = ["RISK_HEAD_FILE", "RiskHead", "load_risk_head", "PatchRisk", "bundle_patch_risk"]

RISK_HEAD_FILE = "risk_head.safetensors"
#: Bounds that keep ``(emb - mean) / scale @ weight`` finite in float64 for any finite float32 embedding.
MAX_HEAD_VALUE = 1e6
SCALE_RANGE = (1e-9, 1e9)


@dataclass
class RiskHead:
    """Logistic patch-risk head on standardised backbone embeddings."""

    weight: np.ndarray  # (D,)
    bias: float
    mean: np.ndarray  # (D,)
    scale: np.ndarray  # (D,)

    def predict(self, emb: np.ndarray) -> np.ndarray:
        """Patch risk in [0, 1] (probability of the 'poor' label) per tile."""
        z = (np.asarray(emb, dtype=np.float64) - self.mean) / self.scale
        return (1.0 / (1.0 + np.exp(-(z @ self.weight + self.bias)))).astype(np.float32)

    def tensors(self) -> dict[str, np.ndarray]:
        return {
            "weight": np.asarray(self.weight, dtype=np.float64),
            "bias": np.array([self.bias], dtype=np.float64),
            "mean": np.asarray(self.mean, dtype=np.float64),
            "scale": np.asarray(self.scale, dtype=np.float64),
        }

    def to_safetensors(self) -> bytes:
        return save(self.tensors())


def load_risk_head(bundle: Bundle) -> RiskHead | None:
    """The bundle's risk head (None if it declares none); BundleError if declared but unusable."""
    declared = bundle.declared_tensors("risk_head", RISK_HEAD_FILE, "risk head")
    if declared is None:
        return None
    name, _, t = declared
    try:
        bias = t["bias"].reshape(-1)
        if bias.size != 1:
            raise BundleError(f"{name}: risk head bias must hold one number, it holds {bias.size}")
        head = RiskHead(
            t["weight"].astype(np.float64), float(bias[0]), t["mean"].astype(np.float64), t["scale"].astype(np.float64)
        )
    except BundleError:
        raise
    except (KeyError, ValueError, TypeError, IndexError) as exc:
        raise BundleError(f"{name}: unreadable risk head ({type(exc).__name__}: {exc})") from None
    if not (head.weight.shape == head.mean.shape == head.scale.shape) or head.weight.ndim != 1:
        raise BundleError(f"{name}: risk head arrays have inconsistent shapes")
    for field_name in ("weight", "mean", "scale"):
        if not np.all(np.isfinite(getattr(head, field_name))):
            raise BundleError(f"{name}: risk head {field_name} holds NaN or infinite values")
    if not np.isfinite(head.bias):
        raise BundleError(f"{name}: risk head bias is NaN or infinite")
    if np.any(head.scale < SCALE_RANGE[0]) or np.any(head.scale > SCALE_RANGE[1]):
        raise BundleError(f"{name}: risk head scale must lie in [{SCALE_RANGE[0]:g}, {SCALE_RANGE[1]:g}]")
    big = [f for f in ("weight", "mean") if np.any(np.abs(getattr(head, f)) > MAX_HEAD_VALUE)]
    if big or abs(head.bias) > MAX_HEAD_VALUE:
        raise BundleError(f"{name}: risk head {(big or ['bias'])[0]} above ±{MAX_HEAD_VALUE:g} (it would overflow)")
    return head


@dataclass(eq=False)
class PatchRisk:
    """How a bundle's patch risk is computed: its risk head on the embeddings, else class weights on the probabilities.

    The class weights are kept either way: the risk activation map (Grad-CAM's target) uses them.
    """

    weights: np.ndarray  # (C,) per-class patch-risk weights (``results.patch_risk_weights``)
    head: RiskHead | None = None

    @property
    def source(self) -> str:
        """What the risk comes from, as run records name it."""
        return "risk_head" if self.head is not None else "class_weights"

    def __call__(self, probs: np.ndarray, emb: np.ndarray) -> np.ndarray:
        """(B,) patch risk in [0, 1] of tiles with class probabilities ``probs`` (B, C) and embeddings ``emb`` (B, D)."""
        return patch_risk(probs, self.weights) if self.head is None else self.head.predict(emb)


def bundle_patch_risk(bundle: Bundle) -> PatchRisk:
    """The bundle's patch risk: its risk head if it declares one, else its signature's (or model's) class weights."""
    return PatchRisk(patch_risk_weights(bundle), load_risk_head(bundle))
