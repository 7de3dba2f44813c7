"""``score-cohort``: every slide of a cohort table scored on dask.distributed, resumably.

* **Slides are tasks** (``cohort._task``): one model per worker process, one slide at a time per
  process, a failing slide recorded and the others going on.
* **Same numbers everywhere.** The precision is resolved once here (``--amp auto`` probes on the
  client) and passed to every worker, so all slides of a run use the same dtype; with the same
  bundle, device, precision and torch threads the distributed results equal a direct engine run
  bit for bit (tested). ``patients.csv`` is computed through ``scoring`` (``cohort._patients``).
* **Resume.** Slides whose ``done.json`` still matches are skipped; the engine's own cache
  (``cache/``) resumes a slide interrupted mid-run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_json
from ..bundle import Bundle
from ..cells.methods import NucleiMethod, method_spec
from ..inference.engine import Engine
from ..outputs import OutputError, check_output_dir
from ..provenance import bundle_record, now_iso, run_record
from ..resources import DEFAULT_BUNDLE
from ..scoring import load_signature, nuclei_method, nuclei_model_warning
from ._cluster import default_parallelism, run_tasks
from ._patients import write_patient_table
from ._task import ScoreOptions, completed_record, patient_feature_spec
from .table import CohortRow, CohortTable

__all__ = ["score_cohort", "resolve_amp", "RUN_KIND"]

RUN_KIND = "pathomics-score-cohort"


def resolve_amp(bundle: Bundle, device: str, amp: str) -> tuple[str, str]:
    """Concrete precision for the whole run ('auto' is probed once here, on the client)."""
    a = amp.lower()
    if a in ("fp32", "off", "bf16", "bfloat16", "fp16", "float16"):
        name = {"off": "fp32", "bfloat16": "bf16", "float16": "fp16"}.get(a, a)
        return name, "requested"
    choice = Engine(bundle, device=device, amp="auto").amp
    return choice.name if choice.name in ("bf16", "fp16") else "fp32", choice.reason


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
    nuclei_model: str | Path | None = None,
) -> dict[str, Any]:
    """Score every slide of ``table`` into ``out``; returns the run record (also ``run.json``).

    ``scheduler``: address of an existing dask scheduler (``tcp://host:8786``); otherwise a
    ``LocalCluster(n_workers=workers, threads_per_worker=1, processes=True)`` is started, or with
    ``workers=0`` the slides run in this process without dask (debugging, baseline timing).
    ``nuclei_model`` is the nuclei method of a signature's nuclear features (a name or a model
    folder; None: the default), resolved here before any slide is read (a bad one is a
    NucleiError) and ignored when the features use no nuclei; the run record names it.
    """
    t_start = time.perf_counter()
    out = Path(out)
    b = Bundle.load(bundle or DEFAULT_BUNDLE)
    nuclei, warnings = _nuclei_choice(b, nuclei_model)  # before any output: a bad model is one line
    inputs = [table.path, b.source, *[p for r in table.rows for p in (r.slide_path, r.roi_path)]]
    check_output_dir(out, [("patients.csv", "CSV table"), ("run.json", "JSON")], inputs)
    _check_own_outputs(out)
    out.mkdir(parents=True, exist_ok=True)
    if b.signature_path is not None:
        load_signature(b)  # a bundle that cannot score patients fails before any slide is read
    amp_name, amp_reason = resolve_amp(b, device, amp)
    n_workers, threads = default_parallelism(len(table), workers, threads_per_worker)
    src = Path(str(b.source))
    opts = ScoreOptions(
        bundle=str(src.resolve() if src.exists() else b.path),
        bundle_id=b.bundle_id,
        device=device,
        batch_size=batch_size,
        amp=amp_name,
        num_threads=threads,
        min_tissue=min_tissue,
        no_tissue=no_tissue,
        geojson=geojson,
        cache_dir=str(out / "cache"),
        nuclei_model=method_spec(nuclei) if nuclei is not None else None,
        nuclei_key=nuclei.key if nuclei is not None else None,
    )
    records: dict[str, dict[str, Any]] = {}
    todo: list[CohortRow] = []
    for row in table.rows:
        if not row.exists:
            records[row.key] = {**row.to_json(), "status": "failed", "error": "slide or ROI file does not exist"}
        elif not force and (done := completed_record(out, row, opts)) is not None:
            records[row.key] = {
                **row.to_json(),
                "status": "skipped",
                "error": None,
                "previous": {"finished": done.get("finished"), "counts": done.get("counts")},
            }
        else:
            todo.append(row)
    record = run_record(
        "pathomics score-cohort",
        list(argv or []),
        args or {},
        kind=RUN_KIND,
        cohort=str(table.path),
        out=str(out),
        bundle=bundle_record(b),
        nuclei_model=nuclei.describe() if nuclei is not None else None,
        warnings=warnings,
        settings={**asdict(opts), "amp_reason": amp_reason},
        cluster={},
        timings={},
        slides=[],
        summary={},
        started=now_iso(),
    )
    t_sched = time.perf_counter()
    if todo:
        run_tasks(
            todo,
            opts,
            out,
            scheduler,
            n_workers,
            threads,
            records,
            record,
            progress,
            on_result,
            lambda: _write_run(out, record, table, records),
        )
    t_scored = time.perf_counter()
    patients_info = write_patient_table(out, table, records, b, nuclei)
    t_end = time.perf_counter()
    record["timings"].update(
        {
            "setup_s": round(t_sched - t_start, 3),
            "scoring_s": round(t_scored - t_sched, 3),
            "patient_table_s": round(t_end - t_scored, 3),
            "total_s": round(t_end - t_start, 3),
        }
    )
    record["patients"] = patients_info
    _write_run(out, record, table, records)
    return record


def _nuclei_choice(b: Bundle, nuclei_model: str | Path | None) -> tuple[NucleiMethod | None, list[str]]:
    """The nuclei method the patient features need (None: they need none; a given one is still
    resolved, so a bad name fails) and the warning when the signature records another one."""
    spec = patient_feature_spec(b)
    uses = spec is not None and bool(spec.nuclear)
    method = nuclei_method(nuclei_model) if uses or nuclei_model is not None else None
    if not uses or method is None:
        return None, []
    shift = nuclei_model_warning(spec, method)
    return method, [shift] if shift else []


def _check_own_outputs(out: Path) -> None:
    """Refuse a folder whose ``patients.csv`` / ``run.json`` are not an earlier score-cohort's own
    (told by its run record): a rerun resumes its own outputs and never replaces someone else's."""
    table, run = out / "patients.csv", out / "run.json"
    if not (table.exists() or run.exists()):
        return
    try:
        kind = json.loads(run.read_text(encoding="utf-8")).get("kind")
    except (OSError, ValueError, AttributeError):
        kind = None
    if kind != RUN_KIND:
        name = table if table.exists() else run
        raise OutputError(
            f"{name} exists and was not written by score-cohort; refusing to replace it (choose another --out)"
        )


def _write_run(out: Path, record: dict[str, Any], table: CohortTable, records: dict[str, dict[str, Any]]) -> None:
    slides = [records.get(r.key, {**r.to_json(), "status": "pending"}) for r in table.rows]
    record["slides"] = slides
    st = [s["status"] for s in slides]
    record["summary"] = {"slides": len(slides), **{k: st.count(k) for k in ("done", "skipped", "failed", "pending")}}
    atomic_write_json(out / "run.json", json.loads(json.dumps(record, default=str)))
