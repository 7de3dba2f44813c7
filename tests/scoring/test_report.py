"""The case report (HTML + JSON) and multi-slide edge cases of the per-patient scoring."""

import base64
import hashlib
import json
import re

import numpy as np
import pytest
from shapely.geometry import box

from _slides import small_slide
from napari_pathomics.scoring import load_signature, score_patient
from napari_pathomics.scoring.report import (
    render_report_html,
    slide_overview_png,
    write_report_html,
    write_report_json,
)
from napari_pathomics.wsi.annotations import Annotation
from napari_pathomics.wsi.slide import open_slide

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_one_empty_slide_among_several_is_a_warning_not_an_error(tmp_path, sig_bundle):
    a = small_slide(tmp_path / "a.svs", seed=1)
    b = small_slide(tmp_path / "b.svs", seed=2)
    off = [Annotation(box(0, 0, 5, 5))]  # no tile fits
    ps = score_patient([a, b], sig_bundle, rois=[None, off], device="cpu")
    alone = score_patient([a], sig_bundle, device="cpu")
    assert [s.used for s in ps.slides] == [True, False]
    assert ps.slides[1].n_done == 0
    assert any("b.svs" in w and "left out" in w for w in ps.warnings)
    assert ps.score.risk == alone.score.risk  # the empty slide changes nothing
    assert ps.to_json()["warnings"] == ps.warnings


def test_report_is_self_contained_and_carries_the_numbers(tmp_path, sig_bundle):
    s = small_slide(tmp_path / "case.svs")
    roi = [Annotation(box(64, 64, 1200, 900), classification="Tumor", color=(0, 200, 80))]
    ps = score_patient([s], sig_bundle, patient_id="P-042", rois=[roi], device="cpu")
    sig = load_signature(sig_bundle)
    out = write_report_html(ps, tmp_path / "case.html", signature=sig)
    text = out.read_text()
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", text, re.I)
    assert "<script" not in text.lower() and "<link" not in text.lower()
    sc = ps.score
    assert "P-042" in text and f"{sc.risk:+.3f}" in text and f"{sc.cutoff:+.3f}" in text
    for v in sc.survival_at.values():
        assert f"{100 * v:.1f} %" in text
    assert f"{sig.metrics['cv']['c_index_mean']:.3f}" in text  # the honest CV C-index
    assert "not a clinical test" in text and "colorectal" in text
    assert ps.slides[0].sha256 in text and ps.bundle["id"] in text
    pngs = [base64.b64decode(m) for m in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", text)]
    assert len(pngs) == 3 and all(p.startswith(PNG_MAGIC) for p in pngs)  # survival, composition, overview

    # given slide images are used as they are (the widget may pass its own screenshots)
    marker = PNG_MAGIC + b"marker-image"
    html2 = render_report_html(ps, sig, slides_images=[marker])
    assert base64.b64encode(marker).decode() in html2

    # without a signature argument the report loads the bundle recorded in the score
    assert f"{sc.risk:+.3f}" in render_report_html(ps)


def test_report_json_has_hashes_versions_and_all_numbers(tmp_path, sig_bundle):
    s = small_slide(tmp_path / "case.svs")
    ps = score_patient([s], sig_bundle, device="cpu")
    doc = json.loads(write_report_json(ps, tmp_path / "case.json").read_text())
    assert doc["risk"] == ps.score.risk and doc["group"] == ps.score.group
    assert doc["survival"] == ps.score.survival_at and set(doc["survival"]) == {"365", "1095", "1825"}
    assert doc["slides"][0]["sha256"] == hashlib.sha256(s.read_bytes()).hexdigest()
    with open_slide(s) as sl:
        assert doc["slides"][0]["fingerprint"] == sl.file_hash()
    assert doc["bundle"]["id"] == sig_bundle.bundle_id
    assert doc["bundle"]["file_hashes"] == sig_bundle.file_hashes and "signature.json" in doc["bundle"]["file_hashes"]
    for pkg in ("python", "numpy", "torch", "timm", "napari-pathomics"):
        assert doc["versions"].get(pkg)
    assert doc["features"]["tme_mean_TUM"] == pytest.approx(doc["composition"]["TUM"])  # one slide: max = mean
    assert np.isclose(sum(doc["composition"].values()), 1.0, atol=1e-5)


def test_overview_png_draws_without_results(tmp_path):
    s = small_slide(tmp_path / "x.svs")
    with open_slide(s) as sl:
        png = slide_overview_png(sl, None, [Annotation(box(10, 10, 300, 300))])
    assert png.startswith(PNG_MAGIC)
