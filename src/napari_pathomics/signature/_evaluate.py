"""How good a signature is: C-index, time-dependent AUC, hazard ratio, Kaplan–Meier curves.

All functions take plain arrays (time, event 0/1, risk where higher = worse) so they serve
the fitting pipeline, the report and tests alike.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..errors import SignatureError
from .cox import concordance

__all__ = ["concordance", "time_dependent_auc", "hazard_ratio", "km_by_group", "km_curve", "percentile"]


def _censoring_survival(time: np.ndarray, event: np.ndarray, at: np.ndarray) -> np.ndarray:
    """G(t-) : Kaplan–Meier of the censoring distribution just before ``at``."""
    from lifelines import KaplanMeierFitter  # heavy

    km = KaplanMeierFitter().fit(time, 1 - event)
    sf = km.survival_function_.iloc[:, 0]
    idx = np.searchsorted(sf.index.to_numpy(), at, side="left") - 1  # strictly before
    vals = np.where(idx >= 0, sf.to_numpy()[np.clip(idx, 0, None)], 1.0)
    return vals


def time_dependent_auc(
    time: np.ndarray, event: np.ndarray, risk: np.ndarray, horizons: Sequence[float]
) -> dict[float, float | None]:
    """Cumulative/dynamic AUC(t) with inverse-probability-of-censoring weights (Uno 2007).

    Cases: event before or at t, weighted by 1 / G(T_i-); controls: still event-free after t
    (their common weight 1 / G(t) cancels). Ties in risk count one half. ``None`` where a
    horizon has no case or no control (e.g. beyond follow-up). Same estimator as
    scikit-survival's ``cumulative_dynamic_auc``, written here to avoid that dependency.
    """
    time = np.asarray(time, float)
    event = np.asarray(event, int)
    risk = np.asarray(risk, float)
    out: dict[float, float | None] = {}
    w_all = 1.0 / np.maximum(_censoring_survival(time, event, time), 1e-12)
    for t in horizons:
        case = (time <= t) & (event == 1)
        ctrl = time > t
        if case.sum() == 0 or ctrl.sum() == 0:
            out[float(t)] = None
            continue
        rc, rk = risk[case], risk[ctrl]
        w = w_all[case]
        gt = (rc[:, None] > rk[None, :]).sum(1) + 0.5 * (rc[:, None] == rk[None, :]).sum(1)
        out[float(t)] = float((w * gt).sum() / (w.sum() * ctrl.sum()))
    return out


def hazard_ratio(group_high: np.ndarray, time: np.ndarray, event: np.ndarray) -> dict[str, float]:
    """HR of high vs low from a Cox model on the group indicator, with 95 % Wald CI and p."""
    from lifelines import CoxPHFitter  # heavy: autograd, scipy

    g = np.asarray(group_high).astype(int)
    if g.min() == g.max():
        raise SignatureError("hazard ratio needs patients in both risk groups")
    d = pd.DataFrame({"high": g, "T": np.asarray(time, float), "E": np.asarray(event, int)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = CoxPHFitter().fit(d, "T", "E").summary.loc["high"]
    out = {
        "hr": float(s["exp(coef)"]),
        "ci_lower": float(s["exp(coef) lower 95%"]),
        "ci_upper": float(s["exp(coef) upper 95%"]),
        "p": float(s["p"]),
        "log_hr": float(s["coef"]),
        "se": float(s["se(coef)"]),
    }
    # small cohorts can give an unbounded CI: JSON (and bundles) need null, not inf
    return {k: (v if np.isfinite(v) else None) for k, v in out.items()}  # type: ignore[misc]


def km_by_group(
    time: np.ndarray, event: np.ndarray, group_high: np.ndarray, grid: Sequence[float] | np.ndarray
) -> dict[str, Any]:
    """Kaplan–Meier survival (with 95 % CI) and numbers at risk per group on a time grid."""
    time = np.asarray(time, float)
    event = np.asarray(event, int)
    g = np.asarray(group_high).astype(bool)
    grid = np.asarray(grid, float)
    out: dict[str, Any] = {"grid": grid.tolist()}
    for name, mask in (("high", g), ("low", ~g)):
        out[name] = km_curve(time[mask], event[mask], grid, label=name)
    return out


def km_curve(
    time: np.ndarray, event: np.ndarray, grid: Sequence[float] | np.ndarray, label: str = ""
) -> dict[str, Any]:
    """One Kaplan–Meier curve on a time grid: survival, 95 % CI, numbers at risk, median."""
    from lifelines import KaplanMeierFitter  # heavy

    time = np.asarray(time, float)
    event = np.asarray(event, int)
    grid = np.asarray(grid, float)
    km = KaplanMeierFitter(label=label or "km").fit(time, event)
    ci = km.confidence_interval_survival_function_
    return {
        "n": int(time.size),
        "events": int(event.sum()),
        "survival": km.survival_function_at_times(grid).to_numpy(float).tolist(),
        "ci_lower": _step_at(ci.iloc[:, 0], grid),
        "ci_upper": _step_at(ci.iloc[:, 1], grid),
        "at_risk": [int((time >= t).sum()) for t in grid],
        "median_survival": _finite_or_none(km.median_survival_time_),
    }


def _step_at(series: pd.Series, grid: np.ndarray) -> list[float]:
    idx = np.searchsorted(series.index.to_numpy(float), grid, side="right") - 1
    v = series.to_numpy(float)
    return [float(v[i]) if i >= 0 else 1.0 for i in idx]


def _finite_or_none(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def percentile(value: float, reference_sorted: Sequence[float] | np.ndarray) -> float:
    """Share (in %) of the reference cohort with a risk at or below ``value``."""
    ref = np.asarray(reference_sorted, float)
    return float(100.0 * np.searchsorted(ref, value, side="right") / len(ref))
