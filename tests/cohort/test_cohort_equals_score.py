"""``score-cohort``'s patients.csv gives each patient the numbers ``pathomics score`` gives (issue 9).

Both go through ``scoring.score_tiles`` on results planned with the ROIs clipped to the slide, so
a patient scored in a cohort and alone must agree: risk, percentile, group, cutoff, survival and
every signature feature. One patient has two slides (features pool across them), the other one
slide whose ROI runs off the slide's edge (clipped by both, never tiled outside the slide).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from shapely.geometry import box

from _bundles import tiny_bundle
from _slides import small_slide
from napari_pathomics.cli import main as cli_main
from napari_pathomics.cohort.batch import score_cohort
from napari_pathomics.cohort.table import read_cohort
from napari_pathomics.resources import DEFAULT_BUNDLE
from napari_pathomics.wsi.annotations import Annotation, write_geojson


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("equal")
    slides = {n: small_slide(root / f"{n}.svs", seed=s, mpp=0.5) for n, s in (("a", 1), ("b", 2), ("c", 3))}
    roi = root / "c.geojson"  # the slide is 1536 x 1024 px: this ROI runs 600 px past its right and bottom edges
    write_geojson([Annotation(box(500, 300, 2136, 1624), classification="Tumor", name="past the edge")], roi)
    with open(root / "cohort.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["patient_id", "slide_path", "roi_path"])
        w.writerow(["P1", "a.svs", ""])
        w.writerow(["P1", "b.svs", ""])
        w.writerow(["P2", "c.svs", "c.geojson"])
    bundle = tiny_bundle(root / "bundle", signature=json.loads((DEFAULT_BUNDLE / "signature.json").read_text()))
    out = root / "out"
    rec = score_cohort(read_cohort(root / "cohort.csv"), out, bundle=bundle.path, workers=0, amp="fp32", progress=False)
    assert rec["summary"]["done"] == 3 and rec["summary"]["failed"] == 0
    with open(out / "patients.csv", newline="") as fh:
        rows = {r["patient_id"]: r for r in csv.DictReader(fh)}
    return {"root": root, "slides": slides, "roi": roi, "bundle": bundle, "rows": rows}


def _score_json(argv: list, capsys: pytest.CaptureFixture) -> dict:
    code = cli_main(["score", *map(str, argv), "--device", "cpu", "--amp", "fp32", "--json", "--quiet"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


@pytest.mark.parametrize("patient", ["P1", "P2"])
def test_patients_csv_equals_pathomics_score(cohort: dict, patient: str, capsys: pytest.CaptureFixture) -> None:
    s = cohort["slides"]
    if patient == "P1":
        argv = [s["a"], s["b"], "--patient", "P1"]
    else:
        argv = [s["c"], "--roi", cohort["roi"], "--patient", "P2"]
    alone = _score_json([*argv, "--bundle", cohort["bundle"].path], capsys)
    row = cohort["rows"][patient]
    assert row["status"] == "ok" and int(row["n_slides_scored"]) == len(alone["slides"])
    assert row["group"] == alone["group"]
    for key in ("risk", "percentile", "cutoff"):
        assert float(row[key]) == pytest.approx(alone[key], rel=1e-9, abs=1e-12), key
    for h, v in alone["survival"].items():
        assert float(row[f"survival_{h}{alone['time_unit']}"]) == pytest.approx(v, rel=1e-9, abs=1e-12), h
    assert alone["features"], "the signature has features"
    for name, v in alone["features"].items():
        assert float(row[name]) == pytest.approx(v, rel=1e-9, abs=1e-12), name
    # the same tiles: the CSV counts the patient's classified tiles, score counts them per slide
    assert int(row["n_tiles"]) == sum(sl["tiles"]["done"] for sl in alone["slides"])


def test_score_roi_is_clipped_to_the_slide_like_infer(
    cohort: dict, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """``score --roi`` clips an ROI running off the slide exactly as ``infer --roi`` does, and says so."""
    s, bundle = cohort["slides"]["c"], cohort["bundle"].path
    alone = _score_json([s, "--roi", cohort["roi"], "--bundle", bundle], capsys)
    assert any("clipped" in w for w in alone["warnings"]), alone["warnings"]
    # the ROI pre-clipped by hand gives the same patient
    inside = tmp_path / "inside.geojson"
    write_geojson([Annotation(box(500, 300, 1536, 1024), classification="Tumor")], inside)
    by_hand = _score_json([s, "--roi", inside, "--bundle", bundle], capsys)
    assert by_hand["risk"] == pytest.approx(alone["risk"], rel=1e-12)
    assert by_hand["slides"][0]["tiles"] == alone["slides"][0]["tiles"]
    # infer with the same file plans the same lattice cells, none of them past the slide's edge
    out = tmp_path / "infer"
    assert (
        cli_main(
            [
                "infer",
                str(s),
                "--roi",
                str(cohort["roi"]),
                "--bundle",
                str(bundle),
                "--out",
                str(out),
                "--device",
                "cpu",
                "--amp",
                "fp32",
                "--quiet",
            ]
        )
        == 0
    )
    capsys.readouterr()
    with open(out / "tiles.csv", newline="") as fh:
        tiles = list(csv.DictReader(fh))
    assert len(tiles) == alone["slides"][0]["tiles"]["total"]
    xy = np.array([[float(t["x"]), float(t["y"]), float(t["size"])] for t in tiles])
    assert (xy[:, 0] >= 500 - xy[:, 2]).all() and (xy[:, 0] + xy[:, 2] <= 1536).all()
    assert (xy[:, 1] + xy[:, 2] <= 1024).all()


def test_an_roi_wholly_off_the_slide_is_one_line(cohort: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    off = tmp_path / "off.geojson"
    write_geojson([Annotation(box(5000, 5000, 6000, 6000))], off)
    code = cli_main(
        [
            "score",
            str(cohort["slides"]["c"]),
            "--roi",
            str(off),
            "--bundle",
            str(cohort["bundle"].path),
            "--device",
            "cpu",
            "--quiet",
        ]
    )
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code != 0 and len(err) == 1 and "off the slide" in err[0] and "Traceback" not in err[0], err
