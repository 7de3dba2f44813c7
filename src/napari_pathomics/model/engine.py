"""Run a model bundle over a TileGrid: read, drop background, normalise, batch, infer, cache.

The engine is a generator so that the napari worker, the CLI progress bar and tests all consume
the same thing: one :class:`BatchUpdate` per batch (plus one first update replaying cached
results). Design points, each measured on a 2-core CPU:

* Reading + Macenko run in a small thread pool that prepares the next batches while the model
  runs (JPEG decoding, cv2 and numpy release the GIL). Each worker thread opens its own handle
  on the slide file, so nothing is shared with the viewer's dask reads.
* The model runs under ``inference_mode`` in channels_last, with bf16/fp16 autocast only where
  :func:`~napari_pathomics.model.device.choose_amp` found it correct and faster.
* A region that fails to decode marks its tiles FAILED and the run goes on; tiles that are
  mostly glass are marked BACKGROUND and not sent to the model.
* Results are flushed atomically to a cache keyed by slide fingerprint × bundle id × grid key
  every few seconds and at the end (also on cancel or when the consumer stops iterating), so a
  reopened slide shows earlier results at once and an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import cv2
import numpy as np

from ..errors import InferenceError, ResultsError
from ..results import BACKGROUND, DONE, FAILED, PENDING, TileResults, cache_path, patch_risk, patch_risk_weights
from .cam import GradCamRunner, make_targets, validate_cam_names
from .risk_head import load_risk_head
from .device import AmpChoice, autocast, choose_amp, configure_threads, select_device, tune_allocator

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ..annotations import Annotation
    from ..slide import Slide
    from ..tiling import TileGrid
    from .bundle import Bundle

__all__ = ["Engine", "BatchUpdate", "plan_for_bundle", "read_tiles", "tissue_fraction", "DEFAULT_CAM_SIZE"]

#: Mosaic px per tile side of stitched CAMs (one mosaic px = tile_size_l0 / k level-0 px).
DEFAULT_CAM_SIZE = 16
#: A tile with less than this fraction of stained pixels is background (glass).
DEFAULT_MIN_TILE_TISSUE = 0.05
#: HSV saturation above which a pixel counts as stained.
_SAT_MIN = 0.08


def tissue_fraction(tiles: np.ndarray, stride: int = 4) -> np.ndarray:
    """Fraction of stained pixels per tile (B,) from a strided subsample: cheap background check.

    A pixel is stained when its HSV saturation exceeds 0.08 and it is neither near-black (pen,
    shadow) nor near-white (glass).
    """
    sub = np.asarray(tiles)[:, ::stride, ::stride].astype(np.int16)
    mx = sub.max(axis=-1)
    mn = sub.min(axis=-1)
    stained = ((mx - mn) > _SAT_MIN * mx) & (mx > 40) & (mn < 235)
    return stained.reshape(stained.shape[0], -1).mean(axis=1)


def _error_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__


def read_tiles(slide: "Slide", size_l0: float, out_px: int, origins: np.ndarray, out: np.ndarray,
               failed: np.ndarray, errors: list[str], max_run: int = 16) -> None:
    """Fill ``out[j]`` with ``slide.read_tile(origins[j], size_l0, out_px)``, pixel for pixel, faster.

    Tiles of one lattice row that follow each other are read as one strip: a 224 px tile of a
    256 px-tiled file touches ~3.5 file tiles on its own but ~1.9 inside a strip, so JPEG
    decoding drops by about half. A strip that fails to decode is retried tile by tile, so only
    the tiles over the broken region are marked ``failed`` (with the error in ``errors``).
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
        while (end < n and end - start < max_run and oy[end] == oy[start]
               and 0 < xs[end] - xs[end - 1] <= step):
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
                region = strip[:, a:a + side]
                out[j] = region if side == out_px else cv2.resize(region, (out_px, out_px), interpolation=interp)
            except Exception as exc:  # noqa: BLE001 - RegionError or any decoder error
                failed[j] = True
                errors.append(_error_line(exc))
        start = end


def plan_for_bundle(slide: "Slide", bundle: "Bundle", annotations: "list[Annotation] | None" = None,
                    tissue: Any = None, min_tissue: float | None = None) -> "TileGrid":
    """The TileGrid a bundle needs on this slide: its tile size in µm at its µm/px."""
    from ..tiling import DEFAULT_MIN_TISSUE, plan_tiles

    return plan_tiles(slide, annotations, tissue=tissue, tile_um=bundle.tile_um, mpp=bundle.mpp,
                      min_tissue=DEFAULT_MIN_TISSUE if min_tissue is None else min_tissue)


