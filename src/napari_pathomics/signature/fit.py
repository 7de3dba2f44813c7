"""The signature pipeline: per-patient table -> frozen, evaluated :class:`Signature`.

correlation filter -> univariate Cox screen -> LASSO-Cox (penalty by k-fold CV concordance)
-> risk cutoff (maximally selected log-rank, permutation p) -> evaluation (nested k-fold CV
C-index with the whole pipeline refitted per fold, time-dependent AUC, HR with 95 % CI,
Kaplan–Meier per group) -> JSON. Everything is seeded, so the same table and settings give
the same numbers.
"""

from __future__ import annotations

import time as _time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ClinicalError, SignatureError
from ..provenance import versions
from ..units import DAYS_PER_UNIT, DEFAULT_HORIZONS
from ._compare import adjusted_hazard_ratios, bootstrap_delta_c, fit_combined, fit_plain_cox, likelihood_ratio_test
from ._cutoff import find_cutoff
from ._evaluate import hazard_ratio, km_by_group, time_dependent_auc
from .clinical import ClinicalSpec, Declared, canonical, fill_imputed, parse_clinical
from .cox import (
    DEFAULT_PENALIZERS,
    FrozenCox,
    concordance,
    correlation_filter,
    fit_lasso_cox,
    stratified_folds,
    univariate_screen,
)
from .features import FeatureSpec
from .model import SCHEMA_VERSION, SIGNATURE_KIND, Signature

MIN_EVENTS = 10
#: Largest follow-up time accepted, in any unit (a million days or hours is past any patient).
MAX_TIME = 1e6


