"""Nuclei on real expert outlines: pixel Dice, AJI and PQ per image and mean, and speed.

Data (``--data``, default ``../shared/data/nuclei``; benchmarks may read it, tests never do):

* ``monuseg-train``: the 13 MoNuSeg 2018 training images with instance labels (40×, 0.25 µm/px,
  CC BY-NC-SA 4.0, measured only);
* ``dsb2018-he``: the held-out split of the CC0 DSB 2018 H&E tiles (``dsb2018_heldout.txt`` beside
  this script: tiles that share no colour profile or content with any other tile, so no source
  image is on both sides of the split), at each tile's µm/px estimate from its manifest.

For every method: the shipped learned models, ``classical`` (cells.nuclei), ``otsu`` (the plain
haematoxylin Otsu + distance-transform watershed baseline). Speed is Mpx/s of 40× input
(segmentation including post-processing, all threads of this machine) on the MoNuSeg images.

``--train-own`` trains with ``pathomics train-nuclei`` on part of monuseg-train and measures on the
rest, cross-validated by image (``--folds``, default 3; ``--epochs`` per fold).

Run: python benchmarks/bench_nuclei.py [--data DIR] [--methods otsu,classical,monuseg,MODEL_DIR]
     python benchmarks/bench_nuclei.py --train-own [--folds 3] [--epochs N]
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from napari_pathomics.cells.methods import resolve_method
from napari_pathomics.cells.metrics import aji, dice, pq

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parents[1] / "shared" / "data" / "nuclei"


def _read(img: Path, lab: Path) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(Image.open(img).convert("RGB")), np.asarray(Image.open(lab)).astype(np.int32)


def monuseg(data: Path) -> list[tuple[str, np.ndarray, np.ndarray, float]]:
    d = data / "monuseg-train"
    return [(p.stem, *_read(d / "images" / p.name, p), 0.25) for p in sorted((d / "labels").glob("*.png"))]


def dsb_heldout(data: Path) -> list[tuple[str, np.ndarray, np.ndarray, float]]:
    d = data / "dsb2018-he"
    rows = {r["file_stem"]: r for r in csv.DictReader(open(d / "manifest.tsv"), delimiter="\t")}
    held = (HERE / "dsb2018_heldout.txt").read_text().split()
    return [
        (
            s,
            *_read(d / "images" / f"{s}.png", d / "labels" / f"{s}.png"),
            float(rows[s]["est_um_per_px_if_median_nucleus_6um"]),
        )
        for s in held
    ]


def measure(method_name: str, items: list, label: str, verbose: bool = True) -> dict[str, float]:
    m = resolve_method(method_name)
    t0 = time.perf_counter()
    if items:  # load the model and warm torch up once: throughput is per image, the load is per process
        m.segment(items[0][1][:256, :256], items[0][3], check=False)
    load_s = time.perf_counter() - t0
    rows, px, secs = [], 0, 0.0
    for name, rgb, truth, mpp in items:
        t0 = time.perf_counter()
        pred = m.segment(rgb, mpp, check=False).labels
        secs += time.perf_counter() - t0
        px += rgb.shape[0] * rgb.shape[1]
        r = {"image": name, "dice": dice(truth, pred), "aji": aji(truth, pred), "pq": pq(truth, pred)}
        rows.append(r)
        if verbose:
            print(
                f"  {label:14s} {method_name:10s} {name:28s} Dice {r['dice']:.3f}  AJI {r['aji']:.3f}  PQ {r['pq']:.3f}"
            )
    mean = {k: float(np.mean([r[k] for r in rows])) for k in ("dice", "aji", "pq")}
    mean["mpx_s"] = px / secs / 1e6
    desc = m.describe()
    print(
        f"{label:14s} {method_name:10s} MEAN Dice {mean['dice']:.3f}  AJI {mean['aji']:.3f}  PQ {mean['pq']:.3f}"
        f"  ({len(rows)} images; {mean['mpx_s']:.2f} Mpx/s after a {load_s:.1f} s load; licence {desc['licence']})",
        flush=True,
    )
    return mean


def train_own(data: Path, folds: int, epochs: int | None, threads: int | None = None, keep: Path | None = None) -> None:
    """Cross-validated train-nuclei on monuseg-train: train on the other folds, measure on one."""
    items = monuseg(data)
    names = [it[0] for it in items]
    res = []
    for k in range(folds):
        test = set(names[k::folds])
        with tempfile.TemporaryDirectory() as tmp:
            t = Path(tmp)
            for sub in ("images", "labels"):
                (t / "data" / sub).mkdir(parents=True)
                for n in names:
                    if n not in test:
                        shutil.copy(data / "monuseg-train" / sub / f"{n}.png", t / "data" / sub / f"{n}.png")
            cmd = [
                sys.executable,
                "-m",
                "napari_pathomics.cli",
                "train-nuclei",
                str(t / "data"),
                "--out",
                str(t / "model"),
                "--mpp",
                "0.25",
            ]
            if epochs:
                cmd += ["--epochs", str(epochs)]
            if threads:
                cmd += ["--threads", str(threads)]
            t0 = time.time()
            subprocess.run(cmd, check=True)
            print(
                f"fold {k + 1}/{folds}: trained on {len(names) - len(test)} images in {time.time() - t0:.0f} s",
                flush=True,
            )
            res.append(measure(str(t / "model"), [it for it in items if it[0] in test], f"own fold {k + 1}"))
            if keep is not None:  # the fold's model, to try inference settings on its unseen images later
                shutil.copytree(t / "model", keep / f"fold{k + 1}", dirs_exist_ok=True)
                (keep / f"fold{k + 1}.test.txt").write_text("\n".join(sorted(test)) + "\n")
    n = [len(names[k::folds]) for k in range(folds)]
    mean = {key: float(np.average([r[key] for r in res], weights=n)) for key in ("dice", "aji", "pq")}
    print(f"train-own cross-validated ({folds} folds by image, 13 monuseg-train images): " + json.dumps(mean))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--methods", default="otsu,classical,monuseg")
    ap.add_argument("--sets", default="monuseg,dsb")
    ap.add_argument("--train-own", action="store_true")
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch threads of each training")
    ap.add_argument("--quiet", action="store_true", help="means only")
    ap.add_argument("--keep", type=Path, default=None, help="with --train-own: keep each fold's model here")
    args = ap.parse_args()
    if not (args.data / "monuseg-train" / "labels").is_dir():
        sys.exit(
            f"bench_nuclei: no {args.data / 'monuseg-train' / 'labels'}; give --data (the shared data/nuclei folder)"
        )
    if args.train_own:
        train_own(args.data, args.folds, args.epochs, args.threads, args.keep)
        return
    sets = {"monuseg": ("monuseg-train", monuseg), "dsb": ("dsb held-out", dsb_heldout)}
    for s in args.sets.split(","):
        label, loader = sets[s]
        items = loader(args.data)
        for m in args.methods.split(","):
            measure(m, items, label, verbose=not args.quiet)


if __name__ == "__main__":
    main()
