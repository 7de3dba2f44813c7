"""The score in context: what was scored, how well the signature is validated, whether the case
is the kind of case the signature was derived from, and the tissue composition without glass.

Plain functions of plain data (a signature, a bundle manifest, class names), shared by the Score
dock, ``pathomics score`` and the case report, so all three say the same thing in the same words.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "validated_evidence",
    "group_headline",
    "group_wording",
    "model_evidence",
    "background_classes",
    "tissue_composition",
    "cancer_type_check",
    "case_source_text",
    "USER",
    "SLIDE_METADATA",
    "slide_cancer_type",
    "signature_cancer_type",
    "scored_area",
    "composition_context",
    "case_context",
    "refresh_context",
    "organs",
    "mm2",
    "ORGANS",
    "CASE_TYPES",
]

#: Organ / tumour families and the words that name them (lower case). Stems match as word
#: prefixes ("colon" matches "colonic"); short codes (TCGA projects, abbreviations) only as whole
#: words, so "read" (TCGA-READ) does not match "ready" and "ov" does not match "over".
ORGANS: dict[str, tuple[str, ...]] = {
    "colorectal": (
        "colorectal",
        "colon",
        "rectum",
        "rectal",
        "rectosigm",
        "bowel",
        "large intestine",
        "sigmoid",
        "caecum",
        "cecum",
        "caecal",
        "cecal",
        "flexure",
        "crc",
        "coad",
        "read",
        "coadread",
    ),
    "pancreas": ("pancrea", "pdac", "paad"),
    "skin": ("skin", "melanoma", "cutaneous", "dermal", "dermis", "epiderm", "keratinocyt", "skcm"),
    "breast": ("breast", "mammary", "brca"),
    "lung": ("lung", "pulmonary", "bronch", "luad", "lusc", "nsclc", "sclc"),
    "stomach": ("gastric", "stomach", "stad"),
    "oesophagus": ("oesophag", "esophag", "esca"),
    "liver": ("liver", "hepatocell", "cholangio", "lihc", "hcc"),
    "prostate": ("prostat", "prad"),
    "kidney": ("kidney", "renal", "nephr", "kirc", "kirp", "kich"),
    "bladder": ("bladder", "urothel", "blca"),
    "head and neck": ("head and neck", "laryn", "pharyn", "tongue", "oral", "hnsc"),
    "brain": ("brain", "glioma", "glioblastoma", "astrocytom", "gbm", "lgg"),
    "ovary": ("ovary", "ovarian", "ov"),
    "uterus": ("uterus", "uterine", "endometri", "cervix", "ucec", "cesc"),
    "thyroid": ("thyroid", "thca"),
    "lymph node": ("lymph node", "lymphoma", "dlbc"),
}
_WHOLE_WORD_MAX = 5  # a word this short (and not a stem below) must match whole
_STEMS = {"colon", "skin", "lung", "liver", "renal", "bowel", "cecum", "caecum"}
#: Offered in the Score dock's case-type box (the user may type any other).
CASE_TYPES = (
    "",
    "colorectal adenocarcinoma",
    "pancreatic ductal adenocarcinoma",
    "gastric adenocarcinoma",
    "breast carcinoma",
    "lung adenocarcinoma",
    "skin (e.g. melanoma, carcinoma)",
    "other",
)


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def validated_evidence(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The signature's honest figures: nested-CV C-index and the out-of-fold HR of its groups.

    ``validated`` is true only when the out-of-fold HR's 95 % CI lies above 1 (and p < 0.05):
    the groups, cut by a cutoff chosen on other folds, separated held-out patients. Otherwise a
    group name must not be read as a validated split. ``summary`` is ``Signature.summary()`` (or
    a bundle manifest's ``signature_summary``).
    """
    hr = summary.get("cv_hazard_ratio") or summary.get("hazard_ratio_out_of_fold") or {}
    hr = hr if isinstance(hr, Mapping) else {}
    c, sd = _num(summary.get("cv_c_index")), _num(summary.get("cv_c_index_sd"))
    h, lo, up, p = (_num(hr.get(k)) for k in ("hr", "ci_lower", "ci_upper", "p"))
    validated = bool(h is not None and lo is not None and p is not None and lo > 1.0 and p < 0.05)
    out: dict[str, Any] = {
        "cv_c_index": c,
        "cv_c_index_sd": sd,
        "oof_hr": h,
        "oof_hr_ci": [lo, up],
        "oof_p": p,
        "validated": validated,
    }
    hr_txt = (
        f"out-of-fold HR high vs low {h:.2f} [95 % CI {lo:.2f}, {up:.2f}], p = {p:.2g}"
        if None not in (h, lo, up, p)
        else "no out-of-fold hazard ratio recorded"
    )
    if c is None:
        out["text"] = "no cross-validated C-index recorded (the signature was not cross-validated)"
    else:
        out["text"] = (
            f"cross-validated C-index {c:.2f}"
            + (f" ± {sd:.2f}" if sd is not None else "")
            + f" (0.5 = chance); {hr_txt}"
        )
    if c is not None and c < 0.6:
        out["strength"] = "weak"
    elif c is not None:
        out["strength"] = "moderate" if c < 0.7 else "good"
    else:
        out["strength"] = "unknown"
    return out


