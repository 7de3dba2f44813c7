"""``pathomics adapt`` end to end: labels (ours or QuPath's) in, a validated bundle out that infer/score accept;
each kind of bad input one line on stderr with the LabelsError exit code."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from _bundles import make_bundle
from _slides import textured_he
from napari_pathomics.bundle import Bundle, validate_bundle
from napari_pathomics.cli import main as cli_main
from napari_pathomics.errors import LabelsError
from napari_pathomics.resources import DEFAULT_BUNDLE
from napari_pathomics.results import TileResults
from napari_pathomics.results.labels import SlideIdentity, TileLabels
from napari_pathomics.scoring import score_patient
from napari_pathomics.wsi.slide import open_slide
from napari_pathomics.wsi.synthetic import write_slide

MPP, TILE = 0.5, 64  # the test bundle: 32 µm tiles at 0.5 µm/px
LEFT = [(c, r) for c in (1, 2, 3, 5) for r in (2, 5, 8)]
RIGHT = [(c, r) for c in (10, 12, 13, 14) for r in (2, 5, 8)]
CODE = LabelsError.exit_code


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> dict:
    """A two-tissue slide (left H&E-like, right bluish), a test bundle and the slide's identity."""
    root = tmp_path_factory.mktemp("adapt_cli")
    img = textured_he(768, 1024, seed=4)
    right = img[:, 512:].astype(np.int16)
    right[..., 0] -= 70
    right[..., 2] += 40
    img[:, 512:] = np.clip(right, 0, 255).astype(np.uint8)
    slide = write_slide(root / "two.svs", img, mpp=MPP, fmt="svs", min_size=128)
    bundle = make_bundle(root / "bundle", signature=json.loads((DEFAULT_BUNDLE / "signature.json").read_text()))
    with open_slide(slide) as s:
        ident = SlideIdentity.of(s)
    return {"root": root, "slide": slide, "bundle": bundle, "ident": ident}


def _labels(case: dict, name: str, cells: dict[str, list[tuple[int, int]]], ident: SlideIdentity | None = None) -> Path:
    lab = TileLabels(float(TILE), ident or case["ident"], tile_um=32.0, mpp=MPP)
    for cls, cs in cells.items():
        lab.set(cs, cls)
    return lab.save(case["root"] / name)


def _qupath(path: Path, features: list[tuple[dict, str]]) -> Path:
    path.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "geometry": g,
                        "properties": {"objectType": "annotation", "classification": {"name": n, "color": [200, 0, 0]}},
                    }
                    for g, n in features
                ],
            }
        )
    )
    return path


def _poly(x0: float, y0: float, x1: float, y1: float) -> dict:
    return {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}


def _adapt(case: dict, labels: Path, out: str, *extra: str) -> list[str]:
    return [
        "adapt",
        "--bundle",
        str(case["bundle"].path),
        "--slide",
        str(case["slide"]),
        "--labels",
        str(labels),
        "--out",
        str(case["root"] / out),
        *extra,
    ]


def _one_line(capsys, code: int, rc: int, *words: str) -> str:  # noqa: ANN001 - pytest's capsys
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == code, err
    assert "Traceback" not in err and len(lines) == 1, err
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def test_adapt_writes_a_bundle_that_infer_accepts_and_prints_counts_and_cv(case, capsys) -> None:
    labels = _labels(case, "two.svs.labels.geojson", {"TUM": LEFT, "STR": RIGHT})
    assert cli_main(_adapt(case, labels, "b2", "--json")) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["counts"] == {"STR": 12, "TUM": 12} and out["n_labels"] == 24
    assert out["method"] == "leave-one-tile-out" and 0 <= out["accuracy_before"] <= 1
    assert out["accuracy_after"] >= out["accuracy_before"]
    assert out["label_sets"][0]["slide_sha256"] == case["ident"].sha256
    b2 = case["root"] / "b2"
    assert validate_bundle(b2) == []
    new = Bundle.load(b2)
    assert new.file_hashes["model.safetensors"] == case["bundle"].file_hashes["model.safetensors"]
    assert new.manifest["adaptation"]["base_bundle_id"] == case["bundle"].bundle_id
    assert new.manifest["adaptation"]["counts"] == {"STR": 12, "TUM": 12}
    # infer with the adapted bundle: the two regions come out as labelled (a random-weights backbone: most tiles)
    assert (
        cli_main(["infer", str(case["slide"]), "--bundle", str(b2), "--out", str(case["root"] / "inf"), "--quiet"]) == 0
    )
    res = TileResults.load(case["root"] / "inf" / "results.npz")
    pred = res.class_map()
    tum, strm = new.class_names.index("TUM"), new.class_names.index("STR")
    assert np.mean([pred[r, c] == tum for c, r in LEFT]) > 0.7 and np.mean([pred[r, c] == strm for c, r in RIGHT]) > 0.7
    assert np.mean(pred[:, :8] == tum) > 0.7 and np.mean(pred[:, 8:] == strm) > 0.7
    # score and score-cohort take it too, and see the same tile classes
    capsys.readouterr()
    assert cli_main(["score", str(case["slide"]), "--bundle", str(b2), "--json"]) == 0
    ps = score_patient([case["slide"]], new)
    np.testing.assert_array_equal(ps.results[0].pred, res.pred)
    assert json.loads(capsys.readouterr().out)["composition"] == pytest.approx(ps.composition)
    table = case["root"] / "cohort.csv"
    table.write_text(f"patient_id,slide_path\nP1,{case['slide'].name}\n")
    assert (
        cli_main(
            [
                "score-cohort",
                str(table),
                "--bundle",
                str(b2),
                "--out",
                str(case["root"] / "cohort"),
                "--workers",
                "0",
                "--quiet",
            ]
        )
        == 0
    )
    assert (case["root"] / "cohort" / "patients.csv").is_file()
    # the human-readable report: per-class counts and CV before/after, one summary per slide
    capsys.readouterr()
    assert cli_main(_adapt(case, labels, "b2-text")) == 0
    text = capsys.readouterr().out
    assert "two.svs: 24 labelled tiles (STR 12, TUM 12)" in text
    assert "accuracy on the 24 labels (leave-one-tile-out): base" in text and "-> adapted" in text
    assert "TUM      12 labels" in text


