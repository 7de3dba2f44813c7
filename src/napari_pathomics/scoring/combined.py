"""One patient's pathomics score combined with their clinical values, next to the image-only one.

A bundle may carry, besides its image-only ``signature.json``, a combined signature
(``manifest.signature_clinical``, usually ``signature_clinical.json``): one frozen Cox model of
the pathomics features and clinical covariates, with the covariates' frozen encoding
(``signature.clinical``) and the nested-CV comparison of the image-only, clinical-only and
combined models (``evaluation.models.*``). This module, Qt-free and shared by the Score dock,
``pathomics score --clinical`` and the case report:

* :func:`load_clinical_signature` - the bundle's combined signature, or None;
* :func:`clinical_fields` - one input field per covariate (type, unit, allowed values), plus a
  field for each marker / treatment of the interplay analyses the signature carries;
* :func:`combined_score` - :func:`~napari_pathomics.signature.combined.score_combined` (combined
  risk, percentile, group, survival and log-hazard parts) from the image features already
  computed for the patient and the raw clinical values (a value outside the frozen encoding
  raises :class:`ClinicalError` naming the field and the value), beside the image-only score,
  with both models' validated C-indices, the group as it may be said, and where the patient
  sits on the interplay curves.

Interplay analyses (``analyze_interaction`` / ``analyze_benefit`` results) are read from the
signature's ``interplay`` list when a signature carries them; none are invented.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict, cast

from ..bundle import Bundle
from ..errors import ClinicalError, SignatureError
from ..inference.checks import check_values
from ..signature import Signature, SignatureScore
from ..signature.clinical import canonical, is_missing
from ..signature.combined import score_combined
from .context import group_headline, group_wording, model_evidence, validated_evidence
from .tiles import slide_tiles, tile_features

__all__ = [
    "CombinedResult",
    "load_clinical_signature",
    "clinical_signature_for",
    "clinical_fields",
    "clean_values",
    "combined_score",
    "interplay_docs",
    "combined_as_score",
    "patient_level",
    "RESEARCH_ONLY",
]

RESEARCH_ONLY = (
    "Research use only: the combined model adds the patient's clinical values to the pathomics "
    "features in one frozen Cox model; it is not a clinical test and must not guide patient care."
)


def load_clinical_signature(bundle: Bundle) -> Signature | None:
    """The bundle's combined (pathomics + clinical) signature; None when the bundle has none."""
    path = bundle.file("signature_clinical")  # the bundle's one resolver: listed, inside, sha256 verified
    if path is None:
        return None
    check_values(bundle, ["signature_clinical"])  # the values validate-bundle checks, and its fit to the bundle
    return Signature.from_json(path)


def clinical_signature_for(
    bundle: Bundle, image: Signature | None, values: Mapping[str, Any] | None, option: str = "clinical values"
) -> Signature | None:
    """The combined signature that scores ``values`` (None when none are given), checked before any inference.

    ClinicalError when the bundle has no combined signature or a value names no covariate or
    interplay column of it; ``option`` names the input in the message (``--clinical`` in the CLI).
    """
    if not values:
        return None
    combined = load_clinical_signature(bundle)
    if combined is None:
        raise ClinicalError(f"bundle {bundle.name!r} has no combined (clinical) signature; score without {option}")
    known = [f["name"] for f in clinical_fields(combined, [image])]
    unknown = [k for k in values if k not in known]
    if unknown:
        raise ClinicalError(
            f"{option} {unknown[0]}: not a covariate of signature {combined.name!r} (it takes {', '.join(known)})"
        )
    return combined


class _Side(TypedDict):
    """One model's score as the report shows it (the combined one, and the image-only one beside it)."""

    signature: str
    risk: float
    percentile: float
    group: str
    cutoff: float
    survival: dict[str, float]
    time_unit: str
    group_headline: str
    group_text: str
    evidence: dict[str, Any]


class _CombinedRequired(_Side):
    covariates: Any
    values: dict[str, Any]
    encoded: dict[str, float]
    contributions: dict[str, float]
    rows: dict[str, Any]
    survival_curve: dict[str, list[float]]
    models: dict[str, dict[str, Any]]
    increment_over_clinical: dict[str, Any]
    research_use: str
    interplay: list[dict[str, Any]]


class CombinedResult(_CombinedRequired, total=False):
    """What :func:`combined_score` gives (``PatientScore.clinical``; the ``clinical`` key of the JSON)."""

    image_only: _Side


