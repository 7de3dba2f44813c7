"""Headless per-patient scoring, the case report and ``pathomics score``."""

import json
import subprocess

import pytest
from shapely.geometry import box

from _bundles import make_bundle
from _cli import CLI
from _slides import small_slide
from napari_pathomics.errors import TilingError
from napari_pathomics.scoring import load_signature, score_patient, slide_tiles
from napari_pathomics.scoring.report import render_report_html, write_report_json
from napari_pathomics.wsi.annotations import Annotation


def test_score_is_reproducible_and_equals_the_signature_by_hand(tmp_path, sig_bundle):
    a = small_slide(tmp_path / "a.svs", seed=1)
    b = small_slide(tmp_path / "b.svs", seed=2)
    first = score_patient([a, b], sig_bundle, patient_id="P1", device="cpu")
    again = score_patient([a, b], sig_bundle, patient_id="P1", device="cpu")
    assert again.score.risk == first.score.risk and again.slides[0].from_cache
    sig = load_signature(sig_bundle)
    tiles = [slide_tiles(r) for r in first.results]
    by_hand = sig.score(sig.feature_spec.transform(tiles))
    assert by_hand.risk == pytest.approx(first.score.risk, abs=1e-12)
    assert by_hand.group == first.score.group
    doc = first.to_json()
    assert doc["patient_id"] == "P1" and len(doc["slides"]) == 2
    assert all(len(s["sha256"]) == 64 for s in doc["slides"]) and doc["bundle"]["file_hashes"]
    html = render_report_html(first, sig)
    assert "http://" not in html and "https://" not in html and "<script" not in html
    assert f"{first.score.risk:+.3f}" in html and "not a clinical test" in html
    assert html.count("data:image/png;base64,") == 4  # survival, composition, two slide overviews
    out = write_report_json(first, tmp_path / "r.json")
    assert json.loads(out.read_text())["risk"] == first.score.risk


def test_no_tiles_in_roi_is_a_clear_error(tmp_path, sig_bundle):
    s = small_slide(tmp_path / "a.svs")
    tiny = [Annotation(box(0, 0, 5, 5))]
    # the per-slide step's one rule (as ``infer``, ``score-cohort`` and the Analyze dock): TilingError
    with pytest.raises(TilingError, match="no slide has a tile to analyse.*lies inside its ROIs and tissue"):
        score_patient([s], sig_bundle, rois=[tiny], device="cpu")


@pytest.mark.slow
def test_cli_score_json_and_refusals(tmp_path, sig_bundle):
    s = small_slide(tmp_path / "a.svs")
    r = subprocess.run(
        [
            *CLI,
            "score",
            str(s),
            "--bundle",
            str(sig_bundle.path),
            "--json",
            "--quiet",
            "--report",
            str(tmp_path / "case.html"),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    for key in ("patient_id", "risk", "percentile", "group", "survival", "composition", "slides", "bundle"):
        assert key in doc
    assert (tmp_path / "case.html").is_file() and (tmp_path / "case.json").is_file()
    nosig = make_bundle(tmp_path / "nosig")
    r = subprocess.run([*CLI, "score", str(s), "--bundle", str(nosig.path)], capture_output=True, text=True)
    assert r.returncode == 8 and r.stderr.count("\n") == 1 and "no signature" in r.stderr
    r = subprocess.run(
        [*CLI, "score", str(s), "--roi", "a.geojson", "--roi", "b.geojson"], capture_output=True, text=True
    )
    assert r.returncode == 8 and "one --roi per slide" in r.stderr
