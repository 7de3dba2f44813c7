"""Data lost or silently wrong (issue 18): each case refused in one line, or said.

``score-cohort --out`` replaced someone else's ``patients.csv``; one slide reached through a hard
link was scored as two patients; ``build-signature`` fitted a signature on times all 0 or 1e308;
``--clinical`` took duplicate keys, an empty string, ``6_4``, Arabic-Indic and full-width digits;
``nuclei --out`` wrote into a bundle folder; ``propose-roi`` on a slide with corrupt tissue tiles
did not say that tiles were unreadable.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import tifffile

from _bundles import tiny_bundle
from _signature_sim import simulate_cox
from _slides import small_slide
from napari_pathomics.bundle import Bundle
from napari_pathomics.cli import main as cli_main
from napari_pathomics.cli.score import _clinical_values
from napari_pathomics.cohort.batch import RUN_KIND, _check_own_outputs
from napari_pathomics.cohort.table import read_cohort
from napari_pathomics.errors import ClinicalError, CohortError, SignatureError
from napari_pathomics.outputs import OutputError
from napari_pathomics.signature.clinical import Covariate, canonical, to_number
from napari_pathomics.signature.fit import validate_survival
from napari_pathomics.wsi.synthetic import synthetic_he, write_slide


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("guards")
    return {"slide": small_slide(root / "a.svs"), "bundle": tiny_bundle(root / "bundle").path}


def _one_line(capsys) -> str:
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "Traceback" not in err[0] and "internal error" not in err[0], err
    return err[0]


def test_score_cohort_never_replaces_someone_elses_patients_csv(case, tmp_path, capsys) -> None:
    table = tmp_path / "cohort.csv"
    table.write_text(f"patient_id,slide_path\nP1,{case['slide']}\n")
    out = tmp_path / "theirs"
    out.mkdir()
    (out / "patients.csv").write_text("patient,their,numbers\n1,2,3\n")
    before = (out / "patients.csv").read_bytes()
    argv = ["score-cohort", str(table), "--out", str(out), "--bundle", str(case["bundle"]), "--workers", "0"]
    assert cli_main([*argv, "--quiet"]) == OutputError.exit_code
    assert "not written by score-cohort" in _one_line(capsys)
    assert (out / "patients.csv").read_bytes() == before and sorted(os.listdir(out)) == ["patients.csv"]
    (out / "run.json").write_text(json.dumps({"kind": "pathomics-infer"}))  # another command's record
    with pytest.raises(OutputError):
        _check_own_outputs(out)
    (out / "run.json").write_text(json.dumps({"kind": RUN_KIND}))  # an earlier score-cohort's own: resumed
    _check_own_outputs(out)


def test_one_slide_through_a_hard_link_is_not_two_patients(case, tmp_path) -> None:
    link = tmp_path / "b.svs"
    os.link(case["slide"], link)
    table = tmp_path / "cohort.csv"
    table.write_text(f"patient_id,slide_path\nP1,{case['slide']}\nP2,{link}\n")
    with pytest.raises(CohortError, match=r"line 3: .* and for patient 'P1' \(line 2\), the same file as a\.svs"):
        read_cohort(table)
    table.write_text(f"patient_id,slide_path\nP1,{case['slide']}\nP1,{link}\n")  # one patient, twice
    with pytest.raises(CohortError, match="duplicate row .* the same file as a.svs"):
        read_cohort(table)
    other = tmp_path / "c.svs"
    other.write_bytes(Path(case["slide"]).read_bytes())  # a copy is another file: allowed
    table.write_text(f"patient_id,slide_path\nP1,{case['slide']}\nP2,{other}\n")
    assert len(read_cohort(table)) == 2


@pytest.mark.parametrize("times", ["zero", "huge", "one event time"])
def test_build_signature_refuses_degenerate_times(tmp_path, capsys, times) -> None:
    df, _ = simulate_cox(80, np.array([0.8]), seed=2, n_noise=1)
    if times == "zero":
        df["time"] = 0.0
    elif times == "huge":
        df["time"] = 1e308
    else:
        df.loc[df["event"] == 1, "time"] = 12.0
    with pytest.raises(SignatureError):
        validate_survival(df, "time", "event", ["f0", "f1"])
    df.to_csv(tmp_path / "t.csv", index=False)
    argv = ["build-signature", str(tmp_path / "t.csv"), "--time", "time", "--event", "event", "--features", "f0,f1"]
    code = cli_main([*argv, "--no-cv", "--permutations", "0", "--out", str(tmp_path / "sig.json")])
    assert code == SignatureError.exit_code and not (tmp_path / "sig.json").exists()
    assert "time" in _one_line(capsys)


@pytest.mark.parametrize("text", ["6_4", "٦٤", "６４", "", " ", "1e", "0x40", "inf", "nan", "True"])
def test_clinical_numbers_are_plain_ascii(text) -> None:
    with pytest.raises(ValueError):
        to_number(text)
    cov = Covariate("age", "numeric", "years", range=(0.0, 120.0))
    with pytest.raises(ClinicalError, match="not a|no value"):
        cov.encode(text)
    assert canonical(text) == text.strip()  # not a level "64"


def test_clinical_plain_numbers_still_parse() -> None:
    for text, value in (("64", 64.0), ("-1.5", -1.5), ("+2e1", 20.0), (".5", 0.5), (" 7 ", 7.0)):
        assert to_number(text) == value
    assert canonical("3.0") == canonical(3) == "3"


def test_clinical_duplicate_keys_and_empty_values_are_refused() -> None:
    with pytest.raises(ClinicalError, match="given twice"):
        _clinical_values(["age=64", "age=65"])
    with pytest.raises(ClinicalError, match="given twice"):
        _clinical_values(["age=64,stage=3,age=64"])
    for bad in ([""], ["  "], ["age="], ["=3"]):
        with pytest.raises(ClinicalError, match="NAME=VALUE"):
            _clinical_values(bad)
    assert _clinical_values(["age=64,stage=3"]) == {"age": "64", "stage": "3"}


def test_nuclei_never_writes_into_a_bundle_folder(case, tmp_path, capsys) -> None:
    import cv2

    img = tmp_path / "img.png"
    cv2.imwrite(str(img), np.full((64, 64, 3), 200, np.uint8))
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in case["bundle"].iterdir() if p.is_file()}
    assert cli_main(["nuclei", str(img), "--mpp", "0.5", "--out", str(case["bundle"])]) == OutputError.exit_code
    assert "is a model bundle" in _one_line(capsys)
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in case["bundle"].iterdir() if p.is_file()}
    assert after == before


def test_propose_roi_says_how_many_tiles_were_unreadable(case, tmp_path, capsys) -> None:
    good = write_slide(
        tmp_path / "g.svs", synthetic_he(1024, 1024, seed=2, tissue_fraction=1.0), mpp=0.5, min_size=4096
    )
    bad = tmp_path / "bad.svs"
    bad.write_bytes(good.read_bytes())
    with tifffile.TiffFile(bad) as tf:
        page = tf.pages[0]
        spans = [(page.dataoffsets[i], page.databytecounts[i]) for i in (5, 6)]
    with open(bad, "r+b") as fh:
        for off, n in spans:
            fh.seek(off)
            fh.write(b"\x00" * n)
    classes = ",".join(Bundle.load(case["bundle"]).class_names)  # every class: a region wherever tiles were read
    argv = ["propose-roi", str(bad), "--bundle", str(case["bundle"]), "--out", str(tmp_path / "p.geojson")]
    argv += ["--classes", classes, "--threshold", "0.01", "--min-area", "0", "--device", "cpu", "--quiet"]
    with pytest.warns(RuntimeWarning):
        assert cli_main(argv) == 0
    text = capsys.readouterr().out
    assert "unreadable:" in text and "tiles failed to decode" in text, text
    with pytest.warns(RuntimeWarning):
        assert cli_main([*argv, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["failed"] > 0 or doc["unreadable_mm2"] > 0, doc


def test_score_refuses_one_slide_given_twice(case, tmp_path, capsys) -> None:
    link = tmp_path / "link.svs"
    os.link(case["slide"], link)
    for second in (link, case["slide"]):
        argv = ["score", str(case["slide"]), str(second), "--bundle", str(case["bundle"])]
        assert cli_main(argv) == SignatureError.exit_code
        assert "are the same file" in _one_line(capsys)
