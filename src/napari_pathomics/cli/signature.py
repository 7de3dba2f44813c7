"""``pathomics build-signature``: fit a prognostic signature from a per-patient table."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import SignatureError
from ..outputs import check_output
from ..units import DEFAULT_HORIZONS
from .common import COUNT, POSITIVE_INT, SEED, bounded, print_json


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "build-signature",
        help="fit a LASSO-Cox signature (+ cutoff, CV metrics) from a per-patient table",
        description=(
            "Fit correlation filter -> univariate Cox -> LASSO-Cox (CV-chosen penalty) -> "
            "maximally selected log-rank cutoff, evaluate by nested k-fold CV, and write the "
            "frozen signature JSON into a bundle and/or a file."
        ),
    )
    p.add_argument("table", type=Path, help="per-patient CSV/TSV with features, time and event")
    p.add_argument("--time", required=True, help="column with follow-up time")
    p.add_argument("--event", required=True, help="column with the event indicator (1 = event, 0 = censored)")
    p.add_argument("--id", default=None, help="patient id column (must be unique)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--features", default=None, help="comma-separated feature columns")
    g.add_argument(
        "--feature-prefix", default=None, help="use every column starting with one of these comma-separated prefixes"
    )
    g.add_argument(
        "--tme-classes",
        default=None,
        help="comma-separated tissue classes whose columns (named CLS or tme_<stat>_CLS) are TME composition features",
    )
    p.add_argument(
        "--tme-stat",
        choices=("mean", "frac"),
        default="mean",
        help="what --tme-classes columns hold (default: mean probability)",
    )
    p.add_argument(
        "--tme-combine",
        choices=("max", "mean", "weighted"),
        default="max",
        help="how the table combined slides per patient (default: max)",
    )
    p.add_argument(
        "--nuclear-measures",
        default=None,
        metavar="M1,M2",
        help="per-tile nuclear measures whose patient statistics are columns nuc_<stat>_<measure> "
        "(e.g. density_mm2,nc_ratio_mean): they join the features and the frozen spec",
    )
    p.add_argument(
        "--nuclear-stats",
        default="mean,q10,q50,q90",
        help="statistics of --nuclear-measures in the table (default mean,q10,q50,q90)",
    )
    p.add_argument(
        "--feature-spec",
        type=Path,
        default=None,
        help="feature-spec JSON describing how the features were computed from tiles",
    )
    p.add_argument("--time-unit", choices=("days", "months", "years"), default="days")
    p.add_argument(
        "--horizons", default=None, help="comma-separated survival horizons in the time unit (default 1, 3, 5 years)"
    )
    p.add_argument("--folds", type=bounded(int, 2, 20), default=5)
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument(
        "--min-group",
        type=bounded(float, 0.0, 0.5, lo_open=True),
        default=0.2,
        help="minimum share of patients per risk group (default 0.2)",
    )
    p.add_argument("--permutations", type=COUNT, default=1000, help="permutations for the cutoff p-value")
    p.add_argument("--corr-threshold", type=bounded(float, 0.0, 1.0, lo_open=True), default=0.8)
    p.add_argument("--screen-p", type=bounded(float, 0.0, 1.0, lo_open=True), default=0.1)
    p.add_argument("--screen-top-k", type=POSITIVE_INT, default=3)
    p.add_argument("--penalizers", default=None, help="comma-separated LASSO penalties to cross-validate")
    p.add_argument("--no-cv", action="store_true", help="skip the nested CV evaluation (faster, less honest)")
    p.add_argument(
        "--cv-repeats",
        type=bounded(int, 1, 50),
        default=1,
        help="repeat the nested CV with this many fold seeds (default 1)",
    )
    p.add_argument(
        "--clinical",
        default=None,
        metavar="COL:TYPE[,COL:TYPE...]",
        help="clinical covariates to combine with the image features, TYPE numeric, ordinal or categorical "
        "(e.g. cleanstage:ordinal,years_to_birth:numeric(years),msi_status:categorical); the "
        "combined model is fitted and compared with image-only and clinical-only ones",
    )
    p.add_argument(
        "--clinical-label",
        action="append",
        default=None,
        metavar="COL=TEXT",
        help="the human name of a --clinical column, shown in the Score dock (e.g. 'cleanstage=stage (I–IV)'); "
        "repeatable",
    )
    p.add_argument(
        "--clinical-missing",
        choices=("refuse", "drop", "impute"),
        default="refuse",
        help="rows with a missing clinical value: refuse (default), drop them (counted in the output) or "
        "impute the median / mode (recorded)",
    )
    p.add_argument(
        "--min-follow-up",
        type=float,
        default=None,
        metavar="T",
        help="leave out patients followed up for T or less (in --time-unit; e.g. 0: no follow-up at all), "
        "counted in the output",
    )
    p.add_argument(
        "--bootstrap",
        type=bounded(int, 10, 100000),
        default=1000,
        help="bootstrap draws of the CI of the C-index increment (default 1000)",
    )
    p.add_argument(
        "--cancer-type",
        default="",
        help="the cancer type the cohort is (e.g. 'colorectal adenocarcinoma (TCGA COAD/READ)'): stored in "
        "the signature; the Score dock and report warn when a case is of another type",
    )
    p.add_argument(
        "--slot",
        choices=("main", "clinical"),
        default=None,
        help="which bundle signature to write: main (signature.json) or clinical (signature_clinical.json, "
        "used by the Score dock when clinical values are entered); default: clinical with --clinical",
    )
    p.add_argument("--name", default=None, help="signature name (default: table stem)")
    p.add_argument("--description", default="", help="free text stored in the signature (cohort, intended use)")
    p.add_argument("--bundle", type=Path, default=None, help="bundle folder to attach signature.json to")
    p.add_argument("--out", type=Path, default=None, help="also write the signature JSON here")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(handler=build_signature)


def _floats(text: str, what: str) -> list[float]:
    try:
        vals = [float(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise SignatureError(f"--{what} must be comma-separated numbers, got {text!r}") from exc
    if not vals:
        raise SignatureError(f"--{what} is empty")
    return vals


def read_table(path: Path) -> Any:
    """Read a CSV (or TSV by extension) with clear errors."""
    import pandas as pd

    if not path.exists():
        raise SignatureError(f"no such table: {path}")
    sep = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    try:
        table = pd.read_csv(path, sep=sep)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise SignatureError(f"cannot read {path}: {str(exc).splitlines()[0]}") from exc
    if table.empty:
        raise SignatureError(f"{path} has no rows")
    return table


def select_features(table: Any, args: argparse.Namespace) -> tuple[Any, list[str], Any]:
    """Resolve the feature columns (renaming TME class columns) and the feature spec."""
    from ..signature.features import FeatureSpec

    spec = FeatureSpec.from_json(args.feature_spec) if args.feature_spec else None
    reserved = {args.time, args.event, args.id}
    if args.tme_classes:
        classes = [c.strip() for c in args.tme_classes.split(",") if c.strip()]
        rename, feats = {}, []
        for c in classes:
            name = f"tme_{args.tme_stat}_{c}"
            if name in table.columns:
                feats.append(name)
            elif c in table.columns:
                rename[c] = name
                feats.append(name)
            else:
                raise SignatureError(f"missing column for class {c!r} (looked for {c!r} and {name!r})")
        table = table.rename(columns=rename)
        if spec is None:
            spec = FeatureSpec(
                classes=classes, tme_stats=[args.tme_stat], combine=args.tme_combine, mil=False, source="table"
            )
    elif args.features:
        feats = [c.strip() for c in args.features.split(",") if c.strip()]
    elif args.feature_prefix:
        prefixes = tuple(x.strip() for x in args.feature_prefix.split(",") if x.strip())
        feats = [c for c in table.columns if c.startswith(prefixes) and c not in reserved]
        if not feats:
            raise SignatureError(f"no columns start with {list(prefixes)}")
    elif spec is not None:
        feats = [c for c in spec.feature_names if c in table.columns]
    elif getattr(args, "nuclear_measures", None):
        feats = []
    else:
        raise SignatureError(
            "say which columns are features: --features, --feature-prefix, --tme-classes or --nuclear-measures"
        )
    if getattr(args, "nuclear_measures", None):
        table, feats, spec = _add_nuclear(table, feats, spec, args)
    if spec is not None:
        unknown = [c for c in feats if c not in spec.feature_names]
        if unknown:
            raise SignatureError(f"features not produced by the feature spec: {unknown[:5]}")
    return table, feats, spec


def _add_nuclear(table: Any, feats: list[str], spec: Any, args: argparse.Namespace) -> tuple[Any, list[str], Any]:
    """Declare the table's ``nuc_<stat>_<measure>`` columns as the spec's nuclear family."""
    from dataclasses import replace

    from ..signature.features import FeatureSpec

    measures = [m.strip() for m in args.nuclear_measures.split(",") if m.strip()]
    stats = [m.strip() for m in args.nuclear_stats.split(",") if m.strip()]
    cols = [f"nuc_{s}_{m}" for s in stats for m in measures]
    missing = [c for c in cols if c not in table.columns]
    if missing:
        raise SignatureError(f"missing nuclear columns {missing[:4]} (expected nuc_<stat>_<measure>)")
    if spec is None:
        spec = FeatureSpec(classes=[], tme_stats=[], mil=False, nuclear=measures, nuclear_stats=stats, source="table")
    else:
        spec = replace(spec, nuclear=measures, nuclear_stats=stats)
    return table, list(dict.fromkeys([*feats, *cols])), spec


def build_signature(args: argparse.Namespace) -> int:
    from ..signature.clinical import parse_clinical, with_labels
    from ..signature.cox import DEFAULT_PENALIZERS
    from ..signature.fit import SignatureFitter

    if args.bundle is None and args.out is None:
        raise SignatureError("nowhere to write the signature: give --bundle and/or --out")
    if args.bundle is not None and not (args.bundle / "manifest.json").exists():
        raise SignatureError(f"{args.bundle} is not a bundle folder (no manifest.json)")
    if args.out is not None:  # never over the table, the spec, the bundle or a file of another kind
        check_output(args.out, "JSON", [args.table, args.feature_spec, args.bundle])
    table = read_table(args.table)
    if args.id is not None:
        if args.id not in table.columns:
            raise SignatureError(f"missing id column {args.id!r}")
        dup = table[args.id][table[args.id].duplicated()].tolist()
        if dup:
            raise SignatureError(f"duplicate patient ids, e.g. {dup[:3]}; one row per patient is required")
    table, feats, spec = select_features(table, args)
    horizons = (
        _floats(args.horizons, "horizons") if args.horizons else [float(h) for h in DEFAULT_HORIZONS[args.time_unit]]
    )
    penalizers = _floats(args.penalizers, "penalizers") if args.penalizers else list(DEFAULT_PENALIZERS)
    if not 2 <= args.folds <= 20:
        raise SignatureError("--folds must be between 2 and 20")
    fitter = SignatureFitter(
        corr_threshold=args.corr_threshold,
        screen_p=args.screen_p,
        screen_top_k=args.screen_top_k,
        penalizers=penalizers,
        folds=args.folds,
        seed=args.seed,
        min_group=args.min_group,
        n_permutations=args.permutations,
        horizons=horizons,
        time_unit=args.time_unit,
        cross_validate=not args.no_cv,
        cv_repeats=args.cv_repeats,
        n_bootstrap=args.bootstrap,
    )
    sig = fitter.fit(
        table,
        args.time,
        args.event,
        feats,
        feature_spec=spec,
        id_col=args.id,
        name=args.name or args.table.stem,
        description=args.description,
        provenance={"table": args.table.name},
        clinical=with_labels(parse_clinical(args.clinical), args.clinical_label) if args.clinical else None,
        clinical_missing=args.clinical_missing,
        cancer_type=args.cancer_type,
        min_follow_up=args.min_follow_up,
    )
    written: list[str] = []
    if args.out is not None:
        sig.save(args.out)
        written.append(str(args.out))
    if args.bundle is not None:
        slot = args.slot or ("clinical" if args.clinical else "main")
        written.append(str(args.bundle / attach_to_bundle(sig, args.bundle, slot)))
    summary = sig.summary()
    summary["written"] = written
    if args.json:
        print_json(summary)
    else:
        _print_human(summary)
    return 0


def manifest_summary(sig: Any) -> dict[str, Any]:
    """The short figures the bundle manifest carries next to the signature file."""
    s = sig.summary()
    m = sig.metrics
    return {
        "name": s["name"],
        "covariates": list(s["covariates"]),
        "n": s["n"],
        "n_events": s["n_events"],
        "apparent_c_index": s["apparent_c_index"],
        "cv_c_index": s["cv_c_index"],
        "cv_c_index_sd": s["cv_c_index_sd"],
        "cv_folds": (m.get("cv") or {}).get("folds"),
        "hazard_ratio_apparent": s["hazard_ratio"],
        "hazard_ratio_out_of_fold": s["cv_hazard_ratio"],
        "cutoff": s["cutoff"],
        "cutoff_p_value": s["cutoff_p_value"],
        "cutoff_method": s["cutoff_method"],
        "time_unit": s["time_unit"],
        **({"clinical": s["clinical"]} if s.get("clinical") else {}),
        **(
            {
                "models": {
                    m: {k: v.get(k) for k in ("cv_c_index", "cv_c_index_sd")}
                    for m, v in (s.get("evaluation") or {}).get("models", {}).items()
                }
            }
            if s.get("evaluation")
            else {}
        ),
        **({"cancer_type": s["cancer_type"]} if s.get("cancer_type") else {}),
    }


#: Bundle slots of a signature: file name, manifest key of the file, manifest key of its summary.
SLOTS = {
    "main": ("signature.json", "signature", "signature_summary"),
    "clinical": ("signature_clinical.json", "signature_clinical", "signature_clinical_summary"),
}


def attach_to_bundle(sig: Any, bundle_dir: Path, slot: str = "main") -> str:
    """Write the signature into a bundle slot through the bundle module (hash + manifest); its file name."""
    from ..bundle import attach_file

    filename, key, summary_key = SLOTS[slot]
    updates: dict[str, Any] = {summary_key: manifest_summary(sig)}
    if sig.cancer_type:
        updates["cancer_type"] = sig.cancer_type
    attach_file(bundle_dir, filename, sig.to_json(), manifest_key=key, manifest_updates=updates)
    return filename


def _fmt(x: Any, nd: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{nd}f}"


def _print_human(s: dict[str, Any]) -> None:
    print(f"signature {s['name']!r}: {s['n']} patients, {s['n_events']} events")
    print(f"  penalizer {s['penalizer']:g}; covariates (standardised coefficients):")
    for c, b in s["covariates"].items():
        print(f"    {c:<28} {b:+.4f}")
    print(
        f"  C-index apparent {_fmt(s['apparent_c_index'])}, cross-validated {_fmt(s['cv_c_index'])} ± {_fmt(s['cv_c_index_sd'])}"
    )
    hr = s["hazard_ratio"]
    print(
        f"  HR high vs low (apparent) {_fmt(hr['hr'], 2)} [{_fmt(hr['ci_lower'], 2)}, {_fmt(hr['ci_upper'], 2)}], p={hr['p']:.2g}"
    )
    cv = s.get("cv_hazard_ratio")
    if cv:
        print(
            f"  HR high vs low (out-of-fold) {_fmt(cv['hr'], 2)} [{_fmt(cv['ci_lower'], 2)}, {_fmt(cv['ci_upper'], 2)}], p={cv['p']:.2g}"
        )
    print(
        f"  cutoff {s['cutoff']:.4f} (high if risk > cutoff), selection p={s['cutoff_p_value']:.3g} ({s['cutoff_method']})"
    )
    ev = s.get("evaluation") or {}
    if ev.get("models"):
        print_evaluation(ev)
    elif s.get("rows"):
        print_rows(s["rows"])
    for w in s.get("written", []):
        print(f"  wrote {w}")


def print_rows(rows: dict[str, Any]) -> None:
    """How many rows the model was fitted on, and why the others were left out."""
    if rows.get("n_excluded"):
        why = ", ".join(f"{k}: {v}" for k, v in (rows.get("excluded") or {}).items())
        print(f"  rows: {rows['used']} of {rows['total']} used ({rows['n_excluded']} left out: {why})")
    elif rows.get("imputed"):
        filled = ", ".join(
            f"{k}: {n} filled with {rows['imputed'].get(k.removeprefix('missing '))!r}"
            for k, n in (rows.get("excluded") or {}).items()
        )
        print(f"  rows: all {rows['total']} used (missing values imputed: {filled})")
    elif rows.get("total") is not None:
        print(f"  rows: all {rows['total']} used (none left out)")


def print_evaluation(ev: dict[str, Any]) -> None:
    """The three models side by side, the increment and the adjusted HR, as a pathologist reads them."""
    if ev.get("rows") and len(ev["models"]) > 1:
        print_rows(ev["rows"])
    d = ev.get("design") or {}
    print(f"  nested CV ({d.get('folds')}-fold x {d.get('repeats')}, every model refitted in each fold):")
    for m, v in ev["models"].items():
        td = ", ".join(f"{k}: {_fmt(a)}" for k, a in (v.get("td_auc") or {}).items())
        print(f"    {m:<9} C {_fmt(v['cv_c_index'])} ± {_fmt(v['cv_c_index_sd'])}   AUC(t) {td}")
    inc = (ev.get("increment") or {}).get("combined_minus_clinical")
    if inc:
        lrt = inc.get("likelihood_ratio_test") or {}
        print(
            f"  combined - clinical: delta C {inc['delta_c']:+.3f} [{_fmt(inc['ci_lower'])}, {_fmt(inc['ci_upper'])}] "
            f"(bootstrap), LRT of the out-of-fold pathomics score p={_fmt(lrt.get('p'))}"
        )
    adj = (ev.get("adjusted_hazard_ratio") or {}).get("score_per_sd", {}).get("pathomics_score")
    if adj:
        print(
            f"  pathomics score adjusted for the covariates: HR per SD {_fmt(adj['hr'], 2)} "
            f"[{_fmt(adj['ci_lower'], 2)}, {_fmt(adj['ci_upper'], 2)}], p={_fmt(adj['p'])} (out-of-fold score)"
        )
