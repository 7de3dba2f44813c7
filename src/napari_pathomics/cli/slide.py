"""``pathomics info`` and ``pathomics tiles``: what a slide is, and which tiles a run would read."""

from __future__ import annotations

import argparse

from ..units import DEFAULT_MPP, DEFAULT_TILE_UM
from ..wsi.annotations import read_geojson
from ..wsi.slide import open_slide
from ..wsi.tiling import DEFAULT_MIN_TISSUE, plan_tiles
from .common import FRACTION, MPP, TILE_UM, add_slide_mpp_option, print_json


def _info(args: argparse.Namespace) -> int:
    with open_slide(args.slide, mpp=args.slide_mpp) as slide:
        info = slide.info()
    if args.json:
        print_json(info)
        return 0
    print(f"{info['path']}")
    print(f"  vendor           {info['vendor'] or 'unknown'}")
    print(f"  level 0          {info['width']} x {info['height']} px")
    mpp = f"{info['mpp_x']:.4f} x {info['mpp_y']:.4f} µm/px" if info["mpp_x"] else "unknown (use --slide-mpp)"
    print(f"  pixel size       {mpp}")
    print(f"  objective        {info['objective_power'] or 'unknown'}")
    for i, ((w, h), d) in enumerate(zip(info["level_dimensions"], info["level_downsamples"])):
        print(f"  level {i:<2}         {w} x {h} px  (downsample {d:g})")
    print(f"  associated       {', '.join(info['associated_images']) or 'none'}")
    return 0


def _tiles(args: argparse.Namespace) -> int:
    with open_slide(args.slide, mpp=args.slide_mpp) as slide:
        rois = read_geojson(args.roi, bounds=slide.dimensions).annotations if args.roi else None
        grid = plan_tiles(
            slide,
            rois,
            tissue=False if args.no_tissue else None,
            tile_um=args.tile_um,
            mpp=args.mpp,
            min_tissue=args.min_tissue,
        )
    if args.json:
        print_json(grid.to_json())
    else:
        print(
            f"{len(grid)} tiles of {grid.tile_um:g} µm ({grid.tile_px} px at {grid.mpp:g} µm/px, "
            f"{grid.tile_size_l0:.2f} level-0 px)"
        )
        if grid.params.get("unreadable_mm2"):
            print(
                f"  {grid.params['unreadable_mm2']:.3g} mm² of the slide could not be decoded; "
                "tiles there are kept and will be reported as failed"
            )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="show a slide's size, levels, pixel size and metadata")
    p.add_argument("slide")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_slide_mpp_option(p)
    p.set_defaults(handler=_info)

    p = sub.add_parser("tiles", help="count the tiles inside ROI ∩ tissue (what a run would read)")
    p.add_argument("slide")
    p.add_argument("--roi", help="QuPath GeoJSON with the ROIs (default: all tissue)")
    p.add_argument(
        "--tile-um", type=TILE_UM, default=DEFAULT_TILE_UM, help=f"tile side in µm (default {DEFAULT_TILE_UM:g})"
    )
    p.add_argument("--mpp", type=MPP, default=DEFAULT_MPP, help=f"read resolution in µm/px (default {DEFAULT_MPP:g})")
    p.add_argument(
        "--min-tissue",
        type=FRACTION,
        default=DEFAULT_MIN_TISSUE,
        help="minimum fraction of a tile inside ROI ∩ tissue (default 0.5)",
    )
    p.add_argument("--no-tissue", action="store_true", help="tile the ROIs without tissue detection")
    p.add_argument("--json", action="store_true", help="print JSON with tile origins (level-0 px)")
    add_slide_mpp_option(p)
    p.set_defaults(handler=_tiles)
