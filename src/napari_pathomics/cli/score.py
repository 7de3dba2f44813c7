"""``pathomics score``: one patient's risk from the bundle's signature, headless.

The same ``scoring.score_patient`` the Score dock calls, so both give the same number.
"""

from __future__ import annotations

import argparse
import os
import sys

from ..errors import ClinicalError, SignatureError
from ..resources import DEFAULT_BUNDLE
from ..units import years_short
from .common import (
    BATCH,
    add_nuclei_model_option,
    add_slide_mpp_option,
    add_tta_option,
    nuclei_model_note,
    print_json,
    progress_bar,
)


def _score(args: argparse.Namespace) -> int:
    from ..bundle import Bundle
    from ..cells.methods import resolve_method
    from ..scoring import load_signature, ordinal, score_patient
    from ..scoring.combined import clinical_signature_for
    from ..scoring.report import report_targets, write_report_html, write_report_json
    from ..wsi.annotations import read_geojson

    if args.roi and len(args.roi) != len(args.slides):
        raise SignatureError(f"give one --roi per slide ({len(args.slides)}), in the same order")
    _one_path_per_slide(args.slides)
    bundle = Bundle.load(args.bundle or DEFAULT_BUNDLE)
    signature = load_signature(bundle)
    values = _clinical_values(args.clinical)
    combined = clinical_signature_for(bundle, signature, values, option="--clinical")  # before any inference
    nuclei = resolve_method(args.nuclei_model) if args.nuclei_model is not None else None  # a bad one fails here
    inputs = [*args.slides, *(args.roi or []), bundle.source, *bundle.path.iterdir()]
    html_path, json_path = report_targets(args.report, args.report_json, inputs)
    rois = [read_geojson(r).annotations for r in args.roi] if args.roi else None

    bar = progress_bar(100, quiet=args.quiet, unit="%", leave=False, bar_format="{desc} {percentage:3.0f}%|{bar}|")

    def progress(msg: str, frac: float) -> None:
        if bar is not None:
            bar.set_description_str(msg[:60])
            bar.n = int(100 * frac)
            bar.refresh()

    try:
        ps = score_patient(
            args.slides,
            bundle,
            patient_id=args.patient,
            rois=rois,
            device=args.device,
            batch_size=args.batch_size,
            amp=args.amp,
            slide_mpp=args.slide_mpp,
            progress=progress,
            case_type=args.case_type,
            tta=args.tta,
            clinical=values,
            nuclei_model=nuclei,
        )
    finally:
        if bar is not None:
            bar.close()
    if html_path is not None:
        write_report_html(ps, html_path, signature=signature, combined=combined)
    if json_path is not None:
        write_report_json(ps, json_path)
    note = nuclei_model_note(args.nuclei_model, ps.nuclei_model)
    if args.json:
        print_json(ps.to_json())
        if note:
            print(note, file=sys.stderr)
        return 0
    sc = ps.score
    ctx = ps.context
    print(
        f"patient {ps.patient_id}: risk {sc.risk:+.3f} ({ordinal(sc.percentile)} percentile), "
        f"{ctx['group_headline']} (frozen cutoff {sc.cutoff:+.3f})"
    )
    print(f"  scored: {ctx['area']['text']}")
    print(f"  group: {ctx['group_text']}")
    print(f"  signature evidence: {ctx['evidence']['text']}")
    print(
        "  predicted survival: "
        + ", ".join(f"{years_short(float(h), sc.time_unit)} {100 * p:.0f} %" for h, p in sc.survival_at.items())
    )
    comp = ctx["composition"]
    top = sorted(comp["tissue"].items(), key=lambda kv: -kv[1])[:5]
    print("  composition: " + ", ".join(f"{k} {100 * v:.0f} %" for k, v in top) + f" ({comp['text']})")
    ct = ctx["cancer_type"]
    if ct.get("note"):
        print(f"  cancer type: {ct['note']}")
    if ps.nuclei_model is not None:
        print(f"  nuclear features: nuclei model {ps.nuclei_model['name']}, licence {ps.nuclei_model['licence']}")
    if note:
        print(f"  {note}")
    if ps.clinical is not None:
        c = ps.clinical
        m = c["models"]
        print(
            f"  with clinical values ({', '.join(f'{k}={v}' for k, v in c['values'].items())}): "
            f"combined risk {c['risk']:+.3f} ({ordinal(c['percentile'])} percentile), {c['group_headline']}"
        )
        print(
            f"    validated C-index: pathomics only {m['image']['text']}; combined {m['combined']['text']}; "
            f"clinical only {m['clinical']['text']}"
        )
        inc = c.get("increment_over_clinical") or {}
        if inc.get("delta_c") is not None:
            print(
                f"    combined - clinical only: delta C {inc['delta_c']:+.3f} [{inc.get('ci_lower'):+.3f}, "
                f"{inc.get('ci_upper'):+.3f}] (what the image adds to the clinical values)"
            )
        for pl in c.get("interplay", []):
            print(f"    {pl['column']} curves: {pl['note']}")
    for w in [*ps.warnings, *ctx["warnings"]]:
        print(f"  warning: {w}")
    print(f"  {ps.disclaimer}")
    return 0