def combined_as_score(c: CombinedResult) -> SignatureScore:
    """The combined result as a :class:`SignatureScore` (what the survival plots draw, in the dock and the report)."""
    curve = c.get("survival_curve") or {}
    return SignatureScore(
        risk=c["risk"],
        percentile=c["percentile"],
        group=c["group"],
        cutoff=c["cutoff"],
        survival_at=dict(c.get("survival") or {}),
        curve_times=list(curve.get("times", [])),
        curve_survival=list(curve.get("survival", [])),
        time_unit=c.get("time_unit", "days"),
    )


# ---------------------------------------------------------------------------------------------
def interplay_docs(*signatures: Signature | None) -> list[tuple[Signature, dict[str, Any]]]:
    """``(signature, analysis)`` for every interplay / benefit analysis a signature carries."""
    out = []
    for sig in signatures:
        if sig is None:
            continue
        docs = sig.to_json().get("interplay") or []
        for d in docs if isinstance(docs, list) else []:
            if isinstance(d, Mapping) and isinstance(d.get("groups"), Mapping) and d.get("levels"):
                out.append((sig, dict(d)))
    return out


def _column(doc: Mapping[str, Any]) -> str:
    return str(doc.get("marker") or doc.get("treatment") or "")


def clinical_fields(signature: Signature | None, extra_signatures: Sequence[Signature | None] = ()) -> list[dict]:
    """Input fields: one per covariate of ``signature`` (in order), then one per interplay column
    that is not a covariate (used only to place the patient on the curves, never in the score)."""
    fields: list[dict[str, Any]] = []
    if signature is not None and signature.clinical is not None:
        for c in signature.clinical.covariates:
            f: dict[str, Any] = {
                "name": c.name,
                "label": c.title,  # the signature's human name ("stage (I–IV)"), else the column name
                "type": c.type,
                "unit": c.unit,
                "allowed": c.allowed(),
                "levels": list(c.levels),
                "in_score": True,
            }
            if c.type == "numeric" and c.range is not None:
                f["range"] = [c.range[0], c.range[1]]
            f["hint"] = (
                f"number, {c.allowed()}"
                if c.type == "numeric"
                else f"{'ordered ' if c.type == 'ordinal' else ''}one of {c.allowed()}"
            )
            fields.append(f)
    names = {f["name"] for f in fields}
    for _sig, doc in interplay_docs(signature, *extra_signatures):
        col = _column(doc)
        if col and col not in names:
            names.add(col)
            fields.append(
                {
                    "name": col,
                    "label": col,
                    "type": "marker" if doc.get("marker") else "treatment",
                    "unit": "",
                    "allowed": ", ".join(map(str, doc["levels"])),
                    "levels": [],
                    "in_score": False,
                    "hint": f"to place the patient on the {col} curves ({doc.get('rule', '')}); not in the score",
                }
            )
    return fields


def clean_values(values: Mapping[str, Any] | None) -> dict[str, Any]:
    """Entered values without the empty ones (text stripped)."""
    out = {}
    for k, v in (values or {}).items():
        v = v.strip() if isinstance(v, str) else v
        if not is_missing(v):
            out[str(k)] = v
    return out


# ---------------------------------------------------------------------------------------------
_SPLIT = re.compile(r"^(?P<col>.+?) (?P<op>≤|>) (?P<c>[-+0-9.eE]+)$")


def patient_level(doc: Mapping[str, Any], value: Any) -> str | None:
    """Which level of an interplay analysis a raw value falls in (None when it cannot be told)."""
    if is_missing(value):
        return None
    levels = [str(x) for x in doc.get("levels", [])]
    col = _column(doc)
    m = [_SPLIT.match(lv) for lv in levels]
    if len(levels) == 2 and all(m):
        try:
            v, c = float(value), float(m[0]["c"])  # type: ignore[index]
        except (TypeError, ValueError):
            raise ClinicalError(f"{col} = {value!r} is not a number (the curves split it at {m[0]['c']})") from None  # type: ignore[index]
        if not math.isfinite(v):
            raise ClinicalError(f"{col} = {value!r} is not a finite number")
        return levels[1] if v > c else levels[0]
    key = canonical(value)
    for lv in levels:
        if lv == key or lv == f"{col} = {key}" or lv.lower() == key.lower():
            return lv
    raise ClinicalError(f"{col} = {value!r} is not one of the levels of its curves ({', '.join(levels)})")


