"""``pathomics nuclei``: segment and measure nuclei in a slide's ROIs or in a plain RGB image.

* A plain image (PNG, JPEG, or a TIFF with one level and no µm/px) needs ``--mpp``. It writes
  ``DIR/<name>.labels.png`` (16-bit instance labels, 0 = background, the input's size),
  ``DIR/<name>.nuclei.csv`` (one row per nucleus, image px) and ``DIR/<name>.nuclei.geojson``.
* A slide is segmented tile by tile over its ROIs (or all tissue) on the patch model's tile
  lattice, resumable from the cache. It writes ``DIR/<name>.nuclei-tiles.csv`` (per-tile values),
  ``DIR/<name>.nuclei.csv`` and ``DIR/<name>.nuclei.geojson`` (level-0 px, QuPath detections),
  ``DIR/<name>.nuclei.npz`` (everything, reloadable) and ``DIR/<name>.nuclei-run.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import NucleiError
from ..units import DEFAULT_TILE_UM
from .common import FRACTION, MPP, TILE_UM, add_nuclei_model_option, args_dict, bounded, print_json, progress_bar

#: A plain image larger than this is refused (segment it as a pyramidal slide instead).
MAX_IMAGE_MPX = 256


def _is_plain_image(path: Path, mpp: float | None) -> bool:
    """PNG/JPEG always; a TIFF when it is one level without µm/px (a tile or a crop), else a slide."""
    suffix = path.suffix.lower()
    if suffix in (".png", ".jpg", ".jpeg"):
        return True
    if suffix not in (".tif", ".tiff"):
        return False
    from ..errors import SlideError
    from ..wsi.slide import open_slide

    try:
        with open_slide(path) as s:
            return s.stored_level_count == 1 and not s.has_mpp
    except SlideError:
        return True


def _plain_image(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    import cv2
    import numpy as np

    from ..atomic import atomic_write_bytes
    from ..cells.export import write_nuclei_csv, write_nuclei_geojson
    from ..cells.features import classify, measure_nuclei
    from ..cells.methods import Classical
    from ..cells.nuclei import NucleiParams, check_he, segment_blocks
    from ..cells.stain import haematoxylin
    from ..outputs import check_output_dir
    from ..wsi.images import read_rgb
    from ..wsi.tissue import stained_pixels

    if args.mpp is None:
        raise NucleiError(
            f"{args.input.name} is a plain image without a pixel size: give --mpp (µm per pixel, "
            "e.g. 0.25 for 40x, 0.5 for 20x)"
        )
    name = args.input.stem
    check_output_dir(
        out,
        [(f"{name}.labels.png", "image"), (f"{name}.nuclei.csv", "CSV table"), (f"{name}.nuclei.geojson", "GeoJSON")],
        [args.input],
    )
    t0 = time.perf_counter()
    rgb = read_rgb(args.input)
    if rgb.shape[0] * rgb.shape[1] > MAX_IMAGE_MPX * 1e6:
        raise NucleiError(
            f"{args.input.name} has {rgb.shape[0] * rgb.shape[1] / 1e6:.0f} Mpx; plain images up to "
            f"{MAX_IMAGE_MPX} Mpx are segmented in memory: save it as a pyramidal TIFF and run it as a slide"
        )
    check_he(rgb, args.input.name)
    params = NucleiParams()
    method = _method(args)
    if isinstance(method, Classical):
        labels, stain, thr = segment_blocks(rgb, args.mpp, params=params, stain=_stain(args))
    else:
        seg = method.segment(rgb, args.mpp, stain=_stain(args), check=False)
        labels, stain, thr = seg.labels, seg.stain, seg.threshold
    n = int(labels.max(initial=0))
    if n > 65535:
        raise NucleiError(f"{n} nuclei do not fit a 16-bit label image; crop {args.input.name} into smaller images")
    h = haematoxylin(rgb, stain)
    table = classify(measure_nuclei(labels, mpp=args.mpp, h=h, tissue=stained_pixels(rgb), params=params), params)
    ok, png = cv2.imencode(".png", labels.astype(np.uint16))
    if not ok:
        raise NucleiError(f"could not encode the label image of {args.input.name}")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / f"{name}.labels.png", png.tobytes())
    write_nuclei_csv(table, out / f"{name}.nuclei.csv")
    write_nuclei_geojson(table, out / f"{name}.nuclei.geojson")
    area_mm2 = rgb.shape[0] * rgb.shape[1] * (args.mpp / 1000.0) ** 2
    return {
        "input": str(args.input),
        "kind": "image",
        "nuclei": n,
        "width": int(rgb.shape[1]),
        "height": int(rgb.shape[0]),
        "mpp": args.mpp,
        "stain": stain.source,
        "threshold": thr if thr == thr else None,
        "nuclei_model": method.describe(),
        "density_mm2": n / area_mm2 if area_mm2 else None,
        "outputs": [str(out / f"{name}{s}") for s in (".labels.png", ".nuclei.csv", ".nuclei.geojson")],
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _slide(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    import numpy as np

    from ..atomic import atomic_write_json
    from ..cells.export import write_nuclei_csv, write_nuclei_geojson, write_tiles_csv
    from ..cells.run import run_nuclei
    from ..outputs import check_output_dir
    from ..provenance import run_record
    from ..wsi.annotations import read_geojson
    from ..wsi.slide import open_slide
    from ..wsi.tiling import plan_tiles

    name = args.input.stem
    files = {
        f"{name}.nuclei-tiles.csv": "CSV table",
        f"{name}.nuclei.csv": "CSV table",
        f"{name}.nuclei.geojson": "GeoJSON",
        f"{name}.nuclei.npz": "results file",
        f"{name}.nuclei-run.json": "JSON",
    }
    check_output_dir(out, list(files.items()), [args.input, args.roi])
    t0 = time.perf_counter()
    with open_slide(args.input, mpp=args.mpp) as slide:
        slide.mpp  # noqa: B018 - fail early and clearly without µm/px
        rois = read_geojson(args.roi, bounds=slide.dimensions).annotations if args.roi else None
        grid = plan_tiles(
            slide, rois, tissue=False if args.no_tissue else None, tile_um=args.tile_um, min_tissue=args.min_tissue
        )
        if len(grid) == 0:
            where = "the ROIs ∩ tissue" if rois else "the slide's tissue"
            raise NucleiError(f"no {args.tile_um:g} µm tile lies in {where} of {slide.path.name}: nothing to segment")
        cancel = threading.Event()
        run = run_nuclei(
            slide,
            grid,
            work_mpp=args.work_mpp,
            use_cache=not args.no_cache,
            cancel=cancel,
            stain=_stain(args),
            method=_method(args),
        )
        bar = progress_bar(len(grid), quiet=args.quiet, unit="tile", desc=slide.path.name)
        try:
            for upd in run:
                if bar is not None:
                    bar.n = upd.done
                    bar.set_postfix_str(f"{upd.nuclei} nuclei", refresh=True)
        finally:  # Ctrl+C: stop after the current tile and flush the cache (a rerun resumes)
            cancel.set()
            run.close()
            if bar is not None:
                bar.close()
        res = run.results
        out.mkdir(parents=True, exist_ok=True)
        write_tiles_csv(res, out / f"{name}.nuclei-tiles.csv")
        write_nuclei_csv(res.nuclei, out / f"{name}.nuclei.csv", res)
        write_nuclei_geojson(res.nuclei, out / f"{name}.nuclei.geojson")
        res.save(out / f"{name}.nuclei.npz")
        vals = res.tile_values()
        summary = {
            "input": str(args.input),
            "kind": "slide",
            "nuclei": len(res.nuclei),
            "tiles": len(res),
            **res.counts(),
            "stain": res.meta.get("stain", {}).get("source"),
            "nuclei_model": run.method.describe(),
            "work_mpp": args.work_mpp,
            "density_mm2_median": _median(vals["density_mm2"]),
            "nc_ratio_median": _median(vals["nc_ratio_mean"]),
            "area_um2_median": float(np.median(res.nuclei.area_um2)) if len(res.nuclei) else None,
            "outputs": [str(out / f) for f in files],
            "seconds": round(time.perf_counter() - t0, 3),
        }
        record = run_record(
            "pathomics nuclei",
            sys.argv[1:],
            args_dict(args),
            summary=summary,
            slide={"path": str(slide.path), "fingerprint": res.meta.get("slide_hash"), "mpp": list(slide.mpp)},
            grid={k: v for k, v in grid.to_json().items() if k != "origins"} | {"key": grid.key()},
            nuclei=res.meta,
            cache=str(run.cache_file) if run.cache_file else None,
        )
        atomic_write_json(out / f"{name}.nuclei-run.json", json.loads(json.dumps(record, default=str)))
    if not res.complete:
        raise NucleiError(f"cancelled after {res.n_done}/{len(res)} tiles (a rerun resumes from the cache)")
    return summary


def _method(args: argparse.Namespace) -> Any:
    """The nuclei method ``--nuclei-model`` names (the default when not given)."""
    from ..cells.methods import resolve_method

    return resolve_method(args.nuclei_model)


def _stain(args: argparse.Namespace) -> Any:
    """Ruifrok's vectors when asked; None lets the image (or slide) estimate its own."""
    from ..cells.stain import StainVectors

    return StainVectors.ruifrok() if args.stain == "ruifrok" else None


