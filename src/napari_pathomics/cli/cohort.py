"""Cohort commands: ``make-cohort``, ``score-cohort`` and ``train-signature``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import CohortError
from ..units import DEFAULT_TILE_UM
from .common import (
    BATCH,
    COUNT,
    FRACTION,
    POSITIVE,
    POSITIVE_INT,
    SCHEDULER,
    SEED,
    THREADS,
    add_nuclei_model_option,
    args_dict,
    bounded,
    nuclei_model_note,
    print_json,
)


# ---------------------------------------------------------------------------------------------
def _make_cohort(args: argparse.Namespace) -> int:
    from ..cohort.generator import CohortSpec, make_cohort  # heavy: cv2, tifffile, the tiles

    marker_hr, treatment_hr = args.marker_hr, args.treatment_hr
    if args.null_effects:
        if marker_hr is not None or treatment_hr is not None:
            raise CohortError("--null-effects plants nothing; it cannot go with --marker-hr or --treatment-hr")
        marker_hr = treatment_hr = 1.0
    spec = CohortSpec(
        patients=args.patients,
        seed=args.seed,
        tiles_per_side=args.tiles_per_side,
        concentration=args.concentration,
        median_months=args.median_months,
        marker_hr=marker_hr,
        treatment_hr=treatment_hr,
        treatment_share=args.treatment_share,
    )
    summary = make_cohort(args.out_dir, spec, progress=not args.quiet, table_only=args.table_only)
    if args.json:
        print_json(summary)
    else:
        oc = summary["oracle_c_index"]
        where = ", ".join(str(p) for p in (summary["cohort_csv"], summary["outcomes_csv"]) if p)
        print(
            f"{summary['patients']} patients ({summary['events']} events, oracle C-index "
            f"{'n/a' if oc is None else f'{oc:.3f}'}) -> {where}"
        )
        if "planted" in summary:
            pl = summary["planted"]
            print(
                f"  planted: marker (> {pl['marker_cutoff']:g}) HR {pl['marker_hr_in_low_risk']:g} in the true "
                f"low-risk group only, treatment HR {pl['treatment_hr_in_high_risk']:g} in the true high-risk "
                f"group only ({pl['true_high_risk']} high-risk patients)"
            )
    return 0


def _score_cohort(args: argparse.Namespace) -> int:
    from ..cohort.batch import score_cohort  # heavy: the engine, dask
    from ..cohort.table import read_cohort

    table = read_cohort(args.cohort, allow_missing=args.allow_missing)
    rec = score_cohort(
        table,
        args.out,
        bundle=args.bundle,
        scheduler=args.scheduler,
        workers=args.workers,
        threads_per_worker=args.threads_per_worker,
        device=args.device,
        batch_size=args.batch_size,
        amp=args.amp,
        min_tissue=args.min_tissue,
        no_tissue=args.no_tissue,
        geojson=not args.no_geojson,
        force=args.force,
        progress=not args.quiet,
        argv=sys.argv[1:],
        args=args_dict(args),
        nuclei_model=args.nuclei_model,
    )
    s = rec["summary"]
    out = {
        "out": rec["out"],
        **s,
        "patients": rec["patients"]["patients"],
        "patients_scored": rec["patients"]["scored"],
        "wall_s": rec["timings"]["total_s"],
        "nuclei_model": rec["nuclei_model"],
        "warnings": rec["warnings"],
    }
    note = nuclei_model_note(args.nuclei_model, rec["nuclei_model"])
    if args.json:
        print_json(out)
        if note:
            print(note, file=sys.stderr)
    else:
        print(
            f"{s['slides']} slides: {s['done']} scored, {s['skipped']} already complete, {s['failed']} failed; "
            f"{out['patients_scored']}/{out['patients']} patients scored in {out['wall_s']:.1f} s -> {rec['out']}"
        )
        if rec["nuclei_model"] is not None:
            m = rec["nuclei_model"]
            print(f"  nuclear features: nuclei model {m['name']}, licence {m['licence']}")
        if note:
            print(f"  {note}")
        for w in rec["warnings"]:
            print(f"  warning: {w}")
        for sl in rec["slides"]:
            if sl["status"] == "failed":
                print(f"  failed: {sl['slide_path']}: {sl['error']}", file=sys.stderr)
    return 0 if s["failed"] == 0 else 1


def _train_signature(args: argparse.Namespace) -> int:
    from ..training.signature import TrainSettings, train_signature  # heavy: the engine, lifelines

    settings = TrainSettings(
        time_col=args.time,
        event_col=args.event,
        outcomes=str(args.outcomes) if args.outcomes else None,
        early=args.early,
        late=args.late,
        time_unit=args.time_unit,
        test_fraction=args.test_fraction,
        seed=args.seed,
        device=args.device,
        batch_size=args.batch_size,
        amp=args.amp,
        threads=args.threads,
        families=[f.strip() for f in args.features.split(",") if f.strip()],
        oracle_col=args.oracle_col,
        permutations=args.permutations,
        cross_validate=args.cv,
        cache_dir=str(args.cache_dir) if args.cache_dir else None,
        no_tissue=args.no_tissue,
        min_tissue=args.min_tissue,
        name=args.name,
        nuclei_model=args.nuclei_model,
    )
    report = train_signature(
        args.cohort, args.out, bundle=args.bundle, settings=settings, progress=not args.quiet, argv=sys.argv[1:]
    )
    if args.json:
        print_json(report)
    else:
        ev = report["evaluation"]["test"]
        orc = ev.get("oracle_c_index")
        print(
            f"signature {report['name']!r}: {len(report['signature']['features'])} covariates; held-out "
            f"({ev['n']} patients, {ev['events']} events) C-index {ev['c_index']:.3f}"
            + (f" (oracle {orc:.3f})" if orc is not None else "")
            + f" -> {report['bundle']}"
        )
        if report["nuclei_model"] is not None:
            m = report["nuclei_model"]
            print(f"  nuclear features: nuclei model {m['name']}, licence {m['licence']} (recorded in the signature)")
    note = nuclei_model_note(args.nuclei_model, report["nuclei_model"])
    if note:  # on stderr under --json, so stdout stays one JSON document
        print(note if args.json else f"  {note}", file=sys.stderr if args.json else sys.stdout)
    return 0


# ---------------------------------------------------------------------------------------------
def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("make-cohort", help="generate semi-synthetic virtual patients (real tiles, known hazard)")
    p.add_argument("out_dir", type=Path)
    p.add_argument("--patients", type=POSITIVE_INT, default=20)
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument(
        "--tiles-per-side",
        type=bounded(int, 2, 200),
        default=10,
        help=f"mosaic size in {DEFAULT_TILE_UM:g} µm tiles (default 10)",
    )
    p.add_argument(
        "--concentration",
        type=POSITIVE,
        default=0.6,
        help="Dirichlet concentration of the compositions (lower = more varied; default 0.6)",
    )
    p.add_argument("--median-months", type=POSITIVE, default=30.0, help="median survival at the average hazard")
    p.add_argument(
        "--marker-hr",
        type=POSITIVE,
        default=None,
        help="plant a marker column (CA19-9-like, 'high' above 37): this hazard ratio in the true "
        "low-risk group only (e.g. 2.7)",
    )
    p.add_argument(
        "--treatment-hr",
        type=POSITIVE,
        default=None,
        help="plant a treatment column (randomised in the simulation): this hazard ratio of treated vs "
        "untreated in the true high-risk group only (e.g. 0.5)",
    )
    p.add_argument(
        "--null-effects",
        action="store_true",
        help="marker and treatment columns with no effect anywhere (a null cohort)",
    )
    p.add_argument(
        "--treatment-share",
        type=bounded(float, 0.0, 1.0, lo_open=True, hi_open=True),
        default=0.5,
        help="share of treated patients (default 0.5)",
    )
    p.add_argument(
        "--table-only",
        action="store_true",
        help="write only outcomes.csv and cohort.json (no slides): enough for build-signature and analyze-*",
    )
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_make_cohort)

    p = sub.add_parser("score-cohort", help="score every slide of a cohort table on dask.distributed (resumable)")
    p.add_argument("cohort", type=Path, help="CSV with patient_id, slide_path[, roi_path] (paths relative to the CSV)")
    p.add_argument("--out", type=Path, required=True, help="output folder (re-running resumes)")
    p.add_argument("--bundle", help="model bundle folder or zip (default: the bundled model)")
    p.add_argument(
        "--scheduler", type=SCHEDULER, help="address of an existing dask scheduler, e.g. tcp://10.0.0.5:8786"
    )
    p.add_argument(
        "--workers",
        type=COUNT,
        default=None,
        help="local worker processes (default: cores / threads-per-worker; 0 = in this process, no dask)",
    )
    p.add_argument(
        "--threads-per-worker",
        type=THREADS,
        default=None,
        help="torch threads per worker (default: 2, or cores / workers)",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto (default cpu)")
    p.add_argument("--batch-size", type=BATCH, default=32)
    p.add_argument("--amp", default="auto", help="auto (probed once for the whole run), fp32, bf16 or fp16")
    p.add_argument("--min-tissue", type=FRACTION, default=None, help="minimum ROI ∩ tissue fraction of a tile")
    p.add_argument("--no-tissue", action="store_true", help="tile the ROIs (or whole slide) without tissue detection")
    p.add_argument("--no-geojson", action="store_true", help="skip the per-slide QuPath GeoJSON export")
    add_nuclei_model_option(p, for_features=True)
    p.add_argument(
        "--allow-missing",
        action="store_true",
        help="report missing slide/ROI files as failed slides instead of refusing the table",
    )
    p.add_argument("--force", action="store_true", help="recompute slides even if their results are complete")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_score_cohort)

    p = sub.add_parser(
        "train-signature",
        help="seed-study pipeline: weak labels -> patch risk head -> MIL/TME features -> LASSO-Cox bundle",
    )
    p.add_argument("cohort", type=Path, help="cohort CSV (patient_id, slide_path[, roi_path], maybe outcomes)")
    p.add_argument("--time", required=True, help="follow-up time column")
    p.add_argument("--event", required=True, help="event column (1 = event, 0 = censored)")
    p.add_argument("--outcomes", type=Path, help="CSV with patient_id and the outcome columns (else in the cohort CSV)")
    p.add_argument("--early", type=POSITIVE, default=12.0, help="event before this many MONTHS = poor (default 12)")
    p.add_argument("--late", type=POSITIVE, default=36.0, help="event-free beyond this many MONTHS = good (default 36)")
    p.add_argument(
        "--time-unit",
        choices=("days", "months", "years"),
        default="months",
        help="unit of the time column (default months)",
    )
    p.add_argument("--bundle", help="base bundle whose backbone is used (default: the bundled model)")
    p.add_argument("--out", type=Path, required=True, help="folder of the new bundle")
    p.add_argument("--test-fraction", type=bounded(float, 0.0, 0.9, hi_open=True), default=0.3)
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument(
        "--features",
        default="tme,mil",
        help="feature families: tme, mil and/or nuc (per-patient nuclear features: mean and quantiles "
        "of the tiles' nuclear density, area, N:C ratio...; default tme,mil)",
    )
    add_nuclei_model_option(p, for_features=True)
    p.add_argument("--oracle-col", default=None, help="column with a known true log-hazard (synthetic cohorts)")
    p.add_argument("--permutations", type=COUNT, default=1000, help="permutations of the cutoff p-value")
    p.add_argument("--cv", action="store_true", help="also run the nested CV of the signature fitter (slower)")
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="embedding cache (default: the results cache folder's sibling embeddings/, i.e. $PATHOMICS_CACHE_DIR/embeddings)",
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=BATCH, default=32)
    p.add_argument("--amp", default="auto")
    p.add_argument("--threads", type=THREADS, default=None, help="torch threads")
    p.add_argument("--no-tissue", action="store_true")
    p.add_argument("--min-tissue", type=FRACTION, default=None)
    p.add_argument("--name", default=None, help="signature name")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_train_signature)
