"""``pathomics propose-roi``: a proposed tumour ROI from the patch model, as QuPath GeoJSON.

Runs (or reuses from the cache) the bundle's model over the slide's tissue, smooths the tumour
probability across neighbouring tiles, thresholds it and writes the regions as annotations
classified "Tumor (proposed)" in level-0 px: the file opens in QuPath and is a valid ``--roi``
for ``pathomics score`` and ``pathomics infer``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..resources import DEFAULT_BUNDLE
from .common import BATCH, add_slide_mpp_option, bounded, print_json, progress_bar


def _propose(args: argparse.Namespace) -> int:
    from ..bundle import Bundle
    from ..errors import ResultsError
    from ..inference.analyze import analyze_slide
    from ..outputs import check_output
    from ..results.regions import propose_tumour, tumour_classes
    from ..scoring.engine_cache import shared_engine
    from ..wsi.annotations import read_geojson, write_geojson
    from ..wsi.slide import open_slide

    out = check_output(args.out, "GeoJSON", [args.slide, args.roi])
    bundle = Bundle.load(args.bundle or DEFAULT_BUNDLE)
    classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
    if classes is None:
        descs = [c.get("description", "") for c in bundle.manifest["model"]["classes"]]
        classes = tumour_classes(bundle.class_names, descs)
        if not classes:
            raise ResultsError(
                f"bundle {bundle.name!r} has no tumour class among {bundle.class_names}: name them with --classes"
            )
    with open_slide(args.slide, mpp=args.slide_mpp) as slide:
        slide.mpp  # noqa: B018 - fail early and clearly without µm/px
        rois = read_geojson(args.roi, bounds=slide.dimensions).annotations if args.roi else None
        engine, _ = shared_engine(bundle, device=args.device, batch_size=args.batch_size)
        run = analyze_slide(slide, engine, rois)
        grid = run.grid
        bar = progress_bar(len(grid), quiet=args.quiet, unit="tile", desc=slide.path.name)
        try:
            for upd in run:
                if bar is not None:
                    bar.n = upd.done
                    bar.refresh()
        finally:
            run.close()
            if bar is not None:
                bar.close()
        res = run.results
        prop = propose_tumour(
            res,
            threshold=args.threshold,
            min_area_mm2=args.min_area,
            sigma_tiles=args.smooth,
            classes=classes,
            mpp=slide.mpp[0],
        )
    if not prop.annotations:
        raise ResultsError(
            f"no region of at least {args.min_area:g} mm² reaches tumour probability {args.threshold:g} "
            f"({'+'.join(classes)}); lower --threshold or --min-area"
        )
    write_geojson(prop.annotations, out)
    summary = {
        "out": str(out),
        "regions": len(prop.annotations),
        "area_mm2": round(prop.area_mm2, 4),
        "tiles": len(res),
        "tiles_proposed": int(prop.mask.sum()),
        "threshold": args.threshold,
        "min_area_mm2": args.min_area,
        "classes": classes,
        "bundle": bundle.name,
        "failed": res.counts()["failed"],
        "unreadable_mm2": grid.params.get("unreadable_mm2", 0.0),
    }
    if args.json:
        print_json(summary)
    else:
        print(
            f"{summary['regions']} proposed tumour region(s), {summary['area_mm2']:.2f} mm² "
            f"({summary['tiles_proposed']}/{len(res)} tiles, {'+'.join(classes)} ≥ {args.threshold:g}) -> {out}"
        )
        if summary["unreadable_mm2"] or summary["failed"]:
            print(
                f"  unreadable: {summary['failed']} tiles failed to decode and are left out of the proposal; "
                f"{summary['unreadable_mm2']:.3g} mm² of the slide's overview could not be decoded"
            )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "propose-roi",
        help="propose a tumour ROI (QuPath GeoJSON) from the patch model's tumour probability",
        description=__doc__.split("\n\n", 1)[0] if __doc__ else None,
    )
    p.add_argument("slide", type=Path)
    p.add_argument("--bundle", default=None, help="model bundle (default: the bundled model)")
    p.add_argument(
        "--threshold",
        type=bounded(float, 0.0, 1.0, lo_open=True, hi_open=True),
        default=0.5,
        help="smoothed tumour probability a region must reach (default 0.5)",
    )
    p.add_argument(
        "--min-area",
        type=bounded(float, 0.0),
        default=0.05,
        metavar="MM2",
        help="smallest region (and hole) kept, in mm² (default 0.05)",
    )
    p.add_argument(
        "--smooth",
        type=bounded(float, 0.0, 20.0),
        default=1.0,
        metavar="TILES",
        help="Gaussian smoothing across neighbouring tiles, sigma in tiles (default 1; 0 = none)",
    )
    p.add_argument(
        "--classes", default=None, help="comma-separated tumour classes (default: the bundle's tumour classes)"
    )
    p.add_argument("--roi", type=Path, default=None, help="only propose inside these ROIs (default: all tissue)")
    p.add_argument("--out", type=Path, required=True, help="GeoJSON file to write")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.add_argument("--batch-size", type=BATCH, default=32)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    add_slide_mpp_option(p)
    p.set_defaults(handler=_propose)
