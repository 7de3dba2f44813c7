"""The per-slide task of ``score-cohort``: score one slide on whichever process runs it.

:func:`score_slide` is a plain top-level function (picklable by reference) that opens one slide,
plans and runs its tiles through the per-slide step every command uses
(``inference.analyze.analyze_slide``; a slide without a tile fails with its TilingError) on the
process's shared engine and writes the slide's outputs. It never raises: a
failing slide returns a ``failed`` record with a one-line error, so one bad slide does not stop
the others.

A slide's folder ``slides/<key>/`` holds ``results.npz`` (+ ``.json``), ``tiles.csv``,
``tiles.geojson`` and, written last and atomically, ``done.json`` with the sha256 of
``results.npz``, the bundle id, the slide fingerprint and an options key. A slide is skipped on a
rerun only when all of these match and the results load and are complete, so a crash mid-write
(or a changed slide, bundle or option) means recomputation, never a torn result.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_json, atomic_write_set
from ..bundle import Bundle
from ..cells.methods import resolve_method
from ..errors import CohortError, PathomicsError
from ..inference.analyze import analyze_slide
from ..inference.engine import Engine
from ..provenance import file_fingerprint, now_iso, sha256_file
from ..results import FAILED, TileResults
from ..scoring import load_signature, nuclear_tile_values
from ..scoring.engine_cache import load_bundle, shared_engine
from ..signature import FeatureSpec
from ..wsi.annotations import read_geojson
from ..wsi.slide import open_slide
from .table import CohortRow

__all__ = ["ScoreOptions", "score_slide", "warm_worker", "completed_record", "slide_dir", "DONE_NAME", "RESULTS_NAME"]

DONE_NAME = "done.json"
RESULTS_NAME = "results.npz"


@dataclass
class ScoreOptions:
    """Per-slide settings shipped to the workers (plain data; part of the resume key)."""

    bundle: str
    bundle_id: str
    device: str = "cpu"
    batch_size: int = 32
    amp: str = "fp32"  # concrete: fp32 | bf16 | fp16 (resolved on the client)
    num_threads: int = 1
    min_tissue: float | None = None
    no_tissue: bool = False
    geojson: bool = True
    cache_dir: str | None = None  # the engine's per-slide resume cache
    #: the nuclei method of nuclear features (``cells.methods.method_spec``; None: the default)
    nuclei_model: str | None = None
    #: its key (``NucleiMethod.key``): a slide whose nuclei came from another method is run again
    nuclei_key: str | None = None

    def result_key(self, roi_hash: str | None) -> str:
        """What makes a slide result reusable: same bundle (hence risk definition), tiling, device."""
        blob = json.dumps(
            [self.bundle_id, self.min_tissue, self.no_tissue, roi_hash, self.device, self.amp], sort_keys=True
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


#: One slide at a time per worker process: the engine's Grad-CAM hooks and torch threads are per
#: process, and external workers may run several dask threads.
_RUN_LOCK = threading.Lock()


def worker_engine(opts: ScoreOptions) -> tuple[Engine, bool]:
    """This process's engine for ``opts`` and whether it was reused (a worker loads the model once)."""
    bundle = load_bundle(opts.bundle)
    if bundle.bundle_id != opts.bundle_id:
        raise CohortError(
            f"bundle {opts.bundle} changed during the run (id {bundle.bundle_id}, expected {opts.bundle_id})"
        )
    return shared_engine(
        bundle,
        device=opts.device,
        batch_size=opts.batch_size,
        amp=opts.amp,
        num_threads=opts.num_threads,
        workers=1,
        prefetch=2,
        flush_seconds=30.0,
    )


