"""Spine benchmark: first frame in napari, random tile reads vs raw tiffslide, RSS while panning.

Run under Xvfb (``xvfb-run -a .venv/bin/python benchmarks/bench_slide.py``). Prints figures.
"""

from __future__ import annotations

import sys
import time

import numpy as np

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from common import big_slide, current_rss_mb  # noqa: E402


def reads_per_second(read, n: int, w: int, h: int, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    xs = rng.integers(0, w - 512, n)
    ys = rng.integers(0, h - 512, n)
    t = time.perf_counter()
    for x, y in zip(xs, ys):
        read(int(x), int(y))
    return n / (time.perf_counter() - t)


def bench_reads(path) -> None:
    import tiffslide

    from napari_pathomics.wsi.slide import open_slide

    ts = tiffslide.TiffSlide(path)
    s = open_slide(path)
    w, h = s.dimensions
    raw, ours = [], []
    for rep in range(3):
        raw.append(reads_per_second(lambda x, y: ts.read_region((x, y), 0, (512, 512), as_array=True), 300, w, h, rep))
        ours.append(reads_per_second(lambda x, y: s.read_region((x, y), 0, (512, 512)), 300, w, h, rep))
    r, o = float(np.median(raw)), float(np.median(ours))
    print(
        f"random 512² level-0 reads: tiffslide.read_region {r:.0f}/s, Slide.read_region {o:.0f}/s "
        f"(ratio {o / r:.2f}, goal ≥ 0.9)"
    )


def bench_viewer(path) -> None:
    import napari

    viewer = napari.Viewer(show=True)
    firsts = []
    for _ in range(3):
        viewer.layers.clear()
        t = time.perf_counter()
        viewer.open(str(path), plugin="napari-pathomics")
        shot = viewer.screenshot(canvas_only=True, flash=False)
        firsts.append(time.perf_counter() - t)
        painted = shot[..., :3].sum(-1) > 0
        assert painted.mean() > 0.2 and shot[painted].mean() > 50, "black first frame"
    print(
        f"napari open → first rendered frame: median {np.median(firsts):.2f} s "
        f"(runs {', '.join(f'{x:.2f}' for x in firsts)}; goal ≤ 0.5 s, never black)"
    )

    img = next(ly for ly in viewer.layers if isinstance(ly, napari.layers.Image))  # ROI layers come after the frame
    rng = np.random.default_rng(1)
    h_um, w_um = np.array(img.data[0].shape[:2]) * np.array(img.scale)
    rss = [current_rss_mb()]
    t = time.perf_counter()
    for i in range(200):
        viewer.camera.center = (float(rng.uniform(0, h_um)), float(rng.uniform(0, w_um)))
        viewer.camera.zoom = float(10 ** rng.uniform(-1.5, 0.6))
        viewer.screenshot(canvas_only=True, flash=False)
        if i % 20 == 19:
            rss.append(current_rss_mb())
    dt = time.perf_counter() - t
    print(
        f"panning 200 random views: {dt / 200 * 1000:.0f} ms/view; RSS MiB at 0,20,..200 views: "
        f"{', '.join(f'{r:.0f}' for r in rss)} (growth after 100 views: {rss[-1] - rss[len(rss) // 2]:.0f} MiB)"
    )
    viewer.close()


if __name__ == "__main__":
    path = big_slide()
    bench_reads(path)
    bench_viewer(path)
