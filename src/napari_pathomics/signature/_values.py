"""What a signature's numbers must be, beyond the types its JSON schema checks.

A signature that passes its schema can still not score: NaN or absurd Cox coefficients, blocks
of different lengths, a baseline hazard that goes back in time, a covariate no feature spec
computes, an empty reference cohort, a million survival horizons, patch-risk weights that
overflow a float32. These checks run wherever a signature is read (``Signature``, so ``score``)
and in ``validate-bundle``: one line per problem, naming the block. Sizes are checked before
anything else, so a huge list is refused without being walked.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["size_problems", "value_problems", "MAX_HORIZONS", "MAX_PATCH_RISK_WEIGHT"]

#: Survival horizons a signature may report (each is a figure in the report and the JSON).
MAX_HORIZONS = 64
#: Points of the baseline cumulative hazard (lifelines gives one per distinct event time).
MAX_BASELINE = 200_000
#: Reference cohort size (sorted risks) and Kaplan–Meier grid points.
MAX_REFERENCE = 1_000_000
MAX_GRID = 10_000
#: Largest |weight| of a class in the patch risk: the weights are β / scale of standardised
#: class fractions, so anything near this is already meaningless, and float32 stays finite.
MAX_PATCH_RISK_WEIGHT = 1e6
#: Largest |β| on standardised covariates (exp(100 · z) already overflows for |z| > 7).
MAX_COEFFICIENT = 100.0
#: Range of standardisation means and scales, and |Cox centre| (the centre is ~0 on standardised data).
MAX_MEAN = 1e9
SCALE_RANGE = (1e-9, 1e9)
MAX_CENTRE = 1e3

_SIZES: tuple[tuple[tuple[str, ...], int], ...] = (
    (("horizons",), MAX_HORIZONS),
    (("features",), 100_000),
    (("cox", "covariates"), 100_000),
    (("cox", "coefficients"), 100_000),
    (("cox", "baseline", "times"), MAX_BASELINE),
    (("cox", "baseline", "cumulative_hazard"), MAX_BASELINE),
    (("cox", "baseline", "survival"), MAX_BASELINE),
    (("reference", "risk_sorted"), MAX_REFERENCE),
    (("reference", "km", "grid"), MAX_GRID),
    (("patch_risk_weights",), 10_000),
    (("interplay",), 100),
)


def _at(data: Any, path: Sequence[str]) -> Any:
    for key in path:
        if not isinstance(data, Mapping):
            return None
        data = data.get(key)
    return data


def size_problems(data: Mapping[str, Any]) -> list[str]:
    """Lists longer than anything a signature needs (checked first: cheap, and no huge list is walked)."""
    out = []
    for path, limit in _SIZES:
        v = _at(data, path)
        if isinstance(v, (list, dict)) and len(v) > limit:
            out.append(f"{'.'.join(path)}: {len(v)} entries (at most {limit})")
    return out


def _finite_nums(v: Any) -> bool:
    return isinstance(v, list) and all(
        isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v
    )


def _monotone(v: Sequence[float], strict: bool = False) -> bool:
    return all((b > a) if strict else (b >= a) for a, b in zip(v, v[1:]))


def _cox_problems(cox: Mapping[str, Any]) -> list[str]:
    out = []
    cov = cox.get("covariates") or []
    beta = cox.get("coefficients") or []
    st = cox.get("standardisation") or {}
    blocks = {
        "coefficients": beta,
        "standardisation.mean": st.get("mean") or [],
        "standardisation.scale": st.get("scale") or [],
        "cox_centre": cox.get("cox_centre") or [],
    }
    if not cov:
        out.append("cox.covariates: empty (a signature needs at least one covariate)")
    if len(set(cov)) != len(cov):
        out.append(f"cox.covariates: duplicate names {sorted({c for c in cov if cov.count(c) > 1})}")
    for name, block in blocks.items():
        if len(block) != len(cov):
            out.append(f"cox.{name}: {len(block)} values for {len(cov)} covariates")
        elif not _finite_nums(block):
            out.append(f"cox.{name}: values must be finite numbers")
    if _finite_nums(beta) and any(abs(b) > MAX_COEFFICIENT for b in beta):
        out.append(f"cox.coefficients: |coefficient| above {MAX_COEFFICIENT:g} (standardised covariates)")
    mean, scale, centre = blocks["standardisation.mean"], blocks["standardisation.scale"], blocks["cox_centre"]
    if _finite_nums(mean) and any(abs(m) > MAX_MEAN for m in mean):
        out.append(f"cox.standardisation.mean: |mean| above {MAX_MEAN:g}")
    lo, hi = SCALE_RANGE
    if _finite_nums(scale) and any(not lo <= s <= hi for s in scale):
        out.append(f"cox.standardisation.scale: every scale must lie in [{lo:g}, {hi:g}]")
    if _finite_nums(centre) and any(abs(c) > MAX_CENTRE for c in centre):
        out.append(f"cox.cox_centre: |centre| above {MAX_CENTRE:g} (standardised covariates are centred near 0)")
    base = cox.get("baseline") or {}
    times, ch = base.get("times") or [], base.get("cumulative_hazard") or []
    if not times or len(times) != len(ch):
        out.append(f"cox.baseline: {len(times)} times and {len(ch)} cumulative hazards (need the same, at least one)")
    elif not (_finite_nums(times) and _finite_nums(ch)):
        out.append("cox.baseline: times and cumulative hazards must be finite numbers")
    else:
        if times[0] < 0 or not _monotone(times):
            out.append("cox.baseline.times: must be non-negative and non-decreasing")
        if ch[0] < 0 or not _monotone(ch):
            out.append("cox.baseline.cumulative_hazard: must be non-negative and non-decreasing")
    surv = base.get("survival")
    if surv is not None and len(surv) != len(times):
        out.append(f"cox.baseline.survival: {len(surv)} values for {len(times)} times")
    return out


def _reference_problems(ref: Mapping[str, Any]) -> list[str]:
    out = []
    risks = ref.get("risk_sorted") or []
    if not risks:
        out.append("reference.risk_sorted: empty (percentiles need the reference cohort's risks)")
    elif not _finite_nums(risks) or not _monotone(risks):
        out.append("reference.risk_sorted: must be finite numbers in increasing order")
    km = ref.get("km") or {}
    grid = km.get("grid") or []
    if not grid:
        out.append("reference.km.grid: empty (the survival curve needs time points)")
    elif not _finite_nums(grid) or grid[0] < 0 or not _monotone(grid):
        out.append("reference.km.grid: must be non-negative finite times in increasing order")
    for group in ("high", "low"):
        g = km.get(group)
        if not isinstance(g, Mapping):
            continue
        for key in ("survival", "ci_lower", "ci_upper", "at_risk"):
            v = g.get(key)
            if v is None:
                continue
            if len(v) != len(grid):
                out.append(f"reference.km.{group}.{key}: {len(v)} values for {len(grid)} grid times")
            elif key != "at_risk" and not all(0.0 <= x <= 1.0 for x in v):
                out.append(f"reference.km.{group}.{key}: survival values must lie in [0, 1]")
    return out


def _weights_problems(weights: Any) -> list[str]:
    if not isinstance(weights, Mapping):
        return []
    vals = list(weights.values())
    if not _finite_nums(vals):
        return ["patch_risk_weights: must be finite numbers"]
    big = sorted(str(k) for k, v in weights.items() if abs(v) > MAX_PATCH_RISK_WEIGHT)
    if big:
        return [f"patch_risk_weights: |weight| above {MAX_PATCH_RISK_WEIGHT:g} for {big[:5]}"]
    return []


def value_problems(data: Mapping[str, Any]) -> list[str]:
    """One line per value a schema-valid signature may not have (empty when it can score)."""
    out = []
    cox = data.get("cox")
    if isinstance(cox, Mapping):
        out += _cox_problems(cox)
    ref = data.get("reference")
    if isinstance(ref, Mapping):
        out += _reference_problems(ref)
    out += _weights_problems(data.get("patch_risk_weights"))
    horizons = data.get("horizons") or []
    if horizons and not _finite_nums(horizons):
        out.append("horizons: must be finite numbers")
    cutoff = (data.get("cutoff") or {}).get("cutoff")
    if isinstance(cutoff, (int, float)) and not math.isfinite(cutoff):
        out.append("cutoff.cutoff: must be a finite number")
    return out