def group_headline(group: str, evidence: Mapping[str, Any]) -> str:
    """The group as a heading: 'HIGH RISK' only for a validated split, else 'above the cutoff'."""
    if evidence.get("validated"):
        return f"{group.upper()} RISK"
    return {"high": "above the cutoff", "low": "at or below the cutoff"}.get(group, group)


def group_wording(group: str, evidence: Mapping[str, Any]) -> str:
    """The group as it may be said: 'high-risk group (validated split: ...)' only when validated,
    else 'higher-risk side of the cutoff; the split is not validated (out-of-fold HR 1.01, p = 0.95)'."""
    h, p = evidence.get("oof_hr"), evidence.get("oof_p")
    lo, up = (list(evidence.get("oof_hr_ci") or [None, None]) + [None, None])[:2]
    if evidence.get("validated"):
        return f"{group}-risk group (validated split: out-of-fold HR {h:.2f} [{lo:.2f}, {up:.2f}], p = {p:.2g})"
    word = {"high": "higher", "low": "lower"}.get(group, group)
    why = (
        f"out-of-fold HR {h:.2f}"
        + (f" [{lo:.2f}, {up:.2f}]" if lo is not None and up is not None else "")
        + f", p = {p:.2g}"
        if h is not None and p is not None
        else "no out-of-fold evidence recorded"
    )
    return (
        f"{word}-risk side of the frozen cutoff; the split is not validated ({why}), "
        "so the group says little about this patient"
    )


def model_evidence(signature: Any, model: str) -> dict[str, Any]:
    """``evaluation.models.<model>`` of a signature (image, clinical or combined): nested-CV C-index."""
    ev = getattr(signature, "evaluation", None) or {}
    m = (ev.get("models") or {}).get(model) or {}
    c, sd = _num(m.get("cv_c_index")), _num(m.get("cv_c_index_sd"))
    text = (
        "no nested-CV C-index recorded"
        if c is None
        else f"nested-CV C-index {c:.2f}" + (f" ± {sd:.2f}" if sd is not None else "")
    )
    return {
        "model": model,
        "cv_c_index": c,
        "cv_c_index_sd": sd,
        "text": text,
        "description": str(m.get("description", "")),
    }


def background_classes(class_names: Sequence[str], manifest: Mapping[str, Any] | None = None) -> list[str]:
    """Classes that are not tissue: the bundle's ``model.background_classes`` if it declares them,
    else classes named BACK / background / glass or described as background."""
    model = (manifest or {}).get("model") or {}
    declared = model.get("background_classes")
    if isinstance(declared, list):
        return [c for c in class_names if c in declared]
    desc = {
        c.get("name"): str(c.get("description", "")).lower() for c in model.get("classes", []) if isinstance(c, dict)
    }
    out = []
    for c in class_names:
        low = c.lower()
        if low in ("back", "background", "bg", "glass", "whitespace") or desc.get(c, "").startswith("background"):
            out.append(c)
    return out


def tissue_composition(composition: Mapping[str, float], background: Sequence[str]) -> tuple[dict[str, float], float]:
    """``(composition over tissue classes renormalised to 1, background share)`` of a mean-probability composition."""
    back = float(sum(v for k, v in composition.items() if k in background))
    tissue = {k: float(v) for k, v in composition.items() if k not in background}
    total = sum(tissue.values())
    if total > 0:
        tissue = {k: v / total for k, v in tissue.items()}
    return tissue, back


def organs(text: str | None) -> set[str]:
    """The organ families a free-text cancer type names (empty when it names none)."""
    if not text:
        return set()
    low = " " + re.sub(r"[^a-z0-9]+", " ", str(text).lower()) + " "
    found = set()
    for organ, words in ORGANS.items():
        for w in words:
            whole = len(w) <= _WHOLE_WORD_MAX and w not in _STEMS
            if (f" {w} " if whole else f" {w}") in low:
                found.add(organ)
                break
    return found


USER = "the user"
SLIDE_METADATA = "the slide's metadata"


