"""``train-signature``: the seed study's pipeline from slides and outcomes to a new bundle.

1. Tiles from the ROIs (or tissue) of every slide -> Macenko -> the base bundle's backbone
   (pooled ``pre_logits`` features) and class probabilities, computed once and cached per slide
   (``inference.embed``).
2. Patients are split (seeded, stratified by event) into training and held-out parts. Weak
   patient-level labels on the training part, as in the seed study: event before the early
   horizon = poor (1), event-free beyond the late horizon = good (0), others unlabeled.
3. A patch risk head (L2 logistic regression on standardised embeddings; every patch of a
   patient carries the patient's label; each patient weighs the same in the loss and the two
   labels weigh the same) -> per-patch risk = P(poor). The head is *cross-fitted*: a training
   patient's patch risks come from a head fitted on the other folds, so the Cox stage does not
   see risks the head has memorised (they would make MIL bins look prognostic that do not
   generalise). Held-out patients and the shipped head use the
   head fitted on all training patients.
4. Per-patient features with the signature library's :class:`FeatureSpec`: TME composition
   (mean probability and argmax fraction per class, tile-weighted over slides) and the MIL
   histogram + TF-IDF of patch risk and predictions (vocabulary/idf fitted on training patients);
   with ``nuc``, nuclear features from the nuclei method ``nuclei_model`` names, recorded in the
   spec so that scoring with another method warns.
5. :class:`SignatureFitter`: correlation filter -> univariate Cox -> LASSO-Cox -> X-tile cutoff,
   fitted on the training part only.
6. Held-out evaluation (C-index, group HR, time-dependent AUC; with ``oracle_col`` also the
   oracle C-index and mean true hazard per group) and a new bundle: the base bundle's files, the
   risk head (``risk_head.safetensors``, declared under ``manifest["risk_head"]``), the new
   ``signature.json`` and ``evaluation.json``. It loads with ``Bundle.load``.

Horizons ``early``/``late`` are in months whatever the time unit of the outcome column.
"""

from __future__ import annotations

import copy
import json
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from tqdm import tqdm

from ..bundle import Bundle, staged_bundle, write_bundle
from ..cells.results import NUCLEAR_MEASURES
from ..cohort.table import CohortTable, read_cohort
from ..errors import CohortError, PathomicsError, SignatureError
from ..inference.embed import SlideEmbeddings, backbone_key, extract_slide
from ..inference.risk_head import RISK_HEAD_FILE, RiskHead
from ..provenance import bundle_record, run_record
from ..provenance import strict_json as jsonable
from ..resources import DEFAULT_BUNDLE
from ..results.cache import cache_root
from ..scoring import nuclear_tile_values, nuclei_method, shared_engine, slide_tiles
from ..signature import FeatureSpec, SignatureFitter, concordance, hazard_ratio, time_dependent_auc
from ..signature.cox import screenable_features, stratified_folds
from ..units import TIME_UNITS, convert_time

#: Feature families train-signature can use: TME composition, MIL of patch risk, nuclear features.
FAMILIES = ("tme", "mil", "nuc")


@dataclass
class TrainSettings:
    """Everything that defines a train-signature run (recorded in the bundle)."""

    time_col: str = "time"
    event_col: str = "event"
    outcomes: str | None = None
    early: float = 12.0  # months
    late: float = 36.0  # months
    time_unit: str = "months"
    test_fraction: float = 0.3
    seed: int = 0
    device: str = "cpu"
    batch_size: int = 32
    amp: str = "auto"
    threads: int | None = None
    families: list[str] = field(default_factory=lambda: ["tme", "mil"])
    oracle_col: str | None = None
    permutations: int = 1000
    cross_validate: bool = False
    folds: int = 5
    head_l2: float = 1.0
    head_folds: int = 5  # cross-fitting folds of the risk head over training patients (0 = off)
    screen_p: float = 0.01  # univariate Cox screen threshold (MIL features are many and noisy)
    cache_dir: str | None = None
    no_tissue: bool = False
    min_tissue: float | None = None
    name: str | None = None
    nuclei_model: str | None = None  # nuclei method of the nuc family (a name or model folder; None: the default)

    def validate(self) -> None:
        if self.time_unit not in TIME_UNITS:
            raise CohortError(f"--time-unit must be one of {list(TIME_UNITS)}")
        if not 0 < self.early < self.late:
            raise CohortError(f"need 0 < --early < --late (got {self.early}, {self.late})")
        if not 0.0 <= self.test_fraction < 0.9:
            raise CohortError(f"--test-fraction must be within [0, 0.9), got {self.test_fraction}")
        bad = [f for f in self.families if f not in FAMILIES]
        if bad or not self.families:
            raise CohortError(f"--features must name some of {', '.join(FAMILIES)} (got {self.families})")