#: Batches are padded to a multiple of this: every distinct batch size makes oneDNN compile and
#: cache kernels and workspaces, which grew RSS by ~330 MB over 20 slides (each slide's last
#: batch has its own size); with padding to 8 it is +114 MB, then flat.
PAD_BATCH_TO = 8


@dataclass
class BatchUpdate:
    """What one step of a run finished: for progress bars and streaming layers."""

    indices: np.ndarray  # (B,) grid indices finished in this step (done, failed or background)
    probs: np.ndarray  # (B, C) float32, NaN rows for failed/background tiles
    risk: np.ndarray  # (B,) float32, NaN for failed/background tiles
    status: np.ndarray  # (B,) int8
    failed: np.ndarray  # grid indices whose region failed to decode
    background: np.ndarray  # grid indices dropped as background
    done: int  # tiles with a final status so far (all runs)
    total: int  # tiles in the grid
    cams: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (B, k, k); NaN rows if none
    from_cache: bool = False
    elapsed: float = 0.0  # seconds since the run started

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0


@dataclass
class _Prepared:
    idx: np.ndarray
    x: Any  # torch.Tensor (K, 3, S, S) for the kept tiles, or None
    keep: np.ndarray  # (B,) bool: sent to the model
    failed: np.ndarray  # (B,) bool
    background: np.ndarray  # (B,) bool
    fallback: np.ndarray  # (B,) bool stain fallback
    seconds: float
    errors: list[str]


def _merge(parts: list[_Prepared]) -> _Prepared:
    """One prepared batch from consecutive parts prepared in parallel (order kept)."""
    if len(parts) == 1:
        return parts[0]
    import torch

    xs = [p.x for p in parts if p.x is not None]
    x = None
    if xs:
        x = torch.cat(xs).contiguous(memory_format=torch.channels_last) if len(xs) > 1 else xs[0]
    return _Prepared(
        idx=np.concatenate([p.idx for p in parts]), x=x,
        keep=np.concatenate([p.keep for p in parts]), failed=np.concatenate([p.failed for p in parts]),
        background=np.concatenate([p.background for p in parts]),
        fallback=np.concatenate([p.fallback for p in parts]),
        seconds=sum(p.seconds for p in parts), errors=[e for p in parts for e in p.errors])


_NICED = threading.local()


class _ThreadSlides:
    """One slide handle per worker thread (tiffslide/zarr stores are not shared across threads)."""

    def __init__(self, slide: "Slide") -> None:
        self.slide = slide
        self._local = threading.local()
        self._opened: list[Any] = []
        self._lock = threading.Lock()

    def get(self) -> "Slide":
        s = getattr(self._local, "slide", None)
        if s is None:
            from ..slide import open_slide

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