def case_source_text(source: str) -> str:
    """How a case type came to be: "stated by the user" only when the user stated it; a value read or
    pre-filled elsewhere (the slide's metadata, the demo) says where from."""
    if source == USER:
        return "stated by the user"
    if source == SLIDE_METADATA:
        return "read from the slide's metadata"
    return f"pre-filled by {source}"


def cancer_type_check(signature_type: str | None, case_type: str | None, source: str = USER) -> dict[str, Any]:
    """Does the case's type match the signature's? ``match`` is None when either is unknown; ``source`` says who
    gave the case type (``USER``, ``SLIDE_METADATA`` or what pre-filled it, e.g. "the demo")."""
    sig_o, case_o = organs(signature_type), organs(case_type)
    out: dict[str, Any] = {
        "signature": signature_type or None,
        "case": case_type or None,
        "case_source": source,
        "case_source_text": case_source_text(source),
        "match": None,
        "warning": None,
    }
    if not signature_type:
        out["note"] = "the signature does not record the cancer type it was derived from"
        return out
    if not case_type:
        out["note"] = f"the case's cancer type was not stated; the signature is for {signature_type}"
        return out
    if not sig_o or not case_o:
        out["note"] = f"cannot compare {case_type!r} with the signature's {signature_type!r}; check it yourself"
        return out
    out["match"] = bool(sig_o & case_o)
    if not out["match"]:
        out["warning"] = (
            f"the case is {case_type} ({out['case_source_text']}) but the signature was derived from "
            f"{signature_type}: the score is not validated for this case and says nothing about it"
        )
    return out


_META_KEYS = ("tissue", "organ", "site", "diagnosis", "cancer", "tumor_type", "tumour_type", "primary", "specimen")


def slide_cancer_type(properties: Mapping[str, Any]) -> str | None:
    """A tissue / organ / diagnosis the slide's metadata records, if any (vendor keys vary)."""
    for k, v in properties.items():
        key = str(k).lower().rsplit(".", 1)[-1]
        if any(w in key for w in _META_KEYS) and isinstance(v, str) and v.strip() and organs(v):
            return v.strip()
    return None


def mm2(n_tiles: int, tile_um: float | None) -> float | None:
    """Area of ``n_tiles`` square tiles of side ``tile_um`` µm, in mm²."""
    return None if tile_um is None else float(n_tiles) * float(tile_um) ** 2 / 1e6


def signature_cancer_type(signature: Any = None, manifest: Mapping[str, Any] | None = None) -> str | None:
    """The cancer type a signature was derived from: the signature's own record, else the bundle's
    (``manifest.cancer_type``, or the manifest's signature summary); None when nothing records it."""
    own = str(getattr(signature, "cancer_type", "") or "").strip()
    if own:
        return own
    man = manifest or {}
    for v in (man.get("cancer_type"), (man.get("signature_summary") or {}).get("cancer_type")):
        if isinstance(v, str) and v.strip():
            return v.strip()
    return None


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _fmt_mm2(v: float | None) -> str:
    return "—" if v is None else (f"{v:.2f} mm²" if v < 100 else f"{v:.0f} mm²")


def mpp_set_by_user(rows: Sequence[Mapping[str, Any]], name_slides: bool) -> list[str]:
    """ "µm/px 0.25, set by the user" for each slide whose pixel size the file did not give: areas, tile sizes
    and the score rest on it, so it is never silent (``rows``: ``scored_area``'s per-slide rows)."""
    return [
        (f"{r['slide']}: " if name_slides else "") + f"µm/px {r['mpp']:.4g}, set by the user"
        for r in rows
        if r.get("mpp_source") == "user" and r.get("mpp") is not None
    ]


