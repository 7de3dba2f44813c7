"""``pathomics score``: one patient's risk from the bundle's signature, headless.

The same ``scoring.score_patient`` the Score dock calls, so both give the same number.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import SignatureError
from ..resources import DEFAULT_BUNDLE
from ..units import years_short
from .common import BATCH, add_slide_mpp_option, print_json


def _score(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..bundle import Bundle
    from ..scoring import DISCLAIMER, load_signature, ordinal, score_patient
    from ..scoring.report import report_targets, write_report_html, write_report_json
    from ..wsi.annotations import read_geojson

    if args.roi and len(args.roi) != len(args.slides):
        raise SignatureError(f"give one --roi per slide ({len(args.slides)}), in the same order")
    bundle = Bundle.load(args.bundle or DEFAULT_BUNDLE)
    signature = load_signature(bundle)
    inputs = [*args.slides, *(args.roi or []), bundle.source, *bundle.path.iterdir()]
    html_path, json_path = report_targets(args.report, args.report_json, inputs)
    rois = [read_geojson(r).annotations for r in args.roi] if args.roi else None

    bar = None
    if not args.quiet:
        bar = tqdm(total=100, unit="%", file=sys.stderr, leave=False, bar_format="{desc} {percentage:3.0f}%|{bar}|")

    def progress(msg: str, frac: float) -> None:
        if bar is not None:
            bar.set_description_str(msg[:60])
            bar.n = int(100 * frac)
            bar.refresh()

    try:
        ps = score_patient(args.slides, bundle, patient_id=args.patient, rois=rois, device=args.device,
                           batch_size=args.batch_size, amp=args.amp, slide_mpp=args.slide_mpp, progress=progress)
    finally:
        if bar is not None:
            bar.close()
    if html_path is not None:
        write_report_html(ps, html_path, signature=signature)
    if json_path is not None:
        write_report_json(ps, json_path)
    if args.json:
        print_json(ps.to_json())
        return 0
    sc = ps.score
    print(f"patient {ps.patient_id}: risk {sc.risk:+.3f} ({ordinal(sc.percentile)} percentile), "
          f"group {sc.group.upper()} (cutoff {sc.cutoff:+.3f})")
    print("  predicted survival: " + ", ".join(f"{years_short(float(h), sc.time_unit)} {100 * p:.0f} %"
                                              for h, p in sc.survival_at.items()))
    top = sorted(ps.composition.items(), key=lambda kv: -kv[1])[:5]
    print("  composition: " + ", ".join(f"{k} {100 * v:.0f} %" for k, v in top))
    for w in ps.warnings:
        print(f"  warning: {w}")
    print(f"  {DISCLAIMER}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="score one patient's slides with the bundle's signature")
    p.add_argument("slides", nargs="+", help="the patient's slides")
    p.add_argument("--patient", default=None, help="patient ID (default: the first slide's name)")
    p.add_argument("--roi", action="append", default=None, metavar="FILE.geojson",
                   help="QuPath GeoJSON ROIs, one per slide in order (default: all tissue)")
    p.add_argument("--bundle", default=None, help="bundle with a signature (default: the bundled one)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.add_argument("--batch-size", type=BATCH, default=32)
    p.add_argument("--amp", default="auto", help="auto (probed once), fp32, bf16 or fp16")
    p.add_argument("--json", action="store_true", help="print all numbers as JSON")
    p.add_argument("--report", default=None, metavar="FILE.html", help="write the HTML case report (+ .json)")
    p.add_argument("--report-json", default=None, metavar="FILE.json", help="write the JSON report here")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_slide_mpp_option(p)
    p.set_defaults(handler=_score)
