"""Grad-CAM per tile (pytorch-grad-cam) for a class or for the patch risk.

Two kinds of map, both Grad-CAM on the bundle's ``gradcam_target_layer``:

* a class CAM: target = that class's logit (``ClassifierOutputTarget``);
* the risk activation map (RAM): target = the patch risk itself, the normalised
  ``Σ_c w_c softmax(logits)_c`` of :func:`napari_pathomics.results.patch_risk` (same formula),
  so regions that raise the tile's risk light up.

Maps are kept *raw* (ReLU of the gradient-weighted activations, not min-max scaled per tile as
pytorch-grad-cam does by default) so tiles compare with each other in a stitched slide map;
each is resized to ``k × k`` px per tile (``TileResults.cam_mosaic`` stitches them).

Speed: Grad-CAM needs autograd (never inside ``inference_mode``) but only *downstream* of the
target layer. A forward hook turns the target layer's output into a fresh fp32 leaf, so the
forward up to it builds no graph (and may run under the engine's bf16 autocast) and the
backward stops there; parameters are frozen, so no weight gradients are computed. The whole
CAM costs little more than one forward.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from ..errors import InferenceError
from ..results.risk import risk_range, weighted_risk
from ..results.status import RISK_CAM
from ._device import autocast
from .backbones import resolve_layer

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["RISK_CAM", "RiskTarget", "GradCamRunner", "make_targets", "validate_cam_names"]


class RiskTarget:
    """Grad-CAM target whose value is the normalised patch risk of one tile's logits."""

    def __init__(self, weights: np.ndarray) -> None:
        import torch  # heavy

        self.lo, self.hi = risk_range(weights)
        self.w = torch.as_tensor(np.asarray(weights, dtype=np.float64), dtype=torch.float32)

    def __call__(self, model_output: "torch.Tensor") -> "torch.Tensor":
        import torch  # heavy

        p = torch.softmax(model_output.float(), dim=-1)
        if self.hi - self.lo <= 0:
            return p.sum(dim=-1) * 0.0
        return weighted_risk(p, self.w.to(p.device), self.lo, self.hi)


def validate_cam_names(names: Sequence[str], class_names: Sequence[str]) -> tuple[str, ...]:
    """The CAM names, checked: ``risk`` or class names of the bundle (InferenceError otherwise)."""
    out = []
    for n in names:
        if n != RISK_CAM and n not in class_names:
            raise InferenceError(f"unknown CAM {n!r}: use 'risk' or one of the classes {', '.join(class_names)}")
        if n not in out:
            out.append(n)
    return tuple(out)


def make_targets(name: str, batch: int, class_names: Sequence[str], weights: np.ndarray) -> list[Any]:
    """One pytorch-grad-cam target per tile of a batch for CAM ``name``."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # heavy: torch

    if name == RISK_CAM:
        t: Any = RiskTarget(weights)
    else:
        t = ClassifierOutputTarget(list(class_names).index(name))
    return [t] * batch


def _raw_gradcam_class() -> type:
    from pytorch_grad_cam import GradCAM  # heavy: torch

    class RawGradCAM(GradCAM):
        """GradCAM that returns ReLU(Σ_k w_k A_k) at feature resolution, without per-tile scaling."""

        def compute_cam_per_layer(self, input_tensor, targets, eigen_smooth):  # noqa: ANN001, ANN202
            acts = [a.cpu().float().numpy() for a in self.activations_and_grads.activations]
            grads = [g.cpu().float().numpy() for g in self.activations_and_grads.gradients]
            out = []
            for i, layer in enumerate(self.target_layers):
                cam = self.get_cam_image(input_tensor, layer, targets, acts[i], grads[i], eigen_smooth)
                out.append(np.maximum(cam, 0)[:, None])
            return out

        def aggregate_multi_layers(self, cam_per_target_layer):  # noqa: ANN001, ANN202
            return np.mean(np.concatenate(cam_per_target_layer, axis=1), axis=1)

    return RawGradCAM


def _leaf_hook(module: Any, inputs: Any, output: Any) -> Any:
    """Cut the graph at the target layer: its output becomes a leaf that requires grad."""
    import torch  # heavy

    if torch.is_grad_enabled() and isinstance(output, torch.Tensor):
        return output.detach().float().requires_grad_(True)
    return None


class GradCamRunner:
    """Grad-CAM maps (B, k, k) for a batch of model inputs and one target per tile."""

    def __init__(
        self,
        model: "torch.nn.Module",
        target_layer: str,
        out_size: int = 16,
        autocast_dtype: "torch.dtype | None" = None,
    ) -> None:
        self.model = model
        #: Reduced precision for the forward up to the target layer (the leaf is cast back to
        #: fp32, so activations and gradients handed to Grad-CAM are fp32).
        self.autocast_dtype = autocast_dtype
        self.layer = resolve_layer(model, target_layer)
        self.out_size = int(out_size)
        self._cls = _raw_gradcam_class()
        self.last_logits: "torch.Tensor | None" = None

    def raw(self, x: "torch.Tensor", targets: list[Any]) -> np.ndarray:
        """Raw Grad-CAM (B, h, w) at the target layer's resolution (not scaled per tile)."""
        import torch  # heavy

        for p in self.model.parameters():  # no weight gradients: only the activation's
            if p.requires_grad:
                p.requires_grad_(False)
        handle = self.layer.register_forward_hook(_leaf_hook)  # before the CAM's own hooks
        cam = self._cls(self.model, [self.layer])
        device = next(self.model.parameters()).device
        try:
            with torch.inference_mode(False), torch.enable_grad(), autocast(device, self.autocast_dtype):
                raw = cam(input_tensor=x.clone() if x.is_inference() else x, targets=targets)
            self.last_logits = cam.outputs.detach()
        finally:
            cam.activations_and_grads.release()
            handle.remove()
        return raw.astype(np.float32)

    def __call__(self, x: "torch.Tensor", targets: list[Any]) -> np.ndarray:
        """Grad-CAM maps resized to (B, k, k) per tile."""
        raw = self.raw(x, targets)
        k = self.out_size
        out = np.empty((raw.shape[0], k, k), dtype=np.float32)
        for i, m in enumerate(raw):
            out[i] = cv2.resize(m, (k, k), interpolation=cv2.INTER_AREA if m.shape[0] > k else cv2.INTER_LINEAR)
        return out
