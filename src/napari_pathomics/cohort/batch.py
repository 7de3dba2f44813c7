"""``score-cohort``: run a bundle over every slide of a cohort on dask.distributed, resumably.

Design
------
* **Slides are tasks.** :func:`score_slide` is a plain top-level function (picklable by
  reference) that opens one slide, plans its tiles exactly as ``pathomics infer`` does
  (:func:`~napari_pathomics.model.engine.plan_for_bundle`), runs the engine and writes the
  slide's outputs. It never raises: a failing slide returns a ``failed`` record with a one-line
  error, so one bad slide does not stop the others.
* **One model per worker process.** Engines are cached in a module-level dict keyed by bundle
  path × bundle id × device × precision × batch × threads, so a worker loads the bundle once and
  reuses it for every slide it gets; a warm-up task pinned to each worker loads it before the
  first slide (start-up and scoring are timed apart in ``run.json``). A process-wide lock runs one slide at a time per worker
  process (an Engine holds per-run state; external workers may have several dask threads), and
  intra-slide parallelism comes from torch threads (``threads_per_worker``) plus the engine's
  reader thread. The default local cluster is ``LocalCluster(processes=True)`` with one dask
  thread per worker.
* **Same numbers everywhere.** The precision is resolved once on the client (``--amp auto``
  probes there) and passed to every worker, so all slides of a run use the same dtype; with the
  same bundle, device, precision and torch thread count the distributed results equal a direct
  ``Engine.run_all`` bit for bit (tested).
* **Cost.** Measured on 2 shared cores (``benchmarks/bench_cohort.py``): a warm worker spends
  ~20–25 % more CPU per slide than the same engine called in the main thread of one process
  until the cause was found: executor threads get their own glibc arenas, whose 64 MiB heaps
  cannot hold a batch's tensors, so each batch was fresh mmaps. :func:`worker_config` sets
  ``MALLOC_ARENA_MAX=1`` and removes the nanny's ``MALLOC_TRIM_THRESHOLD_`` and
  ``OMP_NUM_THREADS=1``, and slows the event loop's ticks. Now a warm worker costs +8 % wall per
  slide of ~340 tiles (+0.26 s) and +16 % on 79-tile slides (+0.14 s: submit, gather, outputs).
* **Resume.** A slide's folder ``slides/<key>/`` holds ``results.npz`` (+ ``.json``),
  ``tiles.csv``, ``tiles.geojson`` and, written last and atomically, ``done.json`` with the
  sha256 of ``results.npz``, the bundle id, the slide fingerprint and an options key. A slide is
  skipped only when all of these match and the results load and are complete, so a crash
  mid-write (or a changed slide, bundle or option) means recomputation, never a torn result.
  The engine's own per-slide cache (``cache/``) resumes a slide interrupted mid-run.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import threading
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence


from ..atomic import atomic_write_json, atomic_write_text
from ..errors import CohortError, PathomicsError
from ..provenance import versions
from .table import CohortRow, CohortTable

RUN_KIND = "pathomics-score-cohort"
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

    def result_key(self, roi_hash: str | None) -> str:
        """What makes a slide result reusable: same bundle (hence risk definition), tiling, device."""
        blob = json.dumps([self.bundle_id, self.min_tissue, self.no_tissue, roi_hash,
                           self.device, self.amp], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# worker side
_ENGINES: dict[tuple, Any] = {}
_ENGINE_LOCK = threading.Lock()
_RUN_LOCK = threading.Lock()
#: bundle loads per process (tests check that a worker loads the model once)
LOAD_COUNT = {"bundles": 0}


def get_engine(opts: ScoreOptions) -> tuple[Any, bool]:
    """This process's Engine for ``opts`` and whether it was reused (built once per process)."""
    key = (opts.bundle, opts.bundle_id, opts.device, opts.amp, opts.batch_size, opts.num_threads)
    with _ENGINE_LOCK:
        eng = _ENGINES.get(key)
        reused = eng is not None
        if eng is None:
            from ..model.bundle import Bundle
            from ..model.engine import Engine

            bundle = Bundle.load(opts.bundle)
            LOAD_COUNT["bundles"] += 1
            if bundle.bundle_id != opts.bundle_id:
                raise CohortError(f"bundle {opts.bundle} changed during the run "
                                  f"(id {bundle.bundle_id}, expected {opts.bundle_id})")
            eng = Engine(bundle, device=opts.device, batch_size=opts.batch_size, amp=opts.amp,
                         num_threads=opts.num_threads, workers=1, prefetch=2, flush_seconds=30.0)
            _ENGINES[key] = eng
        return eng, reused


