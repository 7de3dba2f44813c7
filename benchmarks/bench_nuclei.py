"""Nuclei segmentation: speed per core, and accuracy on planted nuclei against the plain baseline.

Prints, for ``cells.nuclei.segment_nuclei`` and for the issue's baseline (Ruifrok haematoxylin,
Otsu, holes filled, distance-transform watershed from local maxima):

* speed in Mpx/s on one core (OpenCV and BLAS limited to one thread), segmentation alone and
  with the per-nucleus features, on the vendored real H&E images and on planted scenes;
* on planted scenes at 0.25 and 0.5 µm/px (touching clusters, lymphocytes, vesicular nuclei;
  ``cells.synthetic``): detection precision/recall/F1 (IoU > 0.5), split accuracy (touching
  nuclei recovered one to one), the count ratio (1.5 = the baseline's over-splitting), pixel
  Dice and AJI (``cells.metrics``), pooled over the scenes;
* nuclei counts on the real images (they have no expert outlines: see tests/cells for the
  hand-checked counts).

Run: python benchmarks/bench_nuclei.py [--scenes 6]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import time  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from scipy import ndimage as ndi  # noqa: E402
from skimage.feature import peak_local_max  # noqa: E402
from skimage.filters import threshold_otsu  # noqa: E402
from skimage.segmentation import watershed  # noqa: E402

from napari_pathomics.cells.features import measure_nuclei  # noqa: E402
from napari_pathomics.cells.metrics import score_instances  # noqa: E402
from napari_pathomics.cells.nuclei import segment_nuclei  # noqa: E402
from napari_pathomics.cells.stain import StainVectors, haematoxylin  # noqa: E402
from napari_pathomics.cells.synthetic import plant_nuclei  # noqa: E402
from napari_pathomics.resources import NUCLEI_IMAGES  # noqa: E402
from napari_pathomics.wsi.images import read_rgb  # noqa: E402

cv2.setNumThreads(1)


def baseline(rgb: np.ndarray, mpp: float) -> np.ndarray:
    """The issue's baseline: haematoxylin Otsu + distance-transform watershed (local maxima as markers)."""
    h = cv2.GaussianBlur(haematoxylin(rgb, StainVectors.ruifrok()), (0, 0), 0.5 / mpp)
    fg = ndi.binary_fill_holes(h > threshold_otsu(h))
    fg = ndi.binary_opening(fg, iterations=1)
    dist = ndi.distance_transform_edt(fg)
    peaks = peak_local_max(dist, min_distance=max(1, int(round(1.5 / mpp))), labels=ndi.label(fg)[0])
    markers = np.zeros(fg.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    labels = watershed(-dist, markers, mask=fg)
    area = np.bincount(labels.ravel())
    small = area < 8.0 / mpp**2
    small[0] = False
    labels[small[labels]] = 0
    return labels


def _pool(scores: list) -> dict[str, float]:
    keys = ("precision", "recall", "f1", "split_accuracy", "count_ratio", "dice", "aji")
    return {k: float(np.nanmean([getattr(s, k) for s in scores])) for k in keys}


def _speed(fn, rgb: np.ndarray, repeats: int = 3) -> float:  # noqa: ANN001 - any segmenter
    fn(rgb)
    best = min(_timed(fn, rgb) for _ in range(repeats))
    return rgb.shape[0] * rgb.shape[1] / best / 1e6


def _timed(fn, rgb: np.ndarray) -> float:  # noqa: ANN001
    t = time.perf_counter()
    fn(rgb)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenes", type=int, default=6, help="planted scenes per resolution")
    args = ap.parse_args()
    print("# one core: OpenCV/BLAS single-threaded; best of 3 runs")
    print(
        f"{'image':30s} {'Mpx':>6s} {'seg Mpx/s':>10s} {'+features':>10s} {'baseline':>9s} {'nuclei':>7s} {'baseline n':>10s}"
    )
    for name, (path, mpp) in NUCLEI_IMAGES.items():
        rgb = read_rgb(path)
        seg = segment_nuclei(rgb, mpp)
        s_seg = _speed(lambda im, m=mpp: segment_nuclei(im, m), rgb)
        s_all = _speed(lambda im, m=mpp: measure_nuclei(segment_nuclei(im, m)), rgb)
        s_base = _speed(lambda im, m=mpp: baseline(im, m), rgb)
        nb = int(baseline(rgb, mpp).max())
        print(
            f"{name + f' ({mpp} µm/px)':30s} {rgb.shape[0] * rgb.shape[1] / 1e6:6.2f} {s_seg:10.2f} {s_all:10.2f} "
            f"{s_base:9.2f} {seg.count:7d} {nb:10d}"
        )
    for mpp, side in ((0.25, 1000), (0.5, 700)):
        ours, base = [], []
        t_ours = t_px = 0.0
        n_true = 0
        for seed in range(args.scenes):
            sc = plant_nuclei(side, side, mpp, seed=100 + seed)
            n_true += sc.count
            t = time.perf_counter()
            lab = segment_nuclei(sc.rgb, mpp).labels
            t_ours += time.perf_counter() - t
            t_px += side * side
            ours.append(score_instances(sc.labels, lab, sc.touching))
            base.append(score_instances(sc.labels, baseline(sc.rgb, mpp), sc.touching))
        print(
            f"\n# planted nuclei at {mpp} µm/px: {args.scenes} scenes of {side}² px, {n_true} nuclei "
            f"({np.mean([s.n_touching / s.n_true for s in ours]):.0%} touching); segment {t_px / t_ours / 1e6:.2f} Mpx/s"
        )
        print(
            f"{'method':10s} {'precision':>9s} {'recall':>7s} {'F1':>6s} {'split acc':>9s} {'count x':>8s} {'Dice':>6s} {'AJI':>6s}"
        )
        for label, sc_list in (("ours", ours), ("baseline", base)):
            r = _pool(sc_list)
            print(
                f"{label:10s} {r['precision']:9.3f} {r['recall']:7.3f} {r['f1']:6.3f} {r['split_accuracy']:9.3f} "
                f"{r['count_ratio']:8.2f} {r['dice']:6.3f} {r['aji']:6.3f}"
            )


if __name__ == "__main__":
    main()
