"""Run a model bundle over a TileGrid: read, drop background, normalise, batch, infer, cache.

An :class:`Engine` is long-lived: it holds one bundle's model on a device (built once) and its
precision. Each :meth:`Engine.run` returns an :class:`InferenceRun`, the per-slide state: an
iterator of :class:`BatchUpdate` (one per batch, plus one first update replaying cached
results) that the napari worker, the CLI progress bar and tests all consume alike, and the
run's results, statistics and cache file. Design points:

* Reading + Macenko run in a small thread pool that prepares the next batches while the model
  runs (JPEG decoding, cv2 and numpy release the GIL); each reader thread has its own handle on
  the slide file, so nothing is shared with the viewer's dask reads.
* The model runs under ``inference_mode`` in channels_last, with bf16/fp16 autocast only where
  :func:`~napari_pathomics.inference._device.choose_amp` found it correct and faster.
* One forward pass gives the embeddings, the class probabilities and the patch risk (the
  bundle's risk head, or ``results.patch_risk`` of the probabilities). The embeddings are kept
  with the results (float16) so a new head applies to a whole slide without the backbone; an
  adapted bundle (``inference.head``) opens on its base bundle's cached embeddings at once.
* A region that fails to decode marks its tiles FAILED and the run goes on (the next run reads
  them again: the file may have been mid-copy); tiles that are
  mostly glass are BACKGROUND (``wsi.tissue``'s per-tile rule) and never reach the model.
* Results are flushed atomically to a cache keyed by slide fingerprint × bundle id × grid key
  every few seconds and at the end (also on cancel or when the consumer stops iterating), so a
  reopened slide shows earlier results at once and an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import copy
import math
import os
import threading
import time
from collections import deque
from collections.abc import Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..bundle import Bundle
from ..dihedral import dihedral_views
from ..errors import InferenceError
from ..results.cache import CacheKey, cache_path, load_entry, tagged_key
from ..results.run import LatticeRun, Progress
from ..results.status import BACKGROUND, DONE, FAILED, PENDING
from ..results.tiles import TileResults
from ..wsi.slide import Slide
from ..wsi.tiling import TileGrid
from ..wsi.tissue import DEFAULT_MIN_TILE_TISSUE, is_background
from ._cam import GradCamRunner, make_targets, validate_cam_names
from ._device import AmpChoice, autocast, choose_amp, configure_threads, select_device, tune_allocator
from ._reader import ThreadSlides, read_tiles
from .backbones import PatchModel, build_model, set_classifier
from .checks import check_forward, check_values
from .head import ClassHead, apply_head, load_class_head
from .preprocess import preprocess_batch
from .risk_head import RiskHead, bundle_patch_risk

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["Engine", "InferenceRun", "BatchUpdate", "Prediction", "DEFAULT_CAM_SIZE", "TTA_MODES", "tta_views"]

#: Test-time augmentation: the dihedral views of a tile whose pooled features are averaged.
#: ``none`` (the default: one view), ``flips`` (identity, horizontal, vertical, both = 180°),
#: ``d4`` (the 8 flips × 90° rotations). The embedding kept is the mean over views, and the
#: class head is linear, so probabilities = softmax(mean of the views' logits) and a head
#: applied to cached TTA embeddings (``apply_head``) gives what a TTA forward pass gives.
TTA_MODES = {"none": 1, "flips": 4, "d4": 8}

#: Mosaic px per tile side of stitched CAMs (one mosaic px = tile_size_l0 / k level-0 px).
DEFAULT_CAM_SIZE = 16
#: Batches are padded to a multiple of this: every distinct batch size makes oneDNN compile and
#: cache kernels and workspaces, and each slide's last batch has its own size.
PAD_BATCH_TO = 8


@dataclass
class Prediction:
    """What one forward pass gives for a batch of tiles."""

    probs: np.ndarray  # (B, C) float32
    risk: np.ndarray  # (B,) float32 in [0, 1]
    emb: np.ndarray  # (B, D) float32 pooled backbone features


@dataclass
class BatchUpdate(Progress):
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
    import torch  # heavy

    xs = [p.x for p in parts if p.x is not None]
    x = None
    if xs:
        x = torch.cat(xs).contiguous(memory_format=torch.channels_last) if len(xs) > 1 else xs[0]
    return _Prepared(
        idx=np.concatenate([p.idx for p in parts]),
        x=x,
        keep=np.concatenate([p.keep for p in parts]),
        failed=np.concatenate([p.failed for p in parts]),
        background=np.concatenate([p.background for p in parts]),
        fallback=np.concatenate([p.fallback for p in parts]),
        seconds=sum(p.seconds for p in parts),
        errors=[e for p in parts for e in p.errors],
    )


_NICED = threading.local()


class Engine:
    """A bundle's model ready to run on slides: ``run`` streams one slide, ``run_all`` finishes it."""

    def __init__(
        self,
        bundle: Bundle,
        device: str = "auto",
        batch_size: int = 32,
        amp: str = "auto",
        num_threads: int | None = None,
        *,
        workers: int = 1,
        prefetch: int = 2,
        cam_size: int = DEFAULT_CAM_SIZE,
        min_tile_tissue: float = DEFAULT_MIN_TILE_TISSUE,
        flush_seconds: float = 10.0,
        reader_nice: int = 0,
        tune_malloc: bool = True,
        keep_embeddings: bool = True,
        tta: str = "none",
    ) -> None:
        if batch_size < 1:
            raise InferenceError(f"batch size must be ≥ 1, got {batch_size}")
        if tta not in TTA_MODES:
            raise InferenceError(f"test-time augmentation must be one of {', '.join(TTA_MODES)}, got {tta!r}")
        self.tta = tta
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
        check_values(bundle)  # the values validate-bundle checks (stain reference, patch-risk weights), before any work
        self.patch_risk = bundle_patch_risk(bundle)  # its risk head, else class-weighted probabilities
        self.class_head = load_class_head(bundle)  # an adapted bundle's head (None: the weights' own)
        self.head_digest: str | None = None  # set for a head given in memory (with_class_head)
        self.keep_embeddings = bool(keep_embeddings)  # every computed tile's embedding goes into the results
        if tune_malloc and self.device.type == "cpu":
            # before any reader or worker thread of this engine exists (they join the main heap)
            tune_allocator()
        self._net: PatchModel | None = None
        self._amp: AmpChoice | None = None
        self._cam: GradCamRunner | None = None

    @property
    def weights(self) -> np.ndarray:
        """(C,) per-class patch-risk weights (the risk activation map's target, the risk without a head)."""
        return self.patch_risk.weights

    @property
    def risk_head(self) -> RiskHead | None:
        """The bundle's patch-risk head (None: risk = class-weighted probabilities)."""
        return self.patch_risk.head

    # ---- model ----------------------------------------------------------------------------
    @property
    def net(self) -> PatchModel:
        """The bundle's network on the device, eval, frozen, channels_last (built once)."""
        if self._net is None:
            import torch  # heavy

            net = build_model(self.bundle, "cpu")
            check_forward(self.bundle, net, self.risk_head)  # a hostile bundle fails here, as a BundleError
            m = net.module
            for p in m.parameters():
                p.requires_grad_(False)
            m = m.to(self.device)
            if self.device.type in ("cpu", "cuda"):
                m = m.to(memory_format=torch.channels_last)
            net.module = m.eval()
            self._net = net
        return self._net

    @property
    def model(self) -> "torch.nn.Module":
        """The whole ``torch.nn.Module`` (what Grad-CAM hooks)."""
        return self.net.module

    @property
    def amp(self) -> AmpChoice:
        """The precision used (probed once on first use)."""
        if self._amp is None:
            self._amp = choose_amp(
                self.model, self.device, self.bundle.input_size, self.amp_setting, arch=f"{self.bundle.bundle_id}"
            )
        return self._amp

    def with_class_head(self, head: ClassHead) -> Engine:
        """This engine (same backbone, device and settings) with ``head`` as its classifier.

        For a head adapted in the viewer and not saved as a bundle yet: its CAMs and runs need the
        head in the network. Its numbers are cached under an id of their own (the bundle's and the
        head's), and its results derive from the bundle's own cached embeddings.
        """
        net = self.net
        if head.num_classes != self.bundle.num_classes or head.dim != net.feature_dim:
            raise InferenceError(
                f"a head of {head.num_classes} classes × {head.dim} features does not fit "
                f"{self.bundle.name!r} ({self.bundle.num_classes} × {net.feature_dim})"
            )
        eng = copy.copy(self)
        module = copy.deepcopy(net.module)
        set_classifier(module, head)
        eng._net = type(net)(module)
        eng._cam = None
        eng.class_head = head
        eng.head_digest = head.digest()
        return eng

    def predict(self, x: "torch.Tensor") -> Prediction:
        """Probabilities, patch risk and embeddings of a preprocessed batch in one forward pass."""
        import torch  # heavy

        n = x.shape[0]
        pad = -n % PAD_BATCH_TO
        if pad:  # a slide's last batch: a few shapes only, or oneDNN caches kernels per size
            x = torch.cat([x, x[-1:].expand(pad, *x.shape[1:])]).contiguous(memory_format=torch.channels_last)
        net = self.net
        with torch.inference_mode(), autocast(self.device, self.amp.dtype):
            xd = x.to(self.device, non_blocking=True)
            feats = net.features(xd)
            if self.tta != "none":  # mean pooled features over the dihedral views (see TTA_MODES)
                total = feats.float()
                for view in tta_views(xd, self.tta)[1:]:
                    total = total + net.features(view.contiguous(memory_format=torch.channels_last)).float()
                feats = (total / TTA_MODES[self.tta]).to(feats.dtype)
            logits = net.logits(feats)
        probs = torch.softmax(logits.float(), dim=1).cpu().numpy()[:n]
        emb = feats.float().reshape(feats.shape[0], -1).cpu().numpy()[:n]
        risk = self.patch_risk(probs, emb)
        return Prediction(probs, risk, emb)

    def predict_tensor(self, x: "torch.Tensor") -> np.ndarray:
        """Class probabilities (B, C) float32 of a preprocessed batch."""
        return self.predict(x).probs

    def cam_tensor(self, x: "torch.Tensor", name: str) -> np.ndarray:
        """Grad-CAM maps (B, k, k) for CAM ``name`` ('risk' or a class) of a preprocessed batch."""
        if self._cam is None:
            self._cam = GradCamRunner(
                self.model, self.bundle.gradcam_target_layer, self.cam_size, autocast_dtype=self.amp.dtype
            )
        targets = make_targets(name, x.shape[0], self.bundle.class_names, self.weights)
        return self._cam(x.to(self.device), targets)

    # ---- grid / cache ---------------------------------------------------------------------
    def check_grid(self, slide: Slide, grid: TileGrid) -> None:
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

    def cache_id_of(self, bundle_id: str, *, with_head: bool = True) -> str:
        """What a bundle's cached numbers are keyed on under this engine (TTA or in-memory head: others)."""
        tags = ([f"tta-{self.tta}"] if self.tta != "none" else []) + (
            [f"head-{self.head_digest}"] if self.head_digest and with_head else []
        )
        return tagged_key(bundle_id, tags)

    def _meta(self, slide: Slide, grid: TileGrid, slide_hash: str, cache_id: str) -> dict[str, Any]:
        return {
            "slide": str(slide.path),
            "slide_hash": slide_hash,
            "bundle_id": self.bundle.bundle_id,
            "cache_id": cache_id,
            **({"tta": self.tta} if self.tta != "none" else {}),
            **({"class_head": self.head_digest} if self.head_digest else {}),
            "bundle_name": self.bundle.name,
            "grid_key": grid.key(),
            "tile_um": grid.tile_um,
            "mpp": grid.mpp,
            "tile_px": grid.tile_px,
            "slide_mpp": list(slide.mpp),
            "risk_weights": [float(w) for w in self.weights],
            "cam_size": self.cam_size,
            "risk_source": self.patch_risk.source,
        }

    def open_results(
        self,
        slide: Slide,
        grid: TileGrid,
        cache_dir: str | Path | None = None,
        use_cache: bool = True,
        cache_id: str | None = None,
    ) -> tuple[TileResults, Path | None]:
        """Cached results of this slide × bundle × grid if any (else fresh pending ones), and the cache file.

        ``cache_id`` (default: the bundle id) names what the cached numbers depend on; the
        embedding pass keys on the backbone alone, so bundles that share it share the cache.
        """
        slide_hash = slide.file_hash()
        cache_id = self.cache_id_of(cache_id or self.bundle.bundle_id)
        meta = self._meta(slide, grid, slide_hash, cache_id)
        cache_file = cache_path(slide_hash, cache_id, grid.key(), cache_dir) if use_cache else None
        res = self._cached(cache_file, slide_hash, cache_id, grid)
        if res is not None:
            res.meta.update(meta)
            return res, cache_file
        if (
            cache_file is not None
            and self.class_head is not None
            and cache_id == self.cache_id_of(self.bundle.bundle_id)
        ):
            derived = self._derived(slide_hash, grid, cache_dir, meta)
            if derived is not None:
                return derived, cache_file
        return TileResults.empty(grid, self.bundle.class_names, self.bundle.class_colors, meta), cache_file

    @staticmethod
    def _cached(path: Path | None, slide_hash: str, cache_id: str, grid: TileGrid) -> TileResults | None:
        """The cached results at ``path`` if they are this slide × ``cache_id`` × grid (None otherwise)."""
        key = CacheKey(slide_hash, cache_id, grid.key(), ("cache_id", "bundle_id"))
        res = load_entry(path, TileResults.load, key, grid)
        if res is not None:
            res.mark(res.failed_mask, PENDING)  # a tile that failed to decode is read again
        return res

    def _derived(
        self, slide_hash: str, grid: TileGrid, cache_dir: str | Path | None, meta: dict[str, Any]
    ) -> TileResults | None:
        """An adapted bundle's results from its base bundle's cached embeddings (no backbone run).

        Tiles the base run classified without keeping an embedding stay pending; CAMs are left
        for the run to compute with this bundle's head.
        """
        if self.class_head is None:
            return None
        adapt = self.bundle.manifest.get("adaptation") or {}
        own = (self.bundle.bundle_id,) if self.head_digest else ()  # an in-memory head: the bundle's own cache
        for base_id in dict.fromkeys(
            self.cache_id_of(i, with_head=False)
            for i in (*own, adapt.get("root_bundle_id"), adapt.get("base_bundle_id"))
            if i
        ):
            base = self._cached(cache_path(slide_hash, base_id, grid.key(), cache_dir), slide_hash, base_id, grid)
            if (
                base is None
                or base.emb is None
                or base.emb.shape[1] != self.class_head.dim
                or list(base.class_names) != self.bundle.class_names
            ):
                continue
            res = apply_head(base, self.class_head, self.patch_risk, meta={**meta, "derived_from": base_id})
            res.class_colors = list(self.bundle.class_colors)
            return res
        return None

    # ---- runs ------------------------------------------------------------------------------
    def run(
        self,
        slide: Slide,
        grid: TileGrid,
        *,
        cache_dir: str | Path | None = None,
        use_cache: bool = True,
        cancel: threading.Event | None = None,
        cams: Sequence[str] = (),
        embeddings: bool = False,
        cache_id: str | None = None,
        emb_dtype: str = "float16",
    ) -> InferenceRun:
        """The run of ``grid`` on ``slide``: iterate it for its :class:`BatchUpdate` s.

        The first update replays cached tiles (``from_cache=True``) when there are any. Setting
        ``cancel`` stops after the batch in progress; the iteration then just ends, with the
        results partial and the cache flushed. Tiles already done are skipped (resume), except
        tiles lacking a requested CAM (or an embedding, with ``embeddings``), which are recomputed.
        Embeddings of computed tiles are kept (as ``emb_dtype``) when ``embeddings`` is set or the
        engine keeps them (``keep_embeddings``, the default): results cached before embeddings were
        kept load as they are, and a run with ``embeddings=True`` fills them in on demand.
        """
        self.check_grid(slide, grid)
        cam_names = validate_cam_names(cams, self.bundle.class_names)
        return InferenceRun(
            self,
            slide,
            grid,
            cache_dir=cache_dir,
            use_cache=use_cache,
            cancel=cancel,
            cams=cam_names,
            embeddings=embeddings,
            cache_id=cache_id,
            emb_dtype=emb_dtype,
        )

    def run_all(self, slide: Slide, grid: TileGrid, **kw: Any) -> TileResults:
        """Run to the end (or until cancelled) and return the results."""
        run = self.run(slide, grid, **kw)
        for _ in run:
            pass
        return run.results

    def describe(self) -> dict[str, Any]:
        """Settings actually used (for run records)."""
        import torch  # heavy

        return {
            "device": str(self.device),
            "amp": self.amp.name,
            "amp_reason": self.amp.reason,
            "batch_size": self.batch_size,
            "num_threads": torch.get_num_threads(),
            "workers": self.workers,
            "prefetch": self.prefetch,
            "cam_size": self.cam_size,
            "min_tile_tissue": self.min_tile_tissue,
            **({"tta": self.tta} if self.tta != "none" else {}),
        }

    # ---- preparation (reader threads) -----------------------------------------------------
    def _prepare(self, slides: ThreadSlides, grid: TileGrid, idx: np.ndarray, origins: np.ndarray) -> _Prepared:
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
        background = is_background(tiles, self.min_tile_tissue) & ~failed
        keep = ~failed & ~background
        fallback = np.zeros(n, dtype=bool)
        x = None
        if keep.any():
            x, fb = preprocess_batch(tiles[keep], self.bundle, return_fallback=True)
            fallback[keep] = fb
        return _Prepared(idx, x, keep, failed, background, fallback, time.perf_counter() - t0, errors)


