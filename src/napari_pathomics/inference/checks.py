"""Everything loading a bundle for a run checks, as a list of problems (``validate-bundle``).

A bundle whose files and manifest are valid (``bundle.validate_bundle``) may still not run:
weights that do not fit the architecture, a Grad-CAM layer that is not there, a risk head of
the wrong width, a stain reference that is not a stain. These are the runtime's checks.
"""

from __future__ import annotations

from ..bundle import Bundle
from ..errors import PathomicsError
from ..results import patch_risk_weights
from .backbones import build_model
from .preprocess import bundle_normalizer
from .risk_head import load_risk_head

__all__ = ["runtime_problems"]


def runtime_problems(bundle: Bundle) -> list[str]:
    """Problems found building the bundle's model and everything a run loads with it."""
    problems: list[str] = []
    net = None
    for check in (lambda: build_model(bundle), lambda: load_risk_head(bundle),
                  lambda: patch_risk_weights(bundle), lambda: bundle_normalizer(bundle)):
        try:
            out = check()
        except PathomicsError as exc:
            problems.append(str(exc))
            continue
        if net is None and out is not None and hasattr(out, "feature_dim"):
            net = out
        head = out if hasattr(out, "weight") and hasattr(out, "bias") else None
        if head is not None and net is not None and head.weight.size != net.feature_dim:
            problems.append(f"risk head expects {head.weight.size} features but {bundle.architecture} "
                            f"gives {net.feature_dim}")
    return problems
