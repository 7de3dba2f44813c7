"""CSV exports cannot run as spreadsheet formulas (CSV injection), and numbers stay numbers.

A patient id such as ``=HYPERLINK("http://x","y")`` was written raw into ``patients.csv``, where
Excel or LibreOffice would run it. Text cells starting with ``= + - @`` (or a tab / CR) now get a
leading apostrophe (OWASP); numbers, negative ones included, and a numeric id like ``-0.5`` are
written unchanged. Checked on a real ``score-cohort`` run and on the tile table of results whose
class names are formulas.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from _bundles import tiny_bundle
from _slides import small_slide
from napari_pathomics.cohort.batch import score_cohort
from napari_pathomics.cohort.table import read_cohort
from napari_pathomics.resources import DEFAULT_BUNDLE
from napari_pathomics.results import TileResults
from napari_pathomics.tables import safe_cell
from napari_pathomics.wsi.tiling import TileGrid

FORMULAS = ['=HYPERLINK("http://x","y")', "+cmd|' /C calc'!A0", "-1+1", "@SUM(A1:A9)", "\t=1+1", "=1+2;=3"]


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def _inert(cell: str) -> bool:
    """What a spreadsheet reads as text or a number, never as a formula."""
    if not cell or cell[0] not in "=+-@\t\r":
        return True
    try:
        float(cell)
        return True
    except ValueError:
        return False


def test_patients_csv_neutralises_formula_ids_and_keeps_numbers(tmp_path: Path) -> None:
    src = small_slide(tmp_path / "src.svs")
    ids = [*FORMULAS, "-0.5", "P-007"]
    with open(tmp_path / "cohort.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["patient_id", "slide_path"])
        for i, pid in enumerate(ids):
            shutil.copy(src, tmp_path / f"s{i}.svs")
            w.writerow([pid, f"s{i}.svs"])
    sig = json.loads((DEFAULT_BUNDLE / "signature.json").read_text())
    bundle = tiny_bundle(tmp_path / "bundle", signature=sig)
    out = tmp_path / "out"
    rec = score_cohort(
        read_cohort(tmp_path / "cohort.csv"), out, bundle=bundle.path, workers=0, amp="fp32", progress=False
    )
    assert rec["summary"]["done"] == len(ids)
    text = (out / "patients.csv").read_text()
    rows = _rows(text)
    got = [r["patient_id"] for r in rows]
    # (the cohort reader strips cells: "\t=1+1" is the id "=1+1")
    assert sorted(got) == sorted("'" + p.strip() if p not in ("-0.5", "P-007") else p for p in ids)
    for line in csv.reader(io.StringIO(text)):
        assert all(_inert(c) for c in line), line
    risks = [float(r["risk"]) for r in rows]  # numbers parse as numbers (cutoffs and risks may be negative)
    assert all(np.isfinite(risks)) and all(float(r["cutoff"]) < 0 for r in rows)
    # the tile tables of the same run carry no formula either
    for d in (out / "slides").iterdir():
        for line in csv.reader(io.StringIO((d / "tiles.csv").read_text())):
            assert all(_inert(c) for c in line), line


def test_tiles_csv_neutralises_formula_class_names() -> None:
    n = 6
    grid = TileGrid(
        cols=np.arange(n),
        rows=np.zeros(n, int),
        tile_size_l0=64.0,
        tile_um=32.0,
        mpp=0.5,
        slide_width=64 * n,
        slide_height=64,
        coverage=np.ones(n, np.float32),
    )
    names = FORMULAS[:4]
    res = TileResults.empty(grid, names, ["#ff0000", "#00ff00", "#0000ff", "#ffff00"])
    res.probs[:] = np.eye(4, dtype=np.float32)[np.arange(n) % 4]
    res.risk[:] = np.linspace(0.0, 1.0, n)
    res.status[:] = 1
    rows = _rows(res.csv_text())
    assert [r["class"] for r in rows] == ["'" + names[i % 4] for i in range(n)]
    assert all(float(r["risk"]) == pytest.approx(v, abs=1e-4) for r, v in zip(rows, np.linspace(0, 1, n)))
    assert list(rows[0])[-4:] == [f"prob_{c}" for c in names]  # headers start with "prob_": inert


@pytest.mark.parametrize(
    "value, expected",
    [
        ("=1+1", "'=1+1"),
        ("+1", "+1"),
        ("-0.5", "-0.5"),
        ("-1e-3", "-1e-3"),
        ("-1+1", "'-1+1"),
        ("@x", "'@x"),
        ("\tx", "'\tx"),
        ("\r=x", "'\r=x"),
        ("ok", "ok"),
        (-0.5, -0.5),
        (3, 3),
        (None, None),
        ("", ""),
    ],
)
def test_safe_cell(value, expected) -> None:
    assert safe_cell(value) == expected
