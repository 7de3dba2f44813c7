"""Adapting the tissue classifier to a new centre with a few labels: accuracy, fit and refresh time.

A new centre, honestly simulated: two slides are mosaics of the vendored real NCT-CRC-HE tiles
(the 41 of ``data/tiles/nct-crc-he`` and the 5 of ``nct-crc-he-extra``), cropped, rotated and
flipped (``cohort.generator``), laid out in tissue regions with a glass margin, then put through
a scanner/stain shift the bundled model was not trained for: the H&E stain vectors rotated (the
haematoxylin and eosin optical densities mixed, as another stain batch gives), a gamma, a
Gaussian blur (focus) and JPEG re-compression. Slide A and slide B share **no source tile**:
each class's source tiles are dealt alternately to A and B (BACKground, with one tile, is left
out: glass is the margin). k = 1, 3, 5 tiles per class are labelled on slide A (several random
draws), the head is refitted (``training.adapt``) and applied to slide B's cached embeddings.
Each of ``--pairs`` slide pairs has its own layout and its own crops of the source tiles.

Two ways of choosing the labelled tiles (``--pick``): ``random`` (any tiles of the class) and
``corrections``, what the Correct panel asks the pathologist to do: label the tiles the map
shows in the wrong class first, then confirm right ones if a class has fewer than k wrong.

Printed: accuracy on slide B's tissue tiles before and after (mean over pairs and draws, and
the worst pair), the cross-validated accuracy on the labels, fit time, per class after 5 labels
per class, the ceiling (every tissue tile of slide A labelled), the fit time for 5 000 labels,
and the time to refresh the class map of a 20 000-tile slide from its embeddings.

Figures, with the variants tried and dropped: ``docs/benchmarks.md``.

Caveat: the bundled model was fine-tuned on these very 41 source tiles (unshifted), so "before"
measures the stain/scanner shift only, not generalisation to unseen tissue; the 5 extra tiles
are the only ones it never saw.

Run: python benchmarks/bench_adapt.py [--pairs 8] [--pick random corrections] [--draws 5] [--strength 0.5] [--no-shift]
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from skimage.color import hed_from_rgb

from napari_pathomics.bundle import Bundle
from napari_pathomics.cohort.generator import augment_tile
from napari_pathomics.inference.engine import TTA_MODES, Engine
from napari_pathomics.inference.head import apply_head
from napari_pathomics.resources import DATA_DIR, DEFAULT_BUNDLE
from napari_pathomics.results import DONE, TileResults
from napari_pathomics.training.adapt import AdaptConfig, adapt_head, base_head, one_blas_thread
from napari_pathomics.units import DEFAULT_MPP, DEFAULT_TILE_PX
from napari_pathomics.wsi.images import IMAGE_SUFFIXES, read_rgb
from napari_pathomics.wsi.slide import open_slide
from napari_pathomics.wsi.synthetic import write_slide
from napari_pathomics.wsi.tiling import plan_for_bundle

TISSUE = ("ADI", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM")
TILE = DEFAULT_TILE_PX
SOURCES = (DATA_DIR / "tiles" / "nct-crc-he", DATA_DIR / "tiles" / "nct-crc-he-extra")


def source_tiles() -> dict[str, list[tuple[str, np.ndarray]]]:
    out: dict[str, list[tuple[str, np.ndarray]]] = {c: [] for c in TISSUE}
    for root in SOURCES:
        for c in TISSUE:
            for p in sorted((root / c).glob("*")) if (root / c).is_dir() else []:
                if p.suffix.lower() in IMAGE_SUFFIXES:
                    img = read_rgb(p)
                    if img.shape[:2] != (TILE, TILE):
                        img = cv2.resize(img, (TILE, TILE), interpolation=cv2.INTER_AREA)
                    out[c].append((p.name, img))
    return out


def split(tiles: dict[str, list[tuple[str, np.ndarray]]]) -> tuple[dict, dict]:
    """Each class's source tiles dealt alternately to slide A and slide B (no tile in both)."""
    a = {c: v[0::2] for c, v in tiles.items()}
    b = {c: v[1::2] for c, v in tiles.items()}
    return a, b


