"""``pathomics adapt``: a bundle's tissue classifier refitted to tile labels, written as a new bundle.

    pathomics adapt --bundle B --slide S.svs --labels S.labels.geojson [--slide … --labels …] --out B2 [--json]

The labels file may be the viewer's autosave or any QuPath GeoJSON of classified polygons or
points (a polygon labels every tile whose centre lies inside it; names go through the class
mapping, ``--map 'Name=CLS'`` adds to it). Only the labelled tiles are read (their embeddings
come from the results cache when the viewer or ``infer`` computed them). Prints the per-class
label counts and the accuracy on the labels before (the base head) and after (cross-validated).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import LabelsError
from ..resources import DEFAULT_BUNDLE
from .common import BATCH, THREADS, add_slide_mpp_option, bounded, print_json

_POSITIVE = bounded(float, 0.0, 1e6, lo_open=True)


def _strength(text: str) -> float | str:
    return "auto" if text.strip().lower() == "auto" else _POSITIVE(text)


def _mapping(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        name, sep, cls = item.partition("=")
        if not sep or not name.strip():
            raise LabelsError(f"--map wants 'QuPath name=CLASS' (CLASS empty to ignore the name), got {item!r}")
        out[name.strip()] = cls.strip()
    return out


def _adapt(args: argparse.Namespace) -> int:
    from ..bundle import Bundle
    from ..inference.engine import Engine
    from ..outputs import OutputError, check_output_dir
    from ..training.adapt import (
        AdaptConfig,
        describe_counts,
        fit_and_apply,
        gather_labelled,
        run_to_end,
        write_adapted_bundle,
    )

    slides, label_files = args.slide or [], args.labels or []
    if not slides or len(slides) != len(label_files):
        raise LabelsError(
            f"give one --labels per --slide, in the same order ({len(slides)} slides, {len(label_files)} labels files)"
        )
    bundle = Bundle.load(args.bundle or DEFAULT_BUNDLE)
    out = Path(args.out).expanduser()
    check_output_dir(out, [], inputs=[*slides, *label_files, bundle.source, bundle.path])
    if out.resolve() == bundle.path.resolve() or bundle.path.resolve() in out.resolve().parents:
        raise OutputError(f"{out} is the base bundle (or inside it); choose another folder for the adapted bundle")
    mapping = _mapping(args.map or [])
    engine = Engine(bundle, device=args.device, batch_size=args.batch_size, amp=args.amp, num_threads=args.threads)
    data, _ = run_to_end(
        gather_labelled(
            engine,
            files=list(zip(slides, label_files)),
            mapping=mapping,
            force=args.force,
            mpp=args.slide_mpp,
            use_cache=not args.no_cache,
        )
    )
    for note in data.notes:
        print(f"pathomics adapt: warning: {note}", file=sys.stderr)
    cfg = (
        AdaptConfig()
        if args.strength is None
        else AdaptConfig(strength=None if args.strength == "auto" else args.strength)
    )
    result = fit_and_apply(engine, data, cfg=cfg).result
    adapted = write_adapted_bundle(bundle, result, data.sets, out, name=args.name)
    summary = {
        "bundle": str(out),
        "bundle_id": adapted.bundle_id,
        "base_bundle": bundle.name,
        "base_bundle_id": bundle.bundle_id,
        "label_sets": data.sets,
        **result.to_json(),
        "regularisation": cfg.to_json(),
        "notes": data.notes,
    }
    if args.json:
        print_json(summary)
        return 0
    for s in data.sets:
        print(f"{s['slide']}: {s['n']} labelled tiles ({describe_counts(s['counts'])})")
    print(
        f"accuracy on the {result.n} labels ({result.cv_method}): base {result.accuracy_before:.3f} -> "
        f"adapted {result.accuracy_after:.3f}"
    )
    for cls, pc in result.per_class.items():
        print(f"  {cls:<5s} {pc['n']:>5d} labels: {pc['before']:.2f} -> {pc['after']:.2f}")
    print(f"adapted bundle {adapted.name} (id {adapted.bundle_id}, head fitted in {result.fit_s:.2f} s) -> {out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "adapt",
        help="refit a bundle's tissue classifier to tile labels; write a new bundle",
        description="Fits a new class head on the frozen embeddings of the labelled tiles, "
        "regularised toward the bundle's own head; classes without labels keep it.",
    )
    p.add_argument("--bundle", help="base bundle folder or zip (default: the bundled model)")
    p.add_argument("--slide", action="append", metavar="SLIDE", help="a labelled slide (repeatable)")
    p.add_argument(
        "--labels",
        action="append",
        metavar="LABELS.geojson",
        help="its labels: the viewer's autosave or QuPath GeoJSON of classified polygons/points "
        "(one per --slide, in order)",
    )
    p.add_argument("--out", required=True, help="folder of the adapted bundle")
    p.add_argument(
        "--map",
        action="append",
        metavar="NAME=CLASS",
        help="map a QuPath class name to a bundle class, e.g. 'Tumor=TUM' ('Name=' ignores it; repeatable)",
    )
    p.add_argument(
        "--strength",
        type=_strength,
        default=None,
        metavar="LAMBDA|auto",
        help="pull toward the base head, in labelled tiles' worth (default 0.5); 'auto' chooses it by "
        "cross-validation on the labels (trusts clustered labels too much)",
    )
    p.add_argument("--name", default=None, help="name of the adapted bundle (default: <base>-adapted)")
    p.add_argument("--force", action="store_true", help="use labels made on another slide (another sha256)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default auto)")
    p.add_argument("--batch-size", type=BATCH, default=32)
    p.add_argument("--amp", default="auto", help="precision: auto (probe), fp32, bf16 or fp16")
    p.add_argument("--threads", type=THREADS, default=None, help="torch threads")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the results cache")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    add_slide_mpp_option(p)
    p.set_defaults(handler=_adapt)
