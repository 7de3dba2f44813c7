"""Clinical-context benchmark: pathomics next to stage and age, and planted interplay.

Part A (TCGA): on the vendored TCGA colorectal table, the nested-CV C-index (mean ± sd over
5 folds x ``--repeats`` repeats) of the pathomics-only (the bundled signature's tissue-class
features DEB, MUS, TUM through the whole selection/LASSO pipeline), the clinical-only (stage +
age) and the combined model, all refitted in every fold: exactly what ``build-signature
--clinical`` writes into ``signature_clinical.json``'s evaluation, which is compared with the
bundled file. Also the increment of combined over clinical-only (ΔC with its paired bootstrap CI,
the likelihood-ratio test of the out-of-fold pathomics score) and the score's HR adjusted for
stage and age. For reference, plain (unpenalised) Cox models in the same folds: stage alone,
stage + age, the three features alone and all five together.

Part B (planted cohorts): a signature frozen on an independent null virtual cohort scores
table-only virtual cohorts (``draw_table``: what ``make-cohort --table-only`` writes) with a
CA19-9-like marker prognostic only in the true low-risk group and a treatment helping only the
true high-risk group. For each planted size and cohort size, over ``--seeds`` seeds: how often
``analyze_interaction`` / ``analyze_benefit`` find the effect with the right sign (marker HR > 1 in
the low-risk group, treatment HR < 1 in the high-risk group, ratio of HRs high/low < 1) and with
interaction p < 0.05. On ``--null-seeds`` null cohorts (nothing planted): the false-positive rate of
the interaction tests (p < 0.05) and a Kolmogorov–Smirnov test of their uniformity.

    .venv/bin/python benchmarks/bench_clinical.py [--repeats 5] [--seeds 20] [--null-seeds 40]
        [--skip-tcga] [--skip-planted] [--quick] [--out FILE]

Prints the figures and writes them as JSON (default /tmp/pathomics-bench/bench_clinical.json).
Timings are printed with the load average: the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

CLASSES = ["DEB", "MUS", "TUM"]  # the bundled image-only signature's features (tme_mean_<class>)
CLINICAL = "cleanstage:ordinal,years_to_birth:numeric(years)"


def _ms(v: list[float]) -> tuple[float, float]:
    import numpy as np

    return float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0


def part_tcga(repeats: int, bootstrap: int, seed: int) -> dict:
    import pandas as pd

    from napari_pathomics.resources import DEFAULT_BUNDLE, TCGA_COHORT_CSV
    from napari_pathomics.signature import Signature, SignatureFitter, tcga_feature_spec
    from napari_pathomics.signature._compare import fit_plain_cox
    from napari_pathomics.signature.cox import concordance, stratified_folds

    table = pd.read_csv(TCGA_COHORT_CSV).rename(columns={c: f"tme_mean_{c}" for c in CLASSES})
    feats = [f"tme_mean_{c}" for c in CLASSES]
    t0 = time.perf_counter()
    fitter = SignatureFitter(cv_repeats=repeats, n_bootstrap=bootstrap, seed=seed, n_permutations=0)
    sig = fitter.fit(
        table,
        "days_to_event",
        "vital_status",
        feats,
        feature_spec=tcga_feature_spec(CLASSES),
        id_col="ID",
        clinical=CLINICAL,
        clinical_missing="drop",
        min_follow_up=0.0,
    )
    fit_s = time.perf_counter() - t0
    ev = sig.evaluation
    inc = ev["increment"]["combined_minus_clinical"]
    adj = (ev.get("adjusted_hazard_ratio") or {}).get("score_per_sd", {}).get("pathomics_score") or {}
    out: dict = {
        "rows": {k: v for k, v in ev["rows"].items() if k != "excluded_ids"},
        "design": {k: ev["design"][k] for k in ("folds", "repeats")},
        "models": {
            m: {
                "cv_c_index": v["cv_c_index"],
                "cv_c_index_sd": v["cv_c_index_sd"],
                "td_auc": v["td_auc"],
                "inputs": v.get("inputs"),
            }
            for m, v in ev["models"].items()
        },
        "delta_c_combined_minus_clinical": {k: inc[k] for k in ("delta_c", "ci_lower", "ci_upper", "share_above_zero")},
        "lrt_p_pathomics_score_added_to_clinical": inc["likelihood_ratio_test"]["p"],
        "delta_c_combined_minus_image": {
            k: ev["increment"]["combined_minus_image"][k] for k in ("delta_c", "ci_lower", "ci_upper")
        },
        "adjusted_hr_per_sd_pathomics_score": {k: adj.get(k) for k in ("hr", "ci_lower", "ci_upper", "p")},
        "combined_covariates": sig.features,
        "fit_s": round(fit_s, 1),
    }
    bundled = DEFAULT_BUNDLE / "signature_clinical.json"
    if bundled.exists():
        ship = Signature.from_json(bundled).evaluation.get("models", {})
        diffs = [abs(ship[m]["cv_c_index"] - ev["models"][m]["cv_c_index"]) for m in ev["models"] if m in ship]
        out["bundled_signature_clinical_reproduced"] = bool(diffs and max(diffs) < 1e-9 and len(diffs) == 3)
        out["bundled_max_abs_diff"] = max(diffs) if diffs else None

    # plain Cox references on the same rows and folds (the issue's measurement style)
    d = table[(table["days_to_event"] > 0) & table["cleanstage"].notna() & table["years_to_birth"].notna()].reset_index(
        drop=True
    )
    t, e = d["days_to_event"].to_numpy(float), d["vital_status"].to_numpy(int)
    sets = {
        "stage": ["cleanstage"],
        "stage+age": ["cleanstage", "years_to_birth"],
        "features (plain Cox)": feats,
        "stage+age+features (plain Cox)": ["cleanstage", "years_to_birth", *feats],
    }
    cs: dict[str, list[float]] = {k: [] for k in sets}
    for r in range(repeats):
        fid = stratified_folds(e, 5, seed + 1 + r)  # the fitter's fold seeds
        for k in range(5):
            tr, te = fid != k, fid == k
            for name, cols in sets.items():
                D = d[cols].astype(float)
                cox, _ = fit_plain_cox(D[tr].reset_index(drop=True), t[tr], e[tr])
                cs[name].append(concordance(t[te], cox.risk(D[te]), e[te]))
    out["plain_cox_same_folds"] = {k: dict(zip(("cv_c_index", "cv_c_index_sd"), _ms(v))) for k, v in cs.items()}
    out["n_rows_plain"] = int(len(d))
    out["goal_combined_c_ge_0_75"] = bool(ev["models"]["combined"]["cv_c_index"] >= 0.75)
    return out


def _analyse(sig, d, cols: dict) -> dict:
    from napari_pathomics.signature.interplay import analyze_benefit, analyze_interaction

    a = analyze_interaction(sig, d, "marker", cutoff=37, **cols)
    b = analyze_benefit(sig, d, "treatment", **cols)
    m_low = a["groups"]["low"]["hazard_ratio"].get("marker > 37") or {}
    m_high = a["groups"]["high"]["hazard_ratio"].get("marker > 37") or {}
    t_high = b["groups"]["high"]["hazard_ratio"].get("treatment = 1") or {}
    t_low = b["groups"]["low"]["hazard_ratio"].get("treatment = 1") or {}
    return {
        "int_p": a["interaction"]["p"],
        "int_ratio": (a["interaction"]["wald"] or {}).get("ratio_of_hazard_ratios"),
        "marker_low_hr": m_low.get("hr"),
        "marker_low_p": m_low.get("p"),
        "marker_high_hr": m_high.get("hr"),
        "marker_high_p": m_high.get("p"),
        "ben_p": b["interaction"]["p"],
        "ben_ratio": (b["interaction"]["wald"] or {}).get("ratio_of_hazard_ratios"),
        "treat_high_hr": t_high.get("hr"),
        "treat_high_p": t_high.get("p"),
        "treat_low_hr": t_low.get("hr"),
        "treat_low_p": t_low.get("p"),
        "n": a["n"],
        "events": a["events"],
        "n_high": a["n_high"],
    }


def _rate(rows: list[dict], fn) -> float:
    return float(sum(bool(fn(r)) for r in rows) / len(rows)) if rows else float("nan")


def _lt(x, v) -> bool:
    return x is not None and x < v


def _gt(x, v) -> bool:
    return x is not None and x > v


def part_planted(sizes: list[tuple[float, float]], ns: list[int], seeds: int, null_seeds: int, null_n: int) -> dict:
    import numpy as np
    import pandas as pd
    from scipy.stats import kstest

    from napari_pathomics.cohort.generator import TISSUE_CLASSES, CohortSpec, draw_table
    from napari_pathomics.signature import SignatureFitter

    cols = {"time_col": "time", "event_col": "event"}
    feats = [f"true_{c}" for c in TISSUE_CLASSES]
    train = pd.DataFrame(draw_table(CohortSpec(patients=400, seed=999, marker_hr=1.0, treatment_hr=1.0)))
    sig = SignatureFitter(cross_validate=False, n_permutations=0).fit(train, "time", "event", feats)
    out: dict = {
        "signature": {"trained_on": "null virtual cohort, 400 patients, seed 999", "covariates": sig.features},
        "planted": [],
        "null": {},
    }
    for mhr, thr in sizes:
        for n in ns:
            t0 = time.perf_counter()
            rows = [
                _analyse(
                    sig, pd.DataFrame(draw_table(CohortSpec(patients=n, seed=s, marker_hr=mhr, treatment_hr=thr))), cols
                )
                for s in range(seeds)
            ]
            out["planted"].append(
                {
                    "marker_hr": mhr,
                    "treatment_hr": thr,
                    "patients": n,
                    "seeds": seeds,
                    "mean_events": float(np.mean([r["events"] for r in rows])),
                    "marker_low_right_sign": _rate(rows, lambda r: _gt(r["marker_low_hr"], 1)),
                    "marker_low_p_lt_0_05": _rate(
                        rows, lambda r: _gt(r["marker_low_hr"], 1) and _lt(r["marker_low_p"], 0.05)
                    ),
                    "marker_high_p_lt_0_05": _rate(rows, lambda r: _lt(r["marker_high_p"], 0.05)),
                    "interaction_right_sign": _rate(rows, lambda r: _lt(r["int_ratio"], 1)),
                    "interaction_p_lt_0_05": _rate(rows, lambda r: _lt(r["int_ratio"], 1) and _lt(r["int_p"], 0.05)),
                    "treat_high_right_sign": _rate(rows, lambda r: _lt(r["treat_high_hr"], 1)),
                    "treat_high_p_lt_0_05": _rate(
                        rows, lambda r: _lt(r["treat_high_hr"], 1) and _lt(r["treat_high_p"], 0.05)
                    ),
                    "treat_low_p_lt_0_05": _rate(rows, lambda r: _lt(r["treat_low_p"], 0.05)),
                    "benefit_interaction_right_sign": _rate(rows, lambda r: _lt(r["ben_ratio"], 1)),
                    "benefit_interaction_p_lt_0_05": _rate(
                        rows, lambda r: _lt(r["ben_ratio"], 1) and _lt(r["ben_p"], 0.05)
                    ),
                    "median_interaction_p": float(np.median([r["int_p"] for r in rows])),
                    "median_benefit_p": float(np.median([r["ben_p"] for r in rows])),
                    "seconds": round(time.perf_counter() - t0, 1),
                }
            )
    t0 = time.perf_counter()
    rows = [
        _analyse(
            sig,
            pd.DataFrame(draw_table(CohortSpec(patients=null_n, seed=1000 + s, marker_hr=1.0, treatment_hr=1.0))),
            cols,
        )
        for s in range(null_seeds)
    ]
    pi, pb = [r["int_p"] for r in rows], [r["ben_p"] for r in rows]
    out["null"] = {
        "patients": null_n,
        "seeds": null_seeds,
        "seed_range": [1000, 1000 + null_seeds - 1],
        "interaction_fpr": _rate(rows, lambda r: _lt(r["int_p"], 0.05)),
        "benefit_fpr": _rate(rows, lambda r: _lt(r["ben_p"], 0.05)),
        "marker_low_fpr": _rate(rows, lambda r: _lt(r["marker_low_p"], 0.05)),
        "treat_high_fpr": _rate(rows, lambda r: _lt(r["treat_high_p"], 0.05)),
        "median_interaction_p": float(np.median(pi)),
        "median_benefit_p": float(np.median(pb)),
        "ks_uniform_p_interaction": float(kstest(pi, "uniform").pvalue),
        "ks_uniform_p_benefit": float(kstest(pb, "uniform").pvalue),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    return out


def _print_tcga(r: dict) -> None:
    rows = r["rows"]
    why = ", ".join(f"{k}: {v}" for k, v in rows["excluded"].items())
    print(
        f"A. TCGA CRC, {rows['used']} of {rows['total']} patients ({rows['n_excluded']} left out: {why}); "
        f"nested CV {r['design']['folds']}-fold x {r['design']['repeats']} (fit {r['fit_s']} s)"
    )
    for m, v in r["models"].items():
        print(f"   {m:<9} C {v['cv_c_index']:.3f} ± {v['cv_c_index_sd']:.3f}   inputs {', '.join(v['inputs'])}")
    d = r["delta_c_combined_minus_clinical"]
    print(
        f"   combined - clinical  ΔC {d['delta_c']:+.4f} [95 % CI {d['ci_lower']:+.4f}, {d['ci_upper']:+.4f}]"
        f" (share of draws > 0: {d['share_above_zero']:.2f}); LRT of the out-of-fold pathomics score "
        f"p = {r['lrt_p_pathomics_score_added_to_clinical']:.3g}"
    )
    d = r["delta_c_combined_minus_image"]
    print(f"   combined - image     ΔC {d['delta_c']:+.4f} [95 % CI {d['ci_lower']:+.4f}, {d['ci_upper']:+.4f}]")
    a = r["adjusted_hr_per_sd_pathomics_score"]
    if a.get("hr") is not None:
        print(
            f"   pathomics score adjusted for stage + age: HR per SD {a['hr']:.2f} [{a['ci_lower']:.2f}, "
            f"{a['ci_upper']:.2f}], p = {a['p']:.3g}"
        )
    print(f"   combined model covariates: {', '.join(r['combined_covariates'])}")
    print(f"   plain Cox in the same folds ({r['n_rows_plain']} rows):")
    for k, v in r["plain_cox_same_folds"].items():
        print(f"     {k:<32} C {v['cv_c_index']:.3f} ± {v['cv_c_index_sd']:.3f}")
    if "bundled_signature_clinical_reproduced" in r:
        print(
            f"   bundled signature_clinical.json reproduced: {r['bundled_signature_clinical_reproduced']} "
            f"(max |ΔC| {r['bundled_max_abs_diff']:.2g})"
        )
    print(f"   goal combined C >= 0.75: {'met' if r['goal_combined_c_ge_0_75'] else 'NOT met'}")


def _print_planted(r: dict) -> None:
    print(f"B. planted virtual cohorts (signature frozen on a {r['signature']['trained_on']})")
    for p in r["planted"]:
        print(
            f"   marker HR {p['marker_hr']} (low-risk only), treatment HR {p['treatment_hr']} (high-risk only), "
            f"{p['patients']} patients (~{p['mean_events']:.0f} events), {p['seeds']} seeds [{p['seconds']} s]:"
        )
        print(
            f"     marker in low-risk: right sign {p['marker_low_right_sign']:.0%}, p<0.05 {p['marker_low_p_lt_0_05']:.0%}"
            f"; in high-risk p<0.05 {p['marker_high_p_lt_0_05']:.0%}; interaction right sign "
            f"{p['interaction_right_sign']:.0%}, p<0.05 {p['interaction_p_lt_0_05']:.0%} "
            f"(median p {p['median_interaction_p']:.3g})"
        )
        print(
            f"     treatment in high-risk: right sign {p['treat_high_right_sign']:.0%}, p<0.05 "
            f"{p['treat_high_p_lt_0_05']:.0%}; in low-risk p<0.05 {p['treat_low_p_lt_0_05']:.0%}; interaction right "
            f"sign {p['benefit_interaction_right_sign']:.0%}, p<0.05 {p['benefit_interaction_p_lt_0_05']:.0%} "
            f"(median p {p['median_benefit_p']:.3g})"
        )
    n = r["null"]
    print(
        f"   null cohorts: {n['patients']} patients, {n['seeds']} seeds [{n['seconds']} s]: false-positive rate "
        f"(p<0.05) interaction {n['interaction_fpr']:.1%}, benefit {n['benefit_fpr']:.1%}; marker in low-risk "
        f"{n['marker_low_fpr']:.1%}, treatment in high-risk {n['treat_high_fpr']:.1%}"
    )
    print(
        f"     median p interaction {n['median_interaction_p']:.3f}, benefit {n['median_benefit_p']:.3f}; "
        f"KS test of uniform p-values: p = {n['ks_uniform_p_interaction']:.3f} / {n['ks_uniform_p_benefit']:.3f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5, help="nested-CV repeats on TCGA (default 5, as the bundle)")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", type=int, default=20, help="planted cohorts per setting (default 20)")
    ap.add_argument("--null-seeds", type=int, default=40, help="null cohorts (default 40)")
    ap.add_argument("--patients", default="300,600", help="planted cohort sizes (default 300,600)")
    ap.add_argument("--null-patients", type=int, default=400)
    ap.add_argument(
        "--sizes",
        default="2.7:0.56,4:0.33",
        help="planted marker_hr:treatment_hr pairs (default the seed study's 2.7:0.56 and the tests' 4:0.33)",
    )
    ap.add_argument("--skip-tcga", action="store_true")
    ap.add_argument("--skip-planted", action="store_true")
    ap.add_argument("--quick", action="store_true", help="1 repeat, 200 bootstrap draws, 3 seeds, 5 null seeds")
    ap.add_argument(
        "--out",
        type=Path,
        default=Path(os.environ.get("PATHOMICS_BENCH_DIR", "/tmp/pathomics-bench")) / "bench_clinical.json",
    )
    a = ap.parse_args()
    if a.quick:
        a.repeats, a.bootstrap, a.seeds, a.null_seeds = 1, 200, 3, 5
    res: dict = {"loadavg_start": os.getloadavg(), "cpus": os.cpu_count(), "settings": vars(a) | {"out": str(a.out)}}
    t0 = time.perf_counter()
    if not a.skip_tcga:
        res["tcga"] = part_tcga(a.repeats, a.bootstrap, a.seed)
        _print_tcga(res["tcga"])
    if not a.skip_planted:
        sizes = [tuple(float(x) for x in s.split(":")) for s in a.sizes.split(",") if s.strip()]
        ns = [int(x) for x in a.patients.split(",") if x.strip()]
        res["planted"] = part_planted(sizes, ns, a.seeds, a.null_seeds, a.null_patients)  # type: ignore[arg-type]
        _print_planted(res["planted"])
    res["total_s"] = round(time.perf_counter() - t0, 1)
    res["loadavg_end"] = os.getloadavg()
    print(
        f"total {res['total_s']} s; load average start {res['loadavg_start']}, end {res['loadavg_end']} "
        f"on {res['cpus']} CPUs"
    )
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=2, default=str))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