# ---------------------------------------------------------------------------------------------
# outcomes and split
def read_outcomes(table: CohortTable, s: TrainSettings) -> dict[str, dict[str, float]]:
    """Per-patient time, event (and oracle) from ``--outcomes`` or the cohort table's own columns."""
    if s.outcomes:
        p = Path(s.outcomes)
        if not p.is_file():
            raise CohortError(f"no such outcomes file: {p}")
        df = pd.read_csv(p, dtype={"patient_id": str})
        if "patient_id" not in df.columns:
            raise CohortError(f"{p.name}: missing column 'patient_id'")
        if df["patient_id"].duplicated().any():
            raise CohortError(
                f"{p.name}: duplicate patient ids, e.g. {df['patient_id'][df['patient_id'].duplicated()].iloc[0]!r}"
            )
        src = {str(r["patient_id"]): r for r in df.to_dict("records")}
        where = p.name
    else:
        src = {}
        for r in table.rows:
            src.setdefault(r.patient_id, dict(r.extra))
        where = table.path.name
    cols = [s.time_col, s.event_col] + ([s.oracle_col] if s.oracle_col else [])
    out: dict[str, dict[str, float]] = {}
    for pid in table.patients:
        rec = src.get(pid)
        if rec is None:
            raise CohortError(f"{where}: no outcome for patient {pid!r}")
        vals = {}
        for c in cols:
            if c not in rec:
                raise CohortError(f"{where}: missing column {c!r}")
            try:
                vals[c] = float(rec[c])
            except (TypeError, ValueError):
                raise CohortError(f"{where}: patient {pid!r}: {c} = {rec[c]!r} is not a number") from None
            if not np.isfinite(vals[c]):
                raise CohortError(f"{where}: patient {pid!r}: {c} is missing")
        if vals[s.time_col] < 0:
            raise CohortError(f"{where}: patient {pid!r}: negative time {vals[s.time_col]}")
        if vals[s.event_col] not in (0.0, 1.0):
            raise CohortError(f"{where}: patient {pid!r}: event must be 0 or 1, got {vals[s.event_col]}")
        out[pid] = {
            "time": vals[s.time_col],
            "event": int(vals[s.event_col]),
            **({"oracle": vals[s.oracle_col]} if s.oracle_col else {}),
        }
    return out


def split_patients(
    pids: Sequence[str], event: np.ndarray, test_fraction: float, seed: int
) -> tuple[list[str], list[str]]:
    """Seeded split, events and censored patients dealt separately so both parts have events."""
    rng = np.random.default_rng(seed)
    test: list[str] = []
    for e in (0, 1):
        idx = np.flatnonzero(np.asarray(event) == e)
        idx = idx[rng.permutation(idx.size)]
        test += [pids[i] for i in idx[: int(round(test_fraction * idx.size))]]
    ts = set(test)
    return [p for p in pids if p not in ts], [p for p in pids if p in ts]


def weak_labels(time_months: np.ndarray, event: np.ndarray, early: float, late: float) -> np.ndarray:
    """1 = poor (event before ``early``), 0 = good (followed beyond ``late``), -1 = unlabeled."""
    lab = np.full(time_months.shape, -1, dtype=np.int64)
    lab[(event == 1) & (time_months < early)] = 1
    lab[time_months > late] = 0
    return lab


