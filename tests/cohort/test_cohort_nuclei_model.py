"""``score-cohort --nuclei-model``: the workers segment with the chosen method, the run record names it
(with its licence), patients.csv equals ``score`` with the same method, and a rerun with another
method segments again instead of reusing the first one's nuclei."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from _bundles import nuclear_signature, tiny_bundle
from _slides import small_slide
from napari_pathomics.cells.methods import resolve_method
from napari_pathomics.cli import main as cli_main
from napari_pathomics.scoring import score_patient


def _rows(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "patients.csv", newline="") as fh:
        return {r["patient_id"]: r for r in csv.DictReader(fh)}


def test_score_cohort_uses_names_and_resumes_by_the_nuclei_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    slide = small_slide(tmp_path / "a.svs", seed=1, mpp=0.5)
    (tmp_path / "cohort.csv").write_text("patient_id,slide_path\nP1,a.svs\n")
    bundle = tiny_bundle(tmp_path / "bundle", signature=nuclear_signature(resolve_method("otsu").describe()))
    out = tmp_path / "out"
    argv = ["score-cohort", str(tmp_path / "cohort.csv"), "--out", str(out), "--bundle", str(bundle.path)]
    argv += ["--workers", "0", "--amp", "fp32", "--quiet"]

    assert cli_main([*argv, "--nuclei-model", "classical"]) == 0
    text = capsys.readouterr().out
    assert "nuclei model classical, licence BSD-3-Clause" in text and "shift between nuclei methods" in text
    run = json.loads((out / "run.json").read_text())
    assert run["nuclei_model"]["name"] == "classical" and run["settings"]["nuclei_model"] == "classical"
    assert run["patients"]["nuclei_model"]["name"] == "classical"
    assert any("'otsu'" in w for w in run["warnings"])
    done = json.loads((out / "slides" / run["slides"][0]["key"] / "done.json").read_text())
    assert done["nuclei_model"]["name"] == "classical"  # segmented on the worker with the chosen method
    alone = score_patient([slide], bundle, device="cpu", amp="fp32", nuclei_model="classical")
    assert float(_rows(out)["P1"]["risk"]) == pytest.approx(alone.risk, rel=1e-9, abs=1e-12)

    assert cli_main([*argv, "--nuclei-model", "otsu", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["nuclei_model"]["name"] == "otsu" and doc["warnings"] == []
    assert doc["done"] == 1 and doc["skipped"] == 0  # the classical nuclei are not reused for otsu
    run = json.loads((out / "run.json").read_text())
    done = json.loads((out / "slides" / run["slides"][0]["key"] / "done.json").read_text())
    assert done["nuclei_model"]["name"] == "otsu"
    alone = score_patient([slide], bundle, device="cpu", amp="fp32", nuclei_model="otsu")
    assert float(_rows(out)["P1"]["risk"]) == pytest.approx(alone.risk, rel=1e-9, abs=1e-12)

    assert cli_main([*argv, "--nuclei-model", "otsu", "--json"]) == 0  # the same method: resumed
    assert json.loads(capsys.readouterr().out)["skipped"] == 1
