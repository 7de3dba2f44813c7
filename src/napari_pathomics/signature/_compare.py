"""Pathomics next to clinical covariates: the combined model and how much the image adds.

* :func:`fit_plain_cox` - an unpenalised Cox model on standardised columns, frozen.
* :func:`fit_combined` - the seed study's nomogram-style combination: Cox of the pathomics
  score (the image signature's linear predictor) together with the clinical covariates. Since
  the score is linear in the image features, the combined linear predictor is linear in image
  features + encoded clinical columns, and is frozen as one :class:`FrozenCox` (exactly equal to
  lifelines' prediction of the combined fit).
* :func:`bootstrap_delta_c` - the increment of one model's C-index over another's on the same
  out-of-fold predictions, with a paired patient bootstrap inside each fold.
* :func:`likelihood_ratio_test` and :func:`adjusted_hazard_ratios` - does the pathomics score
  add to the covariates, and its hazard ratio adjusted for them (the "independent prognostic
  factor" table).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..errors import SignatureError
from .cox import FrozenCox, _cph, _fit_quiet, standardise


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def fit_plain_cox(D: pd.DataFrame, time: np.ndarray, event: np.ndarray) -> tuple[FrozenCox, Any]:
    """Unpenalised Cox on standardised columns (constant columns refused), frozen."""
    const = [c for c in D.columns if float(D[c].std(ddof=0)) == 0.0]
    if const:
        raise SignatureError(f"covariate {const[0]!r} is constant in these patients; it cannot enter a Cox model")
    mean, scale = standardise(D)
    d = (D - mean) / scale
    d["_T"] = np.asarray(time, float)
    d["_E"] = np.asarray(event, int)
    cph = _fit_quiet(_cph(), d, "_T", "_E")
    return FrozenCox.from_lifelines(cph, mean, scale, 0.0, 0.0), cph


def fit_combined(
    image: FrozenCox, X: pd.DataFrame, C: pd.DataFrame, time: np.ndarray, event: np.ndarray
) -> tuple[FrozenCox, dict[str, Any]]:
    """Cox of [pathomics score, clinical columns], frozen over image features + clinical columns.

    With score ``s = ((x - m)/sd - c)·b`` and the fit ``γ (s - μ_s) + β·(z - μ_z)``, the image
    part becomes coefficients ``γ b`` with centres ``c + μ_s b / |b|²``. When the image model is
    null (all-zero ``b``) the combined model is the clinical one and says so.
    """
    b = np.asarray(image.beta, float)
    s = image.risk(X) if np.any(b != 0) else None
    if s is None or float(np.std(s)) == 0.0:
        frozen, cph = fit_plain_cox(C, time, event)
        return frozen, {
            "score_coefficient": 0.0,
            "image_null": True,
            "note": "the image model selected nothing here; the combined model is the clinical one",
        }
    D = C.copy()
    D.insert(0, "_pathomics_score", s)
    # the score enters unscaled (it is a log-hazard already); clinical columns are standardised
    cmean, cscale = standardise(C)
    d = pd.concat([D[["_pathomics_score"]], (C - cmean) / cscale], axis=1)
    d["_T"] = np.asarray(time, float)
    d["_E"] = np.asarray(event, int)
    cph = _fit_quiet(_cph(), d, "_T", "_E")
    gamma = float(cph.params_["_pathomics_score"])
    mu_s = float(cph._norm_mean["_pathomics_score"])
    bch = cph.baseline_cumulative_hazard_
    shift = mu_s * b / float(b @ b)
    clin = list(C.columns)
    frozen = FrozenCox(
        covariates=[*image.covariates, *clin],
        mean=np.concatenate([image.mean, cmean[clin].to_numpy(float)]),
        scale=np.concatenate([image.scale, cscale[clin].to_numpy(float)]),
        cox_mean=np.concatenate([image.cox_mean + shift, cph._norm_mean[clin].to_numpy(float)]),
        beta=np.concatenate([gamma * b, cph.params_[clin].to_numpy(float)]),
        baseline_times=bch.index.to_numpy(float),
        baseline_cumhaz=bch.iloc[:, 0].to_numpy(float),
        penalizer=float(image.penalizer),
        l1_ratio=float(image.l1_ratio),
    )
    summ = cph.summary
    log = {
        "score_coefficient": gamma,
        "image_null": False,
        "score_centre": mu_s,
        "image_covariates": list(image.covariates),
        "clinical_columns": clin,
        "combined_fit": {
            str(k): {"coef": float(r["coef"]), "hr": float(r["exp(coef)"]), "p": float(r["p"])}
            for k, r in summ.iterrows()
        },
        "definition": "combined log-hazard = gamma * pathomics score + sum_k beta_k * clinical_k "
        "(Cox, unpenalised; the pathomics score is the image signature's linear predictor)",
    }
    return frozen, log


# ---------------------------------------------------------------------------------------------
def comparable_pairs(time: np.ndarray, event: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Harrell's comparable pairs (i shorter with an event), with lifelines' tie rules.

    (i, j) is comparable when ``t_i < t_j`` and i had the event, or ``t_i == t_j`` with i an
    event and j censored; two events at the same time are not comparable.
    """
    t = np.asarray(time, float)
    e = np.asarray(event, bool)
    ti, tj = t[:, None], t[None, :]
    ok = e[:, None] & ((ti < tj) | ((ti == tj) & ~e[None, :]))
    i, j = np.nonzero(ok)
    return i, j