def warm_worker(opts: dict[str, Any]) -> dict[str, Any]:
    """Load this worker's model before any slide (one per worker; separates start-up from scoring)."""
    t0 = time.perf_counter()
    try:
        with _RUN_LOCK:
            eng, reused = worker_engine(ScoreOptions(**opts))
            _ = eng.net, eng.amp
        return {
            "worker": worker_name(),
            "pid": os.getpid(),
            "load_s": round(time.perf_counter() - t0, 3),
            "reused": reused,
            "error": None,
        }
    except Exception as exc:  # noqa: BLE001 - the slides will report it one by one
        return {"worker": worker_name(), "pid": os.getpid(), "error": one_line(exc)}


def roi_hash(roi_path: str | Path | None) -> str | None:
    return sha256_file(roi_path)[:16] if roi_path else None


def slide_dir(out: str | Path, key: str) -> Path:
    return Path(out) / "slides" / key


def completed_record(out: str | Path, row: CohortRow, opts: ScoreOptions) -> dict[str, Any] | None:
    """The ``done.json`` of a slide if its outputs are complete and valid for ``opts``, else None.

    A slide with tiles that failed to decode is run again (those tiles are read again).
    """
    d = slide_dir(out, row.key)
    try:
        rec = json.loads((d / DONE_NAME).read_text(encoding="utf-8"))
        if rec.get("result_key") != opts.result_key(roi_hash(row.roi_path)):
            return None
        if rec.get("slide_fingerprint") != file_fingerprint(row.slide_path):
            return None
        if rec.get("results_sha256") != sha256_file(d / RESULTS_NAME):
            return None
        res = TileResults.load(d / RESULTS_NAME)
        if not res.complete or FAILED in res.status or res.meta.get("bundle_id") != opts.bundle_id:
            return None
        for name in rec.get("outputs", []):
            if not (d / name).is_file():
                return None
        done_nuclei = rec.get("nuclei_model")
        if isinstance(done_nuclei, dict) and done_nuclei.get("key") != opts.nuclei_key:
            return None  # its nuclei came from another method: segment them again on a worker
        return rec
    except (OSError, ValueError, KeyError, PathomicsError):
        return None


def patient_feature_spec(bundle: Bundle) -> FeatureSpec | None:
    """The features a patient row holds: the signature's frozen spec, else TME composition."""
    sig = load_signature(bundle) if bundle.signature_path is not None else None
    if sig is not None:
        return sig.feature_spec
    return FeatureSpec(classes=list(bundle.class_names), tme_stats=["mean", "frac"], combine="weighted")


def _nuclei_on_worker(slide: Any, res: TileResults, bundle: Bundle, nuclei_model: str | None) -> dict[str, Any]:
    """Segment this slide's nuclei here, on the worker, when the patient features need them: the
    nuclei cache then serves the patient table in the main process without segmenting again."""
    spec = patient_feature_spec(bundle)
    if spec is None or not spec.nuclear:
        return {}
    try:
        method = resolve_method(nuclei_model)
        nuclear_tile_values(slide, res, spec, method=method)
    except PathomicsError as exc:  # the patient table retries and reports it
        return {"nuclei_error": one_line(exc)}
    return {"nuclei_model": method.describe()}


def one_line(exc: BaseException) -> str:
    """A failure as one line (the type name too when it is a bug, not a user error)."""
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {msg}"[:500] if not isinstance(exc, PathomicsError) else msg[:500]


def worker_name() -> str:
    try:
        from distributed import get_worker  # heavy: dask.distributed

        return str(get_worker().address)
    except (ImportError, ValueError):
        return "local"