def _placement(sig: Signature, doc: Mapping[str, Any], risk: float, value: Any) -> dict[str, Any]:
    col = _column(doc)
    cutoff = float(doc.get("cutoff", sig.cutoff["cutoff"]))
    group = "high" if risk > cutoff else "low"
    out: dict[str, Any] = {
        "column": col,
        "kind": "treatment" if doc.get("treatment") else "marker",
        "signature": sig.name,
        "group": group,
        "level": None,
        "value": value,
        "interaction_p": (doc.get("interaction") or {}).get("p"),
        "warning": doc.get("warning"),
    }
    if is_missing(value):
        out["note"] = f"enter {col} to place the patient on these curves"
        return out
    level = patient_level(doc, value)
    out["level"] = level
    grp = (doc.get("groups") or {}).get(group) or {}
    cell = next((x for x in grp.get("levels", []) if x.get("level") == level), None)
    if cell is not None:
        out["n_like_patient"] = cell.get("n")
        out["events_like_patient"] = cell.get("events")
    out["hazard_ratio_in_group"] = grp.get("hazard_ratio")
    out["note"] = f"pathomics {group}-risk group, {level}" + (
        f": {cell['n']} reference patients like this one, {cell['events']} events" if cell else ""
    )
    return out


def _image_features(ps: Any, sig: Signature) -> dict[str, float]:
    """The image features ``sig`` needs, from those already computed for the patient (or its tiles)."""
    need = sig.image_features
    have = dict(getattr(ps, "features", {}) or {})
    if all(f in have for f in need):
        return {f: float(have[f]) for f in need}
    spec = sig.feature_spec
    results = [r for r, s in zip(getattr(ps, "results", []) or [], ps.slides) if r is not None and s.used]
    if spec is None or not results or spec.nuclear:
        missing = [f for f in need if f not in have]
        raise SignatureError(
            f"combined signature {sig.name!r} needs image features {missing} that the image "
            "signature did not compute (and it has no tile feature spec to compute them)"
        )
    feats = tile_features(spec, [slide_tiles(r) for r in results], sig.name)
    return {f: feats[f] for f in need}


def _side(sig: Signature, sc: Any) -> _Side:
    ev = validated_evidence(sig.summary())
    return {
        "signature": sig.name,
        "risk": sc.risk,
        "percentile": sc.percentile,
        "group": sc.group,
        "cutoff": sc.cutoff,
        "survival": dict(sc.survival_at),
        "time_unit": sc.time_unit,
        "group_headline": group_headline(sc.group, ev),
        "group_text": group_wording(sc.group, ev),
        "evidence": ev,
    }


def combined_score(
    ps: Any, combined: Signature, values: Mapping[str, Any], image: Signature | None = None
) -> CombinedResult | None:
    """The combined score of a scored patient (``ps``: a PatientScore) with raw clinical ``values``.

    None when no covariate value was entered (the image-only score stands alone). Every covariate
    is needed once any is entered; a missing or out-of-encoding value raises ClinicalError naming
    the field and the value (the caller keeps the image-only results). Also gives the validated
    C-index of each model from the combined signature's nested CV (``evaluation.models``), the
    increment over the clinical-only model, and the patient's place on any interplay curves.
    """
    clin = combined.clinical
    if clin is None:
        raise SignatureError(f"signature {combined.name!r} has no clinical covariates")
    vals = clean_values(values)
    if not any(n in vals for n in clin.names):
        return None
    feats = _image_features(ps, combined)
    cs = score_combined(combined, feats, {n: vals.get(n) for n in clin.names})  # ClinicalError names a bad value
    sc = cs.score
    models = {m: model_evidence(combined, m) for m in ("image", "clinical", "combined")}
    if models["image"]["cv_c_index"] is None and image is not None:
        e = validated_evidence(image.summary())
        models["image"].update(
            cv_c_index=e["cv_c_index"],
            cv_c_index_sd=e["cv_c_index_sd"],
            text=e["text"].split(";")[0],
            source="the image-only signature's own CV",
        )
    out = cast(
        CombinedResult,
        {
            "signature": combined.name,
            "covariates": cs.covariates,
            "values": {n: vals[n] for n in clin.names},
            "encoded": dict(cs.encoded),
            "contributions": dict(cs.contributions),
            "rows": dict(cs.rows),
            **_side(combined, sc),
            "survival_curve": {"times": list(sc.curve_times), "survival": list(sc.curve_survival)},
            "models": models,
            "increment_over_clinical": dict(cs.increment),
            "research_use": RESEARCH_ONLY,
        },
    )
    if image is not None:
        out["image_only"] = _side(image, ps.score)
    risks = {id(combined): sc.risk}
    if image is not None:
        risks[id(image)] = ps.score.risk
    out["interplay"] = [
        _placement(sig, doc, risks[id(sig)], vals.get(_column(doc))) for sig, doc in interplay_docs(combined, image)
    ]
    return out
