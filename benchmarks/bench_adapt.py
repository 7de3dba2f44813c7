"""Adapting the tissue classifier to a new centre with a few labels: accuracy, fit and refresh time.

A new centre, honestly simulated: two slides are mosaics of the vendored real NCT-CRC-HE tiles
(the 41 of ``data/tiles/nct-crc-he`` and the 5 of ``nct-crc-he-extra``), cropped, rotated and
flipped (``cohort.generator``), laid out in tissue regions with a glass margin, then put through
a scanner/stain shift the bundled model was not trained for: the H&E stain vectors rotated (the
haematoxylin and eosin optical densities mixed, as another stain batch gives), a gamma, a
Gaussian blur (focus) and JPEG re-compression. Slide A and slide B share **no source tile**:
each class's source tiles are dealt alternately to A and B (BACK, with one tile, is left out:
glass is the margin). k = 1, 3, 5 tiles per class are labelled on slide A (several random
draws), the head is refitted (``training.adapt``) and applied to slide B's cached embeddings.

Printed: accuracy on slide B's tissue tiles before and after (mean, min over draws), the
cross-validated accuracy on the labels, fit time, per class after 5 labels per class, the
ceiling (every tissue tile of slide A labelled), the fit time for 5 000 labels, and the time to
refresh the class map of a 20 000-tile slide from its embeddings.

Measured (2026-12-02, 2 CPU cores shared with other jobs, defaults): base 0.838 on B; after
k = 1 / 3 / 5 labels per class 0.861 / 0.878 / 0.888 (min over 5 draws 0.845 / 0.830 / 0.876);
every tissue tile of A labelled (449): 0.899. The goal of 0.90 after 5 per class is missed by
about one point, and more labels of these source tiles do not reach it either: what stays
wrong is B's DEB (0.57) and STR (0.66), tiles cut from source tiles that no label shows (each
class has only 2–5 source tiles per slide). Fit: 0.002–0.003 s for 8–40 labels; 5 000 labels:
0.21 s fit + 0.21 s CV. Before the fit ran BLAS on one thread, the same run took 5.2 s + 7.2 s,
because OpenBLAS's thread pool fought torch's for the two busy cores. Refresh of 20 000 tiles:
0.18 s.

Caveat: the bundled model was fine-tuned on these very 41 source tiles (unshifted), so "before"
measures the stain/scanner shift only, not generalisation to unseen tissue; the 5 extra tiles
are the only ones it never saw.

Run: python benchmarks/bench_adapt.py [--side 24] [--draws 5] [--strength 2] [--no-shift]
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
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
            img[r * TILE:(r + 1) * TILE, c * TILE:(c + 1) * TILE] = augment_tile(src, rng, (0.7, 1.0), 0.03)
    return img


def new_centre(img: np.ndarray, angle_deg: float = 12.0, gamma: float = 1.15, blur: float = 1.0,
               jpeg: int = 55) -> np.ndarray:
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
    out = np.clip(255.0 * out ** gamma, 0, 255).astype(np.uint8)
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--side", type=int, default=24, help="tiles per slide side")
    ap.add_argument("--draws", type=int, default=5, help="random label draws per k")
    ap.add_argument("--seed", type=int, default=12)
    ap.add_argument("--strength", nargs="+", default=[str(AdaptConfig().strength)],
                    help="λ values to try ('auto': chosen by cross-validation on the labels)")
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
    print("# sources per class (slide A / slide B): " + ", ".join(
        f"{c} {len(tiles_a[c])}/{len(tiles_b[c])}" for c in TISSUE))
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        out = []
        for name, pool in (("A", tiles_a), ("B", tiles_b)):
            lab = layout(args.side, rng)
            img = render(lab, pool, rng)
            if not args.no_shift:
                img = new_centre(img, angle_deg=args.angle, gamma=args.gamma, blur=args.blur, jpeg=args.jpeg)
            path = write_slide(Path(tmp) / f"{name}.svs", img, mpp=DEFAULT_MPP, fmt="svs", tile=256)
            res, truth = run_slide(engine, path, lab)
            out.append((res, truth))
    (res_a, truth_a), (res_b, truth_b) = out
    t_slides = time.perf_counter() - t0

    def usable(res: TileResults, truth: np.ndarray) -> np.ndarray:
        return np.flatnonzero((res.status == DONE) & (truth >= 0) & np.isfinite(res.emb[:, 0]))

    ua, ub = usable(res_a, truth_a), usable(res_b, truth_b)
    ya, yb = to_bundle[truth_a[ua]], to_bundle[truth_b[ub]]
    xa, xb = res_a.emb[ua].astype(np.float32), res_b.emb[ub].astype(np.float32)
    base = base_head(engine)
    acc_a = float(np.mean(np.argmax(res_a.probs[ua], 1) == ya))
    acc_b = float(np.mean(np.argmax(res_b.probs[ub], 1) == yb))
    print(f"# {args.side}x{args.side} tiles per slide, {ua.size} / {ub.size} tissue tiles classified on A / B, "
          f"shift {'none' if args.no_shift else f'stain vectors {args.angle:g}°, gamma {args.gamma:g}, blur {args.blur:g} px, JPEG {args.jpeg}'}; "
          f"TTA {args.tta}; "
          f"slides built and run in {t_slides:.0f} s")
    print(f"base model accuracy: slide A {acc_a:.3f}, slide B {acc_b:.3f}")
    per = {c: float(np.mean(np.argmax(res_b.probs[ub][yb == names.index(c)], 1) == names.index(c)))
           for c in TISSUE if np.any(yb == names.index(c))}
    print("  per class on B: " + ", ".join(f"{c} {v:.2f}" for c, v in per.items()))
    print(f"\n{'λ':>5s} {'k/class':>7s} {'labels':>6s} {'B before':>8s} {'B after':>8s} {'min':>6s} "
          f"{'CV before':>9s} {'CV after':>8s} {'fit s':>6s}")
    for lam_arg in args.strength:
        lam = None if lam_arg == "auto" else float(lam_arg)
        cfg = AdaptConfig(strength=lam)
        for k in (1, 3, 5):
            accs, cvb, cva, fits, lams = [], [], [], [], []
            for d in range(args.draws):
                r = np.random.default_rng([args.seed, k, d])
                pick = np.concatenate([r.choice(np.flatnonzero(ya == names.index(c)), size=min(k, int(np.sum(ya == names.index(c)))),
                                                replace=False) for c in TISSUE if np.any(ya == names.index(c))])
                res = adapt_head(xa[pick], ya[pick], base, names, cfg)
                accs.append(float(np.mean(np.argmax(res.head.probs(xb), 1) == yb)))
                cvb.append(res.accuracy_before)
                cva.append(res.accuracy_after)
                fits.append(res.fit_s)
                lams.append(res.strength)
            shown = "/".join(f"{v:g}" for v in sorted(set(lams))) if lam is None else f"{lam:g}"
            print(f"{shown:>5s} {k:7d} {pick.size:6d} {acc_b:8.3f} {np.mean(accs):8.3f} {np.min(accs):6.3f} "
                  f"{np.mean(cvb):9.3f} {np.mean(cva):8.3f} {np.median(fits):6.3f}")
            if k == 5:
                per_after = {c: float(np.mean(np.argmax(res.head.probs(xb[yb == names.index(c)]), 1) == names.index(c)))
                             for c in TISSUE if np.any(yb == names.index(c))}
                print("        per class on B after (last draw): " + ", ".join(f"{c} {v:.2f}" for c, v in per_after.items()))
        # the ceiling: every tissue tile of slide A labelled (what more labels of these source tiles can give)
        full = adapt_head(xa, ya, base, names, cfg, cross_validate=False)
        print(f"{'':>5s} {'all A':>7s} {ya.size:6d} {acc_b:8.3f} "
              f"{float(np.mean(np.argmax(full.head.probs(xb), 1) == yb)):8.3f}   (ceiling: every tile of A labelled)")

    # fit time at 5 000 labels: tiles of both slides, repeated with small noise to reach 5 000
    x_all = np.concatenate([xa, xb])
    y_all = np.concatenate([ya, yb])
    r = np.random.default_rng(0)
    sel = r.integers(0, y_all.size, 5000)
    x5k = (x_all[sel] * r.uniform(0.97, 1.03, (5000, x_all.shape[1]))).astype(np.float32)
    t = time.perf_counter()
    res5k = adapt_head(x5k, y_all[sel], base, names, AdaptConfig())
    print(f"\n5 000 labels: fit {res5k.fit_s:.2f} s, 5-fold CV {res5k.cv_s:.2f} s (adapt total "
          f"{time.perf_counter() - t:.2f} s)")

    # refresh of a 20 000-tile slide from float16 embeddings: class probabilities, risk, class map
    n = 20_000
    side = int(np.ceil(np.sqrt(n)))
    big = TileResults(cols=np.arange(n) % side, rows=np.arange(n) // side, origins=np.zeros((n, 2), np.int64),
                      tile_size_l0=224.0, n_cols=side, n_rows=side, class_names=names,
                      class_colors=bundle.class_colors, probs=np.zeros((n, len(names)), np.float32),
                      risk=np.zeros(n, np.float32), status=np.full(n, DONE, np.int8),
                      stain_fallback=np.zeros(n, bool), emb=x_all[r.integers(0, y_all.size, n)].astype(np.float16))
    for how, ctx in (("BLAS on one thread, as the Correct panel does", one_blas_thread),
                     ("BLAS's own thread pool", contextlib.nullcontext)):
        times = []
        for _ in range(3):
            t = time.perf_counter()
            with ctx():
                new = apply_head(big, res5k.head, engine.weights, engine.risk_head)
            new.class_map()
            new.risk_map()
            times.append(time.perf_counter() - t)
        print(f"refresh of {n} tiles from cached float16 embeddings (probabilities, risk, class map, risk map; "
              f"{how}): {np.median(times):.3f} s")


if __name__ == "__main__":
    main()
