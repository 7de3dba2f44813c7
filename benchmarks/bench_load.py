"""Under load: RSS while scoring 20 slides in one process; file handles over 50 open/close cycles.

Run under Xvfb for the viewer part: ``xvfb-run -a .venv/bin/python benchmarks/bench_load.py``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import BENCH_DIR, current_rss_mb  # noqa: E402


def make_slides(n: int) -> list[Path]:
    from napari_pathomics.wsi.synthetic import synthetic_he, write_slide

    folder = BENCH_DIR / "load"
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = folder / f"slide{i:02d}.svs"
        if not p.exists():
            write_slide(p, synthetic_he(2048, 2048, seed=100 + i), mpp=0.5)
        out.append(p)
    return out


def bench_scoring(slides: list[Path]) -> None:
    from napari_pathomics.bundle import Bundle
    from napari_pathomics.resources import DEFAULT_BUNDLE
    from napari_pathomics.scoring import score_patient

    os.environ["PATHOMICS_CACHE_DIR"] = str(BENCH_DIR / f"load-cache-{time.time_ns()}")
    bundle = Bundle.load(DEFAULT_BUNDLE)
    import resource

    rss, peak = [], []
    t = time.perf_counter()
    for p in slides:
        score_patient([p], bundle, device="cpu")
        rss.append(current_rss_mb())
        peak.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # KiB on Linux
    dt = time.perf_counter() - t
    print(f"scored {len(slides)} slides in {dt:.1f} s; RSS MiB after each: {', '.join(f'{r:.0f}' for r in rss)}")
    print(f"peak RSS MiB after each: {', '.join(f'{r:.0f}' for r in peak)}")
    print(f"RSS growth from slide 2 to slide {len(slides)}: {rss[-1] - rss[1]:+.0f} MiB")


def bench_viewer_fds(slides: list[Path], cycles: int = 50) -> None:
    import napari

    from napari_pathomics.widgets import layer_registry

    viewer = napari.Viewer(show=False)
    layer_registry.add_slide(viewer, slides[0])
    viewer.layers.clear()
    start = len(os.listdir("/proc/self/fd"))
    for i in range(cycles):
        img = layer_registry.add_slide(viewer, slides[i % len(slides)])
        np.asarray(img.data[-1])
        viewer.layers.clear()
    end = len(os.listdir("/proc/self/fd"))
    print(f"open/close {cycles} slides in one viewer: open fds {start} → {end} ({end - start:+d})")
    viewer.close()


if __name__ == "__main__":
    s = make_slides(20)
    bench_scoring(s)
    bench_viewer_fds(s)