def scored_area(slides: Sequence[Any]) -> dict[str, Any]:
    """Which area was scored: ROIs or all tissue, tiles classified, mm² (``slides``: SlideSummary or their JSON)."""
    rows: list[dict[str, Any]] = []
    for s in slides:
        d = s.to_json() if hasattr(s, "to_json") else dict(s)
        tiles = d.get("tiles") or {}
        tile_um = _num(d.get("tile_um"))
        done = int(tiles.get("done", 0))
        rows.append(
            {
                "slide": str(d.get("path", "")).replace("\\", "/").rsplit("/", 1)[-1],
                "area": _plural(int(d["n_rois"]), "ROI") if d.get("n_rois") else "all tissue",
                "n_rois": int(d.get("n_rois") or 0),
                "used": bool(d.get("used", True)),
                "tiles_scored": done,
                "tiles_no_tissue": int(tiles.get("background", 0)),
                "tiles_failed": int(tiles.get("failed", 0)),
                "tile_um": tile_um,
                "scored_mm2": mm2(done, tile_um),
                "roi_mm2": _num(d.get("roi_mm2")),
                "mpp": _num((d.get("mpp") or [None])[0]),
                "mpp_source": d.get("mpp_source"),
            }
        )
    used = [r for r in rows if r["used"]]
    kinds = {("ROIs" if r["n_rois"] else "all tissue") for r in used}
    scope = kinds.pop() if len(kinds) == 1 else ("ROIs on some slides, all tissue on others" if kinds else "nothing")
    n_rois = sum(r["n_rois"] for r in used)
    tiles = sum(r["tiles_scored"] for r in used)
    areas = [r["scored_mm2"] for r in used]
    total = float(sum(areas)) if areas and all(a is not None for a in areas) else None
    roi_areas = [r["roi_mm2"] for r in used if r["n_rois"]]
    roi_total = float(sum(roi_areas)) if roi_areas and all(a is not None for a in roi_areas) else None
    where = _plural(n_rois, "ROI") if scope == "ROIs" else scope
    text = f"{where} on {_plural(len(used), 'slide')} — {_plural(tiles, 'tissue tile')}, {_fmt_mm2(total)}" + (
        f" (ROIs drawn: {_fmt_mm2(roi_total)})" if roi_total is not None else ""
    )
    user_mpp = mpp_set_by_user(used, name_slides=len(used) > 1)
    if user_mpp:
        text += f" ({'; '.join(user_mpp)})"
    return {
        "scope": scope,
        "n_slides": len(used),
        "n_rois": n_rois,
        "tiles_scored": tiles,
        "tiles_no_tissue": sum(r["tiles_no_tissue"] for r in used),
        "tiles_failed": sum(r["tiles_failed"] for r in used),
        "scored_mm2": total,
        "roi_mm2": roi_total,
        "slides": rows,
        "text": text,
    }


def composition_context(
    composition: Mapping[str, float], class_names: Sequence[str], manifest: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The composition over tissue classes (background left out) and how much was background."""
    back = background_classes(list(class_names) or list(composition), manifest)
    tissue, share = tissue_composition(composition, back)
    text = (
        f"tissue classes only: {', '.join(back)} (background) left out, {100 * share:.0f} % of the scored "
        "tiles' probability"
        if back
        else "no background class in this model; all classes shown"
    )
    return {"tissue": tissue, "background_classes": back, "background_share": share, "text": text}


def case_context(
    slides: Sequence[Any],
    composition: Mapping[str, float],
    class_names: Sequence[str],
    group: str,
    signature: Any,
    manifest: Mapping[str, Any] | None = None,
    case_type: str | None = None,
    slide_types: Sequence[str | None] = (),
    case_type_source: str = USER,
) -> dict[str, Any]:
    """Everything the Score dock, ``pathomics score --json`` and the report say around the number.

    ``case_type`` is what the user states, or what ``case_type_source`` pre-filled (it wins); otherwise the
    first tissue / diagnosis the slides' metadata record (``slide_types``) is compared with the signature's.
    """
    summary = signature.summary() if hasattr(signature, "summary") else dict(signature or {})
    evidence = validated_evidence(summary)
    stated = (case_type or "").strip() or None
    meta = next((t for t in slide_types if t), None)
    check = cancer_type_check(
        signature_cancer_type(signature, manifest),
        stated or meta,
        source=case_type_source if stated else SLIDE_METADATA,
    )
    check["slide_metadata"] = meta
    warnings = [check["warning"]] if check.get("warning") else []
    area = scored_area(slides)
    warnings += [
        f"{note} (not read from the file): tile size, areas and the score depend on it"
        for note in mpp_set_by_user([r for r in area["slides"] if r["used"]], name_slides=True)
    ]
    return {
        "area": area,
        "evidence": evidence,
        "group_headline": group_headline(group, evidence),
        "group_text": group_wording(group, evidence),
        "composition": composition_context(composition, class_names, manifest),
        "cancer_type": check,
        "warnings": warnings,
    }


def refresh_context(
    score: Any,
    signature: Any,
    manifest: Mapping[str, Any] | None = None,
    case_type: str | None = None,
    case_type_source: str = USER,
) -> dict[str, Any]:
    """Recompute ``score.context`` (a PatientScore) for a case type stated (or pre-filled) after scoring."""
    score.context = case_context(
        score.slides,
        score.composition,
        score.class_names,
        score.score.group,
        signature,
        manifest,
        case_type,
        [getattr(s, "tissue_metadata", None) for s in score.slides],
        case_type_source,
    )
    return score.context
