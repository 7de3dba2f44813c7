"""Pathomics risk groups next to a marker or a treatment: interplay and benefit analyses.

The seed study's clinical findings, for any column a user has:

* :func:`analyze_interaction` - is a marker prognostic *within* each pathomics risk group (its
  CA19-9 was prognostic only in the low-risk group)? Kaplan–Meier curves and the marker's hazard
  ratio per risk group, and the group × marker interaction tested by a likelihood-ratio test.
* :func:`analyze_benefit` - do treated patients fare better than untreated ones within each
  risk group (only its high-risk patients gained from adjuvant chemotherapy)? The same layout
  for a two-level treatment column, with a plain warning that the data are observational.
* :func:`subgroup_forest` - the hazard ratio of the pathomics group (high vs low) within each
  level of each covariate: whether the signature separates patients in every subgroup.

Everything is computed on the rows that have every value the analysis needs; the result says
how many rows were used and why the others were not. Qt-free; plots live in ``scoring.plots``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ClinicalError, SignatureError
from ._compare import cox_table, likelihood_ratio_test
from ._evaluate import hazard_ratio, km_curve
from .clinical import canonical, is_missing, shown
from .fit import validate_survival

MIN_EVENTS = 10
MAX_LEVELS = 8
OBSERVATIONAL_WARNING = (
    "Observational, not randomised: treated and untreated patients were not allocated at random, so they may "
    "differ in ways this analysis does not adjust for (confounding by indication, fitness, era). A different "
    "benefit in the two risk groups is a hypothesis for a trial, not evidence that the treatment helps."
)
RESEARCH_NOTE = "Research use only: not a clinical test; it must not guide patient care."


@dataclass(frozen=True)
class Levels:
    """A column turned into levels: one code per row (-1 = missing), labels, and the rule used."""

    name: str
    codes: np.ndarray
    labels: tuple[str, ...]
    rule: str

    @property
    def present(self) -> np.ndarray:
        return self.codes >= 0


def _numbers(values: Sequence[Any]) -> np.ndarray | None:
    """Values as floats (NaN where missing), or None if some present value is not a number."""
    out = np.full(len(values), np.nan)
    for i, v in enumerate(values):
        if is_missing(v):
            continue
        try:
            out[i] = float(v)
        except (TypeError, ValueError):
            return None
    return out


def marker_levels(values: Sequence[Any], name: str, cutoff: float | str | None = None) -> Levels:
    """A marker column as levels: a numeric one split at ``cutoff`` (a number or ``"auto"`` = the
    median, which does not look at outcomes), a two-valued or categorical one as it is."""
    values = list(values)
    nums = _numbers(values)
    present = [v for v in values if not is_missing(v)]
    if not present:
        raise ClinicalError(f"marker column {name!r} has no values")
    if nums is not None and len(np.unique(nums[np.isfinite(nums)])) > 2:
        if cutoff is None:
            raise ClinicalError(
                f"marker column {name!r} is numeric with {len(np.unique(nums[np.isfinite(nums)]))} "
                "distinct values; give --marker-cutoff V (high if > V) or --marker-cutoff auto (median)"
            )
        if isinstance(cutoff, str):
            if cutoff != "auto":
                raise ClinicalError(f"--marker-cutoff must be a number or 'auto', got {cutoff!r}")
            c = float(np.nanmedian(nums))
            rule = f"split at the median {c:g} (high if > {c:g}; chosen without looking at outcomes)"
        else:
            c = float(cutoff)
            rule = f"split at {c:g} (high if > {c:g})"
        codes = np.where(np.isfinite(nums), (nums > c).astype(int), -1)
        lv = Levels(name, codes, (f"{name} ≤ {c:g}", f"{name} > {c:g}"), rule)
        if lv.codes[lv.present].min() == lv.codes[lv.present].max():
            raise ClinicalError(f"marker column {name!r}: every patient is on one side of the cutoff {c:g}")
        return lv
    if cutoff is not None and nums is None:
        raise ClinicalError(
            f"--marker-cutoff applies to a numeric marker; column {name!r} holds text (e.g. {present[0]!r})"
        )
    return categorical_levels(values, name, kind="marker")


def categorical_levels(values: Sequence[Any], name: str, kind: str = "column", reference: str | None = None) -> Levels:
    """Levels of a categorical column; the reference (code 0) is the given one, the lower of two
    numbers, or the most frequent level."""
    keys = [None if is_missing(v) else canonical(v) for v in values]
    present = [k for k in keys if k is not None]
    if not present:
        raise ClinicalError(f"{kind} column {name!r} has no values")
    counts = pd.Series(present).value_counts()
    levels = list(counts.index)
    if len(levels) < 2:
        raise ClinicalError(
            f"{kind} column {name!r} has one level only ({levels[0]!r}) among the {len(present)} "
            "patients with a value: there is nothing to compare"
        )
    if len(levels) > MAX_LEVELS:
        raise ClinicalError(
            f"{kind} column {name!r} has {len(levels)} levels (at most {MAX_LEVELS}); "
            "is it numeric? give a cutoff, or merge levels"
        )
    try:
        nums = sorted(levels, key=float)
        numeric = True
    except ValueError:
        numeric = False
    if reference is not None:
        ref = canonical(reference)
        if ref not in levels:
            raise ClinicalError(f"{kind} column {name!r} has no level {reference!r} (levels: {', '.join(levels)})")
        order = [ref, *[lv for lv in (nums if numeric else levels) if lv != ref]]
        rule = f"reference level {ref!r} (given)"
    elif numeric:
        order = nums
        rule = f"reference level {order[0]!r} (the lowest)"
    else:
        order = sorted(levels, key=lambda k: (-int(counts[k]), k))
        rule = f"reference level {order[0]!r} (the most frequent)"
    idx = {k: i for i, k in enumerate(order)}
    codes = np.array([-1 if k is None else idx[k] for k in keys], int)
    return Levels(name, codes, tuple(order), rule)


_TREATED_WORDS = ("1", "yes", "y", "true", "treated", "adjuvant", "chemo", "chemotherapy")
_UNTREATED_WORDS = ("0", "no", "n", "false", "untreated", "none", "observation", "surgery alone")


def treatment_levels(values: Sequence[Any], name: str, treated: str | None = None) -> Levels:
    """A two-level treatment column: code 1 = treated (``treated`` or recognised: 1/yes/true...)."""
    keys = [None if is_missing(v) else canonical(v) for v in values]
    present = sorted({k for k in keys if k is not None})
    if not present:
        raise ClinicalError(f"treatment column {name!r} has no values")
    n_with = sum(k is not None for k in keys)
    if len(present) == 1:
        raise ClinicalError(
            f"treatment column {name!r} has one level only ({present[0]!r}) among the {n_with} "
            "patients with a value: there is no untreated (or treated) group to compare"
        )
    if len(present) > 2:
        raise ClinicalError(
            f"treatment column {name!r} has {len(present)} levels ({', '.join(present[:6])}); "
            "it must have two (treated / untreated)"
        )
    if treated is not None:
        t = canonical(treated)
        if t not in present:
            raise ClinicalError(f"treatment column {name!r} has no level {treated!r} (levels: {', '.join(present)})")
        rule = f"treated = {t!r} (given)"
    else:
        hits = [k for k in present if k.lower() in _TREATED_WORDS]
        misses = [k for k in present if k.lower() in _UNTREATED_WORDS]
        if len(hits) == 1 and (len(misses) == 1 and misses[0] != hits[0]):
            t = hits[0]
            rule = f"treated = {t!r} (recognised)"
        else:
            raise ClinicalError(
                f"treatment column {name!r}: cannot tell which of {present[0]!r} / {present[1]!r} is "
                "treated; give --treated VALUE"
            )
    u = next(k for k in present if k != t)
    codes = np.array([-1 if k is None else int(k == t) for k in keys], int)
    return Levels(name, codes, (f"{name} = {u}", f"{name} = {t}"), rule)


def subgroup_levels(values: Sequence[Any], name: str) -> Levels:
    """Levels for the forest plot: a numeric column with many values is split at its median."""
    values = list(values)
    nums = _numbers(values)
    if nums is not None and len(np.unique(nums[np.isfinite(nums)])) > MAX_LEVELS:
        c = float(np.nanmedian(nums))
        codes = np.where(np.isfinite(nums), (nums > c).astype(int), -1)
        return Levels(name, codes, (f"≤ {c:g}", f"> {c:g}"), f"split at the median {c:g}")
    return categorical_levels(values, name, kind="subgroup")


# ---------------------------------------------------------------------------------------------
def _check_events(e: np.ndarray, high: np.ndarray, lv: Levels, what: str, min_events: int) -> None:
    """Refuse an analysis whose risk groups or levels have too few events (naming which)."""
    for g, mask in (("high", high), ("low", ~high)):
        n = int(e[mask].sum())
        if n < min_events:
            raise ClinicalError(
                f"pathomics risk group {g!r} has only {n} events among the patients with a "
                f"{what} value (< {min_events}): too few to estimate the {what}'s effect in it"
            )
    for k, label in enumerate(lv.labels):
        n = int(e[lv.codes == k].sum())
        if n < min_events:
            raise ClinicalError(
                f"{what} column {lv.name!r}: level {label!r} has only {n} events (< {min_events}); "
                "too few to estimate its effect"
            )


def _dummies(lv: Levels, rows: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({f"level_{k}": (lv.codes[rows] == k).astype(float) for k in range(1, len(lv.labels))})


def _hr_rows(t: np.ndarray, e: np.ndarray, lv: Levels, rows: np.ndarray) -> dict[str, Any]:
    """HR of each non-reference level vs the reference, in the given rows (None if it cannot fit)."""
    out: dict[str, Any] = {}
    D = _dummies(lv, rows)
    for k in range(1, len(lv.labels)):
        out[lv.labels[k]] = None
    usable = [c for c in D.columns if 0 < D[c].sum() < len(D)]
    if usable and e[rows].sum() > 0:
        try:
            tab = cox_table(t[rows], e[rows], D[usable])
        except SignatureError:
            tab = {}
        for c, r in tab.items():
            k = int(c.split("_")[1])
            ok = (
                r["ci_upper"] is not None
                and r["hr"] is not None
                and math.isfinite(r["ci_upper"])
                and r["ci_upper"] < 1e6
                and r["hr"] > 1e-6
            )
            out[lv.labels[k]] = (
                {kk: r[kk] for kk in ("hr", "ci_lower", "ci_upper", "p", "log_hr", "se")} if ok else None
            )
    return out


def _grid(t: np.ndarray) -> np.ndarray:
    return np.linspace(0.0, float(np.quantile(t, 0.95)), 41)


def _effect_by_group(
    t: np.ndarray, e: np.ndarray, high: np.ndarray, lv: Levels, what: str, min_events: int
) -> dict[str, Any]:
    """Within each risk group: KM per level, HR per level; plus the group × level interaction."""
    _check_events(e, high, lv, what, min_events)
    grid = _grid(t)
    groups: dict[str, Any] = {}
    for g, mask in (("low", ~high), ("high", high)):
        rows = np.flatnonzero(mask)
        groups[g] = {
            "n": int(mask.sum()),
            "events": int(e[mask].sum()),
            "levels": [
                {"level": label, "n": int((lv.codes[mask] == k).sum()), "events": int(e[mask & (lv.codes == k)].sum())}
                for k, label in enumerate(lv.labels)
            ],
            "hazard_ratio": _hr_rows(t, e, lv, rows),
            "km": {
                label: km_curve(t[mask & (lv.codes == k)], e[mask & (lv.codes == k)], grid, label)
                for k, label in enumerate(lv.labels)
                if (mask & (lv.codes == k)).any()
            },
        }
    allrows = np.arange(len(t))
    D = _dummies(lv, allrows)
    base = pd.concat([pd.DataFrame({"pathomics_high": high.astype(float)}), D], axis=1)
    inter = pd.DataFrame({f"high_x_{c}": high.astype(float) * D[c] for c in D.columns})
    try:
        lrt = likelihood_ratio_test(t, e, base, inter)
    except SignatureError as exc:
        lrt = {"chi2": None, "df": int(inter.shape[1]), "p": None, "error": str(exc)}
    wald = None
    if inter.shape[1] == 1:
        try:
            full = cox_table(t, e, pd.concat([base, inter], axis=1))
            w = full[inter.columns[0]]
            wald = {
                "ratio_of_hazard_ratios": w["hr"],
                "ci_lower": w["ci_lower"],
                "ci_upper": w["ci_upper"],
                "p": w["p"],
                "definition": "HR of the level in the high-risk group / HR in the low-risk group",
            }
        except SignatureError:
            wald = None
    overall = _hr_rows(t, e, lv, allrows)
    empty = [
        f"{g}-risk × {lab}"
        for g, mask in (("low", ~high), ("high", high))
        for k, lab in enumerate(lv.labels)
        if int(e[mask & (lv.codes == k)].sum()) == 0
    ]
    notes = (
        [
            f"no event in {', '.join(empty)}: the interaction estimate there is unbounded and its p-value "
            "unreliable; merge levels or use more patients"
        ]
        if empty
        else []
    )
    return {
        "levels": list(lv.labels),
        "reference": lv.labels[0],
        "rule": lv.rule,
        "grid": grid.tolist(),
        "groups": groups,
        "overall_hazard_ratio": overall,
        "interaction": {
            "p": lrt.get("p"),
            "likelihood_ratio_test": lrt,
            "wald": wald,
            "notes": notes,
            "model": f"Cox: pathomics group + {what} + group x {what}; LRT against the model without the interaction",
        },
    }


def subgroup_forest(
    t: np.ndarray, e: np.ndarray, high: np.ndarray, subgroups: Sequence[Levels], min_events: int = 5
) -> list[dict[str, Any]]:
    """HR of the pathomics group (high vs low) overall and within each level of each covariate."""

    def row(name: str, label: str, mask: np.ndarray) -> dict[str, Any]:
        r: dict[str, Any] = {
            "covariate": name,
            "level": label,
            "n": int(mask.sum()),
            "events": int(e[mask].sum()),
            "n_high": int((mask & high).sum()),
            "n_low": int((mask & ~high).sum()),
        }
        ev_high, ev_low = int(e[mask & high].sum()), int(e[mask & ~high].sum())
        if r["events"] < min_events or ev_high == 0 or ev_low == 0:
            r["hazard_ratio"] = None
            r["note"] = f"fewer than {min_events} events, or no event in one risk group"
            return r
        try:
            hr = hazard_ratio(high[mask], t[mask], e[mask])
        except (SignatureError, ValueError, ArithmeticError) as exc:
            hr, r["note"] = None, f"does not fit: {exc}"
        if hr is not None and (hr.get("ci_upper") is None or hr["ci_upper"] > 1e6):
            hr, r["note"] = None, "unbounded confidence interval"
        r["hazard_ratio"] = hr
        return r

    out = [row("all patients", "all", np.ones(len(t), bool))]
    for lv in subgroups:
        for k, label in enumerate(lv.labels):
            out.append(row(lv.name, label, lv.codes == k))
    return out


# ---------------------------------------------------------------------------------------------
def resolve_features(sig: Any, table: pd.DataFrame) -> dict[str, str]:
    """Which table column feeds each image feature: the feature's own name, or for a TME feature
    ``tme_<stat>_<CLS>`` a bare class column ``<CLS>`` (the vendored TCGA table's layout)."""
    out = {}
    for f in sig.image_features:
        if f in table.columns:
            out[f] = f
        elif f.startswith("tme_") and f.count("_") >= 2 and f.split("_", 2)[2] in table.columns:
            out[f] = f.split("_", 2)[2]
        else:
            raise ClinicalError(f"the table has no column for the signature's feature {f!r}")
    return out


def cohort_risk(
    sig: Any,
    table: pd.DataFrame,
    time_col: str,
    event_col: str,
    need: Sequence[str] = (),
    id_col: str | None = None,
    min_events: int = MIN_EVENTS,
) -> dict[str, Any]:
    """Risk and group of every usable row of a per-patient table under a frozen signature.

    Rows missing a feature, a clinical value of the signature or a column of ``need`` are left
    out and counted by reason; values outside the signature's clinical encoding are refused.
    """
    fmap = resolve_features(sig, table)
    for c in [time_col, event_col, *need]:
        if c not in table.columns:
            raise ClinicalError(
                f"column {c!r} is not in the table (columns: {', '.join(map(str, table.columns[:30]))})"
            )
    clin = sig.clinical.names if sig.clinical is not None else []
    for c in clin:
        if c not in table.columns:
            raise ClinicalError(f"the signature's clinical covariate {c!r} is not a column of the table")
    keep = np.ones(len(table), bool)
    excluded: dict[str, int] = {}
    for label, col in [
        *[(f"missing feature {f}", c) for f, c in fmap.items()],
        *[(f"missing {c}", c) for c in dict.fromkeys([*clin, *need])],
    ]:
        miss = np.array([is_missing(v) for v in table[col].tolist()], bool)
        if miss.any():
            excluded[label] = int(miss.sum())
            keep &= ~miss
    sub = table.loc[keep].reset_index(drop=True)
    feats = sub[list(fmap.values())].copy()
    feats.columns = list(fmap)
    work = pd.concat([feats, sub[[time_col, event_col]]], axis=1)
    X, t, e = validate_survival(work, time_col, event_col, list(fmap), min_events=min_events)
    risk = np.empty(len(sub))
    for i, rec in enumerate(X.to_dict("records")):
        values = {c: sub[c].iloc[i] for c in clin} if clin else None
        try:
            risk[i] = sig.score(rec, values).risk if values is not None else sig.risk(rec)
        except ClinicalError as exc:
            who = (
                f"patient {shown(sub[id_col].iloc[i])}"
                if id_col and id_col in sub.columns
                else f"row {int(np.flatnonzero(keep)[i]) + 1}"
            )  # the row of the table as given
            raise ClinicalError(f"{who}: {exc}") from None
    cutoff = float(sig.cutoff["cutoff"])
    return {
        "table": sub,
        "time": t,
        "event": e,
        "risk": risk,
        "high": risk > cutoff,
        "cutoff": cutoff,
        "rows": {
            "total": int(len(table)),
            "used": int(keep.sum()),
            "excluded": excluded,
            "n_excluded": int((~keep).sum()),
        },
    }


def _header(sig: Any, cr: Mapping[str, Any]) -> dict[str, Any]:
    high = cr["high"]
    return {
        "signature": sig.name,
        "cancer_type": sig.cancer_type,
        "cutoff": cr["cutoff"],
        "cutoff_rule": "high if risk > the signature's frozen cutoff",
        "rows": cr["rows"],
        "n": int(len(high)),
        "events": int(cr["event"].sum()),
        "n_high": int(high.sum()),
        "n_low": int((~high).sum()),
        "research_use": RESEARCH_NOTE,
    }


def analyze_interaction(
    sig: Any,
    table: pd.DataFrame,
    marker: str,
    *,
    time_col: str,
    event_col: str,
    cutoff: float | str | None = None,
    subgroups: Sequence[str] = (),
    id_col: str | None = None,
    min_events: int = MIN_EVENTS,
) -> dict[str, Any]:
    """Marker within each pathomics risk group (KM, HR), the interaction p-value and a forest."""
    cr = cohort_risk(sig, table, time_col, event_col, [marker], id_col, min_events)
    sub, t, e, high = cr["table"], cr["time"], cr["event"], cr["high"]
    lv = marker_levels(sub[marker].tolist(), marker, cutoff)
    out = _header(sig, cr)
    out.update(kind="pathomics-interaction", marker=marker, **_effect_by_group(t, e, high, lv, "marker", min_events))
    forest = [lv, *[subgroup_levels(sub[c].tolist(), c) for c in subgroups if c != marker and c in sub.columns]]
    missing = [c for c in subgroups if c not in sub.columns]
    if missing:
        raise ClinicalError(f"subgroup column {missing[0]!r} is not in the table")
    out["forest"] = subgroup_forest(t, e, high, forest)
    return out


def analyze_benefit(
    sig: Any,
    table: pd.DataFrame,
    treatment: str,
    *,
    time_col: str,
    event_col: str,
    treated: str | None = None,
    subgroups: Sequence[str] = (),
    id_col: str | None = None,
    min_events: int = MIN_EVENTS,
) -> dict[str, Any]:
    """Treated vs untreated within each pathomics risk group, and the treatment × group test."""
    cr = cohort_risk(sig, table, time_col, event_col, [treatment], id_col, min_events)
    sub, t, e, high = cr["table"], cr["time"], cr["event"], cr["high"]
    lv = treatment_levels(sub[treatment].tolist(), treatment, treated)
    out = _header(sig, cr)
    out.update(
        kind="pathomics-benefit",
        treatment=treatment,
        warning=OBSERVATIONAL_WARNING,
        **_effect_by_group(t, e, high, lv, "treatment", min_events),
    )
    missing = [c for c in subgroups if c not in sub.columns]
    if missing:
        raise ClinicalError(f"subgroup column {missing[0]!r} is not in the table")
    out["forest"] = subgroup_forest(
        t, e, high, [lv, *[subgroup_levels(sub[c].tolist(), c) for c in subgroups if c != treatment]]
    )
    return out