def layout(k: int, rng: np.random.Generator) -> np.ndarray:
    """(k, k) class index into TISSUE per cell, -1 = glass: tissue regions of a smooth random field."""
    field_ = cv2.GaussianBlur(rng.standard_normal((k, k)).astype(np.float32), (0, 0), k / 7)
    ranks = np.argsort(np.argsort(field_.ravel(), kind="stable")).reshape(k, k)
    lab = (ranks * len(TISSUE) // (k * k)).astype(np.int64)
    lab = rng.permutation(len(TISSUE))[lab]
    border = np.zeros((k, k), bool)
    border[0, :] = border[-1, :] = border[:, 0] = border[:, -1] = True
    lab[border & (rng.random((k, k)) < 0.7)] = -1
    return lab


def render(lab: np.ndarray, tiles: dict[str, list[tuple[str, np.ndarray]]], rng: np.random.Generator) -> np.ndarray:
    k = lab.shape[0]
    img = np.full((k * TILE, k * TILE, 3), 242, dtype=np.uint8)
    for r in range(k):
        for c in range(k):
            if lab[r, c] < 0:
                continue
            pool = tiles[TISSUE[int(lab[r, c])]]
            src = pool[int(rng.integers(0, len(pool)))][1]
            img[r * TILE : (r + 1) * TILE, c * TILE : (c + 1) * TILE] = augment_tile(src, rng, (0.7, 1.0), 0.03)
    return img


def new_centre(
    img: np.ndarray, angle_deg: float = 12.0, gamma: float = 1.15, blur: float = 1.0, jpeg: int = 55
) -> np.ndarray:
    """Another scanner and stain batch: H/E stain vectors rotated, gamma, blur, JPEG."""
    rgb_from_hed_ = np.linalg.inv(hed_from_rgb)
    h, e = rgb_from_hed_[0].copy(), rgb_from_hed_[1].copy()
    t = np.deg2rad(angle_deg)
    h2 = np.cos(t) * h + np.sin(t) * e  # haematoxylin leans toward eosin, eosin away from it
    e2 = np.cos(t) * e - np.sin(t) * h * 0.5
    new = rgb_from_hed_.copy()
    new[0], new[1] = h2 / np.linalg.norm(h2) * np.linalg.norm(h), np.abs(e2) / np.linalg.norm(e2) * np.linalg.norm(e)
    od = -np.log(np.maximum(img.reshape(-1, 3).astype(np.float32), 1.0) / 255.0)
    conc = od @ hed_from_rgb.astype(np.float32)
    od2 = np.maximum(conc, 0) @ new.astype(np.float32)
    out = np.exp(-od2).reshape(img.shape)
    out = np.clip(255.0 * out**gamma, 0, 255).astype(np.uint8)
    if blur > 0:
        out = cv2.GaussianBlur(out, (0, 0), blur)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(out, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, jpeg])
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def run_slide(engine: Engine, path: Path, lab: np.ndarray) -> tuple[TileResults, np.ndarray]:
    """The engine's results (with embeddings) and each result tile's true class (-1 = glass/none)."""
    with open_slide(path) as slide:
        grid = plan_for_bundle(slide, engine.bundle)
        res = engine.run_all(slide, grid, use_cache=False, embeddings=True)
    k = lab.shape[0]
    truth = np.array([lab[r, c] if r < k and c < k else -1 for r, c in zip(res.rows, res.cols)], dtype=np.int64)
    return res, truth


@dataclass
class Pair:
    """One simulated new-centre slide pair: slide A's tissue tiles (to label) and slide B's (to test)."""

    xa: np.ndarray
    ya: np.ndarray
    pa: np.ndarray  # the base model's probabilities on A (what the pathologist sees to correct)
    xb: np.ndarray
    yb: np.ndarray
    pb: np.ndarray


def build_pair(
    engine: Engine, tiles_a: dict, tiles_b: dict, args: argparse.Namespace, seed: int, to_bundle: np.ndarray
) -> Pair:
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        out = []
        for name, pool in (("A", tiles_a), ("B", tiles_b)):
            lab = layout(args.side, rng)
            img = render(lab, pool, rng)
            if not args.no_shift:
                img = new_centre(img, angle_deg=args.angle, gamma=args.gamma, blur=args.blur, jpeg=args.jpeg)
            path = write_slide(Path(tmp) / f"{name}.svs", img, mpp=DEFAULT_MPP, fmt="svs", tile=256)
            res, truth = run_slide(engine, path, lab)
            u = np.flatnonzero((res.status == DONE) & (truth >= 0) & np.isfinite(res.emb[:, 0]))
            out.append((res.emb[u].astype(np.float32), to_bundle[truth[u]], res.probs[u]))
    (xa, ya, pa), (xb, yb, pb) = out
    return Pair(xa, ya, pa, xb, yb, pb)


