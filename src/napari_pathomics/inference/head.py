"""A bundle's class head on the backbone's pooled features, and applying a head to cached embeddings.

An adapted bundle (``pathomics adapt``, the Analyze dock's Correct panel) keeps its base bundle's
weights file byte for byte and declares a new linear head beside it::

    "head": {"weights": "head.safetensors", "input": "pre_logits", "dim": D, "replaces": "classifier",
             "definition": "probs = softmax(emb · weight.T + bias)"}

``head.safetensors`` holds ``weight`` (C, D) and ``bias`` (C,). Building the model loads it into
the network's classifier (``backbones.build_model``), so a forward pass, Grad-CAM of a class and
the risk activation map all see the new head; :func:`apply_head` applies the same head to the
embeddings kept in the results cache, so a whole slide's class map refreshes without the backbone.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass

import numpy as np
from safetensors.numpy import save

from ..bundle import Bundle
from ..errors import BundleError
from ..results import DONE, PENDING, TileResults
from .risk_head import MAX_HEAD_VALUE, PatchRisk, RiskHead

__all__ = ["ClassHead", "HEAD_FILE", "load_class_head", "apply_head", "softmax"]

HEAD_FILE = "head.safetensors"


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@dataclass
class ClassHead:
    """A linear softmax head: ``probs = softmax(emb · weight.T + bias)``."""

    weight: np.ndarray  # (C, D) float32
    bias: np.ndarray  # (C,) float32

    @property
    def num_classes(self) -> int:
        return int(self.weight.shape[0])

    @property
    def dim(self) -> int:
        return int(self.weight.shape[1])

    def logits(self, emb: np.ndarray) -> np.ndarray:
        return np.asarray(emb, dtype=np.float32) @ self.weight.T + self.bias

    def probs(self, emb: np.ndarray) -> np.ndarray:
        """(N, C) float32 class probabilities of (N, D) embeddings."""
        return softmax(self.logits(emb).astype(np.float64)).astype(np.float32)

    def tensors(self) -> dict[str, np.ndarray]:
        return {
            "weight": np.ascontiguousarray(self.weight, dtype=np.float32),
            "bias": np.ascontiguousarray(self.bias, dtype=np.float32),
        }

    def to_safetensors(self) -> bytes:
        return save(self.tensors())

    def digest(self) -> str:
        """Identity of the head's numbers (what results computed with it are keyed on)."""
        h = hashlib.sha256()
        for t in self.tensors().values():
            h.update(repr(t.shape).encode())
            h.update(t.tobytes())
        return h.hexdigest()[:16]

    @classmethod
    def from_module(cls, classifier: object) -> ClassHead:
        """The head of a torch ``nn.Linear`` classifier (the base bundle's own head)."""
        w = classifier.weight.detach().cpu().float().numpy()  # type: ignore[attr-defined]
        b = classifier.bias.detach().cpu().float().numpy()  # type: ignore[attr-defined]
        return cls(w.copy(), b.copy())


def load_class_head(bundle: Bundle) -> ClassHead | None:
    """The bundle's replacement head (None if it declares none); BundleError if declared but unusable."""
    declared = bundle.declared_tensors("head", HEAD_FILE, "class head")
    if declared is None:
        return None
    name, spec, t = declared
    try:
        head = ClassHead(np.asarray(t["weight"], dtype=np.float32), np.asarray(t["bias"], dtype=np.float32).reshape(-1))
    except (KeyError, ValueError, TypeError) as exc:
        raise BundleError(f"{name}: unreadable class head ({type(exc).__name__}: {exc})") from None
    if head.weight.ndim != 2 or head.bias.shape != (head.weight.shape[0],):
        raise BundleError(
            f"{name}: head weight must be (classes, features) and bias (classes,), "
            f"got {head.weight.shape} and {head.bias.shape}"
        )
    if head.num_classes != bundle.num_classes:
        raise BundleError(f"{name}: head gives {head.num_classes} classes but the bundle has {bundle.num_classes}")
    if isinstance(spec.get("dim"), int) and spec["dim"] != head.dim:
        raise BundleError(f"{name}: head has {head.dim} inputs but head.dim says {spec['dim']}")
    if not (np.all(np.isfinite(head.weight)) and np.all(np.isfinite(head.bias))):
        raise BundleError(f"{name}: head holds NaN or infinite values")
    if np.abs(head.weight).max(initial=0.0) > MAX_HEAD_VALUE or np.abs(head.bias).max(initial=0.0) > MAX_HEAD_VALUE:
        raise BundleError(f"{name}: head values above ±{MAX_HEAD_VALUE:g} (its logits would overflow)")
    return head


def apply_head(
    results: TileResults,
    head: ClassHead,
    risk: PatchRisk | np.ndarray,
    risk_head: RiskHead | None = None,
    meta: dict | None = None,
) -> TileResults:
    """A copy of ``results`` whose probabilities and patch risk come from ``head`` on the kept embeddings.

    Tiles with an embedding get new probabilities and risk (``risk``: the engine's ``PatchRisk``,
    or class weights with an optional ``risk_head``); classified tiles without one become pending (a run
    computes them); background and failed tiles stay as they are. CAMs depend on the head and are
    dropped (a run recomputes those asked for). Nothing touches the backbone.
    """
    patch_risk = risk if isinstance(risk, PatchRisk) else PatchRisk(np.asarray(risk), risk_head)
    out = copy.copy(results)
    out.probs = results.probs.copy()
    out.risk = results.risk.copy()
    out.status = results.status.copy()
    out.cams = {}
    out.meta = {**results.meta, **(meta or {})}
    done = results.status == DONE
    if results.emb is None:
        has = np.zeros(len(results), dtype=bool)
    else:
        if results.emb.shape[1] != head.dim:
            raise BundleError(
                f"the head expects {head.dim} features but the cached embeddings have {results.emb.shape[1]}"
            )
        has = done & np.isfinite(results.emb[:, 0])
    idx = np.flatnonzero(has)
    if idx.size:
        emb = results.emb[idx].astype(np.float32)
        probs = head.probs(emb)
        out.probs[idx] = probs
        out.risk[idx] = patch_risk(probs, emb)
    lost = done & ~has
    out.status[lost] = PENDING
    out.probs[lost] = np.nan
    out.risk[lost] = np.nan
    return out
