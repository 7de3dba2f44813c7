"""Hardening (cohort tables): every malformed table is refused before any work, in one line.

Covers ``read_cohort`` (score-cohort / train-signature input), the outcome columns that
``train-signature`` reads from the table or ``--outcomes``, and the per-patient table of
``build-signature``. Each case asserts the typed error and its one-line message, and through the
real CLI (a child ``python -m napari_pathomics.cli``): the exit code, exactly one stderr line and
no traceback. The resume of an interrupted ``score-cohort`` (a truncated results file and a
missing done marker are redone, complete slides skipped) is tested in
``tests/test_cohort_batch.py::test_resume_skips_complete_and_redoes_torn``; here a REAL
interruption (SIGKILL of the CLI mid-run) is added in ``test_score_cohort_killed_then_resumed``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from napari_pathomics.cohort.table import read_cohort
from napari_pathomics.training.signature import TrainSettings, read_outcomes
from napari_pathomics.errors import CohortError, SignatureError

CLI = [sys.executable, "-m", "napari_pathomics.cli"]


def _cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def _one_line(r: subprocess.CompletedProcess, code: int, words: str) -> None:
    assert r.returncode == code, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert words in lines[0], lines[0]


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with three (empty but existing) slide files: the table checks run before any open."""
    d = tmp_path_factory.mktemp("cohort")
    for n in ("a.svs", "b.svs", "c.svs"):
        (d / n).write_bytes(b"x")
    return d


TABLES = {  # name -> (csv text, words of the one-line message)
    "missing-columns": ("patient,slide\nP1,a.svs\n", "missing column(s) ['patient_id', 'slide_path']"),
    "missing-slide-column": ("patient_id,roi_path\nP1,a.geojson\n", "missing column(s) ['slide_path']"),
    "duplicate-row": ("patient_id,slide_path\nP1,a.svs\nP1,a.svs\n", "line 3: duplicate row (patient 'P1', slide 'a.svs') already on line 2"),
    "slide-under-two-patients": ("patient_id,slide_path\nP1,a.svs\nP2,./a.svs\n",
                                 "line 3: slide './a.svs' is listed for patient 'P2' and for patient 'P1' (line 2)"),
    "slide-does-not-exist": ("patient_id,slide_path\nP1,a.svs\nP2,nowhere.svs\nP3,gone.svs\n",
                             "nowhere.svs does not exist (and 1 more missing)"),
    "roi-does-not-exist": ("patient_id,slide_path,roi_path\nP1,a.svs,missing.geojson\n", "ROI file"),
    "empty-patient": ("patient_id,slide_path\n,a.svs\n", "line 2: empty patient_id"),
    "empty-slide": ("patient_id,slide_path\nP1,\n", "line 2: empty slide_path for patient 'P1'"),
    "ragged-row": ("patient_id,slide_path\nP1,a.svs,extra\n", "line 2: 3 cells for 2 columns"),
    "duplicate-columns": ("patient_id,slide_path,slide_path\nP1,a.svs,b.svs\n", "duplicate column names ['slide_path']"),
    "header-only": ("patient_id,slide_path\n", "has a header but no rows"),
    "empty-file": ("", "is empty"),
}


def _write(folder: Path, name: str, text: str | bytes) -> Path:
    p = folder / f"{name}.csv"
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return p


@pytest.mark.parametrize("name", sorted(TABLES))
def test_bad_cohort_table_is_refused(slides: Path, name: str) -> None:
    text, words = TABLES[name]
    p = _write(slides, name, text)
    with pytest.raises(CohortError) as info:
        read_cohort(p)
    msg = str(info.value)
    assert "\n" not in msg and words in msg, msg


def test_binary_garbage_is_not_a_readable_csv(slides: Path) -> None:
    p = _write(slides, "garbage", b"\xff\xfe\x00\x81" * 200)
    with pytest.raises(CohortError, match=r"garbage\.csv: (not a readable CSV|missing column)"):
        read_cohort(p)


def test_missing_slides_allowed_are_kept_as_missing(slides: Path) -> None:
    p = _write(slides, "allow", "patient_id,slide_path\nP1,a.svs\nP2,nowhere.svs\n")
    t = read_cohort(p, allow_missing=True)
    assert [r.patient_id for r in t.missing] == ["P2"] and len(t) == 2


@pytest.mark.parametrize("name", ["missing-columns", "duplicate-row", "slide-does-not-exist"])
def test_score_cohort_cli_refuses_bad_table_in_one_line(slides: Path, tmp_path: Path, name: str) -> None:
    text, words = TABLES[name]
    p = _write(slides, name, text)
    r = _cli("score-cohort", p, "--out", tmp_path / "out", "--workers", "0", "--quiet")
    _one_line(r, CohortError.exit_code, words)
    assert not (tmp_path / "out").exists()  # refused before any work started


