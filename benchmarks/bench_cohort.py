"""Cohort-scale benchmark: signature accuracy on a semi-synthetic cohort, and score-cohort speed.

Part A (accuracy): generate virtual patients (real NCT-CRC-HE tiles, known hazard), run
``train-signature`` with the default bundle, and compare on the held-out patients the signature's
C-index with the oracle C-index (the true log-hazard's) and the mean true hazard of the high- and
low-risk groups. Goals: |C − C_oracle| ≤ 0.05 with ≥ 60 held-out patients; high group has the
higher mean true hazard.

Part B (speed): ``score-cohort`` on 8 generated slides with the default bundle: the engine called
directly in this process (one model, 2 torch threads) vs a LocalCluster with 1 worker × 2 threads
and 2 workers × 1 thread. Per-slide overhead of the distributed path = (distributed wall −
direct wall) / direct wall, reported with and without the cluster start-up. Goal < 10 %.

    .venv/bin/python benchmarks/bench_cohort.py [--workdir DIR] [--skip-train] [--skip-score]

Embeddings are cached in WORKDIR/emb, so re-running Part A costs only the fitting. Prints the
figures and writes WORKDIR/bench_cohort.json. The load average is printed: on a shared machine
timings vary with what others run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path


def part_a(work: Path, patients: int, k: int, test_fraction: float, seed: int) -> dict:
    from napari_pathomics.cohort.generator import CohortSpec, make_cohort
    from napari_pathomics.training.signature import TrainSettings, train_signature

    cdir = work / f"cohort-{patients}-{k}-{seed}"
    t0 = time.perf_counter()
    if not (cdir / "outcomes.csv").is_file():
        make_cohort(cdir, CohortSpec(patients=patients, seed=seed, tiles_per_side=k))
    t_gen = time.perf_counter() - t0
    s = TrainSettings(
        outcomes=str(cdir / "outcomes.csv"),
        oracle_col="true_log_hazard",
        test_fraction=test_fraction,
        permutations=200,
        cache_dir=str(work / "emb"),
        seed=0,
    )
    t0 = time.perf_counter()
    rep = train_signature(cdir / "cohort.csv", work / "trained-bundle", settings=s, progress=True)
    t_train = time.perf_counter() - t0
    te = rep["evaluation"]["test"]
    out = {
        "patients": patients,
        "tiles_per_side": k,
        "held_out": te["n"],
        "held_out_events": te["events"],
        "c_index": te["c_index"],
        "oracle_c_index": te["oracle_c_index"],
        "c_gap": te["oracle_c_index"] - te["c_index"],
        "corr_risk_true_log_hazard": te.get("corr_risk_vs_true_log_hazard"),
        "mean_true_hazard_high": te.get("mean_true_hazard_high"),
        "mean_true_hazard_low": te.get("mean_true_hazard_low"),
        "n_high": te.get("n_high"),
        "hr_high_vs_low": (te.get("hazard_ratio_high_vs_low") or {}).get("hr"),
        "train_c_index": rep["evaluation"]["train"]["c_index"],
        "covariates": rep["signature"]["covariates"],
        "generate_s": round(t_gen, 1),
        "train_signature_s": round(t_train, 1),
        "timings": rep["timings"],
    }
    out["pass_c_within_0_05"] = bool(out["c_gap"] <= 0.05 and te["n"] >= 60)
    hi, lo = out["mean_true_hazard_high"], out["mean_true_hazard_low"]
    out["pass_high_group_higher_hazard"] = bool(hi is not None and lo is not None and hi > lo)
    return out


def _direct(table, bundle, amp: str, threads: int) -> dict:
    """The engine called directly: one Engine, each slide opened, planned and run (no outputs)."""
    from napari_pathomics.inference.engine import Engine
    from napari_pathomics.wsi.slide import open_slide
    from napari_pathomics.wsi.tiling import plan_for_bundle

    t0 = time.perf_counter()
    engine = Engine(bundle, device="cpu", amp=amp, num_threads=threads)
    _ = engine.net, engine.amp  # warm, as score-cohort warms each worker
    t_warm = time.perf_counter() - t0
    t1 = time.perf_counter()
    c1 = time.process_time()
    per = []
    tiles = 0
    for row in table.rows:
        ts = time.perf_counter()
        with open_slide(row.slide_path) as slide:
            res = engine.run_all(slide, plan_for_bundle(slide, bundle), use_cache=False)
        tiles += len(res)
        per.append(time.perf_counter() - ts)
    return {
        "wall_s": time.perf_counter() - t0,
        "warmup_s": t_warm,
        "slides_s": time.perf_counter() - t1,
        "slides_cpu_s": time.process_time() - c1,
        "per_slide_s": per,
        "tiles": tiles,
    }


def part_b(work: Path, n_slides: int, k: int, repeats: int = 2) -> dict:
    from napari_pathomics.bundle import Bundle
    from napari_pathomics.cohort.batch import resolve_amp, score_cohort
    from napari_pathomics.cohort.generator import CohortSpec, make_cohort
    from napari_pathomics.cohort.table import read_cohort
    from napari_pathomics.resources import DEFAULT_BUNDLE

    cdir = work / f"score-{n_slides}-{k}"
    if not (cdir / "cohort.csv").is_file():
        make_cohort(cdir, CohortSpec(patients=n_slides, seed=99, tiles_per_side=k))
    table = read_cohort(cdir / "cohort.csv")
    bundle = Bundle.load(DEFAULT_BUNDLE)
    amp, why = resolve_amp(bundle, "cpu", "auto")
    out: dict = {"slides": n_slides, "tiles_per_side": k, "amp": amp, "amp_reason": why}
    runs: dict[str, list[dict]] = {}

    def dist(name: str, w: int, t: int) -> dict:
        d = work / f"out-{name}"
        shutil.rmtree(d, ignore_errors=True)
        t0 = time.perf_counter()
        rec = score_cohort(table, d, bundle=DEFAULT_BUNDLE, workers=w, threads_per_worker=t, amp=amp, progress=False)
        wall = time.perf_counter() - t0
        assert rec["summary"]["done"] == n_slides, rec["summary"]
        return {
            "wall_s": wall,
            "cluster_start_s": rec["timings"].get("cluster_start_s", 0.0),
            "warmup_s": rec["timings"].get("warmup_s"),
            "slides_s": rec["timings"].get("slides_s"),
            "scoring_s": rec["timings"]["scoring_s"],
            "patient_table_s": rec["timings"]["patient_table_s"],
            "sum_engine_run_s": sum(s["timings"]["run_s"] for s in rec["slides"]),
            "slides_cpu_s": sum(s["cpu_s"] for s in rec["slides"]),
            "engine_loads": sum(1 for w_ in rec.get("warmup", []) if w_.get("reused") is False)
            + sum(1 for s in rec["slides"] if not s["engine_reused"]),
        }

    # interleaved repeats: the machine is shared, so compare the best of each path
    for _ in range(repeats):
        runs.setdefault("direct_engine_2threads", []).append(_direct(table, bundle, amp, 2))
        runs.setdefault("dask_1_worker_x2", []).append(dist("dask_1_worker_x2", 1, 2))
        runs.setdefault("in_process_1x2", []).append(dist("in_process_1x2", 0, 2))
        runs.setdefault("dask_2_workers_x1", []).append(dist("dask_2_workers_x1", 2, 1))
    for name, rs in runs.items():
        best = min(rs, key=lambda r: r["slides_s"])
        out[name] = {
            **best,
            "all_slides_s": [round(r["slides_s"], 2) for r in rs],
            "all_wall_s": [round(r["wall_s"], 2) for r in rs],
        }
    direct = out["direct_engine_2threads"]
    d1 = out["dask_1_worker_x2"]
    # per-slide path: warm model on both sides; distributed = submit, run, write outputs, gather
    out["overhead_per_slide"] = (d1["slides_s"] - direct["slides_s"]) / direct["slides_s"]
    out["overhead_per_slide_s"] = (d1["slides_s"] - direct["slides_s"]) / n_slides
    out["overhead_in_process"] = (out["in_process_1x2"]["slides_s"] - direct["slides_s"]) / direct["slides_s"]
    # CPU-seconds per slide are robust to other people's load on a shared machine
    dcpu = min(r["slides_cpu_s"] for r in runs["direct_engine_2threads"])
    out["cpu_per_slide_direct_s"] = dcpu / n_slides
    for name in ("in_process_1x2", "dask_1_worker_x2", "dask_2_workers_x1"):
        c = min(r["slides_cpu_s"] for r in runs[name])
        out[f"cpu_overhead_{name}"] = (c - dcpu) / dcpu
    # whole command: cluster start + worker start-up (imports, model load) included
    out["overhead_total"] = (d1["wall_s"] - direct["wall_s"]) / direct["wall_s"]
    out["speedup_2w_vs_1w"] = d1["wall_s"] / out["dask_2_workers_x1"]["wall_s"]
    out["speedup_2w_vs_1w_slides"] = d1["slides_s"] / out["dask_2_workers_x1"]["slides_s"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path("bench-cohort-work"))
    ap.add_argument("--patients", type=int, default=140)
    ap.add_argument("--tiles-per-side", type=int, default=7)
    ap.add_argument("--test-fraction", type=float, default=0.45)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--score-slides", type=int, default=8)
    ap.add_argument(
        "--score-tiles-per-side",
        type=int,
        default=20,
        help="tiles per slide side for the scoring part (20: ~340 tissue tiles, still small for a WSI)",
    )
    ap.add_argument("--repeats", type=int, default=2, help="interleaved repeats of each scoring path (best kept)")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--skip-score", action="store_true")
    a = ap.parse_args()
    a.workdir.mkdir(parents=True, exist_ok=True)
    res: dict = {"loadavg_start": os.getloadavg(), "cpus": os.cpu_count()}
    if not a.skip_train:
        res["accuracy"] = part_a(a.workdir, a.patients, a.tiles_per_side, a.test_fraction, a.seed)
        acc = res["accuracy"]
        print(
            f"[A] held-out {acc['held_out']} patients ({acc['held_out_events']} events): C-index "
            f"{acc['c_index']:.3f} vs oracle {acc['oracle_c_index']:.3f} (gap {acc['c_gap']:+.3f}, goal ≤ 0.05: "
            f"{'PASS' if acc['pass_c_within_0_05'] else 'FAIL'}); mean true hazard high {acc['mean_true_hazard_high']:.2f}"
            f" vs low {acc['mean_true_hazard_low']:.2f} ({'PASS' if acc['pass_high_group_higher_hazard'] else 'FAIL'}); "
            f"corr(risk, true log-hazard) {acc['corr_risk_true_log_hazard']:.2f}; train-signature {acc['train_signature_s']} s",
            flush=True,
        )
    if not a.skip_score:
        res["speed"] = sp = part_b(a.workdir, a.score_slides, a.score_tiles_per_side, a.repeats)
        print(f"[B] {sp['slides']} slides × {sp['tiles_per_side']}² tiles, amp {sp['amp']}:")
        dr = sp["direct_engine_2threads"]
        print(
            f"    direct engine (1 process, 2 threads): wall {dr['wall_s']:.1f} s (model load {dr['warmup_s']:.1f} s,"
            f" slides {dr['slides_s']:.1f} s, {dr['tiles']} tiles)"
        )
        for n in ("in_process_1x2", "dask_1_worker_x2", "dask_2_workers_x1"):
            r = sp[n]
            print(
                f"    {n:20s} wall {r['wall_s']:.1f} s (cluster start {r['cluster_start_s']:.1f} s, worker "
                f"start-up+model load {r['warmup_s']:.1f} s, slides {r['slides_s']:.1f} s, model loads {r['engine_loads']})"
            )
        print(
            f"    per-slide overhead of the distributed path (1 worker, warm) vs direct engine: "
            f"{100 * sp['overhead_per_slide']:+.1f} % ({sp['overhead_per_slide_s']:+.2f} s/slide; in-process path "
            f"{100 * sp['overhead_in_process']:+.1f} %); whole command incl. start-up {100 * sp['overhead_total']:+.1f} %;"
            f" 2 workers vs 1 worker: {sp['speedup_2w_vs_1w']:.2f}× wall, {sp['speedup_2w_vs_1w_slides']:.2f}× slides only"
        )
        print(
            f"    CPU-seconds per slide: direct {sp['cpu_per_slide_direct_s']:.2f} s; overhead in-process "
            f"{100 * sp['cpu_overhead_in_process_1x2']:+.1f} %, dask 1 worker {100 * sp['cpu_overhead_dask_1_worker_x2']:+.1f} %,"
            f" dask 2 workers {100 * sp['cpu_overhead_dask_2_workers_x1']:+.1f} % (robust to others' load)"
        )
        print(
            "    all repeats (slides s): "
            + ", ".join(
                f"{n} {sp[n]['all_slides_s']}"
                for n in ("direct_engine_2threads", "in_process_1x2", "dask_1_worker_x2", "dask_2_workers_x1")
            )
        )
    res["loadavg_end"] = os.getloadavg()
    print(f"load average start {res['loadavg_start']}, end {res['loadavg_end']} on {res['cpus']} CPUs")
    (a.workdir / "bench_cohort.json").write_text(json.dumps(res, indent=2, default=str))


if __name__ == "__main__":
    main()
