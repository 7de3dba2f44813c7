"""Model subcommands: ``validate-bundle``, ``train-patch``, ``classify-tiles``."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from ..errors import BundleError
from ..resources import DEFAULT_BUNDLE
from ..units import DEFAULT_MPP, DEFAULT_TILE_PX, DEFAULT_TILE_UM
from .common import BATCH, COUNT, MPP, POSITIVE_INT, SEED, THREADS, TILE_UM, bounded, print_json

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the model commands to the ``pathomics`` parser."""
    p = subparsers.add_parser(
        "validate-bundle",
        help="check a model/signature bundle (schema, hashes, safetensors, no pickles)",
        description="Check a bundle folder or zip and say precisely what is wrong.",
    )
    p.add_argument("path", help="bundle folder, its manifest.json, or a .zip of it")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument(
        "--no-model", action="store_true", help="skip building the model and loading its weights (values are checked)"
    )
    p.set_defaults(handler=_validate_bundle)

    p = subparsers.add_parser(
        "train-patch",
        help="train the patch tissue classifier from folder-per-class tiles and write a bundle",
        description="Reproducible (seeded) training with cross-validation; writes manifest, "
        "safetensors weights and a run record into the bundle folder.",
    )
    p.add_argument("tile_dir", help="folder with one sub-folder of PNG/TIFF/JPEG tiles per class")
    p.add_argument("--out", required=True, help="bundle folder to write")
    p.add_argument("--arch", default="efficientnet_lite0", help="timm architecture (default efficientnet_lite0)")
    p.add_argument("--no-pretrained", action="store_true", help="start from random weights instead of ImageNet")
    p.add_argument("--epochs", type=COUNT, default=8, help="fine-tuning epochs (0 = linear probe only)")
    p.add_argument("--views-per-epoch", type=POSITIVE_INT, default=2, help="augmented views of each tile per epoch")
    p.add_argument("--probe-views", type=COUNT, default=6, help="augmented views per tile for the linear probe")
    p.add_argument("--finetune-blocks", type=COUNT, default=2, help="last stages of the backbone to fine-tune")
    p.add_argument("--batch-size", type=BATCH, default=16)
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument(
        "--cv",
        default="loo,source",
        help="comma-separated cross-validations: loo (linear probe), source (per centre), kfold, none",
    )
    p.add_argument("--kfold", type=bounded(int, 2, 100), default=5, help="folds for --cv kfold")
    p.add_argument("--tile-um", type=TILE_UM, default=DEFAULT_TILE_UM, help="tile side in µm")
    p.add_argument("--mpp", type=MPP, default=DEFAULT_MPP, help="µm per pixel of the training tiles")
    p.add_argument("--input-size", type=bounded(int, 8, 1024), default=DEFAULT_TILE_PX, help="model input side in px")
    p.add_argument("--no-macenko", action="store_true", help="no Macenko stain normalisation")
    p.add_argument("--stain-reference", default=None, help="reference image (default: the shipped Ref.png)")
    p.add_argument("--high-risk", default="DEB,STR,TUM", help="comma-separated high-risk classes")
    p.add_argument("--name", default="pathomics-default")
    p.add_argument("--version", dest="bundle_version", default="1.0.0")
    p.add_argument("--threads", type=THREADS, default=2)
    p.set_defaults(handler=_train_patch)

    p = subparsers.add_parser(
        "classify-tiles",
        help="classify loose tile images with a bundle",
        description="Tiles (PNG/TIFF/JPEG, any size) are taken at the bundle's µm/px, resized to its "
        "input size, Macenko-normalised and classified.",
    )
    p.add_argument("path", help="image file or folder (searched recursively)")
    p.add_argument("--bundle", default=None, help="bundle folder or zip (default: the shipped model)")
    p.add_argument("--json", action="store_true", help="print JSON records")
    p.add_argument("--batch-size", type=BATCH, default=32)
    p.add_argument("--threads", type=THREADS, default=2)
    p.set_defaults(handler=_classify_tiles)

    p = subparsers.add_parser(
        "import-model",
        help="turn a timm/Hugging Face or WSInfer model folder into a validated bundle (nothing from it runs)",
        description="Reads config.json and safetensors weights only; pickled or TorchScript weights are refused "
        "with the command that converts them on a trusted machine.",
    )
    p.add_argument("src", help="model folder: config.json + model.safetensors")
    p.add_argument("--out", required=True, help="new bundle folder")
    p.add_argument("--name", default=None, help="bundle name (default: the folder's name)")
    p.add_argument(
        "--tile-um",
        type=TILE_UM,
        default=None,
        help="tile side in µm (WSInfer: patch px × µm/px; timm: input px × --mpp)",
    )
    p.add_argument(
        "--mpp", type=MPP, default=None, help=f"µm/px the model reads at (default: the source's, else {DEFAULT_MPP:g})"
    )
    p.add_argument(
        "--color", action="append", default=[], metavar="CLASS=#RRGGBB", help="a class's colour (repeatable)"
    )
    p.add_argument("--gradcam-layer", default=None, help="Grad-CAM target layer (default: the last feature stage)")
    p.add_argument("--high-risk", default=None, help="comma-separated high-risk classes (default: tumour-like names)")
    p.add_argument("--macenko", action="store_true", help="Macenko-normalise tiles onto the shipped reference first")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_import_model)


