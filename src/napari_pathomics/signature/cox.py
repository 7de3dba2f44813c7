"""Cox building blocks: screens, LASSO-Cox with CV-chosen penalty, and a frozen model.

Fitting uses lifelines; scoring uses only :class:`FrozenCox` (numpy), rebuilt from JSON.
lifelines centres covariates internally (``_norm_mean``) and reports ``baseline_*`` at that
centre, so the frozen linear predictor is ``((x - mean) / scale - cox_mean) · beta`` which
equals ``predict_log_partial_hazard``; survival at arbitrary times linearly interpolates the
baseline cumulative hazard exactly as ``predict_survival_function(X, times=...)`` does.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..errors import SignatureError

#: Coefficients (standardised scale) below this are the soft-L1 "zeros" of lifelines' lasso.
ZERO_TOL = 1e-4
DEFAULT_PENALIZERS: tuple[float, ...] = (0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.08)


def _cph(penalizer: float = 0.0, l1_ratio: float = 0.0) -> Any:
    from lifelines import CoxPHFitter  # heavy: autograd, scipy

    return CoxPHFitter(penalizer=penalizer, l1_ratio=l1_ratio)


def _fit_quiet(cph: Any, df: pd.DataFrame, duration_col: str, event_col: str) -> Any:
    """Fit a lifelines model, turning convergence failures into SignatureError."""
    from lifelines.exceptions import ConvergenceError  # heavy

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return cph.fit(df, duration_col=duration_col, event_col=event_col)
        except (ConvergenceError, np.linalg.LinAlgError) as exc:
            raise SignatureError(f"Cox model did not converge: {str(exc).splitlines()[0]}") from exc


def standardise(X: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Column means and population SDs; constant columns get scale 1 (they are dropped later)."""
    mean = X.mean(axis=0)
    scale = X.std(axis=0, ddof=0).replace(0.0, 1.0)
    return mean, scale


def correlation_filter(X: pd.DataFrame, threshold: float = 0.8) -> tuple[list[str], list[dict[str, Any]]]:
    """Drop one of each pair with |Pearson r| > threshold (caret ``findCorrelation`` rule).

    Of the most correlated remaining pair, the column with the larger mean |r| to all others
    goes; repeat. Returns kept columns (input order) and a log of what was dropped and why.
    """
    cols = [c for c in X.columns if X[c].std(ddof=0) > 0]
    dropped: list[dict[str, Any]] = [{"feature": c, "reason": "constant"} for c in X.columns if c not in cols]
    if len(cols) < 2:
        return cols, dropped
    r = X[cols].corr().abs().to_numpy()
    np.fill_diagonal(r, 0.0)
    alive = np.ones(len(cols), bool)
    while True:
        sub = np.where(alive)[0]
        rs = r[np.ix_(sub, sub)]
        i, j = np.unravel_index(np.argmax(rs), rs.shape)
        if rs[i, j] <= threshold:
            break
        mi, mj = rs[i].mean(), rs[j].mean()
        drop, keep = (sub[i], sub[j]) if mi >= mj else (sub[j], sub[i])
        alive[drop] = False
        dropped.append({"feature": cols[drop], "reason": f"|r|={r[drop, keep]:.3f} with {cols[keep]}"})
    return [c for c, a in zip(cols, alive) if a], dropped


def _univariate_fit(x: np.ndarray, time: np.ndarray, event: np.ndarray) -> pd.Series:
    """lifelines' summary row of a one-covariate Cox model; SignatureError if it does not fit."""
    d = pd.DataFrame({"x": x, "T": time, "E": event})
    try:
        return _fit_quiet(_cph(), d, "T", "E").summary.loc["x"]
    except SignatureError:
        raise
    except Exception as exc:  # noqa: BLE001 - lifelines raises several kinds on divergence
        raise SignatureError(f"univariate Cox does not fit: {exc}") from exc


def univariate_screen(
    Z: pd.DataFrame, time: np.ndarray, event: np.ndarray, p_threshold: float = 0.1, top_k: int = 3
) -> tuple[list[str], pd.DataFrame]:
    """Univariate Cox per column; keep p < threshold, or the ``top_k`` smallest p if fewer pass."""
    rows = []
    for c in Z.columns:
        try:
            s = _univariate_fit(Z[c].to_numpy(), time, event)
        except SignatureError:  # the column cannot be screened
            rows.append({"feature": c, "coef": float("nan"), "hr": float("nan"), "p": 1.0})
            continue
        rows.append({"feature": c, "coef": float(s["coef"]), "hr": float(s["exp(coef)"]), "p": float(s["p"])})
    table = pd.DataFrame(rows).set_index("feature")
    keep = table.index[table["p"] < p_threshold].tolist()
    if len(keep) < min(top_k, len(table)):
        keep = table.sort_values("p").index[:top_k].tolist()
    return [c for c in Z.columns if c in keep], table