def test_a_plain_qupath_polygon_file_is_labels_through_the_mapping(case, capsys) -> None:
    q = _qupath(
        case["root"] / "qupath.geojson",
        [
            (_poly(64, 64, 64 * 6, 64 * 10), "Tumor"),  # QuPath's names, mapped: Tumor → TUM
            (_poly(64 * 9, 64, 64 * 15, 64 * 10), "Stroma"),
        ],
    )
    assert cli_main(_adapt(case, q, "bq", "--json")) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["counts"] == {"STR": 54, "TUM": 45}  # every tile whose centre lies inside
    # a name the default mapping lacks is mapped with --map
    q2 = _qupath(
        case["root"] / "qupath2.geojson",
        [(_poly(64, 64, 64 * 6, 64 * 10), "Carcinoma in situ"), (_poly(64 * 9, 64, 64 * 15, 64 * 10), "Stroma")],
    )
    assert cli_main(_adapt(case, q2, "bq2", "--json", "--map", "Carcinoma in situ=TUM")) == 0
    assert json.loads(capsys.readouterr().out)["counts"] == {"STR": 54, "TUM": 45}


def test_unknown_classes_are_one_line_listing_them_and_the_mapping(case, capsys) -> None:
    q = _qupath(
        case["root"] / "unknown.geojson",
        [(_poly(64, 64, 64 * 6, 64 * 10), "Perineural invasion"), (_poly(64 * 9, 64, 64 * 15, 64 * 10), "Stroma")],
    )
    line = _one_line(
        capsys,
        CODE,
        cli_main(_adapt(case, q, "bu")),
        "pathomics adapt: error:",
        "'Perineural invasion' (1)",
        "bundle classes: ADI",
        "mapping: ",
        "Stroma→STR",
        "--map",
    )
    assert "Traceback" not in line and not (case["root"] / "bu").exists()
    # our own file with a class this bundle does not have (labels made with another bundle)
    own = _labels(case, "other-classes.geojson", {"TUM": LEFT, "GLAND": RIGHT})
    _one_line(capsys, CODE, cli_main(_adapt(case, own, "bu2")), "'GLAND' (12)", "bundle classes:")


def test_labels_of_another_slide_are_refused_unless_forced(case, capsys) -> None:
    other = SlideIdentity("two.svs", 123, "0" * 64, 1024, 768)
    labels = _labels(case, "foreign.geojson", {"TUM": LEFT, "STR": RIGHT}, ident=other)
    _one_line(
        capsys,
        CODE,
        cli_main(_adapt(case, labels, "bf")),
        "labels were made on two.svs (sha256 000000000000",
        "use --force",
    )
    assert not (case["root"] / "bf").exists()
    assert cli_main(_adapt(case, labels, "bf2", "--force", "--json")) == 0
    cap = capsys.readouterr()
    assert "warning" in cap.err and "used anyway (forced)" in cap.err
    assert json.loads(cap.out)["n_labels"] == 24


def test_off_slide_empty_one_class_and_mismatched_arguments_are_one_line(case, capsys) -> None:
    off = _labels(case, "off.geojson", {"TUM": [(40, 40), (41, 40)], "STR": [(50, 3)]})  # slide is 16 × 12 tiles
    _one_line(
        capsys, CODE, cli_main(_adapt(case, off, "bo")), "labels no tile", "all 3 labelled tiles lie off the slide"
    )
    part = _labels(case, "part.geojson", {"TUM": LEFT + [(40, 40)], "STR": RIGHT})
    assert cli_main(_adapt(case, part, "bp", "--json")) == 0  # partly off: used, with a warning naming them
    cap = capsys.readouterr()
    assert "1 labelled tiles lie off the slide" in cap.err and json.loads(cap.out)["n_labels"] == 24
    empty = _qupath(case["root"] / "empty.geojson", [])
    _one_line(capsys, CODE, cli_main(_adapt(case, empty, "be")), "labels no tile")
    one = _labels(case, "one.geojson", {"TUM": LEFT})
    _one_line(capsys, CODE, cli_main(_adapt(case, one, "b1")), "all 12 labels are TUM", "at least two classes")
    assert not (case["root"] / "b1").exists()
    _one_line(
        capsys,
        CODE,
        cli_main(
            [
                "adapt",
                "--bundle",
                str(case["bundle"].path),
                "--slide",
                str(case["slide"]),
                "--out",
                str(case["root"] / "bx"),
            ]
        ),
        "one --labels per --slide",
    )
    _one_line(capsys, CODE, cli_main(_adapt(case, one, "bm", "--map", "Tumor")), "--map wants")
    _one_line(capsys, CODE, cli_main(_adapt(case, case["root"] / "missing.geojson", "bn")), "labels file not found")