def _validate_bundle(args: argparse.Namespace) -> int:
    from ..bundle import Bundle, validate_bundle
    from ..inference.checks import runtime_problems, value_problems

    problems = validate_bundle(args.path)
    if not problems:  # the values every run checks, and (unless --no-model) the model built and run once
        b = Bundle.load(args.path)
        problems = value_problems(b) if args.no_model else runtime_problems(b)
    if problems:
        if args.json:
            print_json({"path": str(args.path), "valid": False, "problems": problems})
        else:
            print(f"{args.path}: INVALID bundle ({len(problems)} problem{'s' if len(problems) > 1 else ''})")
            for prob in problems:
                print(f"  - {prob}")
        return BundleError.exit_code
    b = Bundle.load(args.path)
    summary = {
        "path": str(args.path),
        "valid": True,
        "name": b.name,
        "version": b.version,
        "bundle_id": b.bundle_id,
        "schema_version": b.manifest["schema_version"],
        "architecture": b.architecture,
        "classes": b.class_names,
        "high_risk_classes": b.high_risk_classes,
        "input_size": b.input_size,
        "tile_um": b.tile_um,
        "mpp": b.mpp,
        "macenko": b.macenko is not None,
        "signature": b.manifest.get("signature"),
        "files": sorted(b.file_hashes),
    }
    if args.json:
        print_json(summary)
    else:
        print(f"{args.path}: valid bundle {b.name} {b.version} (id {b.bundle_id}, schema {summary['schema_version']})")
        print(f"  model: {b.architecture}, {len(b.class_names)} classes {', '.join(b.class_names)}")
        print(
            f"  input: {b.input_size} px = {b.tile_um:g} µm at {b.mpp:g} µm/px; Macenko: {'yes' if b.macenko else 'no'}"
        )
        print(f"  high-risk classes: {', '.join(b.high_risk_classes) or '-'}; signature: {summary['signature'] or '-'}")
        print(f"  files (sha256 verified): {', '.join(summary['files'])}")
    return 0


def _train_patch(args: argparse.Namespace) -> int:
    from ..outputs import check_output_dir
    from ..training.patch import TrainConfig, train_patch_model

    check_output_dir(args.out, [], inputs=[args.tile_dir])  # before any training: the bundle folder can be written

    cfg = TrainConfig(
        arch=args.arch,
        pretrained=not args.no_pretrained,
        seed=args.seed,
        input_size=args.input_size,
        tile_um=args.tile_um,
        mpp=args.mpp,
        probe_views=args.probe_views,
        epochs=args.epochs,
        views_per_epoch=args.views_per_epoch,
        batch_size=args.batch_size,
        finetune_blocks=args.finetune_blocks,
        cv=tuple(c.strip() for c in args.cv.split(",") if c.strip()),
        kfold=args.kfold,
        macenko=not args.no_macenko,
        stain_reference=args.stain_reference,
        high_risk_classes=tuple(c.strip() for c in args.high_risk.split(",") if c.strip()),
        threads=args.threads,
    )
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    out = train_patch_model(
        args.tile_dir, args.out, cfg, name=args.name, version=args.bundle_version, log=log, argv=sys.argv[1:]
    )
    print(out)
    return 0


def _import_model(args: argparse.Namespace) -> int:
    from ..inference.importers import ImportOptions, import_model
    from ..outputs import check_output_dir

    check_output_dir(args.out, [], inputs=[args.src])  # a file (a slide, the source's config) is no bundle folder

    colors = {}
    for item in args.color:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise BundleError(f"--color wants CLASS=#RRGGBB, got {item!r}")
        if not re.fullmatch(r"#[0-9A-Fa-f]{6}", value.strip()):
            raise BundleError(f"--color {name}: {value!r} is not a #RRGGBB colour (e.g. {name}=#D62728)")
        colors[name] = value.strip()
    opts = ImportOptions(
        name=args.name,
        tile_um=args.tile_um,
        mpp=args.mpp,
        colors=colors,
        gradcam_layer=args.gradcam_layer,
        macenko=args.macenko,
        high_risk=[c.strip() for c in args.high_risk.split(",") if c.strip()] if args.high_risk else None,
    )
    b = import_model(args.src, args.out, opts)
    summary = {
        "bundle": str(b.path),
        "name": b.name,
        "bundle_id": b.bundle_id,
        "architecture": b.architecture,
        "classes": b.class_names,
        "input_size": b.input_size,
        "tile_um": b.tile_um,
        "mpp": b.mpp,
        "gradcam_target_layer": b.gradcam_target_layer,
        "high_risk_classes": b.high_risk_classes,
    }
    if args.json:
        print_json(summary)
    else:
        print(
            f"{args.src} -> bundle {b.path} ({b.architecture}, {len(b.class_names)} classes "
            f"{', '.join(b.class_names)}; {b.input_size} px = {b.tile_um:g} µm at {b.mpp:g} µm/px; "
            f"Grad-CAM on {b.gradcam_target_layer})"
        )
    return 0


def _classify_tiles(args: argparse.Namespace) -> int:
    import torch  # heavy

    from ..bundle import Bundle
    from ..inference.classify import classify_files
    from ..wsi.images import list_images

    torch.set_num_threads(max(1, args.threads))
    bundle = Bundle.load(Path(args.bundle) if args.bundle else DEFAULT_BUNDLE)
    files = list_images(args.path)
    records = classify_files(files, bundle, batch_size=args.batch_size)
    if args.json:
        print_json(records)
    else:
        for r in records:
            p = r["probabilities"][r["class"]]
            print(f"{r['file']}\t{r['class']}\t{p:.3f}")
    return 0
