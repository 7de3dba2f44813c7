"""``pathomics nuclei`` and ``pathomics propose-roi``: files, formats, and one-line errors."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from _cells_helpers import nuclei_slide

from napari_pathomics.cli import main
from napari_pathomics.errors import NucleiError
from napari_pathomics.resources import NUCLEI_IMAGES, SAMPLE_SLIDE
from napari_pathomics.wsi.annotations import read_geojson


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse refuses bad options before any handler runs
        rc = int(exc.code or 0)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_plain_image_writes_16bit_labels_and_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, mpp = NUCLEI_IMAGES["stardist-histo"]
    rc, out, err = _run(["nuclei", str(path), "--mpp", str(mpp), "--out", str(tmp_path), "--json"], capsys)
    assert rc == 0, err
    summary = json.loads(out)
    labels = cv2.imread(str(tmp_path / "histo.labels.png"), cv2.IMREAD_UNCHANGED)
    assert labels.dtype == np.uint16 and labels.shape == (300, 500)  # the input's size
    assert int(labels.max()) == summary["nuclei"] == len(np.unique(labels)) - 1  # ids 1..n, 0 = background
    rows = list(csv.DictReader(open(tmp_path / "histo.nuclei.csv", encoding="utf-8")))
    assert len(rows) == summary["nuclei"]
    # row i describes label i: its centroid lies on it
    for r in rows[:: max(1, len(rows) // 20)]:
        x, y = float(r["x"]), float(r["y"])
        assert labels[int(y), int(x)] == int(r["id"]) or float(r["solidity"]) < 0.85
    assert json.loads((tmp_path / "histo.nuclei.geojson").read_text(encoding="utf-8"))["features"]
    rc, out, err = _run(
        ["nuclei", str(path), "--mpp", str(mpp), "--out", str(tmp_path / "r"), "--stain", "ruifrok", "--json"], capsys
    )
    assert rc == 0 and json.loads(out)["stain"] == "ruifrok"


def test_plain_image_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = NUCLEI_IMAGES["stardist-histo"]
    rc, _, err = _run(["nuclei", str(path), "--out", str(tmp_path)], capsys)
    assert rc == NucleiError.exit_code and "--mpp" in err and err.count("\n") == 1
    grey = tmp_path / "grey.png"
    cv2.imwrite(str(grey), np.full((100, 100), 128, np.uint8))
    rc, _, err = _run(["nuclei", str(grey), "--mpp", "0.5", "--out", str(tmp_path / "o")], capsys)
    assert rc == NucleiError.exit_code and "greyscale" in err and err.count("\n") == 1
    white = tmp_path / "white.jpg"
    cv2.imwrite(str(white), np.full((100, 100, 3), 250, np.uint8))
    rc, _, err = _run(["nuclei", str(white), "--mpp", "0.5", "--out", str(tmp_path / "o")], capsys)
    assert rc == NucleiError.exit_code and "white" in err
    rc, _, err = _run(["nuclei", str(tmp_path / "missing.png"), "--mpp", "0.5", "--out", str(tmp_path)], capsys)
    assert rc == NucleiError.exit_code and "no such file" in err
    rc, _, err = _run(["nuclei", str(path), "--mpp", "-1", "--out", str(tmp_path)], capsys)
    assert rc == 2 and err.count("\n") == 1
    # --out naming an existing file (here the input itself) is refused, the file untouched
    before = Path(path).read_bytes()
    rc, _, err = _run(["nuclei", str(path), "--mpp", "0.5", "--out", str(path)], capsys)
    assert rc != 0 and err.count("\n") == 1 and Path(path).read_bytes() == before


def test_slide_writes_tables_and_geojson(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    slide, _ = nuclei_slide(tmp_path / "s.svs", side=448, seed=2)
    out = tmp_path / "out"
    rc, text, err = _run(["nuclei", str(slide), "--out", str(out), "--no-tissue", "--quiet", "--json"], capsys)
    assert rc == 0, err
    s = json.loads(text)
    assert s["kind"] == "slide" and s["tiles"] == 4 and s["nuclei"] > 20
    tiles = list(csv.DictReader(open(out / "s.nuclei-tiles.csv", encoding="utf-8")))
    assert len(tiles) == 4 and all(t["status"] == "done" for t in tiles)
    assert sum(int(float(t["count"])) for t in tiles) == s["nuclei"]
    doc = json.loads((out / "s.nuclei.geojson").read_text(encoding="utf-8"))
    assert len(doc["features"]) == s["nuclei"]
    run = json.loads((out / "s.nuclei-run.json").read_text(encoding="utf-8"))
    assert run["command"] == "pathomics nuclei" and run["nuclei"]["params"]["cell_expansion_um"] == 5.0


def test_slide_roi_without_tissue_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    roi = tmp_path / "glass.geojson"
    roi.write_text(
        json.dumps(
            {
                "type": "Feature",
                "properties": {"objectType": "annotation"},
                "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [300, 0], [300, 300], [0, 300], [0, 0]]]},
            }
        )
    )
    rc, _, err = _run(["nuclei", str(SAMPLE_SLIDE), "--roi", str(roi), "--out", str(tmp_path / "o"), "--quiet"], capsys)
    assert rc == NucleiError.exit_code and "no 112 µm tile" in err and err.count("\n") == 1


@pytest.mark.slow
def test_propose_roi_cli_writes_a_qupath_roi_that_score_accepts(tmp_path: Path) -> None:
    """The bundled model on the real CMU slide: the proposal is a valid --roi for score (subprocess)."""
    out = tmp_path / "prop.geojson"
    env_cmd = [
        sys.executable,
        "-m",
        "napari_pathomics.cli",
        "propose-roi",
        str(SAMPLE_SLIDE),
        "--out",
        str(out),
        "--threshold",
        "0.3",
        "--min-area",
        "0.01",
        "--quiet",
        "--json",
    ]
    done = subprocess.run(env_cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["regions"] >= 1 and summary["classes"] == ["TUM"]
    anns = read_geojson(out, bounds=(2220, 2967)).annotations
    assert anns and all(a.classification == "Tumor (proposed)" for a in anns)
    score = subprocess.run(
        [
            sys.executable,
            "-m",
            "napari_pathomics.cli",
            "score",
            str(SAMPLE_SLIDE),
            "--roi",
            str(out),
            "--quiet",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert score.returncode == 0, score.stderr
    assert json.loads(score.stdout)["slides"][0]["n_rois"] == len(anns)
    # nothing reaches a threshold of 0.99: a clear one-line error, no file
    none = subprocess.run(
        [
            sys.executable,
            "-m",
            "napari_pathomics.cli",
            "propose-roi",
            str(SAMPLE_SLIDE),
            "--threshold",
            "0.99",
            "--out",
            str(tmp_path / "none.geojson"),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert none.returncode != 0 and "lower --threshold" in none.stderr and not (tmp_path / "none.geojson").exists()
