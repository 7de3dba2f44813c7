"""Grad-CAM per tile (pytorch-grad-cam) for a class or for the patch risk, and stitching.

Two kinds of map, both Grad-CAM on the bundle's ``gradcam_target_layer``:

* a class CAM: target = that class's logit (``ClassifierOutputTarget``);
* the risk activation map (RAM): target = the patch risk itself, the normalised
  ``Σ_c w_c softmax(logits)_c`` of :func:`napari_pathomics.results.patch_risk` (same weights),
  so regions that raise the tile's risk light up.

Maps are kept *raw* (ReLU of the gradient-weighted activations, not min-max scaled per tile as
pytorch-grad-cam does by default) so tiles compare with each other in a stitched slide map;
each is resized to ``k × k`` px per tile and stitched on the tile lattice.

Speed: Grad-CAM needs autograd (never inside ``inference_mode``) but only *downstream* of the
target layer. A forward hook turns the target layer's output into a fresh fp32 leaf, so the
forward up to it builds no graph (and may run under the engine's bf16 autocast) and the
backward stops there; parameters are frozen, so no weight gradients are computed. The whole
CAM costs little more than one forward.

This module imports torch lazily: ``stitch_tiles`` is used by numpy-only code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["RISK_CAM", "RiskTarget", "GradCamRunner", "stitch_tiles", "make_targets", "validate_cam_names"]

#: The CAM name of the risk activation map; any other name is a class name of the bundle.
RISK_CAM = "risk"


def stitch_tiles(maps: np.ndarray, rows: np.ndarray, cols: np.ndarray, n_rows: int, n_cols: int) -> np.ndarray:
    """Place per-tile (N, k, k) maps at their lattice cells: a (n_rows·k, n_cols·k) float32 mosaic.

    Cell (r, c) occupies mosaic rows r·k…r·k+k−1 and columns c·k…c·k+k−1; NaN where no tile.
    """
    maps = np.asarray(maps, dtype=np.float32)
    k = int(maps.shape[1]) if maps.ndim == 3 else 1
    mosaic = np.full((n_rows * k, n_cols * k), np.nan, dtype=np.float32)
    view = mosaic.reshape(n_rows, k, n_cols, k).transpose(0, 2, 1, 3)  # a view: (n_rows, n_cols, k, k)
    view[np.asarray(rows), np.asarray(cols)] = maps.reshape(-1, k, k)
    return mosaic


class RiskTarget:
    """Grad-CAM target whose value is the normalised patch risk of one tile's logits."""

    def __init__(self, weights: np.ndarray) -> None:
        import torch

        w = np.asarray(weights, dtype=np.float64)
        self.lo, self.hi = float(w.min()), float(w.max())
        self.w = torch.as_tensor(w, dtype=torch.float32)

    def __call__(self, model_output: "torch.Tensor") -> "torch.Tensor":
        import torch

        p = torch.softmax(model_output.float(), dim=-1)
        r = (p * self.w.to(p.device)).sum(dim=-1)
        if self.hi - self.lo <= 0:
            return r * 0.0
        return (r - self.lo) / (self.hi - self.lo)


def validate_cam_names(names: Sequence[str], class_names: Sequence[str]) -> tuple[str, ...]:
    """The CAM names, checked: ``risk`` or class names of the bundle (InferenceError otherwise)."""
    from ..errors import InferenceError

    out = []
    for n in names:
        if n != RISK_CAM and n not in class_names:
            raise InferenceError(f"unknown CAM {n!r}: use 'risk' or one of the classes {', '.join(class_names)}")
        if n not in out:
            out.append(n)
    return tuple(out)


def make_targets(name: str, batch: int, class_names: Sequence[str], weights: np.ndarray) -> list[Any]:
    """One pytorch-grad-cam target per tile of a batch for CAM ``name``."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    if name == RISK_CAM:
        t: Any = RiskTarget(weights)
    else:
        t = ClassifierOutputTarget(list(class_names).index(name))
    return [t] * batch


def _raw_gradcam_class() -> type:
    from pytorch_grad_cam import GradCAM

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
    import torch

    if torch.is_grad_enabled() and isinstance(output, torch.Tensor):
        return output.detach().float().requires_grad_(True)
    return None


class GradCamRunner:
    """Grad-CAM maps (B, k, k) for a batch of model inputs and one target per tile."""

    def __init__(self, model: "torch.nn.Module", target_layer: str, out_size: int = 16,
                 autocast_dtype: "torch.dtype | None" = None) -> None:
        from .bundle import resolve_layer

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
        import torch

        for p in self.model.parameters():  # no weight gradients: only the activation's
            if p.requires_grad:
                p.requires_grad_(False)
        handle = self.layer.register_forward_hook(_leaf_hook)  # before the CAM's own hooks
        cam = self._cls(self.model, [self.layer])
        from .device import autocast

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
        import cv2

        raw = self.raw(x, targets)
        k = self.out_size
        out = np.empty((raw.shape[0], k, k), dtype=np.float32)
        for i, m in enumerate(raw):
            out[i] = cv2.resize(m, (k, k), interpolation=cv2.INTER_AREA if m.shape[0] > k else cv2.INTER_LINEAR)
        return out