def _median(v: Any) -> float | None:
    import numpy as np

    v = np.asarray(v, dtype=float)
    v = v[np.isfinite(v)]
    return float(np.median(v)) if v.size else None


def _nuclei(args: argparse.Namespace) -> int:
    if not args.input.exists():
        raise NucleiError(f"no such file: {args.input}")
    plain = _is_plain_image(args.input, args.mpp)
    if plain and args.roi:
        raise NucleiError("--roi applies to slides; a plain image is segmented whole")
    summary = _plain_image(args, args.out) if plain else _slide(args, args.out)
    if args.json:
        print_json(summary)
    else:
        extra = (
            f", median density {summary['density_mm2_median']:.0f}/mm², median N:C {summary['nc_ratio_median']:.2f}"
            if summary.get("density_mm2_median") is not None
            else ""
        )
        where = (
            f"{summary['tiles']} tiles" if summary["kind"] == "slide" else f"{summary['width']}x{summary['height']} px"
        )
        m = summary["nuclei_model"]
        print(f"{summary['nuclei']} nuclei in {where}{extra} -> {args.out} (model {m['name']}, licence {m['licence']})")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "nuclei",
        help="segment nuclei (slide ROIs or a plain image): labels, per-nucleus and per-tile tables, GeoJSON",
        description=__doc__.split("\n\n", 1)[0] if __doc__ else None,
    )
    p.add_argument("input", type=Path, help="a slide, or a plain RGB image (PNG/TIFF/JPEG; then --mpp is required)")
    p.add_argument(
        "--mpp",
        type=MPP,
        default=None,
        metavar="UM_PER_PX",
        help="µm per pixel of the input: required for a plain image; for a slide, used when the file records none",
    )
    p.add_argument("--roi", type=Path, default=None, help="QuPath GeoJSON ROIs of a slide (default: all tissue)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    add_nuclei_model_option(p)
    p.add_argument(
        "--work-mpp",
        type=bounded(float, 0.1, 2.0),
        default=0.5,
        help="resolution a slide is segmented at (default 0.5 µm/px)",
    )
    p.add_argument(
        "--stain",
        choices=("auto", "ruifrok"),
        default="auto",
        help="stain vectors: the image's own Macenko estimate when plausible (auto), or Ruifrok's",
    )
    p.add_argument(
        "--tile-um",
        type=TILE_UM,
        default=DEFAULT_TILE_UM,
        help=f"tile side in µm: the patch model's lattice (default {DEFAULT_TILE_UM:g})",
    )
    p.add_argument("--min-tissue", type=FRACTION, default=0.5, help="minimum ROI ∩ tissue fraction of a tile")
    p.add_argument("--no-tissue", action="store_true", help="tile the ROIs without tissue detection")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the nuclei cache")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(handler=_nuclei)
