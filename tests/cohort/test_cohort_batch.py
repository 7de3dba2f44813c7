"""score-cohort on a real LocalCluster(n_workers=2, processes=True): equality with a direct engine
run, one model load per worker, resume (after a torn result, and after a real SIGKILL of the CLI
mid-run), and a corrupt slide that fails alone. All slow: clusters and child CLIs that load a model."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from distributed import LocalCluster

from _bundles import tiny_bundle
from _cli import CLI
from _slides import textured_he
from napari_pathomics.cli import main
from napari_pathomics.cohort._task import DONE_NAME, RESULTS_NAME, slide_dir
from napari_pathomics.cohort.batch import score_cohort
from napari_pathomics.cohort.generator import CohortSpec, make_cohort
from napari_pathomics.cohort.table import read_cohort
from napari_pathomics.inference.engine import Engine
from napari_pathomics.results import TileResults
from napari_pathomics.wsi.slide import open_slide
from napari_pathomics.wsi.synthetic import write_slide
from napari_pathomics.wsi.tiling import plan_for_bundle

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("batch")
    make_cohort(root / "cohort", CohortSpec(patients=3, seed=5, tiles_per_side=5))
    bundle = tiny_bundle(root / "bundle")
    out = root / "out"
    rec = score_cohort(
        read_cohort(root / "cohort" / "cohort.csv"),
        out,
        bundle=bundle.path,
        workers=2,
        threads_per_worker=1,
        amp="fp32",
        progress=False,
    )
    return {"root": root, "bundle": bundle, "out": out, "rec": rec}


def test_distributed_equals_direct_engine_bit_for_bit(setup: dict) -> None:
    rec = setup["rec"]
    assert rec["summary"]["done"] == 3 and rec["summary"]["failed"] == 0
    assert rec["cluster"]["kind"] == "LocalCluster" and rec["cluster"]["workers"] == 2
    assert len({s["worker"] for s in rec["slides"]}) >= 1
    # one model per worker: loaded once by the warm-up task on each worker, reused by every slide
    assert len(rec["warmup"]) == 2 and len({w["pid"] for w in rec["warmup"]}) == 2
    assert all(w["reused"] is False and w["error"] is None for w in rec["warmup"])
    assert all(s["engine_reused"] for s in rec["slides"])
    assert {s["pid"] for s in rec["slides"]} <= {w["pid"] for w in rec["warmup"]}
    engine = Engine(setup["bundle"], device="cpu", amp="fp32", num_threads=1, workers=1)
    table = read_cohort(setup["root"] / "cohort" / "cohort.csv")
    for row in table.rows:
        with open_slide(row.slide_path) as slide:
            direct = engine.run_all(slide, plan_for_bundle(slide, setup["bundle"]), use_cache=False)
        dist = TileResults.load(slide_dir(setup["out"], row.key) / RESULTS_NAME)
        assert np.array_equal(dist.cols, direct.cols) and np.array_equal(dist.rows, direct.rows)
        assert np.array_equal(dist.status, direct.status)
        assert np.array_equal(dist.probs, direct.probs, equal_nan=True)
        assert np.array_equal(dist.risk, direct.risk, equal_nan=True)
    pt = (setup["out"] / "patients.csv").read_text().splitlines()
    assert pt[0].startswith("patient_id,") and len(pt) == 4
    run = json.loads((setup["out"] / "run.json").read_text())
    assert run["bundle"]["id"] == setup["bundle"].bundle_id and run["versions"]["distributed"]


def test_resume_skips_complete_and_redoes_torn(setup: dict) -> None:
    out = setup["out"]
    table = read_cohort(setup["root"] / "cohort" / "cohort.csv")
    keys = [r.key for r in table.rows]
    before = {k: (slide_dir(out, k) / RESULTS_NAME).stat().st_mtime_ns for k in keys}
    # a half-written result (truncated npz) is never complete; a missing done marker neither
    p = slide_dir(out, keys[0]) / RESULTS_NAME
    p.write_bytes(p.read_bytes()[:100])
    (slide_dir(out, keys[1]) / "done.json").unlink()
    rec = score_cohort(
        table, out, bundle=setup["bundle"].path, workers=0, threads_per_worker=1, amp="fp32", progress=False
    )
    st = {s["key"]: s["status"] for s in rec["slides"]}
    assert st == {keys[0]: "done", keys[1]: "done", keys[2]: "skipped"}
    assert (slide_dir(out, keys[2]) / RESULTS_NAME).stat().st_mtime_ns == before[keys[2]]
    assert TileResults.load(p).complete
    rec2 = score_cohort(
        table, out, bundle=setup["bundle"].path, workers=0, threads_per_worker=1, amp="fp32", progress=False
    )
    assert rec2["summary"]["skipped"] == 3 and rec2["summary"]["done"] == 0


def test_corrupt_slide_is_reported_and_others_finish(setup: dict, tmp_path: Path) -> None:
    src = setup["root"] / "cohort"
    shutil.copytree(src / "slides", tmp_path / "slides")
    (tmp_path / "slides" / "P0002.svs").write_bytes(b"II*\x00" + b"\x00garbage" * 100)
    (tmp_path / "cohort.csv").write_text((src / "cohort.csv").read_text())
    code = main(
        [
            "score-cohort",
            str(tmp_path / "cohort.csv"),
            "--out",
            str(tmp_path / "out"),
            "--bundle",
            str(setup["bundle"].path),
            "--workers",
            "0",
            "--amp",
            "fp32",
            "--quiet",
        ]
    )
    assert code == 1
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    st = {s["patient_id"]: s for s in run["slides"]}
    assert st["P0002"]["status"] == "failed" and st["P0002"]["error"]
    assert "\n" not in st["P0002"]["error"]
    assert st["P0001"]["status"] == st["P0003"]["status"] == "done"
    assert run["summary"] == {"slides": 3, "done": 2, "skipped": 0, "failed": 1, "pending": 0}
    pt = pd.read_csv(tmp_path / "out" / "patients.csv").set_index("patient_id")
    assert pt.loc["P0002", "status"] == "failed" and pt.loc["P0001", "status"] == "ok"


def test_existing_scheduler_address(setup: dict, tmp_path: Path) -> None:
    """``--scheduler ADDRESS`` path: an already running cluster (here in-process threads)."""
    table = read_cohort(setup["root"] / "cohort" / "cohort.csv")
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster:
        rec = score_cohort(
            table,
            tmp_path / "o",
            bundle=setup["bundle"].path,
            scheduler=cluster.scheduler_address,
            threads_per_worker=1,
            amp="fp32",
            progress=False,
        )
    assert rec["cluster"]["kind"] == "external" and rec["summary"]["done"] == 3
    for row in table.rows:
        a = TileResults.load(slide_dir(tmp_path / "o", row.key) / RESULTS_NAME)
        b = TileResults.load(slide_dir(setup["out"], row.key) / RESULTS_NAME)
        assert np.array_equal(a.probs, b.probs, equal_nan=True)


def test_score_cohort_killed_then_resumed(tmp_path: Path) -> None:
    """SIGKILL the CLI after its first slide is complete; the rerun skips what was finished,
    redoes the rest, and no slide folder is left marked done with a torn result."""
    bundle = tiny_bundle(tmp_path / "bundle")
    rows = []
    for i in range(3):
        # all tissue: a slide whose plan has no tile fails (TilingError), and this test is about resuming
        s = write_slide(tmp_path / f"s{i}.svs", textured_he(768, 1024, seed=i), mpp=0.25)
        rows.append(f"P{i},{s.name}")
    csv = tmp_path / "cohort.csv"
    csv.write_text("patient_id,slide_path\n" + "\n".join(rows) + "\n")
    out = tmp_path / "out"
    args = [
        *CLI,
        "score-cohort",
        str(csv),
        "--out",
        str(out),
        "--bundle",
        str(bundle.path),
        "--workers",
        "0",
        "--threads-per-worker",
        "1",
        "--amp",
        "fp32",
        "--quiet",
        "--json",
    ]
    child = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and child.poll() is None:
        if len(list(out.glob(f"slides/*/{DONE_NAME}"))) >= 1:
            break
        time.sleep(0.02)
    finished_before = child.poll() is not None
    if not finished_before:
        os.kill(child.pid, signal.SIGKILL)
    child.communicate()
    table = read_cohort(csv)
    done_before = {r.key for r in table.rows if (slide_dir(out, r.key) / DONE_NAME).is_file()}
    assert done_before, "no slide finished before the kill"
    assert len(done_before) < len(table.rows), "the run finished before it could be interrupted"
    mtimes = {k: (slide_dir(out, k) / RESULTS_NAME).stat().st_mtime_ns for k in done_before}
    r = subprocess.run(args, capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads(r.stdout)
    assert summary["skipped"] == len(done_before) and summary["done"] == 3 - len(done_before)
    for k in done_before:  # finished slides were not redone
        assert (slide_dir(out, k) / RESULTS_NAME).stat().st_mtime_ns == mtimes[k]
    for row in table.rows:  # every slide is now complete and readable
        assert TileResults.load(slide_dir(out, row.key) / RESULTS_NAME).complete
