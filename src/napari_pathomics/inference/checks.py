"""Everything loading a bundle for a run checks, as a list of problems (``validate-bundle``).

A bundle whose files and manifest are valid (``bundle.validate_bundle``) may still not run:
weights that do not fit the architecture, a Grad-CAM layer that is not there, a risk head of
the wrong width, a stain reference that is not a stain. These are the runtime's checks.
"""

from __future__ import annotations

from ..bundle import Bundle
from ..errors import BundleError, PathomicsError
from ..results import patch_risk_weights
from .backbones import PatchModel, build_model, resolve_layer
from .preprocess import bundle_normalizer
from .risk_head import RiskHead, load_risk_head

__all__ = ["runtime_problems", "check_forward"]


def check_forward(bundle: Bundle, net: PatchModel, head: RiskHead | None) -> None:
    """One forward of a blank tile: the class scores, the embedding width and the Grad-CAM layer fit."""
    import torch  # heavy

    layer = resolve_layer(net.module, bundle.gradcam_target_layer)
    if not isinstance(layer, torch.nn.Module):
        raise BundleError(f"model.gradcam_target_layer {bundle.gradcam_target_layer!r} is not a layer of the model")
    seen: list[tuple[int, ...]] = []
    hook = layer.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape)) if torch.is_tensor(o) else None)
    try:
        with torch.inference_mode():
            feats = net.features(torch.zeros(1, 3, bundle.input_size, bundle.input_size))
            logits = net.logits(feats)
    except RuntimeError as exc:
        raise BundleError(
            f"{bundle.architecture} cannot run on {bundle.input_size} px inputs ({str(exc).splitlines()[0][:200]})"
        ) from None
    finally:
        hook.remove()
    if tuple(logits.shape) != (1, bundle.num_classes):
        raise BundleError(f"the model gives {tuple(logits.shape)[1:]} scores for {bundle.num_classes} classes")
    if not seen or len(seen[0]) != 4:
        raise BundleError(
            f"model.gradcam_target_layer {bundle.gradcam_target_layer!r} does not output a "
            f"(batch, channels, height, width) feature map, which Grad-CAM needs"
        )
    if head is not None and head.weight.size != feats.shape[1]:
        raise BundleError(
            f"risk head expects {head.weight.size} features but {bundle.architecture} gives {feats.shape[1]}"
        )


def runtime_problems(bundle: Bundle) -> list[str]:
    """Problems found building the bundle's model and everything a run loads with it."""
    problems: list[str] = []
    net: PatchModel | None = None
    head: RiskHead | None = None
    try:
        net = build_model(bundle)
    except PathomicsError as exc:
        problems.append(str(exc))
    try:
        head = load_risk_head(bundle)
    except PathomicsError as exc:
        problems.append(str(exc))
    for check in (lambda: patch_risk_weights(bundle), lambda: bundle_normalizer(bundle)):
        try:
            check()
        except PathomicsError as exc:
            problems.append(str(exc))
    if net is not None:
        try:
            check_forward(bundle, net, head)
        except PathomicsError as exc:
            problems.append(str(exc))
    return problems