def screenable_features(
    X: pd.DataFrame, time: np.ndarray, event: np.ndarray, min_share: float = 0.1, min_patients: int = 5
) -> tuple[list[str], dict[str, str]]:
    """Columns worth screening: not constant, not rare, and a univariate Cox fit converges.

    Sparse columns (e.g. MIL histogram bins that a handful of patients populate) make Newton's
    steps diverge; dropping them before :func:`univariate_screen` keeps the fit stable.
    """
    need = max(min_patients, int(np.ceil(min_share * len(X))))
    keep: list[str] = []
    dropped: dict[str, str] = {}
    for c in X.columns:
        v = X[c].to_numpy(float)
        if np.nanstd(v) <= 0:
            dropped[c] = "constant"
            continue
        if int(np.sum(v != np.median(v))) < need:
            dropped[c] = f"fewer than {need} patients differ from the median"
            continue
        try:
            _univariate_fit((v - v.mean()) / v.std(), time, event)
        except SignatureError:
            dropped[c] = "univariate Cox does not converge"
            continue
        keep.append(c)
    if not keep:
        raise SignatureError("no usable feature: every column is constant, rare or makes Cox diverge")
    return keep, dropped


def concordance(time: np.ndarray, risk: np.ndarray, event: np.ndarray) -> float:
    """Harrell's C where a higher risk means shorter survival."""
    from lifelines.utils import concordance_index  # heavy

    return float(concordance_index(time, -np.asarray(risk, float), event))


