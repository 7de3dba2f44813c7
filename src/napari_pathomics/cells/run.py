"""Nuclei over a slide's ROI tiles: tile by tile, on the engine's lattice, with progress, cancel, cache.

A :class:`NucleiRun` is an iterator of :class:`NucleiUpdate` (one per tile, plus a first update
replaying cached tiles), like the engine's ``InferenceRun``, so the viewer's worker, the CLI's
progress bar and tests consume it alike. Design points:

* Tiles are the TileGrid's (``wsi.tiling``): tile (col, row) is the tile of the same name in
  the patch model's ``TileResults``, so nuclear values join them cell by cell.
* Each tile is read with a margin (``margin_um``) at ``work_mpp`` and segmented; a nucleus
  belongs to the tile holding its centroid, so a nucleus on a tile border is counted once and
  whole. Memory is one tile's arrays plus the nuclei table; the next tile is read in a
  background thread while the current one is segmented.
* The slide's own Macenko stain vectors and foreground threshold are estimated once from tiles
  spread over the grid (``cells.stain``), so every tile is unmixed and thresholded alike.
* Tiles that are mostly glass (``wsi.tissue``'s per-tile rule) are BACKGROUND; a region that
  fails to decode is FAILED and the run goes on. Setting ``cancel`` stops after the current
  tile; the results so far are flushed to the cache (every ``flush_seconds`` and at the end),
  so a rerun resumes.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Generator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import NucleiError, PathomicsError, RegionError
from ..results.cache import CacheKey, digest_key, load_entry, nuclei_cache_path
from ..results.run import LatticeRun, Progress
from ..results.status import BACKGROUND, FAILED, PENDING
from ..wsi.slide import Slide
from ..wsi.tiling import TileGrid
from ..wsi.tissue import DEFAULT_MIN_TILE_TISSUE, stained_pixels, tissue_fraction
from .features import measure_nuclei
from .methods import Classical, NucleiMethod, resolve_method
from .nuclei import NucleiParams, _image_threshold
from .results import NucleiResults
from .stain import StainVectors, slide_stain

__all__ = ["NucleiRun", "NucleiUpdate", "run_nuclei", "nuclei_cache_path", "DEFAULT_WORK_MPP", "sample_tiles"]

#: Resolution nuclei are segmented at on a slide (a lymphocyte is ~14 px across there).
DEFAULT_WORK_MPP = 0.5
#: Context read around each tile so nuclei on its border are whole.
DEFAULT_MARGIN_UM = 12.0
#: Tiles read to estimate the slide's stain and threshold.
STAIN_SAMPLE_TILES = 12


@dataclass
class NucleiUpdate(Progress):
    """What one step of a run finished."""

    indices: np.ndarray  # grid indices finished in this step
    done: int
    total: int
    nuclei: int  # nuclei found so far on the whole slide
    from_cache: bool = False
    elapsed: float = 0.0


def _params_key(
    params: NucleiParams,
    work_mpp: float,
    margin_um: float,
    stain: StainVectors | None = None,
    method: str = "classical",
) -> str:
    return digest_key(
        {
            "params": params.to_json(),
            **({"method": method} if method != "classical" else {}),
            "work_mpp": work_mpp,
            "margin_um": margin_um,
            "v": 1,
            **({"stain": stain.to_json()} if stain is not None else {}),
        }
    )


def sample_tiles(slide: Slide, grid: TileGrid, work_mpp: float, k: int = STAIN_SAMPLE_TILES) -> np.ndarray:
    """Up to ``k`` tissue tiles spread evenly over the grid, at ``work_mpp`` (B, S, S, 3)."""
    if len(grid) == 0:
        return np.zeros((0, 1, 1, 3), dtype=np.uint8)
    pick = np.unique(np.linspace(0, len(grid) - 1, num=min(k, len(grid))).round().astype(np.int64))
    out_px = max(16, int(round(grid.tile_size_l0 * slide.mpp[0] / work_mpp)))
    tiles = []
    for i in pick:
        try:
            tiles.append(slide.read_tile(tuple(grid.origins[i]), grid.tile_size_l0, out_px))
        except RegionError:
            continue
    if not tiles:
        return np.zeros((0, out_px, out_px, 3), dtype=np.uint8)
    arr = np.stack(tiles)
    return arr[tissue_fraction(arr) >= DEFAULT_MIN_TILE_TISSUE] if len(arr) else arr


class NucleiRun(LatticeRun[NucleiResults, NucleiUpdate]):
    """One slide's nuclei run: iterate for updates; ``results`` holds what is done."""

    def __init__(
        self,
        slide: Slide,
        grid: TileGrid,
        *,
        params: NucleiParams | None = None,
        work_mpp: float = DEFAULT_WORK_MPP,
        margin_um: float = DEFAULT_MARGIN_UM,
        cache_dir: str | Path | None = None,
        use_cache: bool = True,
        cancel: threading.Event | None = None,
        flush_seconds: float = 10.0,
        stain: StainVectors | None = None,
        method: NucleiMethod | str | None = None,
    ) -> None:
        slide.mpp  # noqa: B018 - a slide without µm/px fails here with a clear message
        if len(grid) == 0:
            raise NucleiError(
                "no tile lies inside the ROIs and tissue: nothing to segment "
                "(draw or widen an ROI, or check the tissue mask)"
            )
        if (grid.slide_width, grid.slide_height) != (slide.width, slide.height):
            raise NucleiError(
                f"the tile grid is for a {grid.slide_width}x{grid.slide_height} slide, "
                f"not {slide.path.name} ({slide.width}x{slide.height})"
            )
        if not (math.isfinite(work_mpp) and 0.1 <= work_mpp <= 2.0):
            raise NucleiError(f"nuclei are segmented at 0.1–2 µm/px, not {work_mpp}")
        super().__init__(NucleiResults.KIND, flush_seconds)
        self.slide, self.grid = slide, grid
        self.params = params or NucleiParams()
        self.method = method if method is not None and not isinstance(method, str) else resolve_method(method)
        if isinstance(self.method, Classical) and params is not None:
            self.method = Classical(params)
        self.work_mpp = float(work_mpp)
        self.margin_um = float(margin_um)
        self.cancel = cancel or threading.Event()
        slide_hash = slide.file_hash()
        key = _params_key(self.params, self.work_mpp, self.margin_um, stain, self.method.key)
        meta = {
            "slide": str(slide.path),
            "slide_hash": slide_hash,
            "grid_key": grid.key(),
            "params_key": key,
            "params": self.params.to_json(),
            "nuclei_model": self.method.describe(),
            "work_mpp": self.work_mpp,
            "margin_um": self.margin_um,
            "slide_mpp": list(slide.mpp),
            "tile_um": grid.tile_um,
        }
        self.cache_file = nuclei_cache_path(slide_hash, key, grid.key(), cache_dir) if use_cache else None
        self.results = self._open(CacheKey(slide_hash, key, grid.key(), ("params_key",)), meta)
        self.stain: StainVectors | None  # None: estimated from the slide before the first tile
        if stain is not None:
            self.stain, self.reference = stain, self.results.meta.get("reference_threshold")
        elif "stain" in self.results.meta:  # resuming: the cached run's stain and threshold
            st = self.results.meta["stain"]
            self.stain = StainVectors(np.asarray(st["matrix"], dtype=np.float32), st["source"], float(st["io"]))
            self.reference = self.results.meta.get("reference_threshold")
        else:
            self.stain, self.reference = None, None

    def _open(self, key: CacheKey, meta: dict[str, Any]) -> NucleiResults:
        """The cached nuclei of this slide × parameters × grid if any, else all tiles pending."""
        res = load_entry(self.cache_file, NucleiResults.load, key, self.grid)
        if res is None:
            return NucleiResults.empty(self.grid, meta)
        res.meta.update({k: v for k, v in meta.items() if k != "slide_hash"})
        res.mark(res.failed_mask, PENDING)  # a tile that failed to decode is read again, as the engine does
        res.meta.pop("errors", None)
        return res

    def _prepare_stain(self) -> None:
        if self.stain is not None and self.reference is not None:
            return
        samples = sample_tiles(self.slide, self.grid, self.work_mpp)
        if len(samples) == 0:
            self.stain = self.stain or StainVectors.ruifrok()
            self.reference = None
        else:
            mosaic = np.concatenate(list(samples), axis=1)  # one wide strip of real tissue
            self.stain = self.stain or slide_stain(mosaic)
            self.reference = _image_threshold(mosaic, self.stain, self.work_mpp, self.params)
        self.results.meta["stain"] = self.stain.to_json()
        self.results.meta["reference_threshold"] = self.reference

    def _read(self, i: int) -> tuple[np.ndarray | None, str | None, float, float]:
        """Tile ``i`` with its margin at the working resolution; (rgb, error, level-0 px per px, margin px)."""
        s = self.grid.tile_size_l0
        slide_mpp = self.slide.mpp[0]
        margin_l0 = self.margin_um / slide_mpp
        out_px = max(16, int(round((s + 2 * margin_l0) * slide_mpp / self.work_mpp)))
        scale = (s + 2 * margin_l0) / out_px
        ox, oy = (int(round(v - margin_l0)) for v in self.grid.origins[i])
        try:
            rgb = self.slide.read_tile((ox, oy), s + 2 * margin_l0, out_px)
        except PathomicsError as exc:
            return None, str(exc), scale, margin_l0 / scale
        return rgb, None, scale, margin_l0 / scale

    def _process(self, i: int, rgb: np.ndarray, scale: float, margin_px: float) -> None:
        res = self.results
        tile_px = self.grid.tile_size_l0 / scale
        m0, m1 = int(round(margin_px)), int(round(margin_px + tile_px))
        core = rgb[m0:m1, m0:m1]
        if tissue_fraction(core[None])[0] < DEFAULT_MIN_TILE_TISSUE:
            res.mark(i, BACKGROUND)
            return
        mpp_px = scale * self.slide.mpp[0]
        seg = self.method.segment(rgb, mpp_px, stain=self.stain, reference_threshold=self.reference, check=False)
        table = measure_nuclei(seg, params=self.params)
        keep = (table.x >= m0) & (table.x < m1) & (table.y >= m0) & (table.y < m1)
        table = table.take(keep)
        ox, oy = (round(v - margin_px * scale) for v in self.grid.origins[i])
        tissue_px = float(np.count_nonzero(stained_pixels(core)))
        res.add_tile(i, table.to_level0((ox, oy), scale), tissue_px * mpp_px * mpp_px / 1e6)

    def _steps(self) -> Generator[NucleiUpdate, None, None]:
        res = self.results
        total = len(res)
        cached = res.settled()
        if cached.size:
            yield NucleiUpdate(cached, int(cached.size), total, len(res.nuclei), True, self.elapsed())
        todo = res.pending()
        if todo.size == 0:
            return
        self._prepare_stain()
        self.start_flush_clock()
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pathomics-nuclei-read")
        try:
            nxt: Future | None = pool.submit(self._read, int(todo[0]))
            for k, i in enumerate(todo):
                if self.cancel.is_set():
                    break
                rgb, err, scale, margin_px = nxt.result()  # type: ignore[union-attr]
                nxt = pool.submit(self._read, int(todo[k + 1])) if k + 1 < todo.size else None
                if rgb is None:
                    res.mark(int(i), FAILED)
                    res.meta.setdefault("errors", []).append(err)
                else:
                    self._process(int(i), rgb, scale, margin_px)
                self.flush_if_due()
                yield NucleiUpdate(np.array([i]), res.n_done, total, res.n_nuclei, False, self.elapsed())
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            res.consolidate()
            self.flush()

    def close(self) -> None:
        """Stop early: the results so far are flushed to the cache."""
        self.cancel.set()
        super().close()


def run_nuclei(slide: Slide, grid: TileGrid, **kw: Any) -> NucleiRun:
    """A :class:`NucleiRun` over ``grid`` (iterate it, or call ``run_all()``)."""
    return NucleiRun(slide, grid, **kw)