class InferenceRun(LatticeRun[TileResults, BatchUpdate]):
    """One slide's run: iterate for updates; ``results``, ``stats`` and ``cache_file`` describe it."""

    def __init__(
        self,
        engine: Engine,
        slide: Slide,
        grid: TileGrid,
        *,
        cache_dir: str | Path | None,
        use_cache: bool,
        cancel: threading.Event | None,
        cams: tuple[str, ...],
        embeddings: bool,
        cache_id: str | None = None,
        emb_dtype: str = "float16",
    ) -> None:
        super().__init__(TileResults.KIND, engine.flush_seconds)
        self.engine = engine
        self.slide = slide
        self.grid = grid
        self.cancel = cancel
        self.cams = cams
        self.embeddings = embeddings
        self.emb_dtype = np.dtype(emb_dtype)
        self.results, self.cache_file = engine.open_results(slide, grid, cache_dir, use_cache, cache_id)
        for name in cams:
            self.results.ensure_cam(name, engine.cam_size)
        self.stats: dict[str, float] = {}

    def _todo(self) -> np.ndarray:
        res = self.results
        need = res.status == PENDING
        for name in self.cams:
            need |= res.missing_cam(name)
        if self.embeddings:
            need |= res.missing_emb()
        return np.flatnonzero(need)

    def _steps(self) -> Generator[BatchUpdate, None, None]:
        eng, res = self.engine, self.results
        cached = res.settled()
        if cached.size:
            yield self._update(cached, np.array([], dtype=np.int64), np.array([], dtype=np.int64), from_cache=True)
        if res.meta.get("derived_from") and self.cache_file is not None and not self.cache_file.is_file():
            self.flush()  # an adapted bundle's results derived from its base's embeddings: cache them as its own
        todo = self._todo()
        stats = {
            "read_s": 0.0,
            "model_s": 0.0,
            "cam_s": 0.0,
            "wait_s": 0.0,
            "tiles": 0.0,
            "model_tiles": 0.0,
            "failed": 0.0,
            "background": 0.0,
            "stain_fallback": 0.0,
            "batches": 0.0,
        }
        self.stats = stats
        if todo.size == 0 or (self.cancel is not None and self.cancel.is_set()):
            stats["total_s"] = time.perf_counter() - self.t_start
            return
        configure_threads(eng.num_threads)
        _ = eng.amp  # probe once, before timing batches
        origins = res.origins
        batches = [todo[i : i + eng.batch_size] for i in range(0, todo.size, eng.batch_size)]
        slides = ThreadSlides(self.slide)
        use_pool = eng.prefetch > 0 or eng.workers > 1
        pool = ThreadPoolExecutor(max_workers=eng.workers, thread_name_prefix="pathomics-read") if use_pool else None
        pending: deque[Future] = deque()
        nxt = 0

        def submit() -> None:
            nonlocal nxt
            if pool is not None and eng.prefetch and nxt < len(batches):
                pending.append(pool.submit(eng._prepare, slides, self.grid, batches[nxt], origins))
                nxt += 1

        self.start_flush_clock()
        t_loop = time.perf_counter()
        try:
            for _ in range(eng.prefetch):
                submit()
            for b in range(len(batches)):
                if self.cancel is not None and self.cancel.is_set():
                    break
                t0 = time.perf_counter()
                if eng.prefetch:
                    prep = pending.popleft().result()
                    submit()
                elif pool is not None:  # phased: all workers prepare this batch, then the model runs
                    prep = _merge(
                        [
                            f.result()
                            for f in [
                                pool.submit(eng._prepare, slides, self.grid, part, origins)
                                for part in np.array_split(batches[b], eng.workers)
                                if part.size
                            ]
                        ]
                    )
                else:
                    prep = eng._prepare(slides, self.grid, batches[b], origins)
                stats["wait_s"] += time.perf_counter() - t0
                stats["read_s"] += prep.seconds
                upd_cams = self._process(prep)
                stats["batches"] += 1
                upd = self._update(prep.idx, prep.idx[prep.failed], prep.idx[prep.background], cams=upd_cams)
                self.flush_if_due()
                yield upd
        finally:
            for f in pending:
                f.cancel()
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
            slides.close()
            self.flush()
            stats["loop_s"] = time.perf_counter() - t_loop
            stats["total_s"] = time.perf_counter() - self.t_start

    def _process(self, prep: _Prepared) -> dict[str, np.ndarray]:
        """Model (and CAMs) on one prepared batch; writes into the results."""
        eng, res, stats = self.engine, self.results, self.stats
        idx = prep.idx
        kept = idx[prep.keep]
        if prep.x is not None:
            t = time.perf_counter()
            pred = eng.predict(prep.x)
            stats["model_s"] += time.perf_counter() - t
            res.probs[kept] = pred.probs
            res.risk[kept] = pred.risk
            res.status[kept] = DONE
            res.stain_fallback[kept] = prep.fallback[prep.keep]
            if self.embeddings or eng.keep_embeddings:
                res.ensure_emb(pred.emb.shape[1], self.emb_dtype)[kept] = pred.emb
            stats["model_tiles"] += kept.size
            for name in self.cams:
                t = time.perf_counter()
                maps = eng.cam_tensor(prep.x, name)
                stats["cam_s"] += time.perf_counter() - t
                res.cams[name][kept] = maps
        for mask, code in ((prep.failed, FAILED), (prep.background, BACKGROUND)):
            sel = idx[mask]
            res.status[sel] = code
            res.probs[sel] = np.nan
            res.risk[sel] = np.nan
            if res.emb is not None:
                res.emb[sel] = np.nan
            for name in self.cams:
                res.cams[name][sel] = np.nan
        if prep.errors:
            res.meta.setdefault("errors", [])
            res.meta["errors"] = (res.meta["errors"] + prep.errors)[-20:]
        stats["tiles"] += idx.size
        stats["failed"] += int(prep.failed.sum())
        stats["background"] += int(prep.background.sum())
        stats["stain_fallback"] += int(prep.fallback.sum())
        return {name: res.cams[name][idx] for name in self.cams}

    def _update(
        self,
        idx: np.ndarray,
        failed: np.ndarray,
        background: np.ndarray,
        cams: dict[str, np.ndarray] | None = None,
        from_cache: bool = False,
    ) -> BatchUpdate:
        res = self.results
        if cams is None:
            cams = {n: res.cams[n][idx] for n in self.cams}
        return BatchUpdate(
            indices=idx,
            probs=res.probs[idx],
            risk=res.risk[idx],
            status=res.status[idx],
            failed=failed,
            background=background,
            done=res.n_done,
            total=len(res),
            cams=cams,
            from_cache=from_cache,
            elapsed=self.elapsed(),
        )


def tta_views(x: "torch.Tensor", mode: str) -> list["torch.Tensor"]:
    """The dihedral views of an (N, C, H, W) batch for a TTA mode (the first is ``x`` itself)."""
    return dihedral_views(x, TTA_MODES[mode])
