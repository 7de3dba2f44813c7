"""One patient against a combined (pathomics + clinical) signature, Qt-free and pure.

:func:`score_combined` takes the patient's image features (as the image signature computed
them) and raw clinical values, encodes the values with the signature's frozen encoding (a value
outside it raises :class:`~napari_pathomics.errors.ClinicalError` naming the column and the
value) and returns a :class:`CombinedScore`: the combined risk, percentile, group and survival,
how much of the log-hazard comes from the image part and from each covariate, and the nested-CV
C-indices of the image-only, clinical-only and combined models recorded in the signature's
``evaluation`` (with the increment of combined over clinical-only). Nothing here reads a slide
or a bundle.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ClinicalError, SignatureError
from .model import Signature, SignatureScore

MODELS = ("image", "clinical", "combined")


def _num(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


@dataclass(frozen=True)
class CombinedScore:
    """A patient's combined score (plain values; JSON via :meth:`to_json`)."""

    score: SignatureScore  # combined risk, percentile, group, cutoff, survival at horizons and curve
    values: dict[str, Any]  # the raw clinical values used, by covariate
    encoded: dict[str, float]  # their model columns (clin:<col>, clin:<col>=<level>)
    contributions: dict[str, float]  # log-hazard parts: "pathomics" (image features) + one per covariate
    models: dict[str, dict[str, float | None]]  # image/clinical/combined: cv_c_index, cv_c_index_sd
    increment: dict[str, float | None] = field(default_factory=dict)  # delta_c, ci_lower, ci_upper, lrt_p
    rows: dict[str, Any] = field(default_factory=dict)  # training rows used / left out and why
    signature: str = ""
    covariates: str = ""  # 'cleanstage (ordinal) + years_to_birth (numeric, years)'

    @property
    def risk(self) -> float:
        return self.score.risk

    @property
    def group(self) -> str:
        return self.score.group

    def to_json(self) -> dict[str, Any]:
        return {
            "signature": self.signature,
            "covariates": self.covariates,
            **self.score.to_json(),
            "values": dict(self.values),
            "encoded": dict(self.encoded),
            "contributions": dict(self.contributions),
            "models": {k: dict(v) for k, v in self.models.items()},
            "increment_over_clinical": dict(self.increment),
            "rows": dict(self.rows),
        }


def model_c_indices(signature: Signature) -> dict[str, dict[str, float | None]]:
    """``{image|clinical|combined: {cv_c_index, cv_c_index_sd}}`` from the signature's nested CV
    (None where it recorded none, e.g. a signature fitted with ``--no-cv``)."""
    models = signature.evaluation.get("models") or {}
    out = {}
    for m in MODELS:
        rec = models.get(m) or {}
        out[m] = {"cv_c_index": _num(rec.get("cv_c_index")), "cv_c_index_sd": _num(rec.get("cv_c_index_sd"))}
    return out


def score_combined(signature: Signature, features: Mapping[str, float], clinical: Mapping[str, Any]) -> CombinedScore:
    """Score one patient with a combined signature from image ``features`` and raw ``clinical`` values.

    ``features`` maps the signature's :attr:`~Signature.image_features` (e.g. ``tme_mean_DEB``)
    to numbers, as the image-only signature computed them (extra keys are ignored).
    ``clinical`` maps each covariate name (``signature.clinical.names``, e.g. ``cleanstage``,
    ``years_to_birth``) to the raw value a user typed (``3``, ``"3"``, ``64.0``, ``"MSI-H"``);
    extra keys are ignored. Raises ClinicalError (naming the column and the value) when a value is
    missing, not a number, outside the fitted range or not one of the frozen levels, and
    SignatureError when the signature has no clinical covariates or an image feature is missing.
    """
    spec = signature.clinical
    if spec is None:
        raise SignatureError(f"signature {signature.name!r} has no clinical covariates; it is not a combined signature")
    if not isinstance(clinical, Mapping):
        raise ClinicalError("clinical values must map covariate names to values")
    missing = [f for f in signature.image_features if f not in features]
    if missing:
        raise SignatureError(f"combined signature {signature.name!r} needs image features {missing}")
    values = {n: clinical.get(n) for n in spec.names}
    encoded = spec.encode(values)  # ClinicalError names a missing or out-of-encoding value
    feats = {f: features[f] for f in signature.image_features}
    sc = signature.score(feats, values)
    cox = signature.cox
    z = np.array([sc.features[c] for c in cox.covariates], float)
    parts = ((z - cox.mean) / cox.scale - cox.cox_mean) * cox.beta  # type: ignore[attr-defined]
    col_part = dict(zip(cox.covariates, parts.tolist()))
    contributions = {"pathomics": float(sum(col_part[c] for c in signature.image_features))}
    for cov in spec.covariates:
        contributions[cov.name] = float(sum(col_part[c] for c in cov.columns))
    ev = signature.evaluation
    inc = (ev.get("increment") or {}).get("combined_minus_clinical") or {}
    increment = {k: _num(inc.get(k)) for k in ("delta_c", "ci_lower", "ci_upper")} if inc else {}
    if inc:
        increment["lrt_p"] = _num((inc.get("likelihood_ratio_test") or {}).get("p"))
    rows = dict(ev.get("rows") or spec.rows or {})
    rows.pop("excluded_ids", None)
    return CombinedScore(
        score=sc,
        values=values,
        encoded=encoded,
        contributions=contributions,
        models=model_c_indices(signature),
        increment=increment,
        rows=rows,
        signature=signature.name,
        covariates=spec.describe(),
    )
