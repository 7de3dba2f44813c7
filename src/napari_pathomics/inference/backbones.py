"""Bundle → a running network: the one seam where an architecture is built and taken apart.

Every consumer of a model (the engine, Grad-CAM, the training embedding pass, loose-tile
classification) goes through :class:`PatchModel`: ``features(x)`` are the pooled embeddings
before the classifier, ``logits(features)`` the class scores, so one forward pass gives both.
timm models fit as they are; another family plugs in by subclassing ``PatchModel`` and adding
it to ``FAMILIES``.
"""

from __future__ import annotations

import sys
from typing import Any

from ..bundle import Bundle
from ..errors import BundleError
from .head import HEAD_FILE, ClassHead, load_class_head

__all__ = ["PatchModel", "FAMILIES", "build_model", "resolve_layer", "keep_triton_out", "set_classifier"]


def keep_triton_out() -> None:
    """Keep torch from importing triton in a process that shows a napari (OpenGL) canvas.

    triton's bundled LLVM and the LLVM of Mesa's GL drivers crash each other; the viewer never
    compiles kernels, so torch simply sees no triton there. CLI and dask processes are untouched.
    """
    gui = any(m in sys.modules for m in ("vispy", "napari._vispy", "qtpy"))
    if gui and "triton" not in sys.modules:
        sys.modules["triton"] = None  # type: ignore[assignment]  # ImportError on `import triton`


class PatchModel:
    """A patch classifier split where embeddings live: ``logits(features(x))`` is the forward.

    ``module`` is the whole ``torch.nn.Module`` (Grad-CAM hooks its layers and calls it).
    """

    def __init__(self, module: Any) -> None:
        self.module = module

    def features(self, x: Any) -> Any:
        """Pooled embeddings (B, D) before the classifier (timm's ``pre_logits``)."""
        m = self.module
        return m.forward_head(m.forward_features(x), pre_logits=True)

    def classifier(self) -> Any:
        """The last layer, features → class scores (timm's ``get_classifier()``)."""
        return self.module.get_classifier()

    def logits(self, features: Any) -> Any:
        """Class scores (B, C) from :meth:`features`."""
        return self.classifier()(features)

    def __call__(self, x: Any) -> Any:
        return self.logits(self.features(x))

    @property
    def feature_dim(self) -> int:
        return int(self.module.num_features)


#: Architecture families by name prefix; timm builds everything else.
FAMILIES: dict[str, type[PatchModel]] = {}


def resolve_layer(module: Any, dotted: str) -> Any:
    """The submodule at a dotted path of child names (Grad-CAM target); BundleError if it is not one.

    Only registered child modules are followed (``named_children``), so a path can name neither a
    parameter nor a private or dunder attribute of the model.
    """
    obj = module
    for part in str(dotted).split("."):
        children = dict(obj.named_children()) if hasattr(obj, "named_children") else {}
        if part not in children:
            raise BundleError(f"model.gradcam_target_layer {dotted!r}: {part!r} is not a layer of the model")
        obj = children[part]
    return obj


def _create_timm(bundle: Bundle) -> Any:
    import timm  # heavy: torch and timm load only when a model is built

    try:
        return timm.create_model(
            bundle.architecture, pretrained=False, **bundle.model_args, num_classes=bundle.num_classes
        )
    except (RuntimeError, KeyError, ValueError, TypeError, AssertionError) as exc:
        raise BundleError(f"model.architecture {bundle.architecture!r}: timm cannot build it ({exc})") from None


def _load_head(module: Any, bundle: Bundle) -> None:
    """An adapted bundle's class head (``head.safetensors``) replaces the classifier of the weights file."""
    head = load_class_head(bundle)
    if head is not None:
        set_classifier(module, head, HEAD_FILE)


def set_classifier(module: Any, head: ClassHead, what: str = "the class head") -> None:
    """Copy ``head`` into the module's linear classifier (BundleError if its shape does not fit)."""
    import torch  # heavy

    clf = module.get_classifier() if hasattr(module, "get_classifier") else None
    if not isinstance(clf, torch.nn.Linear) or tuple(clf.weight.shape) != head.weight.shape or clf.bias is None:
        have = tuple(clf.weight.shape) if isinstance(clf, torch.nn.Linear) else type(clf).__name__
        raise BundleError(f"{what}: a {head.weight.shape} head does not fit the model's classifier ({have})")
    with torch.no_grad():
        clf.weight.copy_(torch.from_numpy(head.weight))
        clf.bias.copy_(torch.from_numpy(head.bias))


def build_model(bundle: Bundle, device: str | Any = "cpu") -> PatchModel:
    """Build the bundle's architecture and load its safetensors weights strictly (eval mode)."""
    keep_triton_out()
    from safetensors import SafetensorError  # heavy (with safetensors.torch below)
    from safetensors.torch import load_file  # heavy: torch

    module = _create_timm(bundle)
    # Re-checked right before reading it (it could have changed since load).
    path = bundle.file("model.weights")
    assert path is not None  # the schema requires model.weights
    name = path.name
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise BundleError(f"{name}: cannot read safetensors ({exc})") from None
    for key, tensor in state.items():
        if tensor.is_floating_point() and not bool(tensor.isfinite().all()):
            raise BundleError(f"{name}: tensor {key!r} holds NaN or infinite values")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise BundleError(
            f"{name}: weights do not fit {bundle.architecture} with {bundle.num_classes} classes "
            f"({' '.join(s.strip() for s in first[:3])[:300]})"
        ) from None
    _load_head(module, bundle)
    resolve_layer(module, bundle.gradcam_target_layer)
    module.eval()
    family = next((cls for prefix, cls in FAMILIES.items() if bundle.architecture.startswith(prefix)), PatchModel)
    return family(module.to(device))