def _one_path_per_slide(slides: list[str]) -> None:
    """Refuse one file given twice (the same path, another path to it, a hard link): it would count twice."""
    seen: dict[tuple[int, int], str] = {}
    for path in slides:
        try:
            st = os.stat(path)
        except OSError:
            continue  # a missing slide gets its own message when it is opened
        key = (st.st_dev, st.st_ino)
        if key in seen:
            raise SignatureError(
                f"{path} and {seen[key]} are the same file (a hard link or another path); give it once"
            )
        seen[key] = path


def _clinical_values(items: list[str] | None) -> dict[str, str]:
    """``--clinical stage=3,age=64`` (repeatable) -> {name: raw text}; ClinicalError names a bad item."""
    out: dict[str, str] = {}
    for item in items or []:
        if not item.strip():
            raise ClinicalError("--clinical '': expected NAME=VALUE (e.g. stage=3,age=64)")
        for part in (p.strip() for p in item.split(",")):
            if not part:
                continue
            name, sep, value = part.partition("=")
            if not sep or not name.strip() or not value.strip():
                raise ClinicalError(f"--clinical {part!r}: expected NAME=VALUE (e.g. stage=3,age=64)")
            if name.strip() in out:
                raise ClinicalError(f"--clinical {name.strip()!r} is given twice; give each covariate once")
            out[name.strip()] = value.strip()
    return out


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="score one patient's slides with the bundle's signature")
    p.add_argument("slides", nargs="+", help="the patient's slides")
    p.add_argument("--patient", default=None, help="patient ID (default: the first slide's name)")
    p.add_argument(
        "--roi",
        action="append",
        default=None,
        metavar="FILE.geojson",
        help="QuPath GeoJSON ROIs, one per slide in order (default: all tissue)",
    )
    p.add_argument("--bundle", default=None, help="bundle with a signature (default: the bundled one)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.add_argument("--batch-size", type=BATCH, default=32)
    p.add_argument("--amp", default="auto", help="auto (probed once), fp32, bf16 or fp16")
    add_tta_option(p)
    add_nuclei_model_option(p, for_features=True)
    p.add_argument("--json", action="store_true", help="print all numbers as JSON")
    p.add_argument("--report", default=None, metavar="FILE.html", help="write the HTML case report (+ .json)")
    p.add_argument("--report-json", default=None, metavar="FILE.json", help="write the JSON report here")
    p.add_argument(
        "--case-type",
        default=None,
        metavar="TEXT",
        help="the case's cancer type (e.g. 'colorectal adenocarcinoma'), checked against the signature's; "
        "default: the slide metadata's tissue, if it records one",
    )
    p.add_argument(
        "--clinical",
        action="append",
        default=None,
        metavar="NAME=VALUE[,NAME=VALUE...]",
        help="the patient's clinical values (e.g. stage=3,age=64): also score with the bundle's combined "
        "signature (signature_clinical.json); a value outside its frozen encoding is refused",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_slide_mpp_option(p)
    p.set_defaults(handler=_score)
