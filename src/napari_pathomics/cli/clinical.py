"""``pathomics analyze-interaction`` and ``analyze-benefit``: a marker or a treatment within the
pathomics risk groups of a frozen signature, on a per-patient table (thin over signature.interplay)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import ClinicalError
from .common import POSITIVE_INT, print_json


def _signature(path: str | None) -> Any:
    from ..resources import DEFAULT_BUNDLE
    from ..signature import Signature

    return Signature.from_json(Path(path) if path else DEFAULT_BUNDLE / "signature.json")


def _cutoff(text: str | None) -> float | str | None:
    if text is None or text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise ClinicalError(f"--marker-cutoff must be a number or 'auto', got {text!r}") from None


def _common(args: argparse.Namespace) -> tuple[Any, Any, list[str]]:
    from .signature import read_table

    if args.attach is not None:  # refused before any work
        _slot(args.attach, args.signature)
    sig = _signature(args.signature)
    table = read_table(args.cohort)
    subgroups = [c.strip() for c in (args.subgroups or "").split(",") if c.strip()]
    return sig, table, subgroups


def _slot(bundle_dir: Path, signature_path: str | None) -> str:
    """The bundle slot holding the analysed signature; an analysis is stored only with its own signature."""
    from .signature import SLOTS

    if not (bundle_dir / "manifest.json").is_file():
        raise ClinicalError(f"--attach {bundle_dir}: not a bundle folder (no manifest.json)")
    target = Path(signature_path).resolve() if signature_path else None
    slot = next(
        (
            name
            for name, (fname, _, _) in SLOTS.items()
            if target is not None and (bundle_dir / fname).resolve() == target
        ),
        None,
    )
    if slot is None:
        raise ClinicalError(
            f"--attach {bundle_dir}: give --signature as one of that bundle's signature files "
            f"({', '.join(f for f, _, _ in SLOTS.values())}) so the analysis is stored with "
            "the signature it was computed for"
        )
    return slot


def _attach(result: dict[str, Any], bundle_dir: Path, signature_path: str | None, sig: Any) -> str:
    """Store the analysis in the bundle's signature ``sig`` (the one analysed, read from that bundle's
    slot), replacing an earlier one of the same column, so the Score dock can place a patient on its curves."""
    from ..provenance import strict_json
    from ..signature import Signature
    from .signature import attach_to_bundle

    slot = _slot(bundle_dir, signature_path)
    doc = sig.to_json()
    kind = "marker" if result.get("marker") else "treatment"
    keep = {k: v for k, v in result.items() if k not in ("written", "attached")}
    keep["rows"] = {k: v for k, v in (result.get("rows") or {}).items() if k != "excluded_ids"}
    old = [d for d in doc.get("interplay") or [] if not (isinstance(d, dict) and d.get(kind) == result.get(kind))]
    doc["interplay"] = [*old, strict_json(keep)]
    return attach_to_bundle(Signature.from_json(doc), bundle_dir, slot)


def _finish(args: argparse.Namespace, result: dict[str, Any], sig: Any) -> int:
    from ..provenance import strict_json

    if args.attach is not None:
        result["attached"] = str(args.attach / _attach(result, args.attach, args.signature, sig))
    if args.out is not None:
        from ..scoring.cohort_report import write_analysis

        result["written"] = write_analysis(result, args.out, time_unit=sig.time_unit)
    if args.json:
        print_json(strict_json(result))
        return 0
    what = result.get("marker") or result.get("treatment")
    rows = result["rows"]
    left = ", ".join(f"{k}: {v}" for k, v in rows["excluded"].items())
    print(
        f"{what} within the risk groups of signature {result['signature']!r}: {rows['used']} of {rows['total']} "
        f"patients ({result['n_high']} high, {result['n_low']} low risk; {result['events']} events)"
        + (f"; left out {left}" if left else "")
    )
    print(f"  levels: {', '.join(result['levels'])} ({result['rule']})")
    for g in ("low", "high"):
        grp = result["groups"][g]
        hrs = "; ".join(
            f"{lv}: HR {h['hr']:.2f} [{h['ci_lower']:.2f}, {h['ci_upper']:.2f}] p={h['p']:.2g}"
            if h
            else f"{lv}: not estimable"
            for lv, h in grp["hazard_ratio"].items()
        )
        print(f"  {g}-risk group ({grp['n']} patients, {grp['events']} events): {hrs}")
    p = result["interaction"]["p"]
    print(f"  interaction (risk group x {what}): p = {'n/a' if p is None else f'{p:.3g}'} (likelihood-ratio test)")
    for note in result["interaction"].get("notes") or []:
        print(f"  note: {note}")
    if result.get("warning"):
        print(f"  WARNING: {result['warning']}")
    for kind, path in (result.get("written") or {}).items():
        print(f"  wrote {kind}: {path}")
    if result.get("attached"):
        print(f"  stored in {result['attached']} (the Score dock places a patient on these curves)")
    print(f"  {result['research_use']}")
    return 0


def _interaction(args: argparse.Namespace) -> int:
    from ..signature.interplay import analyze_interaction

    sig, table, subgroups = _common(args)
    res = analyze_interaction(
        sig,
        table,
        args.marker,
        time_col=args.time,
        event_col=args.event,
        cutoff=_cutoff(args.marker_cutoff),
        subgroups=subgroups,
        id_col=args.id,
        min_events=args.min_events,
    )
    return _finish(args, res, sig)


def _benefit(args: argparse.Namespace) -> int:
    from ..signature.interplay import analyze_benefit

    sig, table, subgroups = _common(args)
    res = analyze_benefit(
        sig,
        table,
        args.treatment,
        time_col=args.time,
        event_col=args.event,
        treated=args.treated,
        subgroups=subgroups,
        id_col=args.id,
        min_events=args.min_events,
    )
    return _finish(args, res, sig)


def _shared(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "cohort",
        type=Path,
        help="per-patient CSV/TSV: the signature's features (or TME class columns), "
        "time, event and the marker / treatment column",
    )
    p.add_argument(
        "--signature",
        default=None,
        help="signature JSON (e.g. a bundle's signature.json or signature_clinical.json); default: the "
        "bundled image-only signature",
    )
    p.add_argument("--time", default="time", help="follow-up time column (default: time)")
    p.add_argument("--event", default="event", help="event column, 1 = event (default: event)")
    p.add_argument("--id", default=None, help="patient id column (named in messages)")
    p.add_argument(
        "--subgroups",
        default=None,
        metavar="COL1,COL2",
        help="more columns for the subgroup forest plot (numeric ones split at their median)",
    )
    p.add_argument(
        "--min-events",
        type=POSITIVE_INT,
        default=10,
        help="fewest events a risk group or a level may have (default 10)",
    )
    p.add_argument("--out", type=Path, default=None, help="folder for the JSON, the figures and an HTML page")
    p.add_argument("--json", action="store_true", help="print every number as JSON")
    p.add_argument(
        "--attach",
        type=Path,
        default=None,
        metavar="BUNDLE",
        help="store the analysis in BUNDLE's signature given by --signature, so the Score dock places "
        "a patient on its curves",
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze-interaction",
        help="a marker's prognostic effect within each pathomics risk group, the interaction test "
        "and a subgroup forest plot",
    )
    _shared(p)
    p.add_argument("--marker", required=True, help="marker column (numeric, two-valued or categorical)")
    p.add_argument(
        "--marker-cutoff",
        default=None,
        metavar="V|auto",
        help="split a numeric marker: high if > V, or auto = its median (chosen without outcomes)",
    )
    p.set_defaults(handler=_interaction)

    p = sub.add_parser(
        "analyze-benefit",
        help="treated vs untreated within each pathomics risk group and the treatment x group test "
        "(observational data: a hypothesis, not proof of benefit)",
    )
    _shared(p)
    p.add_argument("--treatment", required=True, help="two-level treatment column (e.g. 0/1, yes/no)")
    p.add_argument("--treated", default=None, help="the level that means treated (default: recognised 1/yes/true)")
    p.set_defaults(handler=_benefit)