def warm_worker(opts: dict[str, Any]) -> dict[str, Any]:
    """Load this worker's model before any slide (one per worker; separates start-up from scoring)."""
    t0 = time.perf_counter()
    try:
        with _RUN_LOCK:
            eng, reused = get_engine(ScoreOptions(**opts))
            _ = eng.model, eng.amp
        return {"worker": _worker_name(), "pid": os.getpid(), "load_s": round(time.perf_counter() - t0, 3),
                "reused": reused, "error": None}
    except Exception as exc:  # noqa: BLE001 - the slides will report it one by one
        return {"worker": _worker_name(), "pid": os.getpid(), "error": _one_line(exc)}


def file_fingerprint(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of size + first/last MiB: the same fingerprint as ``Slide.file_hash``."""
    path = Path(path)
    h = hashlib.sha256()
    size = path.stat().st_size
    h.update(str(size).encode())
    with open(path, "rb") as fh:
        h.update(fh.read(chunk))
        if size > chunk:
            fh.seek(max(chunk, size - chunk))
            h.update(fh.read(chunk))
    return h.hexdigest()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _roi_hash(roi_path: str | None) -> str | None:
    return _sha256(Path(roi_path))[:16] if roi_path else None


def slide_dir(out: str | Path, key: str) -> Path:
    return Path(out) / "slides" / key


def completed_record(out: str | Path, row: CohortRow, opts: ScoreOptions) -> dict[str, Any] | None:
    """The ``done.json`` of a slide if its outputs are complete and valid for ``opts``, else None."""
    from ..results import TileResults

    d = slide_dir(out, row.key)
    try:
        rec = json.loads((d / DONE_NAME).read_text(encoding="utf-8"))
        if rec.get("result_key") != opts.result_key(_roi_hash(str(row.roi_path) if row.roi_path else None)):
            return None
        if rec.get("slide_fingerprint") != file_fingerprint(row.slide_path):
            return None
        if rec.get("results_sha256") != _sha256(d / RESULTS_NAME):
            return None
        res = TileResults.load(d / RESULTS_NAME)
        if not res.complete or res.meta.get("bundle_id") != opts.bundle_id:
            return None
        for name in rec.get("outputs", []):
            if not (d / name).is_file():
                return None
        return rec
    except (OSError, ValueError, KeyError, PathomicsError):
        return None


def _one_line(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {msg}"[:500] if not isinstance(exc, PathomicsError) else msg[:500]


def score_slide(row: dict[str, Any], opts: dict[str, Any], out: str) -> dict[str, Any]:
    """Score one slide on this process (a dask task); never raises, returns its record."""
    t0 = time.perf_counter()
    c0 = time.process_time()
    o = ScoreOptions(**opts)
    rec: dict[str, Any] = {"key": row["key"], "patient_id": row["patient_id"], "slide_path": row["slide_path"],
                           "roi_path": row.get("roi_path"), "status": "failed", "error": None,
                           "worker": _worker_name(), "pid": os.getpid()}
    try:
        import dask

        # Slide pyramids are dask arrays: compute them here, not as tasks on the cluster
        # (inside a worker dask would otherwise ship the graph, with open file handles, to it).
        with _RUN_LOCK, dask.config.set(scheduler="synchronous"):
            rec.update(_score_slide_locked(row, o, out, t0))
            rec["status"] = "done"
    except Exception as exc:  # noqa: BLE001 - one failing slide must not stop the cohort
        rec["error"] = _one_line(exc)
        if not isinstance(exc, PathomicsError):
            rec["traceback_tail"] = traceback.format_exc().strip().splitlines()[-3:]
    rec["task_s"] = round(time.perf_counter() - t0, 4)
    rec["cpu_s"] = round(time.process_time() - c0, 4)  # all threads of this worker process during the task
    return rec


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return "local"


def _score_slide_locked(row: dict[str, Any], o: ScoreOptions, out: str, t0: float) -> dict[str, Any]:
    from ..annotations import read_geojson
    from ..model.engine import plan_for_bundle
    from ..slide import open_slide

    t_wait = time.perf_counter() - t0
    engine, reused = get_engine(o)
    t_engine = time.perf_counter() - t0 - t_wait
    d = slide_dir(out, row["key"])
    d.mkdir(parents=True, exist_ok=True)
    (d / DONE_NAME).unlink(missing_ok=True)  # from here on the folder is "in progress"
    fp = file_fingerprint(row["slide_path"])
    with open_slide(row["slide_path"]) as slide:
        rois = read_geojson(row["roi_path"], bounds=slide.dimensions).annotations if row.get("roi_path") else None
        tp = time.perf_counter()
        grid = plan_for_bundle(slide, engine.bundle, rois, tissue=False if o.no_tissue else None,
                               min_tissue=o.min_tissue)
        t_plan = time.perf_counter() - tp
        tr = time.perf_counter()
        res = engine.run_all(slide, grid, cache_dir=o.cache_dir, use_cache=o.cache_dir is not None)
        t_run = time.perf_counter() - tr
        if not res.complete:
            raise CohortError("the engine stopped before every tile had a result")
    tw = time.perf_counter()
    risk_source = res.meta.get("risk_source", "class_weights")  # the engine applies a risk head
    outputs = [RESULTS_NAME, "results.json", "tiles.csv"]
    res.save(d / RESULTS_NAME)
    res.to_csv(d / "tiles.csv")
    if o.geojson:
        res.to_geojson(d / "tiles.geojson")
        outputs.append("tiles.geojson")
    counts = res.counts()
    stats = {k: round(float(v), 4) for k, v in engine.stats.items()}
    rec = {
        "slide_fingerprint": fp, "results_sha256": _sha256(d / RESULTS_NAME),
        "bundle_id": o.bundle_id, "grid_key": grid.key(), "tiles": len(res), "counts": counts,
        "result_key": o.result_key(_roi_hash(row.get("roi_path"))), "risk_source": risk_source,
        "outputs": outputs, "engine_reused": reused, "engine": {"amp": o.amp, "device": o.device, "num_threads": o.num_threads,
                                       "batch_size": o.batch_size},
        "timings": {"lock_wait_s": round(t_wait, 4), "engine_load_s": round(t_engine, 4),
                    "plan_s": round(t_plan, 4), "run_s": round(t_run, 4),
                    "write_s": 0.0, **{f"engine_{k}": v for k, v in stats.items()}},
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    rec["timings"]["write_s"] = round(time.perf_counter() - tw, 4)
    atomic_write_json(d / DONE_NAME, rec)  # last: marks the folder complete
    return rec


# ---------------------------------------------------------------------------------------------
# client side
def resolve_amp(bundle: Any, device: str, amp: str) -> tuple[str, str]:
    """Concrete precision for the whole run ('auto' is probed once here, on the client)."""
    a = amp.lower()
    if a in ("fp32", "off", "bf16", "bfloat16", "fp16", "float16"):
        name = {"off": "fp32", "bfloat16": "bf16", "float16": "fp16"}.get(a, a)
        return name, "requested"
    from ..model.device import choose_amp, select_device

    dev = select_device(device)
    model = bundle.create_model("cpu").to(dev).eval()
    choice = choose_amp(model, dev, bundle.input_size, "auto", arch=bundle.bundle_id)
    return choice.name if choice.name in ("bf16", "fp16") else "fp32", choice.reason


def default_parallelism(n_slides: int, workers: int | None, threads: int | None) -> tuple[int, int]:
    """(workers, torch threads per worker): fill the cores, never more workers than slides."""
    cores = os.cpu_count() or 1
    if threads is None:
        threads = max(1, cores // workers) if workers else min(2, cores)
    if workers is None:
        workers = max(1, cores // threads)
    return max(0, min(workers, max(1, n_slides))), max(1, threads)


def score_cohort(
    table: CohortTable,
    out: str | Path,
    *,
    bundle: str | Path | None = None,
    scheduler: str | None = None,
    workers: int | None = None,
    threads_per_worker: int | None = None,
    device: str = "cpu",
    batch_size: int = 32,
    amp: str = "auto",
    min_tissue: float | None = None,
    no_tissue: bool = False,
    geojson: bool = True,
    force: bool = False,
    progress: bool = True,
    argv: Sequence[str] | None = None,
    args: dict[str, Any] | None = None,
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Score every slide of ``table`` into ``out``; returns the run record (also ``run.json``).

    ``scheduler``: address of an existing dask scheduler (``tcp://host:8786``); otherwise a
    ``LocalCluster(n_workers=workers, threads_per_worker=1, processes=True)`` is started, or with
    ``workers=0`` the slides run in this process without dask (debugging, baseline timing).
    """
    from ..model.bundle import Bundle
    from ..resources import DEFAULT_BUNDLE

    t_start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    b = Bundle.load(bundle or DEFAULT_BUNDLE)
    amp_name, amp_reason = resolve_amp(b, device, amp)
    n_workers, threads = default_parallelism(len(table), workers, threads_per_worker)
    src = Path(str(b.source))
    opts = ScoreOptions(bundle=str(src.resolve() if src.exists() else b.path), bundle_id=b.bundle_id,
                        device=device, batch_size=batch_size, amp=amp_name, num_threads=threads,
                        min_tissue=min_tissue, no_tissue=no_tissue, geojson=geojson,
                        cache_dir=str(out / "cache"))
    records: dict[str, dict[str, Any]] = {}
    todo: list[CohortRow] = []
    for row in table.rows:
        if not row.exists:
            records[row.key] = {**row.to_json(), "status": "failed", "error": "slide or ROI file does not exist"}
        elif not force and (done := completed_record(out, row, opts)) is not None:
            records[row.key] = {**row.to_json(), "status": "skipped", "error": None,
                                "previous": {"finished": done.get("finished"), "counts": done.get("counts")}}
        else:
            todo.append(row)
    record: dict[str, Any] = {
        "kind": RUN_KIND, "command": "pathomics score-cohort", "argv": list(argv or []), "args": args or {},
        "cohort": str(table.path), "out": str(out), "versions": versions(), "platform": platform.platform(),
        "bundle": {"name": b.name, "version": b.version, "id": b.bundle_id, "path": str(b.source),
                   "file_hashes": b.file_hashes},
        "settings": {**asdict(opts), "amp_reason": amp_reason},
        "cluster": {}, "timings": {}, "slides": [], "summary": {},
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    t_sched = time.perf_counter()
    if todo:
        _run_tasks(todo, opts, out, scheduler, n_workers, threads, records, record, progress, on_result,
                   lambda: _write_run(out, record, table, records))
    t_scored = time.perf_counter()
    patients_info = write_patient_table(out, table, records, b)
    t_end = time.perf_counter()
    record["timings"].update({
        "setup_s": round(t_sched - t_start, 3), "scoring_s": round(t_scored - t_sched, 3),
        "patient_table_s": round(t_end - t_scored, 3), "total_s": round(t_end - t_start, 3),
    })
    record["patients"] = patients_info
    _write_run(out, record, table, records)
    return record


def _write_run(out: Path, record: dict[str, Any], table: CohortTable, records: dict[str, dict[str, Any]]) -> None:
    slides = [records.get(r.key, {**r.to_json(), "status": "pending"}) for r in table.rows]
    record["slides"] = slides
    st = [s["status"] for s in slides]
    record["summary"] = {"slides": len(slides), **{k: st.count(k) for k in ("done", "skipped", "failed", "pending")}}
    atomic_write_json(out / "run.json", json.loads(json.dumps(record, default=str)))


def worker_config(threads: int) -> dict[str, Any]:
    """dask config for model-running worker processes (measured on this 2-core box).

    The nanny's default ``MALLOC_TRIM_THRESHOLD_=65536`` makes glibc return memory eagerly, so
    every batch's large tensors and tile arrays churn mmap/munmap, and ``OMP_NUM_THREADS=1``
    conflicts with the torch threads we ask for; with both the warm per-slide time in a worker
    was ~40 % above the same engine in-process, without them it matches. The statistical
    profiler (a thread sampling every stack every 10 ms) is switched off too.
    """
    import dask

    env = dict(dask.config.get("distributed.nanny.pre-spawn-environ", default={}) or {})
    env.pop("MALLOC_TRIM_THRESHOLD_", None)
    # Tasks run in executor threads, which glibc gives their own arenas; an arena heap holds at
    # most 64 MiB, so every batch's larger tensors were fresh mmaps (40x the page faults, +25 %
    # CPU measured). One arena puts worker threads on the main heap, as a direct run is.
    env["MALLOC_ARENA_MAX"] = 1
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[k] = int(threads)
    # The worker's event loop wakes 50x/s for its tick and 10x/s for the memory monitor; each
    # wake takes the GIL from the reader thread. Slides are long tasks: slower ticks suffice.
    return {"distributed.nanny.pre-spawn-environ": env, "distributed.worker.profile.enabled": False,
            "distributed.admin.tick.interval": "500ms", "distributed.admin.tick.limit": "60s",
            "distributed.worker.memory.monitor-interval": "1s", "distributed.admin.system-monitor.interval": "2s"}


def _run_tasks(todo: list[CohortRow], opts: ScoreOptions, out: Path, scheduler: str | None, n_workers: int,
               threads: int, records: dict[str, dict[str, Any]], record: dict[str, Any], progress: bool,
               on_result: Callable[[dict[str, Any]], None] | None, checkpoint: Callable[[], None]) -> None:
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), unit="slide", desc="score-cohort", file=sys.stderr, dynamic_ncols=True,
                   disable=None)
    last = 0.0

    def done(rec: dict[str, Any]) -> None:
        nonlocal last
        records[rec["key"]] = {**rec}
        if on_result is not None:
            on_result(rec)
        if bar is not None:
            bar.update(1)
            if rec["status"] == "failed":
                bar.write(f"failed: {rec['slide_path']}: {rec['error']}", file=sys.stderr)
        if time.perf_counter() - last > 2.0:
            checkpoint()
            last = time.perf_counter()

    rows = [{**r.to_json()} for r in todo]
    od = asdict(opts)
    t0 = time.perf_counter()
    try:
        if n_workers == 0 and scheduler is None:
            record["cluster"] = {"kind": "in-process", "workers": 0, "torch_threads": threads}
            record["timings"]["cluster_start_s"] = 0.0
            tw = time.perf_counter()
            record["warmup"] = [warm_worker(od)]
            record["timings"]["warmup_s"] = round(time.perf_counter() - tw, 3)
            ts = time.perf_counter()
            for r in rows:
                done(score_slide(r, od, str(out)))
            record["timings"]["slides_s"] = round(time.perf_counter() - ts, 3)
            return
        from distributed import Client, LocalCluster, as_completed

        cluster = None
        if scheduler:
            try:
                client = Client(scheduler, timeout="30s")
            except (OSError, TimeoutError) as exc:
                raise CohortError(f"cannot reach the dask scheduler at {scheduler} ({exc})") from None
            info = client.scheduler_info()
            record["cluster"] = {"kind": "external", "scheduler": scheduler,
                                 "workers": len(info.get("workers", {})), "torch_threads": threads}
        else:
            import logging

            import dask

            with dask.config.set(worker_config(threads)):
                cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                                       dashboard_address=None, silence_logs=logging.ERROR)
            client = Client(cluster)
            client.wait_for_workers(n_workers, timeout="120s")
            record["cluster"] = {"kind": "LocalCluster", "workers": n_workers, "threads_per_worker": 1,
                                 "torch_threads": threads, "processes": True}
        record["timings"]["cluster_start_s"] = round(time.perf_counter() - t0, 3)
        try:
            # load the model once on every worker present now (late joiners load on first slide)
            tw = time.perf_counter()
            warm = [client.submit(warm_worker, od, workers=[a], allow_other_workers=False, pure=False,
                                  key=f"warm-{i}-{a}") for i, a in enumerate(client.scheduler_info()["workers"])]
            record["warmup"] = []
            for f in warm:
                try:
                    record["warmup"].append(f.result())
                except Exception as exc:  # noqa: BLE001
                    record["warmup"].append({"error": _one_line(exc)})
            record["timings"]["warmup_s"] = round(time.perf_counter() - tw, 3)
            ts = time.perf_counter()
            futs = {client.submit(score_slide, r, od, str(out), key=f"score-slide-{r['key']}", pure=False,
                                  retries=0): r for r in rows}
            for fut in as_completed(futs):
                r = futs[fut]
                try:
                    rec = fut.result()
                except Exception as exc:  # noqa: BLE001 - a killed worker etc.: record, go on
                    rec = {**r, "status": "failed", "error": _one_line(exc), "worker": None}
                done(rec)
            record["timings"]["slides_s"] = round(time.perf_counter() - ts, 3)
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
    finally:
        if bar is not None:
            bar.close()