def validate_survival(
    table: pd.DataFrame, duration_col: str, event_col: str, features: Sequence[str], min_events: int = MIN_EVENTS
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Check a per-patient table and return (features, time, event); SignatureError if unusable."""
    missing = [c for c in [duration_col, event_col, *features] if c not in table.columns]
    if missing:
        raise SignatureError(f"missing columns: {missing} (have {list(table.columns)[:30]})")
    if not features:
        raise SignatureError("no feature columns given")
    try:
        t = pd.to_numeric(table[duration_col], errors="raise").to_numpy(float)
        e = pd.to_numeric(table[event_col], errors="raise").to_numpy(float)
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"time/event columns must be numeric: {exc}") from exc
    if np.isnan(t).any():
        raise SignatureError(f"time column {duration_col!r} has {int(np.isnan(t).sum())} missing values")
    if np.isinf(t).any():
        raise SignatureError(
            f"time column {duration_col!r} has {int(np.isinf(t).sum())} infinite values "
            f"(row {int(np.flatnonzero(np.isinf(t))[0]) + 1}); give the last follow-up time"
        )
    if np.isnan(e).any():
        raise SignatureError(f"event column {event_col!r} has {int(np.isnan(e).sum())} missing values")
    if (t < 0).any():
        raise SignatureError(f"time column {duration_col!r} has {int((t < 0).sum())} negative times")
    if not np.isin(e, (0.0, 1.0)).all():
        raise SignatureError(f"event column {event_col!r} must be 0/1 (found {sorted(set(e.tolist()))[:5]})")
    if (t > MAX_TIME).any():
        raise SignatureError(
            f"time column {duration_col!r} has {int((t > MAX_TIME).sum())} times above {MAX_TIME:g} "
            f"(row {int(np.flatnonzero(t > MAX_TIME)[0]) + 1}); not a follow-up time in any unit"
        )
    if e.sum() < min_events:
        raise SignatureError(f"only {int(e.sum())} events; at least {min_events} are needed to fit a signature")
    if np.unique(t[e == 1]).size < 2:
        raise SignatureError(
            f"every event in {duration_col!r} is at the same time ({t[e == 1][0]:g}); nothing to order risks by"
        )
    X = table[list(features)]
    nonnum = [c for c in features if not pd.api.types.is_numeric_dtype(X[c])]
    if nonnum:
        raise SignatureError(f"feature columns are not numeric: {nonnum}")
    bad = [c for c in features if not np.isfinite(X[c].to_numpy(float)).all()]
    if bad:
        raise SignatureError(f"feature columns with NaN or inf: {bad}")
    return X.astype(float).reset_index(drop=True), t, e.astype(int)


@dataclass
class SignatureFitter:
    """Fit a prognostic signature from a per-patient table, lifelines-style (``fit`` then use).

    ``horizons`` are in the table's time unit. After :meth:`fit`, ``signature_`` holds the
    frozen :class:`Signature` and ``summary_`` a short dict of the headline figures.
    """

    corr_threshold: float = 0.8
    screen_p: float = 0.1
    screen_top_k: int = 3
    penalizers: Sequence[float] = DEFAULT_PENALIZERS
    folds: int = 5
    seed: int = 0
    min_group: float = 0.2
    n_permutations: int = 1000
    horizons: Sequence[float] = tuple(float(h) for h in DEFAULT_HORIZONS["days"])
    time_unit: str = "days"
    cross_validate: bool = True
    min_events: int = MIN_EVENTS
    cv_repeats: int = 1
    n_bootstrap: int = 1000
    signature_: Signature | None = field(default=None, init=False, repr=False)

    def settings(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("signature_", None)
        d["penalizers"] = [float(p) for p in self.penalizers]
        d["horizons"] = [float(h) for h in self.horizons]
        return d

    # --------------------------------------------------------------- core
    def _fit_core(
        self, X: pd.DataFrame, t: np.ndarray, e: np.ndarray, allow_null: bool = False
    ) -> tuple[FrozenCox, Any, dict[str, Any]]:
        """The selection + LASSO-Cox part, run on the full data and inside every CV fold."""
        kept, dropped = correlation_filter(X, self.corr_threshold)
        if not kept:
            raise SignatureError("no usable (non-constant) feature columns")
        mean = X[kept].mean()
        scale = X[kept].std(ddof=0).replace(0.0, 1.0)
        Z = (X[kept] - mean) / scale
        screened, table = univariate_screen(Z, t, e, self.screen_p, self.screen_top_k)
        frozen, cph, lasso_log = fit_lasso_cox(
            X[screened], t, e, self.penalizers, self.folds, self.seed, allow_null=allow_null
        )
        log = {
            "correlation_filter": {"threshold": self.corr_threshold, "kept": kept, "dropped": dropped},
            "univariate": {
                "p_threshold": self.screen_p,
                "top_k_fallback": self.screen_top_k,
                "table": {c: {k: float(v) for k, v in r.items()} for c, r in table.to_dict("index").items()},
                "selected": screened,
            },
            "lasso": lasso_log,
        }
        return frozen, cph, log

    def cross_validate_pipeline(
        self, X: pd.DataFrame, t: np.ndarray, e: np.ndarray, C: pd.DataFrame | None = None
    ) -> dict[str, Any]:
        """Nested k-fold CV: every fold refits selection, LASSO (own inner CV) and cutoff.

        Without clinical columns ``C`` this is the image signature's CV (``metrics.cv``). With
        them, the same folds also refit the clinical-only Cox and the combined model; the
        returned dict then describes the combined (shipped) model, and :meth:`evaluate_models`
        compares all three. Folds are repeated ``cv_repeats`` times with seeds ``seed + 1 + r``.
        """
        return self._cv(X, t, e, C)["cv"]

    def _cv(self, X: pd.DataFrame, t: np.ndarray, e: np.ndarray, C: pd.DataFrame | None) -> dict[str, Any]:
        XC = X if C is None else pd.concat([X, C], axis=1)
        names = ["image"] if C is None else ["image", "clinical", "combined"]
        final = names[-1]
        per: dict[str, dict[str, list[Any]]] = {m: {"c": [], "auc": []} for m in names}
        folds_out: list[dict[str, np.ndarray]] = []
        high_oof = np.zeros(len(t), bool)
        high_oof_img = np.zeros(len(t), bool)
        oof_img = np.zeros(len(t))
        seeds = [self.seed + 1 + r for r in range(max(1, self.cv_repeats))]
        for rep, fseed in enumerate(seeds):
            fid = stratified_folds(e, self.folds, fseed)
            for k in range(self.folds):
                tr, te = fid != k, fid == k
                Xtr = X[tr].reset_index(drop=True)
                img, _, _ = self._fit_core(Xtr, t[tr], e[tr], allow_null=True)
                risks = {"image": (img.risk(X[tr]), img.risk(X[te]))}
                if C is not None:
                    Ctr = C[tr].reset_index(drop=True)
                    clin, _ = fit_plain_cox(Ctr, t[tr], e[tr])
                    risks["clinical"] = (clin.risk(C[tr]), clin.risk(C[te]))
                    comb, _ = fit_combined(img, Xtr, Ctr, t[tr], e[tr])
                    risks["combined"] = (comb.risk(XC[tr]), comb.risk(XC[te]))
                for m in names:
                    per[m]["c"].append(concordance(t[te], risks[m][1], e[te]))
                    per[m]["auc"].append(time_dependent_auc(t[te], e[te], risks[m][1], self.horizons))
                if C is not None:
                    folds_out.append(
                        {
                            "time": t[te],
                            "event": e[te],
                            "combined": risks["combined"][1],
                            "clinical": risks["clinical"][1],
                            "image": risks["image"][1],
                        }
                    )
                if rep == 0:
                    oof_img[te] = risks["image"][1]
                    for m, target in ((final, high_oof), ("image", high_oof_img)):
                        r_tr, r_te = risks[m]
                        if np.ptp(r_tr) > 0:
                            cut = find_cutoff(r_tr, t[tr], e[tr], self.min_group, n_permutations=0, seed=self.seed)
                            target[te] = r_te > cut.cutoff
        models = {m: _model_cv(per[m]["c"], per[m]["auc"], self.horizons) for m in names}
        try:
            hr = hazard_ratio(high_oof, t, e)
        except SignatureError:
            hr = None
        cv = {
            "c_index_mean": models[final]["cv_c_index"],
            "c_index_sd": models[final]["cv_c_index_sd"],
            "c_index_per_fold": models[final]["c_index_per_fold"],
            "td_auc_mean": models[final]["td_auc"],
            "hazard_ratio_out_of_fold": hr,
            "folds": self.folds,
            "fold_seed": self.seed + 1,
            "note": "whole pipeline (filter, screen, LASSO with inner CV, cutoff) refitted in each fold; "
            "out-of-fold groups use the cutoff chosen on the training folds",
        }
        if self.cv_repeats > 1:
            cv["repeats"] = self.cv_repeats
            cv["note"] += (
                f"; C-index over {self.folds} folds x {self.cv_repeats} repeats, out-of-fold HR from the first"
            )
        if C is not None:
            cv["model"] = "combined"
        return {
            "cv": cv,
            "models": models,
            "folds": folds_out,
            "oof_image": oof_img,
            "high_oof_image": high_oof_img,
            "high_oof": high_oof,
            "seeds": seeds,
        }

    def evaluate_models(
        self,
        X: pd.DataFrame,
        t: np.ndarray,
        e: np.ndarray,
        C: pd.DataFrame | None,
        rows: dict[str, Any] | None = None,
        cv_run: dict[str, Any] | None = None,
        clinical_label: str = "",
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(metrics.cv, evaluation)``: image-only, clinical-only and combined, refitted in every fold.

        ``evaluation.models.<m>.cv_c_index`` (and ``_sd``) are the nested-CV C-indices; with
        clinical columns also the increment of combined over clinical-only (delta C with a
        bootstrap CI; a likelihood-ratio test of the out-of-fold pathomics score added to the
        covariates) and the pathomics score's and group's hazard ratios adjusted for them.
        """
        run = cv_run or self._cv(X, t, e, C)
        inputs = {"image": list(X.columns), "clinical": [] if C is None else list(C.columns)}
        models = run["models"]
        models["image"].update(inputs=inputs["image"], description="pathomics (image features) only")
        evaluation: dict[str, Any] = {
            "design": {
                "folds": self.folds,
                "repeats": max(1, self.cv_repeats),
                "fold_seeds": run["seeds"],
                "note": "nested CV: in every fold the image pipeline (filter, screen, LASSO with inner CV), "
                "the clinical Cox and the combined Cox are refitted on the training folds only; "
                "sd = standard deviation over all test folds",
            },
            "rows": rows or {"total": int(len(t)), "used": int(len(t)), "excluded": {}, "n_excluded": 0},
            "models": models,
        }
        if C is None:
            return run["cv"], evaluation
        models["clinical"].update(inputs=inputs["clinical"], description=f"clinical covariates only ({clinical_label})")
        models["combined"].update(
            inputs=inputs["image"] + inputs["clinical"], description="pathomics score + clinical covariates (Cox)"
        )
        folds = run["folds"]
        boot = bootstrap_delta_c(
            [{"time": f["time"], "event": f["event"], "a": f["combined"], "b": f["clinical"]} for f in folds],
            self.n_bootstrap,
            self.seed,
            labels=("combined", "clinical"),
        )
        boot_img = bootstrap_delta_c(
            [{"time": f["time"], "event": f["event"], "a": f["combined"], "b": f["image"]} for f in folds],
            self.n_bootstrap,
            self.seed,
            labels=("combined", "image"),
        )
        oof = run["oof_image"]
        score = pd.DataFrame({"pathomics_score": oof})
        lrt = (
            likelihood_ratio_test(t, e, C, score)
            if np.ptp(oof) > 0
            else {"chi2": 0.0, "df": 1, "p": 1.0, "note": "the image model selected nothing in any fold"}
        )
        lrt["on"] = "out-of-fold pathomics score (first CV repeat) added to a Cox model of the clinical covariates"
        evaluation["increment"] = {
            "combined_minus_clinical": {**boot, "likelihood_ratio_test": lrt},
            "combined_minus_image": boot_img,
        }
        adj = {
            "source": "out-of-fold pathomics score and group (first CV repeat), multivariable Cox with the "
            "clinical covariates on all rows"
        }
        if np.ptp(oof) > 0:
            try:
                adj.update(adjusted_hazard_ratios(t, e, oof, run["high_oof_image"], C))
            except SignatureError as exc:
                adj["error"] = str(exc)
        evaluation["adjusted_hazard_ratio"] = adj
        return run["cv"], evaluation

    # ---------------------------------------------------------------- fit
    def fit(
        self,
        table: pd.DataFrame,
        duration_col: str,
        event_col: str,
        features: Sequence[str],
        feature_spec: FeatureSpec | None = None,
        id_col: str | None = None,
        name: str = "pathomics-signature",
        description: str = "",
        provenance: dict[str, Any] | None = None,
        clinical: str | Sequence[Declared] | None = None,
        clinical_missing: str = "refuse",
        cancer_type: str = "",
        min_follow_up: float | None = None,
    ) -> Signature:
        """Fit, evaluate and freeze the signature; returns it (also as ``signature_``).

        With ``clinical`` covariates (``"COL:TYPE,..."`` or :class:`Declared` items) the frozen
        model is the combined one (pathomics score + covariates), fitted on the rows the
        missing-value rule keeps (recorded in ``clinical.missing`` and ``evaluation.rows``), and
        the evaluation compares image-only, clinical-only and combined models in the same folds.
        ``min_follow_up`` leaves out rows followed up for no longer than it (in ``time_unit``; e.g.
        0 for patients without any follow-up, whose deaths at time 0 are perioperative), counted
        in ``evaluation.rows`` like the clinical exclusions.
        """
        if self.time_unit not in DAYS_PER_UNIT:
            raise SignatureError(f"unknown time unit {self.time_unit!r}; choose one of {list(DAYS_PER_UNIT)}")
        if self.folds < 2:
            raise SignatureError("need at least 2 folds")
        t0 = _time.perf_counter()
        declared = parse_clinical(clinical) if isinstance(clinical, str) else list(clinical or [])
        clin_spec: ClinicalSpec | None = None
        rows: dict[str, Any] | None = None
        n_total, short = len(table), 0
        if min_follow_up is not None:
            if duration_col not in table.columns:
                raise SignatureError(f"missing time column {duration_col!r}")
            dur = pd.to_numeric(table[duration_col], errors="coerce")
            keep = ~(dur <= float(min_follow_up)).to_numpy()  # a non-numeric time is refused below, not hidden
            short = int((~keep).sum())
            table = table.loc[keep].reset_index(drop=True)
        if declared:
            clin_spec, used = ClinicalSpec.fit(table, declared, clinical_missing, id_col)
            if clinical_missing == "impute":
                table = fill_imputed(table, clin_spec)
            table = table.loc[used].reset_index(drop=True)
            rows = dict(clin_spec.rows)
        if short and min_follow_up is not None:  # (short > 0 only with a minimum follow-up)
            rows = dict(rows or {"total": len(table), "used": len(table), "excluded": {}, "n_excluded": 0})
            rows["excluded"] = {
                f"follow-up <= {float(min_follow_up):g} {self.time_unit}": short,
                **rows.get("excluded", {}),
            }
            rows.update(total=n_total, n_excluded=int(rows.get("n_excluded", 0)) + short)
        try:
            X, t, e = validate_survival(table, duration_col, event_col, features, self.min_events)
        except SignatureError as exc:
            if rows and rows.get("n_excluded"):
                why = ", ".join(f"{k}: {v}" for k, v in rows["excluded"].items())
                raise type(exc)(
                    f"{exc} (on the {rows['used']} of {rows['total']} rows left after leaving out "
                    f"{rows['n_excluded']} ({why}))"
                ) from None
            raise
        if len(t) < 4 * self.folds:
            raise SignatureError(f"only {len(t)} patients; too few for {self.folds}-fold CV")
        C = clin_spec.encode_table(table.reset_index(drop=True), id_col) if clin_spec is not None else None
        if clin_spec is not None:
            _check_level_events(table, clin_spec, e)
        frozen, cph, log = self._fit_core(X, t, e)
        XC = X
        if C is not None:
            image_frozen = frozen
            frozen, log["combined"] = fit_combined(image_frozen, X, C, t, e)
            XC = pd.concat([X, C], axis=1)
        risk = frozen.risk(XC)
        cut = find_cutoff(risk, t, e, self.min_group, self.n_permutations, self.seed)
        high = risk > cut.cutoff
        hr = hazard_ratio(high, t, e)
        grid = np.linspace(0.0, float(np.quantile(t, 0.95)), 41)
        km = km_by_group(t, e, high, grid)
        cv, evaluation = (
            self.evaluate_models(X, t, e, C, rows, clinical_label=clin_spec.describe() if clin_spec else "")
            if self.cross_validate
            else (None, None)
        )
        if evaluation is not None and C is not None:
            s_img = image_frozen.risk(X)
            if np.ptp(s_img) > 0:
                cut_img = find_cutoff(s_img, t, e, self.min_group, 0, self.seed)
                evaluation["adjusted_hazard_ratio"]["apparent"] = {
                    "note": "pathomics score and group of the image model fitted on all rows (optimistic)",
                    **adjusted_hazard_ratios(t, e, s_img, s_img > cut_img.cutoff, C),
                }
        spec = feature_spec or FeatureSpec(classes=["_"], tme_stats=[], mil=False, source="table")
        sig_json: dict[str, Any] = {
            "kind": SIGNATURE_KIND,
            "schema_version": SCHEMA_VERSION,
            "name": name,
            "description": description,
            "time_unit": self.time_unit,
            "horizons": [float(h) for h in self.horizons],
            "features": list(frozen.covariates),
            "feature_spec": spec.to_json() if feature_spec is not None else None,
            "cox": frozen.to_json(),
            "clinical": clin_spec.to_json() if clin_spec is not None else None,
            "cancer_type": cancer_type,
            "cutoff": cut.to_json(),
            "patch_risk_weights": cox_patch_risk_weights(frozen)["weights"],
            "patch_risk": {k: v for k, v in cox_patch_risk_weights(frozen).items() if k != "weights"},
            "reference": {
                "n": int(len(t)),
                "n_events": int(e.sum()),
                "risk_sorted": np.sort(risk).tolist(),
                "km": km,
            },
            "metrics": {
                "apparent_c_index": concordance(t, risk, e),
                "cv": cv,
                "td_auc_apparent": {
                    str(int(h) if float(h).is_integer() else h): v
                    for h, v in time_dependent_auc(t, e, risk, self.horizons).items()
                },
                "hazard_ratio_high_vs_low": hr,
                "hazard_ratio_note": "apparent: cutoff chosen on the same patients (optimistic); "
                "see metrics.cv.hazard_ratio_out_of_fold for the honest estimate",
            },
            "evaluation": evaluation,
            "selection": log,
            "training": {
                "settings": self.settings(),
                "duration_col": duration_col,
                "event_col": event_col,
                "id_col": id_col,
                "input_features": list(features),
                "clinical": [
                    {k: v for k, v in d.__dict__.items() if k != "label" or v} | {"levels": list(d.levels)}
                    for d in declared
                ]
                or None,
                "clinical_missing": clinical_missing if declared else None,
                **({"min_follow_up": float(min_follow_up)} if min_follow_up is not None else {}),
                "versions": versions(),
                **(provenance or {}),
            },
        }
        for key in ("clinical", "cancer_type", "evaluation"):
            if not sig_json[key]:
                sig_json.pop(key)
        sig_json["training"]["fit_seconds"] = round(_time.perf_counter() - t0, 2)
        self.signature_ = Signature.from_json(sig_json)
        return self.signature_


def _check_level_events(table: pd.DataFrame, spec: ClinicalSpec, event: np.ndarray) -> None:
    """A categorical level without any event has an unbounded hazard ratio: refuse it, naming it."""
    for c in spec.covariates:
        if c.type != "categorical":
            continue
        keys = np.array([canonical(v) for v in table[c.name].tolist()], object)
        for lv in c.levels:
            mask = keys == lv
            if mask.any() and int(event[mask].sum()) == 0:
                raise ClinicalError(
                    f"clinical column {c.name!r}: level {lv!r} has no events among its "
                    f"{int(mask.sum())} patients, so its hazard ratio is unbounded; merge it with "
                    "another level"
                )


def _model_cv(cs: list[float], aucs: list[dict[float, float | None]], horizons: Sequence[float]) -> dict[str, Any]:
    """Mean and sd of a model's test-fold C-indices, and its mean time-dependent AUC per horizon."""
    td = {}
    for h in horizons:
        vals = [v for v in (a[float(h)] for a in aucs) if v is not None]
        td[str(int(h) if float(h).is_integer() else h)] = float(np.mean(vals)) if vals else None
    return {
        "cv_c_index": float(np.mean(cs)),
        "cv_c_index_sd": float(np.std(cs, ddof=1)) if len(cs) > 1 else 0.0,
        "c_index_per_fold": [float(c) for c in cs],
        "td_auc": td,
    }


def cox_patch_risk_weights(frozen: FrozenCox) -> dict[str, Any]:
    """Per-class weights turning a tile's class probabilities into the signature's risk.

    For each selected ``tme_mean_<CLS>`` covariate, ``w_CLS = beta / scale``; with
    ``offset = -sum_c w_c * (mean_c + scale_c * cox_centre_c)`` a tile's
    ``sum_c w_c p_c + offset`` is the linear predictor a patient would get if all its tiles
    looked like this one (exact for mean-probability features of a single slide). The engine's
    per-patch risk and the Grad-CAM "risk activation map" use these as class-target weights,
    so the map highlights what drives *this* signature. Other covariates contribute nothing.
    The signature JSON stores ``weights`` flat as ``patch_risk_weights: {class: w}`` (what
    ``results.patch_risk_weights`` reads; unnamed classes weigh 0) and the
    rest under ``patch_risk``.
    """
    w: dict[str, float] = {}
    offset = 0.0
    for c, b, m, s, cm in zip(frozen.covariates, frozen.beta, frozen.mean, frozen.scale, frozen.cox_mean):
        if c.startswith("tme_mean_"):
            cls = c[len("tme_mean_") :]
            w[cls] = float(b / s)
            offset -= float(b / s * (m + s * cm))
    return {
        "weights": w,
        "offset": offset,
        "feature": "tme_mean",
        "definition": "tile risk = sum_c weights[c] * p_c + offset (log-hazard scale); "
        "weights[c] = beta_c / scale_c of covariate tme_mean_<c>",
    }