# ---------------------------------------------------------------------------------------------
def fit_risk_head(embs: list[np.ndarray], labels: np.ndarray, l2: float = 1.0) -> RiskHead:
    """L2 logistic regression on standardised embeddings; each patient and each label weigh equally.

    Deterministic (L-BFGS from zeros, float64), so the same inputs give the same head.
    """
    y_p = np.asarray(labels, dtype=np.float64)
    if not ((y_p == 1).any() and (y_p == 0).any()):
        raise CohortError("weak labels need both poor and good training patients; change --early/--late")
    X = np.concatenate(embs).astype(np.float64)
    n_t = np.array([e.shape[0] for e in embs])
    y = np.repeat(y_p, n_t)
    # weight: 1/(tiles of the patient) / (patients with that label), normalised to mean 1
    n_lab = {v: float((y_p == v).sum()) for v in (0.0, 1.0)}
    w = np.repeat([1.0 / (n * n_lab[v]) for n, v in zip(n_t, y_p)], n_t)
    w *= w.size / w.sum()
    mean = X.mean(axis=0)
    scale = X.std(axis=0)
    scale[scale < 1e-8] = 1.0
    Z = (X - mean) / scale
    d = Z.shape[1]

    def f(theta: np.ndarray) -> tuple[float, np.ndarray]:
        beta, b = theta[:d], theta[d]
        z = Z @ beta + b
        # log(1 + e^z) - y z, stable
        loss = np.logaddexp(0.0, z) - y * z
        p = 1.0 / (1.0 + np.exp(-z))
        g = w * (p - y)
        val = float((w * loss).mean() + 0.5 * l2 * beta @ beta)
        grad = np.concatenate([Z.T @ g / Z.shape[0] + l2 * beta, [g.mean()]])
        return val, grad

    res = minimize(f, np.zeros(d + 1), jac=True, method="L-BFGS-B", options={"maxiter": 500})
    return RiskHead(res.x[:d].copy(), float(res.x[d]), mean, scale)


