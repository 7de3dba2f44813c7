"""Everything loading a bundle for a run checks, as a list of problems (``validate-bundle``).

A bundle whose files and manifest are valid (``bundle.validate_bundle``) may still not run:
weights that do not fit the architecture, a Grad-CAM layer that is not there, a risk head of
the wrong width, a stain reference that is not a stain, a signature whose numbers cannot score.
These are the runtime's checks. :func:`value_problems` is the one check of a bundle's values,
run by ``validate-bundle``, by every engine (``infer``) and by every signature load (``score``),
so a bundle that validates never fails a run on a value it could have checked.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from ..bundle import Bundle
from ..errors import BundleError, PathomicsError, SignatureError
from ..results import patch_risk_weights
from ..signature.clinical import ClinicalSpec
from ..signature.features import FeatureSpec
from ..signature.model import signature_problems
from .backbones import PatchModel, build_model, resolve_layer
from .preprocess import bundle_normalizer
from .risk_head import RiskHead, load_risk_head

__all__ = ["runtime_problems", "check_forward", "value_problems", "signature_block_problems", "check_values"]

#: The blocks whose values a run reads: what a model run needs, and the signatures scoring needs.
RUN_BLOCKS: tuple[str, ...] = ("model.normalization.macenko", "patch_risk_weights")
SIGNATURE_BLOCKS: tuple[str, ...] = ("signature", "signature_clinical")
#: The largest signature file read (a million horizons is ~10 MB; real ones are ~100 kB).
_MAX_SIGNATURE_BYTES = 64 * 1024 * 1024


def _read_signature(bundle: Bundle, block: str) -> dict | None:
    """The JSON document of a signature block (None when the bundle has none); BundleError if unreadable."""
    path = bundle.file(block)  # the one resolver: listed, inside the bundle, sha256 verified
    if path is None:
        return None
    if path.stat().st_size > _MAX_SIGNATURE_BYTES:
        raise BundleError(f"{block} ({path.name}): larger than {_MAX_SIGNATURE_BYTES} bytes")
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BundleError(f"{block} ({path.name}): not readable JSON ({str(exc)[:200]})") from None
    return data


def _spec_names(data: dict) -> list[str]:
    spec = data.get("feature_spec")
    return FeatureSpec.from_json(spec).feature_names if spec else []


def signature_block_problems(bundle: Bundle, block: str) -> list[str]:
    """Every problem of one signature of the bundle, one line each naming the block.

    The signature's own content (``signature_problems``: sizes, schema, finite values, known
    feature names) and its fit to the bundle: tile features of classes the model predicts,
    patch-risk weights of its classes; a combined signature has clinical covariates and image
    features that can be computed.
    """
    try:
        data = _read_signature(bundle, block)
    except BundleError as exc:
        return [str(exc)]
    if data is None:
        return []
    name = bundle.manifest.get(block)
    where = f"{block} ({name})"
    own = signature_problems(data)
    if own:
        return [f"{where}: {p}" for p in own]
    out = []
    spec = data.get("feature_spec")
    classes = list(bundle.class_names)
    if spec:
        missing = [c for c in FeatureSpec.from_json(spec).classes if c not in classes]
        if missing:
            out.append(f"{where}: feature_spec needs classes {missing} that the model does not predict ({classes})")
    unknown = sorted(set(data.get("patch_risk_weights") or {}) - set(classes))
    if unknown:
        out.append(f"{where}: patch_risk_weights names unknown classes {unknown}")
    if block == "signature" and not spec:
        out.append(f"{where}: no feature_spec, so it cannot be computed from tile results")
    if block == "signature_clinical":
        if not data.get("clinical"):
            out.append(f"{where}: no clinical covariates; it is not a combined signature")
        elif not spec:
            image = _read_signature(bundle, "signature")
            cols = set(ClinicalSpec.from_json(data["clinical"]).columns)
            need = [c for c in data["cox"]["covariates"] if c not in cols]
            have = set(_spec_names(image)) if image and not signature_problems(image) else set()
            lost = [c for c in need if c not in have]
            if lost:
                out.append(f"{where}: image features {lost[:5]} are computed by neither it nor the image signature")
    return out


def value_problems(bundle: Bundle, blocks: Sequence[str] = RUN_BLOCKS + SIGNATURE_BLOCKS) -> list[str]:
    """Every problem of the values ``blocks`` of the bundle hold, one line each naming the block."""
    out: list[str] = []
    for block in blocks:
        if block in SIGNATURE_BLOCKS:
            out += signature_block_problems(bundle, block)
            continue
        if block == "patch_risk_weights" and "signature" in blocks:
            continue  # the signature's own check covers its weights, with the block named
        check = bundle_normalizer if block == "model.normalization.macenko" else patch_risk_weights
        try:
            check(bundle)
        except PathomicsError as exc:
            out.append(str(exc))
    return out


def check_values(bundle: Bundle, blocks: Sequence[str] = RUN_BLOCKS) -> None:
    """Raise the first of :func:`value_problems` (SignatureError for a signature block, else BundleError)."""
    for block in blocks:
        probs = value_problems(bundle, [block])
        if probs:
            more = f" (+{len(probs) - 1} more)" if len(probs) > 1 else ""
            cls = SignatureError if block in SIGNATURE_BLOCKS else BundleError
            raise cls(f"{probs[0]}{more}")


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
    problems += value_problems(bundle)
    if net is not None:
        try:
            check_forward(bundle, net, head)
        except PathomicsError as exc:
            problems.append(str(exc))
    return problems
