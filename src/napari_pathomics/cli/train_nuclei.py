"""``pathomics train-nuclei DATA --out MODEL_DIR``: train a learned nuclei model on labelled H&E images.

DATA holds ``images/<name>.png`` with ``labels/<name>.png`` (16-bit instance labels) or QuPath
GeoJSON nucleus detections beside the images. A first run holds out a validation split by image
(at least one image): it gives the model's figures on images it did not see and, from three images
on, tunes the post-processing. The model written is then trained again on every image with the
same schedule, so that no labelled image is left out of it (``--no-refit``: keep the first run's
best epoch instead). Checkpoints go to ``.<MODEL_DIR>.train`` beside the output after every
epoch: a killed run, in either part, resumes when the same command is run again.
The model folder is written whole at the end (``cells.model_folder``), ready for
``pathomics nuclei --nuclei-model MODEL_DIR``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from ..errors import CancelledError, TrainingError
from .common import FRACTION, MPP, POSITIVE_INT, print_json, progress_bar


def _train(args: argparse.Namespace) -> int:
    import torch

    from ..cells.model_folder import validate_model_folder
    from ..training.nuclei import TrainConfig, export_model, split_by_image, train_nuclei, tune_post
    from ..training.nuclei_data import read_training_folder
    from ..wsi.normalize import MacenkoNormalizer

    samples = read_training_folder(args.data, args.mpp)
    out: Path = args.out
    if out.exists() and not (out / "manifest.json").is_file() and any(out.iterdir()):
        raise TrainingError(f"{out} exists and is not a nuclei model folder: choose another --out")
    cfg = TrainConfig(
        epochs=args.epochs,
        steps_per_epoch=args.steps_per_epoch,
        seed=args.seed,
        pretrained=not args.no_pretrained,
        val_fraction=args.val_fraction,
    )
    train, val = split_by_image(samples, cfg.val_fraction, cfg.seed)
    work = out.with_name(f".{out.name}.train")
    if args.restart and work.exists():
        shutil.rmtree(work)
    torch.set_num_threads(args.threads) if args.threads else None
    refit = bool(val) and not args.no_refit
    per_run = cfg.epochs * cfg.steps_per_epoch
    bar = progress_bar(per_run * (2 if refit else 1), quiet=args.quiet, unit="step")
    done = 0  # steps of the runs before this one

    def progress(step: int, total: int, fig: dict[str, float]) -> None:
        if bar is not None:
            bar.n = done + step
            bar.set_postfix_str(f"loss {fig['loss']:.3f}", refresh=True)

    def log(msg: str) -> None:
        if bar is not None and not bar.disable:
            bar.write(msg, file=sys.stderr)
        elif not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    try:
        net, state = train_nuclei(
            train,
            work,
            cfg,
            val=val,
            progress=progress,
            log=log,
        )
        ref = state.get("stain_reference")
        norm = MacenkoNormalizer.from_dict(ref) if ref else None
        post, figs = tune_post(net, val, cfg.mpp, norm) if val else (None, {})
        if refit:
            log(
                f"validation Dice {figs['dice']:.3f}, AJI {figs['aji']:.3f}; training again on all {len(samples)} images"
            )
            done, held_out = per_run, state
            net, state = train_nuclei(samples, work / "all", cfg, val=[], progress=progress, log=log)
            state["validation_run"] = {"best_epoch": held_out.get("best_epoch"), "history": held_out["history"]}
    except KeyboardInterrupt:
        raise CancelledError(f"training interrupted; run the same command again to resume from {work}") from None
    except ValueError as exc:
        raise TrainingError(str(exc)) from None
    finally:
        if bar is not None:
            bar.close()
    data = {
        "folder": str(args.data),
        "images": len(samples),
        "nuclei": int(sum(int(s.labels.max()) for s in samples)),
        "train": [s.name for s in (samples if refit else train)],
        "validation": [s.name for s in val],
        "refit_on_all": refit,
        "mpp": args.mpp,
    }
    export_model(
        net,
        out,
        cfg,
        state,
        name=args.name or out.name,
        licence=args.licence,
        attribution=args.attribution,
        data=data,
        figures={"validation": {**figs, "images": [s.name for s in val]}} if figs else {},
        post=post,
    )
    probs = validate_model_folder(out)
    if probs:
        raise TrainingError(f"the written model folder does not validate: {probs[0]}")
    shutil.rmtree(work, ignore_errors=True)
    summary = {"model": str(out), "images": len(samples), "validation": figs, "best_epoch": state.get("best_epoch")}
    if args.json:
        print_json(summary)
    else:
        v = f" (validation Dice {figs['dice']:.3f}, AJI {figs['aji']:.3f} on {len(val)} images)" if figs else ""
        print(f"nuclei model -> {out}{v}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train-nuclei",
        help="train a learned nuclei model on labelled H&E images (images/ + labels/ or GeoJSON)",
        description=__doc__.split("\n\n", 1)[0] if __doc__ else None,
    )
    p.add_argument("data", type=Path, help="folder with images/<name>.png and labels/<name>.png (or <name>.geojson)")
    p.add_argument("--out", type=Path, required=True, help="model folder to write")
    p.add_argument("--mpp", type=MPP, default=0.25, help="µm per pixel of the images (default 0.25, i.e. 40x)")
    p.add_argument("--epochs", type=POSITIVE_INT, default=40, help="epochs of 40 steps (default 40)")
    p.add_argument("--steps-per-epoch", type=POSITIVE_INT, default=40, help="batches of 8 crops per epoch (default 40)")
    p.add_argument(
        "--val-fraction",
        type=FRACTION,
        default=0.15,
        help="share of the images held out to pick the best epoch (and, from 3 images on, tune post-processing); default 0.15, at least one; 0: none",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default=None, help="model name (default: the folder name)")
    p.add_argument(
        "--licence", default="user data: see its licence", help="licence of the training data, recorded in the model"
    )
    p.add_argument("--attribution", default="", help="attribution the training data requires")
    p.add_argument("--threads", type=POSITIVE_INT, default=None, help="torch threads (default: all cores)")
    p.add_argument(
        "--no-refit",
        action="store_true",
        help="ship the held-out run's best epoch instead of training again on all images",
    )
    p.add_argument("--no-pretrained", action="store_true", help="start from random weights (no train extra needed)")
    p.add_argument("--restart", action="store_true", help="discard the checkpoint of an earlier run and start over")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(handler=_train)