def score_slide(row: dict[str, Any], opts: dict[str, Any], out: str) -> dict[str, Any]:
    """Score one slide on this process (a dask task); never raises, returns its record."""
    t0 = time.perf_counter()
    c0 = time.process_time()
    o = ScoreOptions(**opts)
    rec: dict[str, Any] = {
        "key": row["key"],
        "patient_id": row["patient_id"],
        "slide_path": row["slide_path"],
        "roi_path": row.get("roi_path"),
        "status": "failed",
        "error": None,
        "worker": worker_name(),
        "pid": os.getpid(),
    }
    try:
        import dask  # heavy

        # Slide pyramids are dask arrays: compute them here, not as tasks on the cluster
        # (inside a worker dask would otherwise ship the graph, with open file handles, to it).
        with _RUN_LOCK, dask.config.set(scheduler="synchronous"):
            rec.update(_score_slide_locked(row, o, out, t0))
            rec["status"] = "done"
    except Exception as exc:  # noqa: BLE001 - one failing slide must not stop the cohort
        rec["error"] = one_line(exc)
        if not isinstance(exc, PathomicsError):
            rec["traceback_tail"] = traceback.format_exc().strip().splitlines()[-3:]
    rec["task_s"] = round(time.perf_counter() - t0, 4)
    rec["cpu_s"] = round(time.process_time() - c0, 4)  # all threads of this worker process during the task
    return rec


def _score_slide_locked(row: dict[str, Any], o: ScoreOptions, out: str, t0: float) -> dict[str, Any]:
    t_wait = time.perf_counter() - t0
    engine, reused = worker_engine(o)
    t_engine = time.perf_counter() - t0 - t_wait
    d = slide_dir(out, row["key"])
    d.mkdir(parents=True, exist_ok=True)
    (d / DONE_NAME).unlink(missing_ok=True)  # from here on the folder is "in progress"
    fp = file_fingerprint(row["slide_path"])
    with open_slide(row["slide_path"]) as slide:
        rois = read_geojson(row["roi_path"], bounds=slide.dimensions).annotations if row.get("roi_path") else None
        tp = time.perf_counter()
        step = analyze_slide(
            slide,
            engine,
            rois,
            tissue=False if o.no_tissue else None,
            min_tissue=o.min_tissue,
            cache_dir=o.cache_dir,
            use_cache=o.cache_dir is not None,
        )
        grid = step.grid
        t_plan = time.perf_counter() - tp
        tr = time.perf_counter()
        res = step.run_all()
        run = step.run
        t_run = time.perf_counter() - tr
        if not res.complete:
            raise CohortError("the engine stopped before every tile had a result")
        tn = time.perf_counter()
        nuclei = _nuclei_on_worker(slide, res, engine.bundle, o.nuclei_model)
        t_nuclei = time.perf_counter() - tn
    tw = time.perf_counter()
    risk_source = res.meta.get("risk_source", "class_weights")  # the engine applies a risk head
    files = {**res.files(RESULTS_NAME), "tiles.csv": res.csv_text().encode("utf-8")}
    if o.geojson:
        files["tiles.geojson"] = (json.dumps(res.geojson(), allow_nan=False) + "\n").encode("utf-8")
    atomic_write_set(d, files)
    outputs = list(files)
    counts = res.counts()
    stats = {k: round(float(v), 4) for k, v in run.stats.items()}
    rec = {
        "slide_fingerprint": fp,
        "results_sha256": sha256_file(d / RESULTS_NAME),
        "bundle_id": o.bundle_id,
        "grid_key": grid.key(),
        "tiles": len(res),
        "counts": counts,
        "result_key": o.result_key(roi_hash(row.get("roi_path"))),
        "risk_source": risk_source,
        "outputs": outputs,
        "engine_reused": reused,
        "engine": {"amp": o.amp, "device": o.device, "num_threads": o.num_threads, "batch_size": o.batch_size},
        "timings": {
            "lock_wait_s": round(t_wait, 4),
            "engine_load_s": round(t_engine, 4),
            "plan_s": round(t_plan, 4),
            "run_s": round(t_run, 4),
            "nuclei_s": round(t_nuclei, 4),
            "write_s": 0.0,
            **{f"engine_{k}": v for k, v in stats.items()},
        },
        "finished": now_iso(),
        **nuclei,
    }
    rec["timings"]["write_s"] = round(time.perf_counter() - tw, 4)
    atomic_write_json(d / DONE_NAME, rec)  # last: marks the folder complete
    return rec