def stratified_folds(event: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold id per row, events and censored rows dealt out separately (seeded, deterministic)."""
    event = np.asarray(event).astype(int)
    rng = np.random.default_rng(seed)
    folds = np.empty(len(event), int)
    for e in (0, 1):
        idx = np.where(event == e)[0]
        idx = idx[rng.permutation(len(idx))]
        folds[idx] = np.arange(len(idx)) % k
    return folds


@dataclass
class FrozenCox:
    """A fitted Cox model as plain arrays: everything scoring needs, JSON round-trippable."""

    covariates: list[str]
    mean: np.ndarray
    scale: np.ndarray
    cox_mean: np.ndarray
    beta: np.ndarray
    baseline_times: np.ndarray
    baseline_cumhaz: np.ndarray
    penalizer: float = 0.0
    l1_ratio: float = 0.0

    @classmethod
    def from_lifelines(
        cls, cph: Any, mean: pd.Series, scale: pd.Series, penalizer: float, l1_ratio: float
    ) -> "FrozenCox":
        cov = list(cph.params_.index)
        bch = cph.baseline_cumulative_hazard_
        return cls(
            covariates=cov,
            mean=mean[cov].to_numpy(float),
            scale=scale[cov].to_numpy(float),
            cox_mean=cph._norm_mean[cov].to_numpy(float),
            beta=cph.params_.to_numpy(float),
            baseline_times=bch.index.to_numpy(float),
            baseline_cumhaz=bch.iloc[:, 0].to_numpy(float),
            penalizer=float(penalizer),
            l1_ratio=float(l1_ratio),
        )

    # ----------------------------------------------------------------- scoring
    def _matrix(self, X: pd.DataFrame | Mapping[str, Any] | np.ndarray) -> np.ndarray:
        if isinstance(X, np.ndarray):
            M = np.atleast_2d(X).astype(float)
        elif isinstance(X, pd.DataFrame):
            missing = [c for c in self.covariates if c not in X.columns]
            if missing:
                raise SignatureError(f"missing features: {missing}")
            M = X[self.covariates].to_numpy(float)
        else:
            missing = [c for c in self.covariates if c not in X]
            if missing:
                raise SignatureError(f"missing features: {missing}")
            M = np.array([[float(X[c]) for c in self.covariates]])
        if M.shape[1] != len(self.covariates):
            raise SignatureError(f"expected {len(self.covariates)} features, got {M.shape[1]}")
        if not np.all(np.isfinite(M)):
            raise SignatureError("features contain NaN or inf")
        return M

    def risk(self, X: pd.DataFrame | Mapping[str, Any] | np.ndarray) -> np.ndarray:
        """Log partial hazard, identical to lifelines' ``predict_log_partial_hazard``."""
        Z = (self._matrix(X) - self.mean) / self.scale
        return (Z - self.cox_mean) @ self.beta

    def survival(self, risk: np.ndarray | float, times: Sequence[float] | np.ndarray | None = None) -> np.ndarray:
        """S(t | x) = exp(-H0(t) · exp(risk)); rows = times, columns = subjects (lifelines layout)."""
        t = self.baseline_times if times is None else np.asarray(times, float)
        h = np.interp(t, self.baseline_times, self.baseline_cumhaz)
        return np.exp(-np.outer(h, np.exp(np.atleast_1d(np.asarray(risk, float)))))

    # -------------------------------------------------------------------- JSON
    def to_json(self) -> dict[str, Any]:
        return {
            "covariates": list(self.covariates),
            "coefficients": [float(b) for b in self.beta],
            "standardisation": {"mean": self.mean.tolist(), "scale": self.scale.tolist()},
            "cox_centre": self.cox_mean.tolist(),
            "penalizer": self.penalizer,
            "l1_ratio": self.l1_ratio,
            "linear_predictor": "((x - mean) / scale - cox_centre) . coefficients",
            "baseline": {
                "times": self.baseline_times.tolist(),
                "cumulative_hazard": self.baseline_cumhaz.tolist(),
                "survival": np.exp(-self.baseline_cumhaz).tolist(),
                "interpolation": "linear in cumulative hazard (as lifelines)",
            },
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "FrozenCox":
        try:
            st = obj["standardisation"]
            base = obj["baseline"]
            out = cls(
                covariates=[str(c) for c in obj["covariates"]],
                mean=np.asarray(st["mean"], float),
                scale=np.asarray(st["scale"], float),
                cox_mean=np.asarray(obj["cox_centre"], float),
                beta=np.asarray(obj["coefficients"], float),
                baseline_times=np.asarray(base["times"], float),
                baseline_cumhaz=np.asarray(base["cumulative_hazard"], float),
                penalizer=float(obj.get("penalizer", 0.0)),
                l1_ratio=float(obj.get("l1_ratio", 0.0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise SignatureError(f"malformed Cox model in signature: {exc}") from exc
        n = len(out.covariates)
        if not (len(out.mean) == len(out.scale) == len(out.cox_mean) == len(out.beta) == n):
            raise SignatureError("malformed Cox model in signature: array lengths differ")
        if len(out.baseline_times) != len(out.baseline_cumhaz) or len(out.baseline_times) == 0:
            raise SignatureError("malformed Cox model in signature: bad baseline hazard")
        return out


def fit_lasso_cox(
    X: pd.DataFrame,
    time: np.ndarray,
    event: np.ndarray,
    penalizers: Sequence[float] = DEFAULT_PENALIZERS,
    folds: int = 5,
    seed: int = 0,
    allow_null: bool = False,
) -> tuple[FrozenCox, Any, dict[str, Any]]:
    """Standardise, pick the penalty by k-fold CV concordance, fit LASSO-Cox, keep non-zeros.

    The lasso (``l1_ratio=1``) is refitted with the same penalty on its non-zero covariates
    so the frozen model is exactly a lifelines model (lifelines' soft-L1 leaves ~1e-7 instead
    of exact zeros). In the CV, coefficients within ``ZERO_TOL`` of zero count as zero, so a
    penalty that shrinks everything scores C = 0.5 rather than ranking by numerical noise.
    Ties in CV C-index go to the larger penalty (sparser model). If the chosen penalty still
    leaves nothing: SignatureError, or with ``allow_null`` (inside outer CV folds) a model
    with all-zero coefficients (constant risk).
    Returns the frozen model, the lifelines fitter and a CV log.
    """
    penalizers = sorted(float(p) for p in penalizers)
    mean, scale = standardise(X)
    Z = (X - mean) / scale
    d = Z.copy()
    d["_T"] = np.asarray(time, float)
    d["_E"] = np.asarray(event, int)
    fid = stratified_folds(event, folds, seed)
    cv = []
    for pen in penalizers:
        cs = []
        for k in range(folds):
            tr, te = fid != k, fid == k
            m = _fit_quiet(_cph(pen, 1.0), d[tr], "_T", "_E")
            beta = m.params_.to_numpy(float)
            beta = np.where(np.abs(beta) > ZERO_TOL, beta, 0.0)
            lp = Z[te].to_numpy(float) @ beta
            cs.append(concordance(d["_T"][te].to_numpy(), lp, d["_E"][te].to_numpy()))
        cv.append(float(np.mean(cs)))
    cv_arr = np.round(np.asarray(cv), 12)
    best = int(np.flatnonzero(cv_arr == cv_arr.max())[-1])
    pen = float(penalizers[best])
    full = _fit_quiet(_cph(pen, 1.0), d, "_T", "_E")
    nz = [c for c in Z.columns if abs(full.params_[c]) > ZERO_TOL]
    if not nz:
        if not allow_null:
            raise SignatureError(
                "LASSO shrank every covariate to zero at the CV-chosen penalty: "
                "no prognostic signal found in these features"
            )
        frozen = FrozenCox.from_lifelines(full, mean, scale, pen, 1.0)
        frozen.beta = np.zeros_like(frozen.beta)
        return frozen, full, {"chosen": pen, "null_model": True}
    final = _fit_quiet(_cph(pen, 1.0), d[nz + ["_T", "_E"]], "_T", "_E")
    log = {
        "penalizers": [float(p) for p in penalizers],
        "cv_c_index": cv,
        "chosen": pen,
        "folds": folds,
        "seed": seed,
        "lasso_coefficients": {c: float(full.params_[c]) for c in Z.columns},
        "zero_tolerance": ZERO_TOL,
    }
    return FrozenCox.from_lifelines(final, mean, scale, pen, 1.0), final, log