def pair_concordance(risk: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """1 if the shorter-lived patient has the higher risk, 0.5 on ties, else 0 (per pair)."""
    r = np.asarray(risk, float)
    return np.where(r[i] > r[j], 1.0, np.where(r[i] == r[j], 0.5, 0.0))


def bootstrap_delta_c(
    folds: Sequence[dict[str, np.ndarray]],
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    labels: tuple[str, str] = ("a", "b"),
) -> dict[str, Any]:
    """Mean over folds of C(a) - C(b) with a percentile CI from a paired, fold-stratified bootstrap.

    Each item of ``folds`` holds one test fold's ``time``, ``event``, ``a`` and ``b`` (the two
    models' out-of-fold risks). A bootstrap draw resamples the patients of every fold with
    replacement (weights = multiplicities), so each pair counts ``w_i·w_j`` times; both models see
    the same draw. The point estimate is the plain (unweighted) mean of the per-fold differences.
    """
    rng = np.random.default_rng(seed)
    point, boots = [], np.zeros((n_boot, len(folds)))
    for k, f in enumerate(folds):
        i, j = comparable_pairs(f["time"], f["event"])
        if i.size == 0:
            boots[:, k] = np.nan
            point.append(np.nan)
            continue
        ca, cb = pair_concordance(f["a"], i, j), pair_concordance(f["b"], i, j)
        point.append(float(ca.mean() - cb.mean()))
        n = len(f["time"])
        for start in range(0, n_boot, 200):  # bounded memory: 200 draws at a time
            stop = min(n_boot, start + 200)
            w = rng.multinomial(n, np.full(n, 1.0 / n), size=stop - start).astype(float)
            wp = w[:, i] * w[:, j]
            tot = wp.sum(1)
            with np.errstate(invalid="ignore", divide="ignore"):
                boots[start:stop, k] = (wp @ ca - wp @ cb) / tot
    dist = np.nanmean(boots, axis=1)
    dist = dist[np.isfinite(dist)]
    a = (1.0 - level) / 2.0
    return {
        "delta_c": float(np.nanmean(point)),
        "ci_lower": float(np.quantile(dist, a)) if dist.size else None,
        "ci_upper": float(np.quantile(dist, 1.0 - a)) if dist.size else None,
        "level": level,
        "n_bootstrap": int(n_boot),
        "share_above_zero": float(np.mean(dist > 0)) if dist.size else None,
        "method": f"mean over folds of out-of-fold C({labels[0]}) - C({labels[1]}); percentile CI of a paired "
        "bootstrap of patients within each fold",
    }


def likelihood_ratio_test(
    time: np.ndarray, event: np.ndarray, base: pd.DataFrame, extra: pd.DataFrame
) -> dict[str, Any]:
    """LRT of adding ``extra`` columns to a Cox model of ``base`` (nested models, same rows)."""
    from scipy.stats import chi2  # heavy

    def ll(D: pd.DataFrame) -> float:
        if D.shape[1] == 0:
            return _null_log_likelihood(time, event)
        mean, scale = standardise(D)
        d = (D - mean) / scale
        d["_T"], d["_E"] = np.asarray(time, float), np.asarray(event, int)
        return float(_fit_quiet(_cph(), d, "_T", "_E").log_likelihood_)

    l0 = ll(base)
    l1 = ll(pd.concat([base, extra], axis=1))
    stat = max(0.0, 2.0 * (l1 - l0))
    df = int(extra.shape[1])
    return {"chi2": stat, "df": df, "p": float(chi2.sf(stat, df)), "log_likelihood_base": l0, "log_likelihood_full": l1}


def _null_log_likelihood(time: np.ndarray, event: np.ndarray) -> float:
    """Partial log-likelihood of the model with no covariates, with Efron's ties (as lifelines)."""
    t = np.asarray(time, float)
    e = np.asarray(event, int)
    ll = 0.0
    for ti in np.unique(t[e == 1]):
        d = int(((t == ti) & (e == 1)).sum())
        n = int((t >= ti).sum())
        ll -= float(np.log(n - np.arange(d)).sum())
    return float(ll)


def cox_table(time: np.ndarray, event: np.ndarray, D: pd.DataFrame, per_sd: Sequence[str] = ()) -> dict[str, Any]:
    """Multivariable Cox: HR, 95 % CI and p per column (``per_sd`` columns scaled to unit SD first)."""
    d = D.copy()
    for c in per_sd:
        sd = float(d[c].std(ddof=0))
        if sd > 0:
            d[c] = d[c] / sd
    d["_T"], d["_E"] = np.asarray(time, float), np.asarray(event, int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summ = _fit_quiet(_cph(), d, "_T", "_E").summary
    out = {}
    for k, r in summ.iterrows():
        out[str(k)] = {
            "hr": _finite(float(r["exp(coef)"])),
            "ci_lower": _finite(float(r["exp(coef) lower 95%"])),
            "ci_upper": _finite(float(r["exp(coef) upper 95%"])),
            "p": _finite(float(r["p"])),
            "log_hr": _finite(float(r["coef"])),
            "se": _finite(float(r["se(coef)"])),
            "per": "SD" if k in per_sd else "unit",
        }
    return out


def adjusted_hazard_ratios(
    time: np.ndarray, event: np.ndarray, score: np.ndarray, high: np.ndarray | None, C: pd.DataFrame
) -> dict[str, Any]:
    """The pathomics score (per SD) and group (high vs low) adjusted for the clinical columns."""
    out: dict[str, Any] = {}
    D = C.copy()
    D.insert(0, "pathomics_score", np.asarray(score, float))
    out["score_per_sd"] = cox_table(time, event, D, per_sd=["pathomics_score"])
    if high is not None and 0 < int(np.sum(high)) < len(high):
        G = C.copy()
        G.insert(0, "pathomics_high", np.asarray(high, float))
        out["group_high_vs_low"] = cox_table(time, event, G)
    return out
