"""Runs over some tiles of a result: the labelled ones, or those in view whose CAMs a new head needs.

A run on a grid of exactly the chosen lattice cells reads and computes only those tiles; its
numbers are copied back into the whole slide's results by lattice cell.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from ..bundle import Bundle
from ..results import DONE, TileResults
from ..wsi.slide import Slide
from ..wsi.tiling import TileGrid
from .engine import Engine, InferenceRun

__all__ = ["cells_grid", "cell_index", "tiles_in_box", "cams_missing", "cams_run", "merge_cams"]


def cells_grid(slide: Slide, bundle: Bundle, cells: Sequence[tuple[int, int]]) -> TileGrid:
    """A grid of exactly these (col, row) cells of the bundle's lattice on ``slide`` (row-major order)."""
    s = bundle.tile_um / slide.mpp[0]
    order = sorted(set((int(c), int(r)) for c, r in cells), key=lambda cr: (cr[1], cr[0]))
    return TileGrid(
        cols=np.array([c for c, _ in order], dtype=np.int64),
        rows=np.array([r for _, r in order], dtype=np.int64),
        tile_size_l0=s,
        tile_um=bundle.tile_um,
        mpp=bundle.mpp,
        slide_width=slide.width,
        slide_height=slide.height,
        coverage=np.ones(len(order), dtype=np.float32),
        params={"cells": True},
    )


def cell_index(results: TileResults) -> dict[tuple[int, int], int]:
    """Lattice cell (col, row) → index of the tile there."""
    return {(int(c), int(r)): i for i, (c, r) in enumerate(zip(results.cols, results.rows))}


def tiles_in_box(results: TileResults, box: tuple[float, float, float, float]) -> np.ndarray:
    """Indices of the tiles whose square meets the level-0 box (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    s = float(results.tile_size_l0)
    ox, oy = results.origins[:, 0], results.origins[:, 1]
    return np.flatnonzero((ox < x1) & (ox + s > x0) & (oy < y1) & (oy + s > y0))


def cams_missing(results: TileResults, names: Sequence[str], indices: np.ndarray | None = None) -> np.ndarray:
    """Classified tiles (of ``indices``, default all) lacking one of the CAMs ``names``."""
    lack = np.zeros(len(results), dtype=bool)
    for name in names:
        lack |= results.missing_cam(name)
    idx = np.flatnonzero(lack)
    return idx if indices is None else np.intersect1d(idx, np.asarray(indices, dtype=np.int64))


def cams_run(
    engine: Engine,
    slide: Slide,
    results: TileResults,
    names: Sequence[str],
    indices: np.ndarray,
    cancel: threading.Event | None = None,
) -> InferenceRun:
    """A run computing the CAMs ``names`` of tiles ``indices`` of ``results`` (uncached: a part of a slide)."""
    cells = list(zip(results.cols[indices].tolist(), results.rows[indices].tolist()))
    return engine.run(slide, cells_grid(slide, engine.bundle, cells), cams=tuple(names), use_cache=False, cancel=cancel)


def merge_cams(results: TileResults, part: TileResults) -> int:
    """Copy ``part``'s CAMs (a run on some of ``results``' cells) into ``results``; how many tiles got them."""
    where = cell_index(results)
    got = np.flatnonzero(part.status == DONE)
    src = [i for i in got.tolist() if (int(part.cols[i]), int(part.rows[i])) in where]
    dst = np.array([where[(int(part.cols[i]), int(part.rows[i]))] for i in src], dtype=np.int64)
    for name, maps in part.cams.items():
        results.ensure_cam(name, maps.shape[1])[dst] = maps[src]
    return int(dst.size)