def pick_labels(pair: Pair, names: list[str], k: int, how: str, rng: np.random.Generator) -> np.ndarray:
    """k labelled tiles per class of slide A.

    ``random``: any k tiles of the class. ``corrections``: what the Correct panel asks for ("label
    tiles the model got wrong"): the class's tiles the base map shows in another class first (in
    random order), then, if there are fewer than k, tiles it already has right (confirmations).
    """
    pred = np.argmax(pair.pa, axis=1)
    out = []
    for c in TISSUE:
        i = names.index(c)
        members = np.flatnonzero(pair.ya == i)
        if members.size == 0:
            continue
        if how == "random":
            out.append(rng.choice(members, size=min(k, members.size), replace=False))
        else:
            wrong, right = members[pred[members] != i], members[pred[members] == i]
            out.append(np.concatenate([rng.permutation(wrong), rng.permutation(right)])[:k])
    return np.concatenate(out)


def accuracy(probs: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(probs, axis=1) == y))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--side", type=int, default=24, help="tiles per slide side")
    ap.add_argument("--pairs", type=int, default=8, help="slide pairs (each its own layout and draw of tiles)")
    ap.add_argument("--draws", type=int, default=5, help="random label draws per k and pair")
    ap.add_argument("--seed", type=int, default=12)
    ap.add_argument(
        "--pick",
        nargs="+",
        default=["random", "corrections"],
        choices=["random", "corrections"],
        help="which tiles get labelled (see pick_labels)",
    )
    ap.add_argument(
        "--strength",
        nargs="+",
        default=[str(AdaptConfig().strength)],
        help="λ values to try ('auto': chosen by cross-validation on the labels)",
    )
    ap.add_argument("--no-shift", action="store_true", help="no new-centre shift (the model's own domain)")
    ap.add_argument("--angle", type=float, default=30.0, help="stain vector rotation (degrees)")
    ap.add_argument("--blur", type=float, default=2.0, help="Gaussian blur sigma (level-0 px)")
    ap.add_argument("--jpeg", type=int, default=40, help="JPEG quality of the re-compression")
    ap.add_argument("--gamma", type=float, default=1.3)
    ap.add_argument("--tta", default="none", choices=list(TTA_MODES), help="test-time augmentation of the engine")
    args = ap.parse_args()
    bundle = Bundle.load(DEFAULT_BUNDLE)
    engine = Engine(bundle, device="cpu", tta=args.tta)
    names = bundle.class_names
    to_bundle = np.array([names.index(c) for c in TISSUE])
    tiles_a, tiles_b = split(source_tiles())
    print(
        "# sources per class (slide A / slide B): "
        + ", ".join(f"{c} {len(tiles_a[c])}/{len(tiles_b[c])}" for c in TISSUE)
    )
    t0 = time.perf_counter()
    pairs = [build_pair(engine, tiles_a, tiles_b, args, args.seed + 1000 * j, to_bundle) for j in range(args.pairs)]
    t_slides = time.perf_counter() - t0
    base = base_head(engine)
    shift = (
        "none"
        if args.no_shift
        else f"stain vectors {args.angle:g}°, gamma {args.gamma:g}, blur {args.blur:g} px, JPEG {args.jpeg}"
    )
    print(
        f"# {args.pairs} slide pairs of {args.side}x{args.side} tiles; tissue tiles classified on A / B: "
        + ", ".join(f"{p.ya.size}/{p.yb.size}" for p in pairs)
        + f"; shift {shift}; TTA {args.tta}; slides built and run in {t_slides:.0f} s"
    )
    acc_b = [accuracy(p.pb, p.yb) for p in pairs]
    print(
        f"base model accuracy on B: mean {np.mean(acc_b):.3f} (pairs: {', '.join(f'{v:.3f}' for v in acc_b)}); "
        f"on A: {np.mean([accuracy(p.pa, p.ya) for p in pairs]):.3f}"
    )
    p0 = pairs[0]
    per = {
        c: accuracy(p0.pb[p0.yb == names.index(c)], p0.yb[p0.yb == names.index(c)])
        for c in TISSUE
        if np.any(p0.yb == names.index(c))
    }
    print("  per class on B (first pair): " + ", ".join(f"{c} {v:.2f}" for c, v in per.items()))
    print(
        f"\n{'λ':>5s} {'pick':>11s} {'k/class':>7s} {'labels':>6s} {'B before':>8s} {'B after':>8s} "
        f"{'worst pair':>10s} {'CV before':>9s} {'CV after':>8s} {'fit s':>6s}"
    )
    for lam_arg in args.strength:
        lam = None if lam_arg == "auto" else float(lam_arg)
        cfg = AdaptConfig(strength=lam)
        for how in args.pick:
            for k in (1, 3, 5):
                per_pair, cvb, cva, fits, lams, n_labels = [], [], [], [], [], []
                for j, pair in enumerate(pairs):
                    accs = []
                    for d in range(args.draws):
                        pick = pick_labels(pair, names, k, how, np.random.default_rng([args.seed, j, k, d]))
                        res = adapt_head(pair.xa[pick], pair.ya[pick], base, names, cfg)
                        accs.append(accuracy(res.head.probs(pair.xb), pair.yb))
                        cvb.append(res.accuracy_before)
                        cva.append(res.accuracy_after)
                        fits.append(res.fit_s)
                        lams.append(res.strength)
                        n_labels.append(pick.size)
                    per_pair.append(float(np.mean(accs)))
                    if j == 0 and k == 5:
                        last = res
                shown = "/".join(f"{v:g}" for v in sorted(set(lams))) if lam is None else f"{lam:g}"
                print(
                    f"{shown:>5s} {how:>11s} {k:7d} {int(np.median(n_labels)):6d} {np.mean(acc_b):8.3f} "
                    f"{np.mean(per_pair):8.3f} {np.min(per_pair):10.3f} {np.mean(cvb):9.3f} {np.mean(cva):8.3f} "
                    f"{np.median(fits):6.3f}"
                )
            per_after = {
                c: accuracy(last.head.probs(p0.xb[p0.yb == names.index(c)]), p0.yb[p0.yb == names.index(c)])
                for c in TISSUE
                if np.any(p0.yb == names.index(c))
            }
            print(
                f"{'':>25s} per class on B after 5 per class (first pair, last draw): "
                + ", ".join(f"{c} {v:.2f}" for c, v in per_after.items())
            )
        # the ceiling: every tissue tile of slide A labelled (what more labels of these source tiles can give)
        ceil = [
            accuracy(adapt_head(p.xa, p.ya, base, names, cfg, cross_validate=False).head.probs(p.xb), p.yb)
            for p in pairs
        ]
        print(
            f"{'':>5s} {'every tile':>11s} {'all A':>7s} {int(np.median([p.ya.size for p in pairs])):6d} "
            f"{np.mean(acc_b):8.3f} {np.mean(ceil):8.3f} {np.min(ceil):10.3f}   (ceiling: every tile of A labelled)"
        )

    # fit time at 5 000 labels: tiles of both slides, repeated with small noise to reach 5 000
    x_all = np.concatenate([p0.xa, p0.xb])
    y_all = np.concatenate([p0.ya, p0.yb])
    r = np.random.default_rng(0)
    sel = r.integers(0, y_all.size, 5000)
    x5k = (x_all[sel] * r.uniform(0.97, 1.03, (5000, x_all.shape[1]))).astype(np.float32)
    t = time.perf_counter()
    res5k = adapt_head(x5k, y_all[sel], base, names, AdaptConfig())
    print(
        f"\n5 000 labels: fit {res5k.fit_s:.2f} s, 5-fold CV {res5k.cv_s:.2f} s (adapt total "
        f"{time.perf_counter() - t:.2f} s)"
    )

    # refresh of a 20 000-tile slide from float16 embeddings: class probabilities, risk, class map
    n = 20_000
    side = int(np.ceil(np.sqrt(n)))
    big = TileResults(
        cols=np.arange(n) % side,
        rows=np.arange(n) // side,
        origins=np.zeros((n, 2), np.int64),
        tile_size_l0=224.0,
        n_cols=side,
        n_rows=side,
        class_names=names,
        class_colors=bundle.class_colors,
        probs=np.zeros((n, len(names)), np.float32),
        risk=np.zeros(n, np.float32),
        status=np.full(n, DONE, np.int8),
        stain_fallback=np.zeros(n, bool),
        emb=x_all[r.integers(0, y_all.size, n)].astype(np.float16),
    )
    for how, ctx in (
        ("BLAS on one thread, as the Correct panel does", one_blas_thread),
        ("BLAS's own thread pool", contextlib.nullcontext),
    ):
        times = []
        for _ in range(3):
            t = time.perf_counter()
            with ctx():
                new = apply_head(big, res5k.head, engine.weights, engine.risk_head)
            new.class_map()
            new.risk_map()
            times.append(time.perf_counter() - t)
        print(
            f"refresh of {n} tiles from cached float16 embeddings (probabilities, risk, class map, risk map; "
            f"{how}): {np.median(times):.3f} s"
        )


if __name__ == "__main__":
    main()
