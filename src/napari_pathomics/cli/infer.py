"""``pathomics infer``: run a bundle over a slide's ROI ∩ tissue tiles and write the results.

Writes into ``--out``: ``tiles.csv``, ``tiles.geojson`` (QuPath tile detections),
``results.npz`` (+ ``results.json``) and ``run.json`` (versions, bundle id and file hashes,
slide fingerprint, arguments, settings, timings, tiles/s). Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

from ..atomic import atomic_write_set
from ..outputs import check_output_dir
from ..provenance import bundle_record, run_record
from ..resources import DEFAULT_BUNDLE
from .common import BATCH, FRACTION, THREADS, add_slide_mpp_option, add_tta_option, args_dict, print_json, progress_bar

#: What ``infer --out`` writes, and of which kind.
OUTPUTS = (
    ("tiles.csv", "CSV table"),
    ("tiles.geojson", "GeoJSON"),
    ("results.npz", "results file"),
    ("results.json", "JSON"),
    ("run.json", "JSON"),
)


def _infer(args: argparse.Namespace) -> int:
    from ..bundle import Bundle
    from ..inference.analyze import analyze_slide
    from ..inference.engine import Engine
    from ..results import cache_root
    from ..wsi.annotations import read_geojson
    from ..wsi.slide import open_slide

    t0 = time.perf_counter()
    bundle = Bundle.load(args.bundle or DEFAULT_BUNDLE)
    out = Path(args.out) if args.out else Path(Path(args.slide).stem + "_pathomics")
    check_output_dir(out, OUTPUTS, inputs=[args.slide, args.roi, bundle.source, *bundle.path.iterdir()])
    with open_slide(args.slide, mpp=args.slide_mpp) as slide:
        slide.mpp  # noqa: B018 - fail early and clearly without µm/px
        rois = read_geojson(args.roi, bounds=slide.dimensions).annotations if args.roi else None
        engine = Engine(
            bundle, device=args.device, batch_size=args.batch_size, amp=args.amp, num_threads=args.threads, tta=args.tta
        )
        cancel = threading.Event()
        run = analyze_slide(
            slide,
            engine,
            rois,
            tissue=False if args.no_tissue else None,
            min_tissue=args.min_tissue,
            use_cache=not args.no_cache,
            cams=tuple(args.cam or ()),
            cancel=cancel,
        )
        grid = run.grid
        t_plan = time.perf_counter() - t0
        bar = progress_bar(len(grid), quiet=args.quiet, unit="tile", desc=Path(args.slide).name)
        t_run = time.perf_counter()
        try:
            for upd in run:
                if bar is not None:
                    bar.n = upd.done
                    bar.refresh()
        finally:  # Ctrl+C: stop reading, flush the cache (a rerun resumes)
            cancel.set()
            run.close()
            if bar is not None:
                bar.close()
        run_s = time.perf_counter() - t_run
        res = run.results
        stats = dict(run.stats)
        computed = stats.get("tiles", 0.0)
        record = run_record(
            "pathomics infer",
            sys.argv[1:],
            args_dict(args),
            slide={
                "path": str(slide.path),
                "hash": res.meta.get("slide_hash"),
                "width": slide.width,
                "height": slide.height,
                "mpp": list(slide.mpp),
            },
            bundle=bundle_record(bundle),
            grid={k: v for k, v in grid.to_json().items() if k != "origins"} | {"key": grid.key()},
            engine=engine.describe() if computed else {"device": str(engine.device), "batch_size": engine.batch_size},
            counts=res.counts(),
            cache=str(run.cache_file) if run.cache_file else None,
            cache_dir=str(cache_root()) if not args.no_cache else None,
            timings={
                "plan_s": round(t_plan, 3),
                "run_s": round(run_s, 3),
                **{k: round(v, 3) for k, v in stats.items()},
            },
            tiles_computed=int(computed),
            tiles_per_s=round(computed / stats["loop_s"], 2) if computed and stats.get("loop_s") else None,
            outputs=[name for name, _ in OUTPUTS],
        )
        # one set: a full disk or a crash leaves the previous run's files, never a mix of two runs
        atomic_write_set(
            out,
            {
                "tiles.csv": res.csv_text().encode("utf-8"),
                "tiles.geojson": (json.dumps(res.geojson(), allow_nan=False) + "\n").encode("utf-8"),
                **res.files("results.npz"),
                "run.json": (
                    json.dumps(json.loads(json.dumps(record, default=str)), indent=2, allow_nan=False) + "\n"
                ).encode("utf-8"),
            },
        )
    summary = {
        "out": str(out),
        "tiles": len(res),
        **res.counts(),
        "tiles_per_s": record["tiles_per_s"],
        "amp": record["engine"].get("amp"),
        "bundle": bundle.name,
        "unreadable_mm2": grid.params.get("unreadable_mm2", 0.0),
    }
    if args.json:
        print_json(summary)
    else:
        c = res.counts()
        rate = f", {record['tiles_per_s']:.1f} tiles/s" if record["tiles_per_s"] else " (all from cache)"
        print(
            f"{len(res)} tiles: {c['done']} classified, {c['background']} background, {c['failed']} failed"
            f"{rate} -> {out}"
        )
        if summary["unreadable_mm2"] or c["failed"]:
            print(
                f"  unreadable: {c['failed']} tiles failed to decode; {summary['unreadable_mm2']:.3g} mm² of the "
                "slide's overview could not be decoded"
            )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("infer", help="run a model bundle over a slide; write tiles.csv/.geojson, results.npz, run.json")
    p.add_argument("slide")
    p.add_argument("--roi", help="QuPath GeoJSON with the ROIs (default: all tissue)")
    p.add_argument("--bundle", help="model bundle folder or zip (default: the bundled model)")
    p.add_argument("--out", help="output folder (default: <slide>_pathomics)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default auto)")
    p.add_argument("--batch-size", type=BATCH, default=32, help="tiles per batch (default 32)")
    p.add_argument("--amp", default="auto", help="precision: auto (probe), fp32, bf16 or fp16 (default auto)")
    p.add_argument("--threads", type=THREADS, default=None, help="torch threads (default: all cores of this process)")
    add_tta_option(p)
    p.add_argument(
        "--cam",
        action="append",
        metavar="CLASS|risk",
        help="also compute a Grad-CAM for a class, or 'risk' for the risk activation map (repeatable)",
    )
    p.add_argument(
        "--min-tissue", type=FRACTION, default=None, help="minimum fraction of a tile inside ROI ∩ tissue (default 0.5)"
    )
    p.add_argument("--no-tissue", action="store_true", help="tile the ROIs without tissue detection")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the results cache")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    add_slide_mpp_option(p)
    p.set_defaults(handler=_infer)