# ---------------------------------------------------------------------------------------------
def train_signature(
    cohort_csv: str | Path,
    out: str | Path,
    *,
    bundle: str | Path | None = None,
    settings: TrainSettings | None = None,
    progress: bool = True,
    argv: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Run the whole pipeline and write the new bundle to ``out``; returns the report."""
    s = settings or TrainSettings()
    s.validate()
    # the nuclei method, resolved before any work (a bad one is a NucleiError); unused without nuc
    given = nuclei_method(s.nuclei_model) if s.nuclei_model is not None else None
    nuclei = (given or nuclei_method()) if "nuc" in s.families else None
    t0 = time.perf_counter()
    table = read_cohort(cohort_csv)
    base_path = Path(bundle or DEFAULT_BUNDLE).expanduser()
    for given, what in ((base_path, "the base bundle"), (Path(cohort_csv).parent, "the cohort's folder")):
        if Path(out).expanduser().resolve() == given.resolve():
            raise CohortError(f"--out {out} is {what}; write the new bundle to another folder")
    outcomes = read_outcomes(table, s)
    pids = table.patients
    t_m = np.array([convert_time(outcomes[p]["time"], s.time_unit, "months") for p in pids])
    ev = np.array([outcomes[p]["event"] for p in pids])
    train_ids, test_ids = split_patients(pids, ev, s.test_fraction, s.seed)
    base = Bundle.load(bundle or DEFAULT_BUNDLE)
    engine, _ = shared_engine(base, device=s.device, batch_size=s.batch_size, amp=s.amp, num_threads=s.threads)
    emb_cache = Path(s.cache_dir) if s.cache_dir else cache_root("embeddings")

    # 1. embeddings per slide (cached)
    t_emb = time.perf_counter()
    by_patient = table.by_patient()
    embs: dict[str, list[tuple[str, SlideEmbeddings]]] = {}
    bar = None
    if progress:
        bar = tqdm(total=len(table), unit="slide", desc="embeddings", file=sys.stderr, disable=None)
    failed: dict[str, str] = {}
    slide_paths: dict[str, Path] = {}
    for pid in pids:
        for row in by_patient[pid]:
            try:
                se = extract_slide(engine, row.slide_path, row.roi_path, emb_cache, s.no_tissue, s.min_tissue)
                embs.setdefault(pid, []).append((row.key, se))
                slide_paths[row.key] = row.slide_path
            except PathomicsError as exc:
                failed[row.key] = str(exc)
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    t_emb = time.perf_counter() - t_emb
    timings_extra: dict[str, float] = {}
    lost = [p for p in pids if p not in embs]
    if lost:
        raise CohortError(
            f"{len(lost)} patient(s) have no usable slide, e.g. {lost[0]!r}: {next(iter(failed.values()), '')}"
        )

    # 2.-3. weak labels and the patch risk head (training patients only)
    idx = {p: i for i, p in enumerate(pids)}
    lab_all = weak_labels(t_m, ev, s.early, s.late)
    labelled = [p for p in train_ids if lab_all[idx[p]] >= 0]
    pemb = {p: np.concatenate([se.emb for _, se in embs[p]]) for p in pids}
    head = fit_risk_head([pemb[p] for p in labelled], np.array([lab_all[idx[p]] for p in labelled]), s.head_l2)
    risk = {p: [head.predict(se.emb) for _, se in embs[p]] for p in pids}
    if s.head_folds >= 2:
        fold = dict(
            zip(
                train_ids,
                stratified_folds(np.array([max(lab_all[idx[p]], 0) for p in train_ids]), s.head_folds, s.seed + 7),
            )
        )
        for k in range(s.head_folds):
            fit_on = [p for p in labelled if fold[p] != k]
            hk = fit_risk_head([pemb[p] for p in fit_on], np.array([lab_all[idx[p]] for p in fit_on]), s.head_l2)
            for p in train_ids:
                if fold[p] == k:
                    risk[p] = [hk.predict(se.emb) for _, se in embs[p]]
    # nuclei on the same tiles (cached per slide), for the nuclear family
    nuclear: dict[str, dict[str, np.ndarray] | None] = {}
    if "nuc" in s.families:
        t_nuc = time.perf_counter()
        for p in pids:
            for key, se in embs[p]:
                nuclear[key] = nuclear_tile_values(slide_paths[key], se.results, method=nuclei)
        timings_extra["nuclei_s"] = round(time.perf_counter() - t_nuc, 2)
    tiles = {
        p: [slide_tiles(se.results, key, risk=r, nuclear=nuclear.get(key)) for (key, se), r in zip(embs[p], risk[p])]
        for p in pids
    }

    # 4. features
    spec = FeatureSpec(
        classes=list(base.class_names),
        tme_stats=["mean", "frac"] if "tme" in s.families else [],
        combine="weighted",
        mil="mil" in s.families,
        source="tiles",
        nuclear=list(NUCLEAR_MEASURES) if "nuc" in s.families else None,
        nuclei_model=nuclei.describe() if nuclei is not None else None,  # scoring warns on another method
    )
    spec.fit([tiles[p] for p in train_ids])
    X = spec.transform_many(tiles)
    train_t = np.array([outcomes[p]["time"] for p in train_ids])
    train_e = np.array([outcomes[p]["event"] for p in train_ids])
    try:
        feat_cols, dropped = screenable_features(X.loc[train_ids], train_t, train_e)
    except SignatureError as exc:
        raise CohortError(str(exc)) from None

    # 5. signature on the training patients
    train_df = X.loc[train_ids].copy()
    train_df["time"] = [outcomes[p]["time"] for p in train_ids]
    train_df["event"] = [outcomes[p]["event"] for p in train_ids]
    horizons = [convert_time(h, "months", s.time_unit) for h in (s.early, s.late, 60.0)]
    fitter = SignatureFitter(
        seed=s.seed,
        n_permutations=s.permutations,
        horizons=horizons,
        time_unit=s.time_unit,
        cross_validate=s.cross_validate,
        folds=s.folds,
        screen_p=s.screen_p,
    )
    name = s.name or f"{base.name}-trained-signature"
    try:
        sig = fitter.fit(
            train_df.reset_index(drop=True),
            "time",
            "event",
            feat_cols,
            feature_spec=spec,
            name=name,
            description=f"train-signature on {table.path.name}: weak labels <{s.early:g} / >{s.late:g} "
            f"months, patch risk head on {base.architecture} features",
            provenance={"pipeline": "pathomics train-signature"},
        )
    except SignatureError as exc:
        raise CohortError(f"signature fit failed: {exc}") from None

    # 6. held-out evaluation
    def evaluate(ids: list[str]) -> dict[str, Any]:
        if not ids:
            return {"n": 0}
        r = np.array([sig.risk(X.loc[p].to_dict()) for p in ids])
        t = np.array([outcomes[p]["time"] for p in ids])
        e = np.array([outcomes[p]["event"] for p in ids])
        high = r > float(sig.cutoff["cutoff"])
        out: dict[str, Any] = {
            "n": len(ids),
            "events": int(e.sum()),
            "n_high": int(high.sum()),
            "c_index": concordance(t, r, e) if e.sum() else None,
        }
        if 0 < high.sum() < len(ids) and e.sum():
            try:
                out["hazard_ratio_high_vs_low"] = hazard_ratio(high, t, e)
            except (SignatureError, ValueError, ArithmeticError):
                out["hazard_ratio_high_vs_low"] = None
        try:
            out["td_auc"] = {f"{h:g}": v for h, v in time_dependent_auc(t, e, r, horizons).items()}
        except (SignatureError, ValueError, ZeroDivisionError):
            out["td_auc"] = None
        if s.oracle_col:
            lp = np.array([outcomes[p]["oracle"] for p in ids])
            out["oracle_c_index"] = concordance(t, lp, e) if e.sum() else None
            out["corr_risk_vs_true_log_hazard"] = float(np.corrcoef(r, lp)[0, 1]) if len(ids) > 2 else None
            hz = np.exp(lp)
            out["mean_true_hazard_high"] = float(hz[high].mean()) if high.any() else None
            out["mean_true_hazard_low"] = float(hz[~high].mean()) if (~high).any() else None
        return out

    evaluation: dict[str, Any] = {
        "train": evaluate(train_ids),
        "test": evaluate(test_ids),
        "split": {"seed": s.seed, "test_fraction": s.test_fraction, "train": train_ids, "test": test_ids},
        "weak_labels": {
            "poor": int((lab_all[[idx[p] for p in train_ids]] == 1).sum()),
            "good": int((lab_all[[idx[p] for p in train_ids]] == 0).sum()),
            "unlabeled": int((lab_all[[idx[p] for p in train_ids]] == -1).sum()),
            "early_months": s.early,
            "late_months": s.late,
        },
        "note": "test = held-out patients: neither the risk head nor the signature saw them",
    }
    evaluation = jsonable(evaluation)

    # the new bundle
    out = Path(out)
    man = copy.deepcopy(base.manifest)
    old_sig = man.get("signature")
    files = {
        k: v
        for k, v in man.get("files", {}).items()
        if k not in (old_sig, RISK_HEAD_FILE, "signature.json", "evaluation.json", "train_record.json")
    }
    man["files"] = files
    man["name"] = name
    man["version"] = f"{base.version}+sig{time.strftime('%Y%m%d')}"
    man["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    man["description"] = (
        f"{base.name} backbone with a patch risk head and a signature trained by "
        f"'pathomics train-signature' on {table.path.name}. Research use only."
    )
    man["signature"] = "signature.json"
    man["risk_head"] = {
        "weights": RISK_HEAD_FILE,
        "input": "pre_logits",
        "dim": int(head.weight.size),
        "definition": "risk = sigmoid(((emb - mean) / scale) · weight + bias); emb = "
        "model.forward_head(model.forward_features(x), pre_logits=True)",
        "labels": f"1 = event before {s.early:g} months, 0 = followed beyond {s.late:g} months",
    }
    test = evaluation["test"]
    man["metrics"] = {
        **(man.get("metrics") or {}),
        "signature_test": {k: test.get(k) for k in ("n", "events", "c_index", "oracle_c_index")},
    }
    record = run_record(
        "pathomics train-signature",
        list(argv or []),
        settings=asdict(s),
        cohort=str(table.path),
        base_bundle={**bundle_record(base), "backbone": backbone_key(base)},
        failed_slides=failed,
        dropped_features=dropped,
        timings={"embeddings_s": round(t_emb, 2), **timings_extra, "total_s": round(time.perf_counter() - t0, 2)},
        engine={"amp": engine.amp.name, "device": str(engine.device)},
        nuclei_model=nuclei.describe() if nuclei is not None else None,
    )
    man["provenance"] = {
        **(man.get("provenance") or {}),
        "train_signature": {k: record[k] for k in ("cohort", "base_bundle", "settings")},
    }
    with staged_bundle(out) as tmp:
        for fname in files:
            (tmp / fname).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(base.path / fname, tmp / fname)
        write_bundle(
            tmp,
            man,
            None,
            {
                "signature.json": jsonable(sig.to_json()),
                RISK_HEAD_FILE: head.to_safetensors(),
                "evaluation.json": evaluation,
                "train_record.json": jsonable(json.loads(json.dumps(record, default=str))),
            },
        )
        Bundle.load(tmp)  # proves the result is loadable before it replaces anything
    report = {
        "name": name,
        "bundle": str(out),
        "signature": sig.summary() | {"features": sig.features},
        "evaluation": evaluation,
        "timings": record["timings"],
        "n_features_in": len(feat_cols),
        "nuclei_model": nuclei.describe() if nuclei is not None else None,
    }
    return jsonable(report)
