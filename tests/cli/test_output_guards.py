"""No output of any command overwrites an input or a file of another kind (issue 10).

``pathomics score copy.svs --report copy.svs`` once replaced the slide itself with the HTML report.
Every writer of the CLI is tried against its own inputs (slide, ROI file, bundle folder and its
files, tables) and against an existing file of another kind: one line, exit 15 (``OutputError``;
train-signature's own check: exit 9), the target byte for byte unchanged, nothing written beside it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from shapely.geometry import box

from _bundles import tiny_bundle
from _signature_sim import simulate_cox
from _slides import small_slide
from napari_pathomics.cli import main as cli_main
from napari_pathomics.errors import CohortError
from napari_pathomics.outputs import OutputError, file_kind
from napari_pathomics.resources import DEFAULT_BUNDLE
from napari_pathomics.wsi.annotations import Annotation, write_geojson

REFUSED = OutputError.exit_code


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A folder with a slide, its ROI file, a bundle with a signature, and files of other kinds."""
    root = tmp_path_factory.mktemp("case")
    slide = small_slide(root / "copy.svs")
    roi = root / "copy.geojson"
    write_geojson([Annotation(box(64, 64, 900, 700), classification="Tumor")], roi)
    bundle = tiny_bundle(root / "bundle", signature=json.loads((DEFAULT_BUNDLE / "signature.json").read_text())).path
    (root / "table.csv").write_text("a,b\n1,2\n")
    (root / "picture.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(32))
    (root / "archive.zip").write_bytes(b"PK\x03\x04" + bytes(32))
    (root / "notes.geojson").write_text('{"type": "FeatureCollection", "features": []}')
    return {"root": root, "slide": slide, "roi": roi, "bundle": bundle}


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _refused(argv: list, capsys: pytest.CaptureFixture, root: Path, code: int = REFUSED, words: str = "") -> str:
    """Run the CLI in-process: exit ``code``, one stderr line, and no file under ``root`` added or changed."""
    before = _digests(root)
    assert cli_main([str(a) for a in argv]) == code
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "Traceback" not in err[0] and words in err[0], err
    assert _digests(root) == before
    return err[0]


# ---- score --report / --report-json ----------------------------------------------------------
@pytest.mark.parametrize(
    "target",
    [
        "copy.svs",
        "copy.geojson",
        "bundle",
        "bundle/manifest.json",
        "bundle/signature.json",
        "bundle/model.safetensors",
        "table.csv",
        "picture.png",
        "archive.zip",
        "notes.geojson",
    ],
)
def test_score_report_never_lands_on_an_input_or_another_kind(case, target: str, capsys) -> None:
    root = case["root"]
    line = _refused(
        [
            "score",
            case["slide"],
            "--roi",
            case["roi"],
            "--bundle",
            case["bundle"],
            "--report",
            root / target,
            "--quiet",
        ],
        capsys,
        root,
    )
    assert line.startswith("pathomics score: error: ")
    assert not (root / Path(target).with_suffix(".json")).exists() or target.endswith(".json")


@pytest.mark.parametrize("target", ["copy.svs", "copy.geojson", "bundle/manifest.json", "table.csv"])
def test_score_report_json_never_lands_on_an_input(case, target: str, capsys, tmp_path) -> None:
    _refused(
        [
            "score",
            case["slide"],
            "--roi",
            case["roi"],
            "--bundle",
            case["bundle"],
            "--report",
            tmp_path / "ok.html",
            "--report-json",
            case["root"] / target,
            "--quiet",
        ],
        capsys,
        case["root"],
    )
    assert not (tmp_path / "ok.html").exists()  # refused before any work, the HTML included


def test_report_and_its_json_twin_on_one_file_is_refused(case, tmp_path, capsys) -> None:
    for argv in (
        ["--report", tmp_path / "r.json"],
        ["--report", tmp_path / "r.html", "--report-json", tmp_path / "r.html"],
    ):
        _refused(
            ["score", case["slide"], "--bundle", case["bundle"], *argv, "--quiet"], capsys, tmp_path, words="JSON twin"
        )
    assert not list(tmp_path.iterdir())


def test_a_report_may_replace_an_earlier_report(case, tmp_path, capsys) -> None:
    """Same-kind overwrites stay allowed (re-exporting a case report)."""
    (tmp_path / "r.html").write_text("<html>EARLIER-REPORT</html>")
    (tmp_path / "r.json").write_text("{}")
    assert (
        cli_main(
            [
                "score",
                str(case["slide"]),
                "--roi",
                str(case["roi"]),
                "--bundle",
                str(case["bundle"]),
                "--report",
                str(tmp_path / "r.html"),
                "--quiet",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert "EARLIER-REPORT" not in (tmp_path / "r.html").read_text()
    assert json.loads((tmp_path / "r.json").read_text())["patient_id"] == "copy"


# ---- infer --out -----------------------------------------------------------------------------
def test_infer_out_never_lands_on_an_input(case, capsys, tmp_path) -> None:
    root = case["root"]
    common = ["infer", case["slide"], "--bundle", case["bundle"], "--quiet", "--device", "cpu"]
    _refused([*common, "--out", case["slide"]], capsys, root, words="not a folder")
    _refused([*common, "--out", case["bundle"]], capsys, root, words="input")
    # an output folder whose tiles.geojson is the ROI file given
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(case["roi"], out / "tiles.geojson")
    _refused([*common, "--roi", out / "tiles.geojson", "--out", out], capsys, out, words="input")


def test_a_rerun_may_replace_its_own_outputs(case, tmp_path, capsys) -> None:
    """results.npz is a zip by content, yet a results file: rerunning into the same --out is fine."""
    argv = [
        "infer",
        str(case["slide"]),
        "--bundle",
        str(case["bundle"]),
        "--out",
        str(tmp_path / "out"),
        "--device",
        "cpu",
        "--quiet",
    ]
    assert cli_main(argv) == 0 and cli_main(argv) == 0, capsys.readouterr().err
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    assert file_kind(tmp_path / "other.npz") == "results file"
    assert file_kind(case["root"] / "archive.zip") == "zip archive"


# ---- score-cohort, train-signature, build-signature --------------------------------------------
def _cohort(folder: Path, slide: Path, name: str = "patients.csv") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    table = folder / name
    table.write_text(f"patient_id,slide_path,time,event\nP1,{slide},10,1\nP2,{slide.with_name('b.svs')},40,0\n")
    shutil.copy(slide, slide.with_name("b.svs"))
    return table


def test_score_cohort_does_not_overwrite_its_own_table(case, tmp_path, capsys) -> None:
    slide = shutil.copy(case["slide"], tmp_path / "a.svs")
    table = _cohort(tmp_path, Path(slide))
    line = _refused(
        ["score-cohort", table, "--out", tmp_path, "--bundle", case["bundle"], "--workers", "0", "--quiet"],
        capsys,
        tmp_path,
        words="patients.csv",
    )
    assert "input" in line


def test_train_signature_does_not_replace_its_base_bundle(case, tmp_path, capsys) -> None:
    slide = shutil.copy(case["slide"], tmp_path / "a.svs")
    table = _cohort(tmp_path / "cohort", Path(slide), name="cohort.csv")
    base = tmp_path / "base"
    shutil.copytree(case["bundle"], base)
    for out, words in ((base, "base bundle"), (table.parent, "cohort's folder")):
        _refused(
            ["train-signature", table, "--time", "time", "--event", "event", "--bundle", base, "--out", out, "--quiet"],
            capsys,
            tmp_path,
            code=CohortError.exit_code,
            words=words,
        )


@pytest.fixture(scope="module")
def survival_table(case) -> Path:
    """A table build-signature fits in a second: without the guard, ``--out`` would be written over."""
    df, _ = simulate_cox(120, np.array([0.8, -0.4]), seed=3, n_noise=0)
    path = case["root"] / "survival.csv"
    df.to_csv(path, index=False)
    return path


FIT = ["--time", "time", "--event", "event", "--features", "f0,f1", "--no-cv", "--permutations", "0"]


@pytest.mark.parametrize(
    "target", ["survival.csv", "copy.svs", "bundle/manifest.json", "bundle/signature.json", "picture.png", "table.csv"]
)
def test_build_signature_out_never_lands_on_an_input(case, survival_table, target: str, capsys) -> None:
    root = case["root"]
    _refused(["build-signature", survival_table, *FIT, "--out", root / target], capsys, root)


def test_build_signature_out_may_replace_an_earlier_signature(survival_table, tmp_path, capsys) -> None:
    out = tmp_path / "sig.json"
    for _ in range(2):
        assert cli_main(["build-signature", str(survival_table), *FIT, "--out", str(out)]) == 0
    capsys.readouterr()
    assert json.loads(out.read_text())["kind"] == "pathomics-signature"


# ---- propose-roi and nuclei ------------------------------------------------------------------
@pytest.mark.parametrize("target", ["copy.svs", "copy.geojson", "table.csv"])
def test_propose_roi_out_never_lands_on_an_input(case, target: str, capsys) -> None:
    root = case["root"]
    _refused(
        ["propose-roi", case["slide"], "--roi", case["roi"], "--bundle", case["bundle"], "--out", root / target],
        capsys,
        root,
    )


def test_nuclei_outputs_never_land_on_inputs(case, tmp_path, capsys) -> None:
    import cv2

    img = tmp_path / "img.png"
    cv2.imwrite(str(img), np.full((64, 64, 3), 200, np.uint8))
    _refused(["nuclei", img, "--mpp", "0.5", "--out", img], capsys, tmp_path, words="not a folder")
    # a slide's nuclei GeoJSON would be the ROI file the run reads
    out = tmp_path / "n"
    out.mkdir()
    shutil.copy(case["roi"], out / "copy.nuclei.geojson")
    _refused(
        ["nuclei", case["slide"], "--roi", out / "copy.nuclei.geojson", "--out", out], capsys, tmp_path, words="input"
    )


# ---- import-model, train-patch, make-cohort, score-cohort --out -------------------------------
def _hf_folder(folder: Path) -> Path:
    """A timm-style folder (config only: the guard answers before any weight is read)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(
        json.dumps({"architecture": "resnet18", "num_classes": 2, "label_names": ["TUM", "STR"]})
    )
    return folder


@pytest.mark.parametrize("target", ["copy.svs", "copy.geojson", "table.csv", "archive.zip", "bundle"])
def test_import_model_out_never_lands_on_an_input_or_a_file(case, tmp_path, target: str, capsys) -> None:
    root = case["root"]
    src = _hf_folder(tmp_path / "hf")
    words = "not empty" if target == "bundle" else "not a folder"
    code = 7 if target == "bundle" else REFUSED  # an existing bundle is refused by the importer itself
    _refused(["import-model", src, "--out", root / target], capsys, root, code=code, words=words)
    # nor the source folder or its own config
    _refused(["import-model", src, "--out", src], capsys, tmp_path, words="input")
    _refused(["import-model", src, "--out", src / "config.json"], capsys, tmp_path, words="not a folder")


@pytest.mark.parametrize("target", ["copy.svs", "table.csv"])
def test_train_patch_out_is_checked_before_training(case, target: str, capsys) -> None:
    root = case["root"]
    _refused(["train-patch", root, "--out", root / target], capsys, root, words="not a folder")


def test_make_cohort_never_replaces_a_file_or_another_kind(case, tmp_path, capsys) -> None:
    root = case["root"]
    _refused(
        ["make-cohort", root / "copy.svs", "--patients", "2", "--table-only", "--quiet"],
        capsys,
        root,
        words="not a folder",
    )
    # a folder whose outcomes.csv is a slide, or whose "slides" is a file
    odd = tmp_path / "odd"
    odd.mkdir()
    shutil.copy(case["slide"], odd / "outcomes.csv")
    _refused(["make-cohort", odd, "--patients", "2", "--table-only", "--quiet"], capsys, odd, words="slide")
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "slides").write_text("my notes")
    _refused(["make-cohort", flat, "--patients", "2", "--quiet"], capsys, flat, words="not a folder")
    # a fresh folder is fine, and a rerun replaces its own tables
    for _ in range(2):
        assert cli_main(["make-cohort", str(tmp_path / "new"), "--patients", "2", "--table-only", "--quiet"]) == 0
    capsys.readouterr()


@pytest.mark.parametrize("target", ["copy.svs", "table.csv", "archive.zip"])
def test_score_cohort_out_is_never_a_file(case, tmp_path, target: str, capsys) -> None:
    slide = shutil.copy(case["slide"], tmp_path / "a.svs")
    table = _cohort(tmp_path / "c", Path(slide))
    root = case["root"]
    _refused(
        ["score-cohort", table, "--out", root / target, "--bundle", case["bundle"], "--workers", "0", "--quiet"],
        capsys,
        root,
        words="not a folder",
    )