# ---------------------------------------------------------------------------------------------
# per-patient table
def load_slide_tiles(out: str | Path, key: str) -> Any:
    """A finished slide's tiles for feature computation (done tiles only)."""
    from ..results import DONE, TileResults
    from ..signature.features import SlideTiles

    res = TileResults.load(slide_dir(out, key) / RESULTS_NAME)
    ok = res.status == DONE
    return SlideTiles(probs=res.probs[ok].astype(float), class_names=tuple(res.class_names),
                      risk=res.risk[ok].astype(float), slide_id=key)


def write_patient_table(out: Path, table: CohortTable, records: dict[str, dict[str, Any]], bundle: Any) -> dict[str, Any]:
    """``patients.csv``: per patient features, risk, percentile, group and survival at horizons."""
    import pandas as pd

    from ..signature.features import FeatureSpec
    from ..signature.model import Signature

    sig = None
    if bundle.signature_path is not None and bundle.signature_path.is_file():
        sig = Signature.from_json(bundle.signature_path)
    spec = sig.feature_spec if sig is not None else None
    if spec is None:
        spec = FeatureSpec(classes=list(bundle.class_names), tme_stats=["mean", "frac"], combine="weighted")
    rows = []
    for pid, prow in table.by_patient().items():
        ok = [r for r in prow if records.get(r.key, {}).get("status") in ("done", "skipped")]
        base: dict[str, Any] = {"patient_id": pid, "n_slides": len(prow), "n_slides_scored": len(ok)}
        if not ok:
            rows.append({**base, "status": "failed", "error": "no slide of this patient could be scored"})
            continue
        try:
            slides = [load_slide_tiles(out, r.key) for r in ok]
            base["n_tiles"] = int(sum(s.probs.shape[0] for s in slides))
            feats = spec.transform(slides)
            entry = {**base, "status": "ok" if len(ok) == len(prow) else f"partial ({len(ok)}/{len(prow)} slides)",
                     "error": ""}
            if sig is not None and set(sig.features) <= set(feats):
                sc = sig.score(feats)
                entry.update({"risk": sc.risk, "percentile": sc.percentile, "group": sc.group, "cutoff": sc.cutoff})
                entry.update({f"survival_{h}{sig.time_unit}": v for h, v in sc.survival_at.items()})
            entry.update(feats)
            rows.append(entry)
        except PathomicsError as exc:
            rows.append({**base, "status": "failed", "error": _one_line(exc)})
    df = pd.DataFrame(rows)
    atomic_write_text(out / "patients.csv", df.to_csv(index=False))
    return {"path": str(out / "patients.csv"), "patients": len(rows),
            "scored": int(sum(1 for r in rows if "risk" in r)),
            "failed": int(sum(1 for r in rows if r.get("status") == "failed")),
            "signature": sig.name if sig is not None else None,
            "time_unit": sig.time_unit if sig is not None else None,
            "feature_spec": spec.to_json()}
