"""Hardening: broken cohort and outcome tables are refused before any work, in one line."""

import shutil
import subprocess
import sys

import pytest

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
        args = ["train-signature", str(tmp_path / "cohort.csv"), "--outcomes", str(tmp_path / "t.csv"),
                "--time", "time", "--event", "event", "--out", str(tmp_path / "b")]
    r = subprocess.run([sys.executable, "-m", "napari_pathomics.cli", *args], capture_output=True, text=True, timeout=300)
    assert r.returncode == 9, r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr and words in r.stderr
    assert not (tmp_path / "out" / "slides").exists() and not (tmp_path / "b").exists()
