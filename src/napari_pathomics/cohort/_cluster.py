"""Running slide tasks: in this process, on a LocalCluster, or on an existing dask scheduler.

The default local cluster is ``LocalCluster(processes=True)`` with one dask thread per worker;
intra-slide parallelism comes from torch threads (``threads_per_worker``) plus the engine's
reader thread. A warm-up task pinned to each worker loads its model before the first slide, so
start-up and scoring are timed apart in ``run.json``.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..errors import CohortError
from ._task import ScoreOptions, one_line, score_slide, warm_worker
from .table import CohortRow

__all__ = ["default_parallelism", "worker_config", "run_tasks"]


def default_parallelism(n_slides: int, workers: int | None, threads: int | None) -> tuple[int, int]:
    """(workers, torch threads per worker): fill the cores, never more workers than slides."""
    cores = os.cpu_count() or 1
    if threads is None:
        threads = max(1, cores // workers) if workers else min(2, cores)
    if workers is None:
        workers = max(1, cores // threads)
    return max(0, min(workers, max(1, n_slides))), max(1, threads)


def worker_config(threads: int) -> dict[str, Any]:
    """dask config for model-running worker processes: the allocator and threads of a direct run.

    The nanny's ``MALLOC_TRIM_THRESHOLD_`` makes glibc return memory eagerly (every batch's
    tensors churn mmap/munmap) and its ``OMP_NUM_THREADS=1`` fights the torch threads asked
    for; both go. Executor threads get their own glibc arenas, too small for a batch, so one
    arena is forced. The statistical profiler and fast event-loop ticks, which take the GIL from
    the reader thread, are slowed or off. Measurements: docs/architecture.md.
    """
    import dask  # heavy

    env = dict(dask.config.get("distributed.nanny.pre-spawn-environ", default={}) or {})
    env.pop("MALLOC_TRIM_THRESHOLD_", None)
    env["MALLOC_ARENA_MAX"] = 1
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[k] = int(threads)
    return {
        "distributed.nanny.pre-spawn-environ": env,
        "distributed.worker.profile.enabled": False,
        "distributed.admin.tick.interval": "500ms",
        "distributed.admin.tick.limit": "60s",
        "distributed.worker.memory.monitor-interval": "1s",
        "distributed.admin.system-monitor.interval": "2s",
    }


def run_tasks(
    todo: list[CohortRow],
    opts: ScoreOptions,
    out: Path,
    scheduler: str | None,
    n_workers: int,
    threads: int,
    records: dict[str, dict[str, Any]],
    record: dict[str, Any],
    progress: bool,
    on_result: Callable[[dict[str, Any]], None] | None,
    checkpoint: Callable[[], None],
) -> None:
    bar = None
    if progress:
        bar = tqdm(
            total=len(todo), unit="slide", desc="score-cohort", file=sys.stderr, dynamic_ncols=True, disable=None
        )
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
        from distributed import Client, LocalCluster, as_completed  # heavy

        cluster = None
        if scheduler:
            try:
                client = Client(scheduler, timeout="30s")
            except (OSError, TimeoutError, ValueError, TypeError) as exc:  # unreachable, or not an address
                raise CohortError(f"cannot reach the dask scheduler at {scheduler} ({exc})") from None
            info = client.scheduler_info()
            record["cluster"] = {
                "kind": "external",
                "scheduler": scheduler,
                "workers": len(info.get("workers", {})),
                "torch_threads": threads,
            }
        else:
            import dask  # heavy

            with dask.config.set(worker_config(threads)):
                cluster = LocalCluster(
                    n_workers=n_workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                    silence_logs=logging.ERROR,
                )
            client = Client(cluster)
            client.wait_for_workers(n_workers, timeout=120.0)
            record["cluster"] = {
                "kind": "LocalCluster",
                "workers": n_workers,
                "threads_per_worker": 1,
                "torch_threads": threads,
                "processes": True,
            }
        record["timings"]["cluster_start_s"] = round(time.perf_counter() - t0, 3)
        try:
            # load the model once on every worker present now (late joiners load on first slide)
            tw = time.perf_counter()
            warm = [
                client.submit(warm_worker, od, workers=[a], allow_other_workers=False, pure=False, key=f"warm-{i}-{a}")
                for i, a in enumerate(client.scheduler_info()["workers"])
            ]
            record["warmup"] = []
            for f in warm:
                try:
                    record["warmup"].append(f.result())
                except Exception as exc:  # noqa: BLE001
                    record["warmup"].append({"error": one_line(exc)})
            record["timings"]["warmup_s"] = round(time.perf_counter() - tw, 3)
            ts = time.perf_counter()
            futs = {
                client.submit(score_slide, r, od, str(out), key=f"score-slide-{r['key']}", pure=False, retries=0): r
                for r in rows
            }
            for fut in as_completed(futs):
                r = futs[fut]
                try:
                    rec = fut.result()
                except Exception as exc:  # noqa: BLE001 - a killed worker etc.: record, go on
                    rec = {**r, "status": "failed", "error": one_line(exc), "worker": None}
                done(rec)
            record["timings"]["slides_s"] = round(time.perf_counter() - ts, 3)
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
    finally:
        if bar is not None:
            bar.close()
