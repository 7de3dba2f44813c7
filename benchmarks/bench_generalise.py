"""Does the tissue classifier generalise better across sources with stronger stain augmentation,
Macenko-normalised inputs, or test-time augmentation? Measured on a split by source.

Part 1, a split by source of the vendored real NCT-CRC-HE tiles (``data/tiles/nct-crc-he`` and
``nct-crc-he-extra``): NCT-CRC-HE-100K tiles (file names without ``TCGA``: 9 + 3) and CRC-VAL-HE-7K
tiles (``TCGA`` in the name: 32 + 2) come from different centres. Each recipe is trained on one
source and tested on the other, both ways, from ImageNet efficientnet_lite0 (as ``train-patch``
starts). Recipes (``training.augment``):

* ``macenko``            Macenko-normalised inputs (train and test), the default light HED jitter (the shipped recipe)
* ``raw``                no normalisation, light HED jitter
* ``raw+hed-strong``     no normalisation, strong HED jitter (σ 0.2, bias 0.05: Tellez et al.'s HED-strong)
* ``macenko+hed-strong`` Macenko inputs and strong HED jitter
* ``macenko+jitter-ref`` Macenko inputs; training views recomposed with jittered stain vectors (±12°) and
                         concentrations (±30 %): Macenko with a jittered reference

each tested plainly and with test-time augmentation (the mean of the 8 flip/90° views' pooled
features, as ``Engine(tta="d4")`` does). By default the linear-probe stage of the recipe only
(frozen ImageNet features, seeds averaged: fast); ``--finetune`` runs the whole recipe
(probe + partial fine-tune, minutes per fit on 2 cores).

Part 2, the shipped default model under a new-centre shift (bench_adapt's stain-vector rotation,
gamma, blur and JPEG) on every vendored tile (randomly cropped/turned, several draws), with
``Engine`` TTA off / flips / d4: accuracy and model time per tile. Caveat: the shipped model was
trained on the 41 unshifted ``nct-crc-he`` tiles, so part 2 measures robustness to the shift, not
generalisation to unseen tissue; part 1 is the honest split.

Run: python benchmarks/bench_generalise.py [--seeds 3] [--finetune] [--skip-part1] [--skip-part2]

Figures and what they decided (the shipped recipe, TTA off by default): ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_adapt import new_centre  # noqa: E402 - the same shift as the adaptation benchmark
from napari_pathomics.bundle import Bundle  # noqa: E402
from napari_pathomics.cohort.generator import augment_tile as crop_turn  # noqa: E402
from napari_pathomics.inference.backbones import PatchModel  # noqa: E402
from napari_pathomics.inference.engine import TTA_MODES, Engine, tta_views  # noqa: E402
from napari_pathomics.inference.preprocess import preprocess_batch, resize_batch_uint8  # noqa: E402
from napari_pathomics.inference.stain import MacenkoNormalizer  # noqa: E402
from napari_pathomics.resources import DATA_DIR, DEFAULT_BUNDLE  # noqa: E402
from napari_pathomics.training._augment import AugmentConfig  # noqa: E402
from napari_pathomics.training.patch import TrainConfig, _batched, _plain, fit_recipe  # noqa: E402
from napari_pathomics.wsi.images import IMAGE_SUFFIXES, read_rgb  # noqa: E402

CLASSES = ["ADI", "BACK", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM"]
ROOTS = (DATA_DIR / "tiles" / "nct-crc-he", DATA_DIR / "tiles" / "nct-crc-he-extra")
LIGHT = AugmentConfig()
RECIPES = {
    "macenko": (True, LIGHT),
    "raw": (False, LIGHT),
    "raw+hed-strong": (False, replace(LIGHT, hed_sigma=0.2, hed_bias=0.05)),
    "macenko+hed-strong": (True, replace(LIGHT, hed_sigma=0.2, hed_bias=0.05)),
    "macenko+jitter-ref": (True, replace(LIGHT, macenko_jitter_deg=12.0, macenko_jitter_conc=0.3)),
}


def load() -> tuple[list[np.ndarray], np.ndarray, np.ndarray, list[str]]:
    imgs, ys, src, names = [], [], [], []
    for root in ROOTS:
        for ci, c in enumerate(CLASSES):
            folder = root / c
            for p in sorted(folder.glob("*")) if folder.is_dir() else []:
                if p.suffix.lower() in IMAGE_SUFFIXES:
                    img = read_rgb(p)
                    imgs.append(resize_batch_uint8(img[None], 224)[0] if img.shape[:2] != (224, 224) else img)
                    ys.append(ci)
                    src.append("VAL7K" if "TCGA" in p.name else "NCT100K")
                    names.append(f"{root.name}/{c}/{p.name}")
    return imgs, np.array(ys), np.array(src), names


def _features(model, x):  # noqa: ANN001, ANN202 - torch module and tensor
    import torch

    with torch.inference_mode():
        return PatchModel(model).features(x).float()


def predict(model, tiles: list[np.ndarray], tta: str) -> np.ndarray:  # noqa: ANN001
    """Class index per tile: the classifier on the mean pooled features over the TTA views."""
    import torch

    clf = model.get_classifier()
    plain = np.stack([_plain(t, 224) for t in tiles])

    def fwd(x):  # noqa: ANN001, ANN202
        f = sum(_features(model, v.contiguous(memory_format=torch.channels_last)) for v in tta_views(x, tta))
        with torch.inference_mode():
            return clf(f / TTA_MODES[tta])

    return _batched(fwd, plain, 224, 32).argmax(1).numpy()


def part1(args: argparse.Namespace) -> None:
    imgs, y, src, _ = load()
    norm = MacenkoNormalizer.from_reference_file()
    normed = [norm.normalize(t)[0] for t in imgs]
    print(
        f"# part 1: split by source; NCT100K {int(np.sum(src == 'NCT100K'))} tiles, VAL7K {int(np.sum(src == 'VAL7K'))} "
        f"tiles; {'whole recipe (probe + fine-tune)' if args.finetune else 'linear probe stage'}, "
        f"{args.seeds} seed(s)"
    )
    print(
        f"{'recipe':<20s} {'TTA':>4s} {'NCT→VAL':>8s} {'VAL→NCT':>8s} {'pooled':>7s}  (accuracy; pooled = all test tiles "
        "of both directions)"
    )
    for name, (mac, aug) in RECIPES.items():
        tiles = normed if mac else imgs
        cfg = TrainConfig(augment=aug, epochs=TrainConfig().epochs if args.finetune else 0, threads=2)
        hits: dict[str, dict[str, list[float]]] = {t: {"NCT100K": [], "VAL7K": []} for t in ("none", "d4")}
        t0 = time.perf_counter()
        for seed in range(args.seeds):
            for train, test in (("NCT100K", "VAL7K"), ("VAL7K", "NCT100K")):
                tr, te = np.flatnonzero(src == train), np.flatnonzero(src == test)
                model = fit_recipe([tiles[i] for i in tr], y[tr], len(CLASSES), cfg, seed, lambda _m: None)
                keep = np.isin(y[te], y[tr])  # a class the training source lacks (BACK) cannot be right
                for tta in ("none", "d4"):
                    pred = predict(model, [tiles[i] for i in te[keep]], tta)
                    hits[tta][test].append(float(np.mean(pred == y[te][keep])))
        for tta in ("none", "d4"):
            a, b = np.mean(hits[tta]["VAL7K"]), np.mean(hits[tta]["NCT100K"])
            n_a = int(np.sum((src == "VAL7K") & np.isin(y, y[src == "NCT100K"])))
            n_b = int(np.sum((src == "NCT100K") & np.isin(y, y[src == "VAL7K"])))
            pooled = (a * n_a + b * n_b) / (n_a + n_b)
            print(
                f"{name:<20s} {tta:>4s} {a:8.3f} {b:8.3f} {pooled:7.3f}"
                + (f"   ({time.perf_counter() - t0:.0f} s)" if tta == "d4" else ""),
                flush=True,
            )


def part2(args: argparse.Namespace) -> None:
    import torch

    imgs, y, _, _ = load()
    bundle = Bundle.load(DEFAULT_BUNDLE)
    rng = np.random.default_rng(5)
    views, truth = [], []
    for _ in range(args.draws):
        for t, c in zip(imgs, y):
            views.append(crop_turn(t, rng, (0.7, 1.0), 0.03))
            truth.append(c)
    shifted = [new_centre(v, angle_deg=30, gamma=1.3, blur=2.0, jpeg=40) for v in views]
    truth_a = np.array(truth)
    print(
        f"\n# part 2: the shipped model on {len(views)} views of the {len(imgs)} vendored tiles "
        f"({args.draws} random crops/turns each)"
    )
    print(f"{'TTA':>6s} {'views':>5s} {'acc (as is)':>11s} {'acc (new centre)':>16s} {'ms/tile':>8s}")
    for tta in TTA_MODES:
        eng = Engine(bundle, device="cpu", amp="fp32", tta=tta)
        eng.predict(preprocess_batch(np.stack(views[:8]), bundle))  # warm-up: model build, first kernels
        out = {}
        ms = []
        for kind, data in (("plain", views), ("shift", shifted)):
            probs = []
            for i in range(0, len(data), 32):
                x = preprocess_batch(np.stack(data[i : i + 32]), bundle).contiguous(memory_format=torch.channels_last)
                t = time.perf_counter()
                probs.append(eng.predict(x).probs)
                ms.append((time.perf_counter() - t) / x.shape[0] * 1000)
            out[kind] = float(np.mean(np.concatenate(probs).argmax(1) == truth_a))
        print(
            f"{tta:>6s} {TTA_MODES[tta]:5d} {out['plain']:11.3f} {out['shift']:16.3f} {np.median(ms):8.1f}", flush=True
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--draws", type=int, default=3, help="part 2: random crops/turns per tile")
    ap.add_argument("--finetune", action="store_true", help="part 1: the whole recipe, not just the probe")
    ap.add_argument("--skip-part1", action="store_true")
    ap.add_argument("--skip-part2", action="store_true")
    ap.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    args = ap.parse_args()
    for k in [k for k in RECIPES if k not in args.recipes]:
        RECIPES.pop(k)
    if not args.skip_part1:
        part1(args)
    if not args.skip_part2:
        part2(args)


if __name__ == "__main__":
    main()
