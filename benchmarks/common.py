"""Shared helpers for the benchmarks: the generated 32 768² slide and timing utilities."""

from __future__ import annotations

import os
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path

BENCH_DIR = Path(os.environ.get("PATHOMICS_BENCH_DIR", "/tmp/pathomics-bench"))


def big_slide(side: int = 32768, mpp: float = 0.25) -> Path:
    """A JPEG-tiled pyramidal SVS of ``side``² px at ``mpp`` (generated once, then reused)."""
    from napari_pathomics.wsi.synthetic import synthetic_he, write_slide

    path = BENCH_DIR / f"synthetic-{side}-{mpp}.svs"
    if not path.exists():
        BENCH_DIR.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        img = synthetic_he(side, side, seed=0)
        tmp = path.with_suffix(".tmp.svs")
        write_slide(tmp, img, mpp=mpp, fmt="svs", tile=256)
        tmp.rename(path)
        print(f"# generated {path} in {time.perf_counter() - t:.1f} s")
    return path


def median_time(fn: Callable[[], object], repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
