"""Reading a grid's tiles from a slide for the model: strips of a lattice row at a time, one
slide handle per reader thread, failures marked per tile instead of stopping the run."""

from __future__ import annotations

import threading
from typing import Any

import cv2
import numpy as np

from ..wsi.slide import Slide, open_slide

__all__ = ["read_tiles", "ThreadSlides", "error_line"]


def error_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__


def read_tiles(
    slide: Slide,
    size_l0: float,
    out_px: int,
    origins: np.ndarray,
    out: np.ndarray,
    failed: np.ndarray,
    errors: list[str],
    max_run: int = 16,
) -> None:
    """Fill ``out[j]`` with ``slide.read_tile(origins[j], size_l0, out_px)``, pixel for pixel, faster.

    Tiles of one lattice row that follow each other are read as one strip, so a file tile that
    several neighbouring tiles overlap is JPEG-decoded once, not once per tile. A strip that fails
    to decode is retried tile by tile, so only the tiles over the broken region are marked
    ``failed`` (with the error in ``errors``).
    """
    n = len(origins)
    if n == 0:
        return
    level = slide.best_level(size_l0 / out_px)
    ds = slide.levels_info[level].downsample
    side = max(1, int(round(size_l0 / ds)))
    interp = cv2.INTER_AREA if side > out_px else cv2.INTER_LINEAR
    ox = origins[:, 0].astype(np.int64)
    oy = origins[:, 1].astype(np.int64)
    xs = np.floor(ox / ds).astype(np.int64)  # read_region's own rounding
    step = side + 2  # neighbours on the lattice start ≤ side + 1 px apart at this level
    start = 0
    while start < n:
        end = start + 1
        while end < n and end - start < max_run and oy[end] == oy[start] and 0 < xs[end] - xs[end - 1] <= step:
            end += 1
        width = int(xs[end - 1] - xs[start] + side)
        strip = None
        if end - start > 1:
            try:
                strip = slide.read_region((int(ox[start]), int(oy[start])), level, (width, side))
            except Exception:  # noqa: BLE001 - retried tile by tile below
                strip = None
        for j in range(start, end):
            try:
                if strip is None:
                    out[j] = slide.read_tile((int(ox[j]), int(oy[j])), size_l0, out_px)
                    continue
                a = int(xs[j] - xs[start])
                region = strip[:, a : a + side]
                out[j] = region if side == out_px else cv2.resize(region, (out_px, out_px), interpolation=interp)
            except Exception as exc:  # noqa: BLE001 - RegionError or any decoder error
                failed[j] = True
                errors.append(error_line(exc))
        start = end


class ThreadSlides:
    """One slide handle per worker thread (tiffslide/zarr stores are not shared across threads)."""

    def __init__(self, slide: Slide) -> None:
        self.slide = slide
        self._local = threading.local()
        self._opened: list[Any] = []
        self._lock = threading.Lock()

    def get(self) -> Slide:
        s = getattr(self._local, "slide", None)
        if s is None:
            try:
                s = open_slide(self.slide.path, mpp=self.slide.mpp if self.slide.has_mpp else None)
                with self._lock:
                    self._opened.append(s)
            except Exception:  # noqa: BLE001 - fall back to the caller's handle
                s = self.slide
            self._local.slide = s
        return s

    def close(self) -> None:
        with self._lock:
            for s in self._opened:
                s.close()
            self._opened.clear()