class Engine:
    """A bundle ready to run on slides; ``run`` streams batches, ``run_all`` returns the results."""

    def __init__(self, bundle: "Bundle", device: str = "auto", batch_size: int = 32, amp: str = "auto",
                 num_threads: int | None = None, *, workers: int = 1, prefetch: int = 2,
                 cam_size: int = DEFAULT_CAM_SIZE, min_tile_tissue: float = DEFAULT_MIN_TILE_TISSUE,
                 flush_seconds: float = 10.0, reader_nice: int = 0, tune_malloc: bool = True) -> None:
        if batch_size < 1:
            raise InferenceError(f"batch size must be ≥ 1, got {batch_size}")
        self.bundle = bundle
        self.device = select_device(device)
        self.batch_size = int(batch_size)
        self.amp_setting = amp
        self.num_threads = num_threads
        self.workers = max(1, int(workers))
        self.prefetch = max(0, int(prefetch))
        self.cam_size = int(cam_size)
        self.min_tile_tissue = float(min_tile_tissue)
        self.flush_seconds = float(flush_seconds)
        self.reader_nice = int(reader_nice)
        self.tune_malloc = bool(tune_malloc)
        self.weights = patch_risk_weights(bundle)
        self.risk_head = load_risk_head(bundle)  # None: risk = class-weighted probabilities
        self.results: TileResults | None = None
        self.cache_file: Path | None = None
        self.stats: dict[str, float] = {}
        self._model: Any = None
        self._amp: AmpChoice | None = None
        self._cam: GradCamRunner | None = None

    # ---- model ----------------------------------------------------------------------------
    @property
    def model(self) -> "torch.nn.Module":
        """The bundle's model on the device, eval, frozen, channels_last (built once)."""
        if self._model is None:
            import torch

            m = self.bundle.create_model("cpu")
            for p in m.parameters():
                p.requires_grad_(False)
            m = m.to(self.device)
            if self.device.type in ("cpu", "cuda"):
                m = m.to(memory_format=torch.channels_last)
            self._model = m.eval()
        return self._model

    @property
    def amp(self) -> AmpChoice:
        """The precision used (probed once on first use)."""
        if self._amp is None:
            self._amp = choose_amp(self.model, self.device, self.bundle.input_size, self.amp_setting,
                                   arch=f"{self.bundle.bundle_id}")
        return self._amp

    def predict_tensor(self, x: "torch.Tensor") -> np.ndarray:
        """Class probabilities (B, C) float32 for a preprocessed batch (the fast path)."""
        return self.predict_with_risk(x)[0]

    def predict_with_risk(self, x: "torch.Tensor") -> tuple[np.ndarray, np.ndarray]:
        """Class probabilities (B, C) and patch risk (B,) of a batch in one forward pass.

        With a bundle risk head the pooled backbone features feed both the classifier and the
        head; otherwise the risk is the class-weighted probability (``results.patch_risk``).
        """
        import torch

        n = x.shape[0]
        pad = -n % PAD_BATCH_TO
        if pad:  # a slide's last batch: a few shapes only, or oneDNN caches kernels per size
            x = torch.cat([x, x[-1:].expand(pad, *x.shape[1:])]).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), autocast(self.device, self.amp.dtype):
            xd = x.to(self.device, non_blocking=True)
            if self.risk_head is None:
                logits, pre = self.model(xd), None
            else:
                feats = self.model.forward_features(xd)
                pre = self.model.forward_head(feats, pre_logits=True)
                logits = self.model.forward_head(feats)
        probs = torch.softmax(logits.float(), dim=1).cpu().numpy()[:n]
        if pre is None:
            return probs, patch_risk(probs, self.weights)
        emb = pre.float().reshape(pre.shape[0], -1).cpu().numpy()[:n]
        return probs, self.risk_head.predict(emb)

    def cam_tensor(self, x: "torch.Tensor", name: str) -> np.ndarray:
        """Grad-CAM maps (B, k, k) for CAM ``name`` ('risk' or a class) of a preprocessed batch."""
        if self._cam is None:
            self._cam = GradCamRunner(self.model, self.bundle.gradcam_target_layer, self.cam_size,
                                      autocast_dtype=self.amp.dtype)
        targets = make_targets(name, x.shape[0], self.bundle.class_names, self.weights)
        return self._cam(x.to(self.device), targets)

    # ---- grid / cache ---------------------------------------------------------------------
    def check_grid(self, slide: "Slide", grid: "TileGrid") -> None:
        """Refuse a grid planned for other tile size / µm/px or another slide (clear message)."""
        b = self.bundle
        if not (math.isclose(grid.tile_um, b.tile_um, rel_tol=1e-6) and math.isclose(grid.mpp, b.mpp, rel_tol=1e-6)):
            raise InferenceError(
                f"the tile grid was planned for {grid.tile_um:g} µm tiles at {grid.mpp:g} µm/px but bundle "
                f"{b.name!r} needs {b.tile_um:g} µm at {b.mpp:g} µm/px; re-plan with plan_for_bundle()"
            )
        if (grid.slide_width, grid.slide_height) != (slide.width, slide.height):
            raise InferenceError(
                f"the tile grid is for a {grid.slide_width}x{grid.slide_height} slide, "
                f"not {slide.path.name} ({slide.width}x{slide.height})"
            )

    def _meta(self, slide: "Slide", grid: "TileGrid", slide_hash: str) -> dict[str, Any]:
        return {"slide": str(slide.path), "slide_hash": slide_hash, "bundle_id": self.bundle.bundle_id,
                "bundle_name": self.bundle.name, "grid_key": grid.key(), "tile_um": grid.tile_um,
                "mpp": grid.mpp, "tile_px": grid.tile_px, "slide_mpp": list(slide.mpp),
                "risk_weights": [float(w) for w in self.weights], "cam_size": self.cam_size,
                "risk_source": "risk_head" if self.risk_head is not None else "class_weights"}

    def open_results(self, slide: "Slide", grid: "TileGrid", cache_dir: str | Path | None = None,
                     use_cache: bool = True) -> TileResults:
        """Cached results of this slide × bundle × grid if any, else fresh pending results."""
        slide_hash = slide.file_hash()
        meta = self._meta(slide, grid, slide_hash)
        self.cache_file = cache_path(slide_hash, self.bundle.bundle_id, grid.key(), cache_dir) if use_cache else None
        if self.cache_file is not None and self.cache_file.is_file():
            try:
                res = TileResults.load(self.cache_file)
                m = res.meta
                if (m.get("slide_hash"), m.get("bundle_id"), m.get("grid_key")) == (
                        slide_hash, self.bundle.bundle_id, grid.key()) and len(res) == len(grid) \
                        and np.array_equal(res.cols, grid.cols) and np.array_equal(res.rows, grid.rows):
                    res.meta.update(meta)
                    return res
            except ResultsError:
                pass  # unreadable cache: recompute (it will be overwritten)
        return TileResults.empty(grid, self.bundle.class_names, self.bundle.class_colors, meta)

    def flush(self) -> None:
        """Write the current results to the cache atomically (no-op without a cache)."""
        if self.results is not None and self.cache_file is not None:
            self.results.save(self.cache_file)

    # ---- preparation (worker threads) -----------------------------------------------------
    def _prepare(self, slides: _ThreadSlides, grid: "TileGrid", idx: np.ndarray, origins: np.ndarray) -> _Prepared:
        from .preprocess import preprocess_batch

        t0 = time.perf_counter()
        if self.reader_nice and not getattr(_NICED, "done", False):
            _NICED.done = True
            try:  # Linux: threads are tasks, so this lowers only the reader thread
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.reader_nice)
            except (AttributeError, OSError):
                pass
        slide = slides.get()
        px = grid.tile_px
        n = idx.size
        tiles = np.empty((n, px, px, 3), dtype=np.uint8)
        failed = np.zeros(n, dtype=bool)
        errors: list[str] = []
        read_tiles(slide, grid.tile_size_l0, px, origins[idx], tiles, failed, errors)
        background = np.zeros(n, dtype=bool)
        if self.min_tile_tissue > 0 and n:
            background = (tissue_fraction(tiles) < self.min_tile_tissue) & ~failed
        keep = ~failed & ~background
        fallback = np.zeros(n, dtype=bool)
        x = None
        if keep.any():
            x, fb = preprocess_batch(tiles[keep], self.bundle, return_fallback=True)
            fallback[keep] = fb
        return _Prepared(idx, x, keep, failed, background, fallback, time.perf_counter() - t0, errors)

    # ---- the run ---------------------------------------------------------------------------
    def run(self, slide: "Slide", grid: "TileGrid", *, cache_dir: str | Path | None = None, use_cache: bool = True,
            cancel: threading.Event | None = None, cams: Sequence[str] = ()) -> Iterator[BatchUpdate]:
        """Stream the results of ``grid`` on ``slide``, batch by batch; ``self.results`` fills up.

        The first update replays cached tiles (``from_cache=True``) when there are any. Setting
        ``cancel`` stops after the batch in progress; the generator then just ends, with the
        results partial and the cache flushed. Tiles already done are skipped (resume), except
        that tiles lacking a requested CAM are recomputed.
        """
        self.check_grid(slide, grid)
        cam_names = validate_cam_names(cams, self.bundle.class_names)
        t_start = time.perf_counter()
        res = self.open_results(slide, grid, cache_dir, use_cache)
        self.results = res
        for name in cam_names:
            res.ensure_cam(name, self.cam_size)

        cached = np.flatnonzero(res.status != PENDING)
        if cached.size:
            yield self._update(res, cached, np.array([], dtype=np.int64), np.array([], dtype=np.int64),
                               cam_names, t_start, from_cache=True)

        need = res.status == PENDING
        for name in cam_names:
            need |= res.missing_cam(name)
        todo = np.flatnonzero(need)
        stats = {"read_s": 0.0, "model_s": 0.0, "cam_s": 0.0, "wait_s": 0.0, "tiles": 0.0, "model_tiles": 0.0,
                 "failed": 0.0, "background": 0.0, "stain_fallback": 0.0, "batches": 0.0}
        self.stats = stats
        if todo.size == 0 or (cancel is not None and cancel.is_set()):
            stats["total_s"] = time.perf_counter() - t_start
            return
        configure_threads(self.num_threads)
        if self.tune_malloc and self.device.type == "cpu":
            tune_allocator()
        _ = self.amp  # probe once, before timing batches
        origins = res.origins
        batches = [todo[i:i + self.batch_size] for i in range(0, todo.size, self.batch_size)]
        slides = _ThreadSlides(slide)
        use_pool = self.prefetch > 0 or self.workers > 1
        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="pathomics-read") if use_pool else None
        pending: deque[Future] = deque()
        nxt = 0

        def submit() -> None:
            nonlocal nxt
            if pool is not None and self.prefetch and nxt < len(batches):
                pending.append(pool.submit(self._prepare, slides, grid, batches[nxt], origins))
                nxt += 1

        last_flush = time.perf_counter()
        flush_cost = 0.0
        t_loop = time.perf_counter()
        try:
            for _ in range(self.prefetch):
                submit()
            for b in range(len(batches)):
                if cancel is not None and cancel.is_set():
                    break
                t0 = time.perf_counter()
                if self.prefetch:
                    prep = pending.popleft().result()
                    submit()
                elif pool is not None:  # phased: all workers prepare this batch, then the model runs
                    prep = _merge([f.result() for f in [
                        pool.submit(self._prepare, slides, grid, part, origins)
                        for part in np.array_split(batches[b], self.workers) if part.size]])
                else:
                    prep = self._prepare(slides, grid, batches[b], origins)
                stats["wait_s"] += time.perf_counter() - t0
                stats["read_s"] += prep.seconds
                upd_cams = self._process(res, prep, cam_names, stats)
                stats["batches"] += 1
                upd = self._update(res, prep.idx, prep.idx[prep.failed], prep.idx[prep.background],
                                   cam_names, t_start, cams=upd_cams)
                # flush every flush_seconds, but never spend more than ~5 % of the run writing
                if time.perf_counter() - last_flush >= max(self.flush_seconds, 20 * flush_cost):
                    tf = time.perf_counter()
                    self.flush()
                    flush_cost = time.perf_counter() - tf
                    last_flush = time.perf_counter()
                yield upd
        finally:
            for f in pending:
                f.cancel()
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
            slides.close()
            self.flush()
            stats["loop_s"] = time.perf_counter() - t_loop
            stats["total_s"] = time.perf_counter() - t_start

    def _process(self, res: TileResults, prep: _Prepared, cam_names: Sequence[str],
                 stats: dict[str, float]) -> dict[str, np.ndarray]:
        """Model (and CAMs) on one prepared batch; writes into ``res``."""
        idx = prep.idx
        kept = idx[prep.keep]
        out_cams: dict[str, np.ndarray] = {}
        if prep.x is not None:
            t = time.perf_counter()
            probs, risk = self.predict_with_risk(prep.x)
            stats["model_s"] += time.perf_counter() - t
            res.probs[kept] = probs
            res.risk[kept] = risk
            res.status[kept] = DONE
            res.stain_fallback[kept] = prep.fallback[prep.keep]
            stats["model_tiles"] += kept.size
            for name in cam_names:
                t = time.perf_counter()
                maps = self.cam_tensor(prep.x, name)
                stats["cam_s"] += time.perf_counter() - t
                res.cams[name][kept] = maps
        for mask, code in ((prep.failed, FAILED), (prep.background, BACKGROUND)):
            sel = idx[mask]
            res.status[sel] = code
            res.probs[sel] = np.nan
            res.risk[sel] = np.nan
            for name in cam_names:
                res.cams[name][sel] = np.nan
        if prep.errors:
            res.meta.setdefault("errors", [])
            res.meta["errors"] = (res.meta["errors"] + prep.errors)[-20:]
        stats["tiles"] += idx.size
        stats["failed"] += int(prep.failed.sum())
        stats["background"] += int(prep.background.sum())
        stats["stain_fallback"] += int(prep.fallback.sum())
        for name in cam_names:
            out_cams[name] = res.cams[name][idx]
        return out_cams

    def _update(self, res: TileResults, idx: np.ndarray, failed: np.ndarray, background: np.ndarray,
                cam_names: Sequence[str], t_start: float, cams: dict[str, np.ndarray] | None = None,
                from_cache: bool = False) -> BatchUpdate:
        if cams is None:
            cams = {n: res.cams[n][idx] for n in cam_names}
        return BatchUpdate(indices=idx, probs=res.probs[idx], risk=res.risk[idx], status=res.status[idx],
                           failed=failed, background=background, done=res.n_done, total=len(res), cams=cams,
                           from_cache=from_cache, elapsed=time.perf_counter() - t_start)

    def run_all(self, slide: "Slide", grid: "TileGrid", **kw: Any) -> TileResults:
        """Run to the end (or until cancelled) and return the results."""
        for _ in self.run(slide, grid, **kw):
            pass
        assert self.results is not None
        return self.results

    def describe(self) -> dict[str, Any]:
        """Settings actually used (for run.json)."""
        import torch

        return {"device": str(self.device), "amp": self.amp.name, "amp_reason": self.amp.reason,
                "batch_size": self.batch_size, "num_threads": torch.get_num_threads(), "workers": self.workers,
                "prefetch": self.prefetch, "cam_size": self.cam_size, "min_tile_tissue": self.min_tile_tissue}
