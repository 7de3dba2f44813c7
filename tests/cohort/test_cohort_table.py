"""Cohort tables: every malformed table is refused before any work, in one line.

Covers ``read_cohort`` (score-cohort / train-signature input) and the outcome columns that
``train-signature`` reads from the table or ``--outcomes``. Each case asserts the typed error and
its one-line message, and through the real CLI (a child ``python -m napari_pathomics.cli``): the
exit code, exactly one stderr line and no traceback. Property-based: arbitrary text as a cohort CSV
is read or refused with a CohortError only.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from _cli import CLI, assert_one_line, run_cli
from _fuzz import FAST
from napari_pathomics.cohort.table import read_cohort
from napari_pathomics.errors import CohortError
from napari_pathomics.training.signature import TrainSettings, read_outcomes


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
    "duplicate-row": (
        "patient_id,slide_path\nP1,a.svs\nP1,a.svs\n",
        "line 3: duplicate row (patient 'P1', slide 'a.svs') already on line 2",
    ),
    "slide-under-two-patients": (
        "patient_id,slide_path\nP1,a.svs\nP2,./a.svs\n",
        "line 3: slide './a.svs' is listed for patient 'P2' and for patient 'P1' (line 2)",
    ),
    "slide-does-not-exist": (
        "patient_id,slide_path\nP1,a.svs\nP2,nowhere.svs\nP3,gone.svs\n",
        "nowhere.svs does not exist (and 1 more missing)",
    ),
    "roi-does-not-exist": ("patient_id,slide_path,roi_path\nP1,a.svs,missing.geojson\n", "ROI file"),
    "empty-patient": ("patient_id,slide_path\n,a.svs\n", "line 2: empty patient_id"),
    "empty-slide": ("patient_id,slide_path\nP1,\n", "line 2: empty slide_path for patient 'P1'"),
    "ragged-row": ("patient_id,slide_path\nP1,a.svs,extra\n", "line 2: 3 cells for 2 columns"),
    "duplicate-columns": (
        "patient_id,slide_path,slide_path\nP1,a.svs,b.svs\n",
        "duplicate column names ['slide_path']",
    ),
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
    r = run_cli("score-cohort", p, "--out", tmp_path / "out", "--workers", "0", "--quiet")
    assert_one_line(r, CohortError.exit_code, words)
    assert not (tmp_path / "out").exists()  # refused before any work started


def test_cli_bad_table_is_one_line(tmp_path: Path) -> None:
    bad = _write(tmp_path, "bad", "patient,slide\nA,x.svs\n")
    r = subprocess.run([*CLI, "score-cohort", str(bad), "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert r.returncode == CohortError.exit_code
    assert r.stderr.strip().count("\n") == 0 and "missing column" in r.stderr


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
    r = run_cli(
        "train-signature",
        cohort,
        "--outcomes",
        oc,
        "--time",
        "os",
        "--event",
        "dead",
        "--out",
        slides / "never",
        "--quiet",
    )
    assert_one_line(r, CohortError.exit_code, "duplicate patient ids")
    assert not (slides / "never").exists()


def test_train_signature_cli_refuses_negative_time(slides: Path) -> None:
    p = _write(slides, "neg-cli", "patient_id,slide_path,os,dead\nP1,a.svs,-3,1\nP2,b.svs,20,0\n")
    r = run_cli("train-signature", p, "--time", "os", "--event", "dead", "--out", slides / "never2", "--quiet")
    assert_one_line(r, CohortError.exit_code, "negative time")


# ---- both commands, on a real slide ----------------------------------------------------------
CASES = {  # name -> (command, table text, words of the message)
    "missing columns": ("score-cohort", "patient,slide\nP1,a.svs\n", "missing column"),
    "duplicate rows": ("score-cohort", "patient_id,slide_path\nP1,a.svs\nP1,a.svs\n", "duplicate row"),
    "slide missing": ("score-cohort", "patient_id,slide_path\nP1,nope.svs\n", "does not exist"),
    "negative time": ("train-signature", "patient_id,time,event\nP1,-5,1\n", "negative time"),
    "time not a number": ("train-signature", "patient_id,time,event\nP1,abc,1\n", "not a number"),
    "event not 0/1": ("train-signature", "patient_id,time,event\nP1,5,2\n", "event must be 0 or 1"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_tables_are_one_line_errors(tmp_path, pyramid_svs, case):
    cmd, text, words = CASES[case]
    shutil.copy(pyramid_svs, tmp_path / "a.svs")
    (tmp_path / "t.csv").write_text(text)
    if cmd == "score-cohort":
        args = ["score-cohort", str(tmp_path / "t.csv"), "--out", str(tmp_path / "out"), "--workers", "0"]
    else:
        (tmp_path / "cohort.csv").write_text("patient_id,slide_path\nP1,a.svs\n")
        args = [
            "train-signature",
            str(tmp_path / "cohort.csv"),
            "--outcomes",
            str(tmp_path / "t.csv"),
            "--time",
            "time",
            "--event",
            "event",
            "--out",
            str(tmp_path / "b"),
        ]
    r = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300)
    assert r.returncode == 9, r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr and words in r.stderr
    assert not (tmp_path / "out" / "slides").exists() and not (tmp_path / "b").exists()


# ---- arbitrary CSV text (property-based) -------------------------------------------------------
csv_text = st.lists(
    st.lists(
        st.sampled_from(
            [
                "patient_id",
                "slide_path",
                "roi_path",
                "a.svs",
                "P1",
                "P2",
                "",
                " ",
                '"',
                "x,y",
                "\x00",
                "é",
                "../a.svs",
                "/nonexistent.svs",
            ]
        ),
        min_size=0,
        max_size=4,
    ),
    max_size=5,
).map(lambda rows: "\n".join(",".join(r) for r in rows))


@FAST
@example("slide_path,a.svs,roi_path,patient_id\npatient_id,patient_id,\x00,patient_id")  # a NUL in a path
@given(csv_text | st.text(max_size=80))
def test_cohort_csv_only_cohort_error(tmp_path_factory, text: str) -> None:
    d = tmp_path_factory.mktemp("c")
    (d / "a.svs").write_bytes(b"x")
    p = d / "t.csv"
    p.write_text(text, encoding="utf-8", errors="surrogatepass") if "\ud800" not in text else p.write_bytes(b"\xff")
    try:
        t = read_cohort(p)
    except CohortError as exc:
        assert "\n" not in str(exc)
        return
    assert all(r.slide_path.is_file() for r in t.rows)
