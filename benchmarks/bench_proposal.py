"""Tumour-region proposal: Dice at tile resolution on slides with known tumour regions.

Each slide is a mosaic of the vendored NCT-CRC-HE tiles (``cohort.generator``'s tile loading
and rendering: crops, flips, rotations, colour jitter) written as a pyramidal SVS
(``wsi.synthetic``): an irregular tumour region (a thresholded smooth random field, sometimes
two lobes, sometimes with a stromal hole) inside other tissue (stroma, muscle, normal mucosa,
lymphocytes, fat, debris, mucus) with a glass margin. The bundled patch model runs over the
tissue, ``results.regions.propose_tumour`` proposes, and the proposal's lattice cells are
compared with the true tumour cells.

Caveat: the bundled model was fine-tuned on these very 41 tiles (augmented), so this measures
the proposal (smoothing, threshold, polygons) on top of a model that knows its tiles, not how
well the model generalises to new slides.

Run: python benchmarks/bench_proposal.py [--slides 4] [--side 16] [--hard] [--noise 0.25]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from napari_pathomics.bundle import Bundle
from napari_pathomics.cohort.generator import CLASSES, CohortSpec, load_source_tiles, render_patient
from napari_pathomics.inference.engine import Engine
from napari_pathomics.resources import DEFAULT_BUNDLE
from napari_pathomics.results.regions import propose_tumour
from napari_pathomics.units import DEFAULT_MPP
from napari_pathomics.wsi.slide import open_slide
from napari_pathomics.wsi.synthetic import write_slide
from napari_pathomics.wsi.tiling import plan_for_bundle

OTHER = ("STR", "MUS", "NORM", "LYM", "ADI", "DEB", "MUC")


def layout(k: int, rng: np.random.Generator) -> np.ndarray:
    """(k, k) class indices: glass margin, an irregular tumour region, other tissue in patches."""
    labels = np.full((k, k), CLASSES.index("STR"), dtype=np.int64)
    other = cv2.GaussianBlur(rng.standard_normal((k, k)).astype(np.float32), (0, 0), k / 8)
    ranks = np.argsort(np.argsort(other.ravel())).reshape(k, k) * len(OTHER) // (k * k)
    for j, c in enumerate(OTHER):
        labels[ranks == j] = CLASSES.index(c)
    tum = cv2.GaussianBlur(rng.standard_normal((k, k)).astype(np.float32), (0, 0), k / 7)
    yy, xx = np.mgrid[0:k, 0:k]
    cy, cx = rng.uniform(0.35, 0.65, 2) * k
    tum -= 0.35 * np.hypot(yy - cy, xx - cx) / k  # one main mass, irregular edge
    mask = tum > np.quantile(tum, 1 - rng.uniform(0.2, 0.4))
    if rng.random() < 0.5:  # a stromal hole inside the tumour
        ys, xs = np.nonzero(mask)
        i = rng.integers(len(ys))
        mask[max(0, ys[i] - 1) : ys[i] + 1, max(0, xs[i] - 1) : xs[i] + 1] = False
    labels[mask] = CLASSES.index("TUM")
    border = np.zeros((k, k), bool)
    border[0, :] = border[-1, :] = border[:, 0] = border[:, -1] = True
    labels[border & (rng.random((k, k)) < 0.6)] = CLASSES.index("BACK")
    return labels


def dice(a: np.ndarray, b: np.ndarray) -> float:
    s = int(a.sum() + b.sum())
    return 1.0 if s == 0 else 2.0 * float((a & b).sum()) / s


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--slides", type=int, default=4)
    ap.add_argument("--side", type=int, default=16, help="tiles per side")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument(
        "--noise",
        type=float,
        default=0.0,
        help="share of tiles whose prediction is replaced by another tile's (a model about "
        "1 - noise accurate, like the bundled one on unseen tiles: 0.25)",
    )
    ap.add_argument(
        "--hard",
        action="store_true",
        help="harder tiles: crops down to half a tile (rescaled), ±15 %% colour jitter, blur",
    )
    args = ap.parse_args()
    bundle = Bundle.load(DEFAULT_BUNDLE)
    engine = Engine(bundle, device="cpu")
    tiles = load_source_tiles()
    spec = CohortSpec(tiles_per_side=args.side)
    if args.hard:
        spec.crop_scale, spec.color_jitter = (0.5, 1.0), 0.15
    settings = [(0.5, 1.0), (0.5, 0.0), (0.4, 1.0), (0.6, 1.0), (0.5, 1.5)]
    scores: dict[tuple[float, float], list[float]] = {s: [] for s in settings}
    argmax_scores: list[float] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.slides):
            rng = np.random.default_rng([args.seed, i])
            labels = layout(args.side, rng)
            img = render_patient(labels, tiles, rng, spec)
            if args.hard:
                img = cv2.GaussianBlur(img, (0, 0), 1.2)
            path = write_slide(Path(tmp) / f"s{i}.svs", img, mpp=DEFAULT_MPP, fmt="svs", tile=256)
            with open_slide(path) as slide:
                grid = plan_for_bundle(slide, bundle)
                res = engine.run_all(slide, grid, use_cache=False)
            if args.noise > 0:  # confusions: a random share of tiles gets another tile's prediction
                swap = rng.random(len(res)) < args.noise
                res.probs[swap] = res.probs[rng.integers(0, len(res), int(swap.sum()))]
            truth = labels == CLASSES.index("TUM")
            for thr, sigma in settings:
                prop = propose_tumour(res, threshold=thr, min_area_mm2=0.05, sigma_tiles=sigma, mpp=DEFAULT_MPP)
                scores[(thr, sigma)].append(dice(prop.mask[: args.side, : args.side], truth))
            pred = res.class_map() == bundle.class_names.index("TUM")
            argmax_scores.append(dice(pred[: args.side, : args.side], truth))
            print(
                f"slide {i}: {truth.sum()} tumour tiles of {args.side * args.side}, {len(res)} tissue tiles; "
                f"Dice (0.5, σ 1) {scores[(0.5, 1.0)][-1]:.3f}, argmax TUM {argmax_scores[-1]:.3f}"
            )
    print(
        f"\n# {args.slides} slides of {args.side}x{args.side} tiles ({args.side * 0.112:.1f} mm wide)"
        f"{', hard tiles' if args.hard else ''}{f', {args.noise:.0%} of predictions swapped' if args.noise else ''}, "
        f"{time.perf_counter() - t0:.0f} s; Dice at tile resolution, min area 0.05 mm²"
    )
    print(f"{'threshold':>9s} {'sigma':>6s} {'Dice mean':>9s} {'min':>6s}")
    for (thr, sigma), v in scores.items():
        print(f"{thr:9.2f} {sigma:6.1f} {np.mean(v):9.3f} {np.min(v):6.3f}")
    print(
        f"{'argmax':>9s} {'-':>6s} {np.mean(argmax_scores):9.3f} {np.min(argmax_scores):6.3f}   (TUM argmax tiles, no proposal)"
    )


if __name__ == "__main__":
    main()