# ---- outcomes (train-signature) --------------------------------------------------------------
OUTCOMES = {  # cohort extra columns -> message words
    "non-numeric-time": ("P1,a.svs,soon,1\nP2,b.svs,20,0\n", "patient 'P1': os = 'soon' is not a number"),
    "negative-time": ("P1,a.svs,-3,1\nP2,b.svs,20,0\n", "patient 'P1': negative time -3.0"),
    "event-not-0-1": ("P1,a.svs,10,2\nP2,b.svs,20,0\n", "patient 'P1': event must be 0 or 1, got 2.0"),
    "missing-time": ("P1,a.svs,,1\nP2,b.svs,20,0\n", "patient 'P1': os = '' is not a number"),
    "nan-time": ("P1,a.svs,nan,1\nP2,b.svs,20,0\n", "patient 'P1': os is missing"),
}


@pytest.mark.parametrize("name", sorted(OUTCOMES))
def test_bad_outcomes_are_refused(slides: Path, name: str) -> None:
    rows, words = OUTCOMES[name]
    p = _write(slides, name, "patient_id,slide_path,os,dead\n" + rows)
    with pytest.raises(CohortError) as info:
        read_outcomes(read_cohort(p), TrainSettings(time_col="os", event_col="dead"))
    assert words in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_outcomes_file_with_duplicate_patients(slides: Path) -> None:
    cohort = _write(slides, "plain", "patient_id,slide_path\nP1,a.svs\nP2,b.svs\n")
    oc = _write(slides, "oc", "patient_id,os,dead\nP1,10,1\nP1,12,0\nP2,20,0\n")
    with pytest.raises(CohortError, match="oc.csv: duplicate patient ids, e.g. 'P1'"):
        read_outcomes(read_cohort(cohort), TrainSettings(time_col="os", event_col="dead", outcomes=str(oc)))
    r = _cli("train-signature", cohort, "--outcomes", oc, "--time", "os", "--event", "dead",
             "--out", slides / "never", "--quiet")
    _one_line(r, CohortError.exit_code, "duplicate patient ids")
    assert not (slides / "never").exists()


def test_train_signature_cli_refuses_negative_time(slides: Path) -> None:
    p = _write(slides, "neg-cli", "patient_id,slide_path,os,dead\nP1,a.svs,-3,1\nP2,b.svs,20,0\n")
    r = _cli("train-signature", p, "--time", "os", "--event", "dead", "--out", slides / "never2", "--quiet")
    _one_line(r, CohortError.exit_code, "negative time")


# ---- per-patient table (build-signature) ----------------------------------------------------
BUILD = {  # csv -> (extra args, words)
    "dup-patients": ("pid,t,e,f1\nA,1,1,0.1\nA,2,0,0.2\nB,3,1,0.3\n", ["--id", "pid"], "duplicate patient ids"),
    "non-numeric-time": ("pid,t,e,f1\nA,x,1,0.1\nB,2,0,0.2\n", [], "time/event columns must be numeric"),
    "negative-time": ("pid,t,e,f1\nA,-1,1,0.1\nB,2,0,0.2\n", [], "time column 't' has 1 negative times"),
    "event-not-0-1": ("pid,t,e,f1\nA,1,3,0.1\nB,2,0,0.2\n", [], "event column 'e' must be 0/1 (found [0.0, 3.0])"),
    "missing-columns": ("pid,time,e,f1\nA,1,1,0.1\n", [], "missing columns: ['t']"),
    "no-rows": ("pid,t,e,f1\n", [], "has no rows"),
}


@pytest.mark.parametrize("name", sorted(BUILD))
def test_build_signature_cli_refuses_bad_table(tmp_path: Path, name: str) -> None:
    text, extra, words = BUILD[name]
    p = tmp_path / f"{name}.csv"
    p.write_text(text)
    r = _cli("build-signature", p, "--time", "t", "--event", "e", "--features", "f1", "--no-cv",
             "--out", tmp_path / "sig.json", *extra)
    _one_line(r, SignatureError.exit_code, words)
    assert not (tmp_path / "sig.json").exists()


# ---- a real interruption ----------------------------------------------------------------------
def test_score_cohort_killed_then_resumed(tmp_path: Path) -> None:
    """SIGKILL the CLI after its first slide is complete; the rerun skips what was finished,
    redoes the rest, and no slide folder is left marked done with a torn result."""
    from napari_pathomics.cohort.task import DONE_NAME, RESULTS_NAME, slide_dir
    from napari_pathomics.results import TileResults

    from _cohort_helpers import tiny_bundle
    from _engine_helpers import small_slide

    bundle = tiny_bundle(tmp_path / "bundle")
    rows = []
    for i in range(3):
        s = small_slide(tmp_path / f"s{i}.svs", h=768, w=1024, seed=i)
        rows.append(f"P{i},{s.name}")
    csv = tmp_path / "cohort.csv"
    csv.write_text("patient_id,slide_path\n" + "\n".join(rows) + "\n")
    out = tmp_path / "out"
    args = [*CLI, "score-cohort", str(csv), "--out", str(out), "--bundle", str(bundle.path), "--workers", "0",
            "--threads-per-worker", "1", "--amp", "fp32", "--quiet", "--json"]
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
