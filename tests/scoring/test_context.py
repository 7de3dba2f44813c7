"""The score in context (issue 11) and the combined pathomics + clinical score (issue 14), headless.

Context: which area was scored, the signature's validated evidence next to the group (no shouted
HIGH for a split that is not validated), composition without background, a cancer-type warning.
Combined: the bundle's clinical signature scored from the patient's values, side by side with the
image-only score, values outside the frozen encoding named, the patient placed on interplay curves.
"""

from __future__ import annotations

import json
import re

import pytest
from _combined import add_combined
from shapely.geometry import box

from _bundles import make_bundle
from _slides import small_slide
from napari_pathomics.cli import main
from napari_pathomics.errors import ClinicalError
from napari_pathomics.resources import DEFAULT_BUNDLE
from napari_pathomics.scoring import load_signature, score_patient
from napari_pathomics.scoring.combined import (
    clinical_fields,
    combined_score,
    load_clinical_signature,
    patient_level,
)
from napari_pathomics.scoring.context import (
    cancer_type_check,
    composition_context,
    group_headline,
    group_wording,
    organs,
    refresh_context,
    scored_area,
    signature_cancer_type,
    slide_cancer_type,
    validated_evidence,
)
from napari_pathomics.scoring.report import render_report_html
from napari_pathomics.wsi.annotations import Annotation

#: The default bundle's image signature as issue 11 found it (a weak, unvalidated split).
DEFAULT_SUMMARY = {
    "cv_c_index": 0.553587695604669,
    "cv_c_index_sd": 0.06739764982432316,
    "hazard_ratio_out_of_fold": {
        "hr": 1.0132093472097845,
        "ci_lower": 0.6907785193413899,
        "ci_upper": 1.4861394101427243,
        "p": 0.9464665764422825,
    },
}


# ------------------------------------------------------------------------------ evidence and wording
def test_the_default_signatures_split_is_not_called_validated() -> None:
    ev = validated_evidence(DEFAULT_SUMMARY)  # out-of-fold HR 1.01 [0.69, 1.49], p 0.95
    assert ev["validated"] is False and ev["strength"] == "weak"
    assert ev["cv_c_index"] == pytest.approx(0.5536, abs=1e-4)
    assert (
        "cross-validated C-index 0.55 ± 0.07" in ev["text"] and "HR high vs low 1.01 [95 % CI 0.69, 1.49]" in ev["text"]
    )
    for g in ("high", "low"):
        assert "HIGH" not in group_headline(g, ev) and "RISK" not in group_headline(g, ev)
        words = group_wording(g, ev)
        assert "not validated" in words and "HR 1.01 [0.69, 1.49], p = 0.95" in words
    assert group_headline("high", ev) == "above the cutoff"


def test_a_validated_split_may_be_named() -> None:
    ev = validated_evidence(
        {
            "cv_c_index": 0.68,
            "cv_c_index_sd": 0.03,
            "cv_hazard_ratio": {"hr": 2.1, "ci_lower": 1.4, "ci_upper": 3.2, "p": 0.001},
        }
    )
    assert ev["validated"] and group_headline("high", ev) == "HIGH RISK"
    assert group_wording("high", ev).startswith("high-risk group (validated split: out-of-fold HR 2.10 [1.40, 3.20]")
    # a CI touching 1 is not validated, nor is no evidence at all
    assert not validated_evidence({"cv_hazard_ratio": {"hr": 1.5, "ci_lower": 0.99, "ci_upper": 2.2, "p": 0.06}})[
        "validated"
    ]
    none = validated_evidence({})
    assert not none["validated"] and "not cross-validated" in none["text"]
    assert "no out-of-fold evidence" in group_wording("high", none)


# ------------------------------------------------------------------------------ cancer type
@pytest.mark.parametrize(
    "text, expected",
    [
        ("colorectal adenocarcinoma", {"colorectal"}),
        ("TCGA-READ", {"colorectal"}),
        ("ready", set()),
        ("Adenocarcinoma, hepatic flexure", {"colorectal"}),
        ("skin (e.g. melanoma, carcinoma)", {"skin"}),
        ("over", set()),
        ("Ovarian serous carcinoma", {"ovary"}),
        ("other", set()),
        ("liver metastasis of colon cancer", {"colorectal", "liver"}),
    ],
)
def test_organs_named_by_free_text(text, expected) -> None:
    assert organs(text) == expected


def test_cancer_type_mismatch_warns_and_match_or_unknown_does_not() -> None:
    bad = cancer_type_check("colorectal cancer (TCGA COAD/READ)", "skin melanoma")
    assert (
        bad["match"] is False and "skin melanoma" in bad["warning"] and "not validated for this case" in bad["warning"]
    )
    ok = cancer_type_check("colorectal cancer", "liver metastasis of colon cancer")
    assert ok["match"] is True and ok["warning"] is None
    assert cancer_type_check(None, "skin")["warning"] is None
    assert "does not record" in cancer_type_check(None, "skin")["note"]
    assert "check it yourself" in cancer_type_check("colorectal", "sarcoma NOS")["note"]
    demo = cancer_type_check("colorectal adenocarcinoma", "skin", source="the demo")
    assert "pre-filled by the demo" in demo["warning"] and "stated by the user" not in demo["warning"]
    assert "(stated by the user)" in cancer_type_check("colorectal", "skin")["warning"]
    assert signature_cancer_type(None, {"cancer_type": "colorectal"}) == "colorectal"
    assert signature_cancer_type(None, {"signature_summary": {"cancer_type": "breast"}}) == "breast"
    assert signature_cancer_type(None, {}) is None


def test_slide_metadata_names_a_tissue() -> None:
    assert slide_cancer_type({"aperio.Tissue": "Skin, left forearm", "aperio.MPP": "0.25"}) == "Skin, left forearm"
    assert slide_cancer_type({"aperio.Title": "case 12", "tiffslide.vendor": "aperio"}) is None
    assert slide_cancer_type({"hamamatsu.Organ": "???"}) is None  # names no organ: not a tissue


# ------------------------------------------------------------------------------ composition and area
def test_composition_excludes_background_and_says_how_much() -> None:
    comp = {"ADI": 0.1, "BACK": 0.2, "TUM": 0.5, "STR": 0.2}
    c = composition_context(comp, list(comp), {"model": {"classes": [{"name": "BACK", "description": "background"}]}})
    assert c["background_classes"] == ["BACK"] and c["background_share"] == pytest.approx(0.2)
    assert "BACK" not in c["tissue"] and sum(c["tissue"].values()) == pytest.approx(1.0)
    assert c["tissue"]["TUM"] == pytest.approx(0.625) and "20 %" in c["text"]
    declared = composition_context(comp, list(comp), {"model": {"background_classes": ["ADI"]}})
    assert declared["background_classes"] == ["ADI"]


def test_scored_area_says_rois_or_all_tissue_tiles_and_mm2() -> None:
    a = {
        "path": "/x/a.svs",
        "tiles": {"done": 100, "background": 20, "failed": 0},
        "n_rois": 2,
        "used": True,
        "tile_um": 112.0,
        "roi_mm2": 1.5,
    }
    b = dict(a, path="/x/b.svs", n_rois=None, roi_mm2=None)
    area = scored_area([a])
    assert area["scope"] == "ROIs" and area["tiles_scored"] == 100
    assert area["scored_mm2"] == pytest.approx(100 * 0.112**2)
    assert "2 ROIs" in area["text"] and "100 tissue tiles, 1.25 mm²" in area["text"] and "1.50 mm²" in area["text"]
    assert scored_area([b])["scope"] == "all tissue"
    assert "some slides" in scored_area([a, b])["scope"]


# ------------------------------------------------------------------------------ on real slides
@pytest.fixture
def clin_bundle(sig_bundle):
    return add_combined(sig_bundle)


def test_score_carries_context_for_rois_and_all_tissue(tmp_path, sig_bundle) -> None:
    s = small_slide(tmp_path / "case.svs")
    roi = [Annotation(box(0, 0, 768, 1024))]
    whole = score_patient([s], sig_bundle, device="cpu")
    part = score_patient([s], sig_bundle, rois=[roi], device="cpu", case_type="skin melanoma")
    wa, pa = whole.context["area"], part.context["area"]
    assert wa["scope"] == "all tissue" and pa["scope"] == "ROIs" and pa["n_rois"] == 1
    assert pa["tiles_scored"] < wa["tiles_scored"] and pa["tiles_scored"] == part.slides[0].n_done
    assert wa["scored_mm2"] == pytest.approx(whole.slides[0].n_done * 0.032**2)  # 32 µm tiles
    assert part.slides[0].roi_mm2 == pytest.approx(768 * 1024 * 0.25**2 / 1e6)
    doc = part.to_json()
    assert doc["context"]["area"]["scope"] == "ROIs" and "risk" in doc and "group" in doc  # old keys kept
    # the test bundle's signature records no cancer type: a note, no warning
    assert (
        doc["context"]["cancer_type"]["warning"] is None and "does not record" in doc["context"]["cancer_type"]["note"]
    )
    sig = load_signature(sig_bundle)
    ctx = refresh_context(part, sig, {"cancer_type": "colorectal adenocarcinoma"}, "skin melanoma")
    assert ctx["cancer_type"]["match"] is False and ctx["warnings"] == [ctx["cancer_type"]["warning"]]
    assert "BACK" not in ctx["composition"]["tissue"]
    html = render_report_html(part, sig, slides_images=[None])
    assert "Cancer type mismatch" in html and "skin melanoma" in html
    assert "not validated" in html and "1 ROI on" in html and "background) left out" in html
    assert ">HIGH<" not in html and ">LOW<" not in html  # the default signature's split is not validated


def test_combined_score_side_by_side_and_bad_values_named(tmp_path, clin_bundle) -> None:
    s = small_slide(tmp_path / "case.svs")
    ps = score_patient([s], clin_bundle, device="cpu", case_type="colon adenocarcinoma")
    image, combined = load_signature(clin_bundle), load_clinical_signature(clin_bundle)
    assert combined is not None and combined.clinical.names == ["stage", "age"]
    assert ps.context["cancer_type"]["match"] is True  # the combined fixture records colorectal
    fields = clinical_fields(combined, [image])
    assert [(f["name"], f["type"], f["in_score"]) for f in fields] == [
        ("stage", "ordinal", True),
        ("age", "numeric", True),
        ("marker", "marker", False),
    ]
    assert fields[0]["levels"] == ["1", "2", "3", "4"] and fields[1]["unit"] == "years"
    assert re.fullmatch(r"number, 35–85 years", fields[1]["hint"])
    assert combined_score(ps, combined, {"stage": "", "age": " "}, image) is None  # nothing entered: image only
    c = combined_score(ps, combined, {"stage": "3", "age": "64", "marker": "50"}, image)
    feats = {f: ps.features[f] for f in combined.image_features}
    assert c["risk"] == pytest.approx(combined.score(feats, {"stage": 3, "age": 64}).risk, abs=1e-12)
    assert c["image_only"]["risk"] == ps.score.risk
    ev = combined.evaluation["models"]
    assert c["models"]["image"]["cv_c_index"] == ev["image"]["cv_c_index"]
    assert c["models"]["combined"]["cv_c_index"] == ev["combined"]["cv_c_index"]
    assert c["encoded"] == {"clin:stage": 3.0, "clin:age": 64.0}
    assert list(c["contributions"]) == ["pathomics", "stage", "age"]
    assert sum(c["contributions"].values()) == pytest.approx(c["risk"], abs=1e-9)  # the parts add up to the risk
    [pl] = c["interplay"]
    assert pl["column"] == "marker" and pl["level"] == "marker > 37" and pl["group"] == c["group"]
    assert "Research use only" in c["research_use"]
    for values, words in [
        ({"stage": "5", "age": "64"}, "'stage' = '5' is not one of the signature's levels"),
        ({"stage": "3", "age": "120"}, "'age' = 120 is outside the range"),
        ({"stage": "3", "age": "sixty"}, "'age' = 'sixty' is not a number"),
        ({"stage": "3"}, "missing clinical values for age"),
        ({"stage": "3", "age": "64", "marker": "high"}, "marker = 'high' is not a number"),
    ]:
        with pytest.raises(ClinicalError, match=re.escape(words)):
            combined_score(ps, combined, values, image)
    ps.clinical = c
    doc = json.loads(json.dumps(ps.to_json(), allow_nan=False))
    assert doc["clinical"]["models"]["combined"]["cv_c_index"] == ev["combined"]["cv_c_index"]
    html = render_report_html(ps, image, slides_images=[None], combined=combined)
    assert "Clinical values and the combined model" in html and "pathomics + clinical" in html
    assert f"{c['risk']:+.3f}" in html and f"{ev['combined']['cv_c_index']:.3f}" in html
    assert "Research use only" in html and "marker &gt; 37" in html
    assert html.count("data:image/png;base64,") == 4  # survival, composition, combined survival, interplay


def test_score_patient_with_clinical_values_gives_the_combined_score_as_a_field(tmp_path, clin_bundle):
    """``score_patient(clinical=...)`` fills ``PatientScore.clinical`` with what combined_score gives."""
    s = small_slide(tmp_path / "case.svs")
    values = {"stage": "3", "age": "64"}
    ps = score_patient([s], clin_bundle, device="cpu", clinical=values)
    image, combined = load_signature(clin_bundle), load_clinical_signature(clin_bundle)
    assert ps.clinical is not None and ps.clinical == combined_score(ps, combined, values, image)
    assert ps.to_json()["clinical"]["image_only"]["risk"] == ps.score.risk
    assert score_patient([s], clin_bundle, device="cpu").clinical is None
    # refused before any inference: a name that is no covariate, a bundle without a combined signature
    with pytest.raises(ClinicalError, match="grade: not a covariate of signature"):
        score_patient([s], clin_bundle, device="cpu", clinical={"grade": "2"})
    with pytest.raises(ClinicalError, match="has no combined \\(clinical\\) signature"):
        plain = make_bundle(tmp_path / "plain", signature=json.loads((DEFAULT_BUNDLE / "signature.json").read_text()))
        score_patient([s], plain, device="cpu", clinical=values)


def test_patient_level_of_split_treatment_and_categorical_curves() -> None:
    assert patient_level({"marker": "ca", "levels": ["ca ≤ 37", "ca > 37"]}, "37") == "ca ≤ 37"
    assert patient_level({"treatment": "chemo", "levels": ["chemo = 0", "chemo = 1"]}, 1) == "chemo = 1"
    assert patient_level({"marker": "msi", "levels": ["MSS", "MSI-H"]}, "msi-h") == "MSI-H"
    assert patient_level({"marker": "msi", "levels": ["MSS", "MSI-H"]}, "") is None
    with pytest.raises(ClinicalError, match="msi = 'MSI-X' is not one of the levels"):
        patient_level({"marker": "msi", "levels": ["MSS", "MSI-H"]}, "MSI-X")


def test_cli_score_json_adds_context_and_clinical_keys(tmp_path, clin_bundle, capsys) -> None:
    s = small_slide(tmp_path / "case.svs")
    base = ["score", str(s), "--bundle", str(clin_bundle.path), "--quiet"]
    assert main([*base, "--json", "--case-type", "skin", "--clinical", "stage=2,age=70"]) == 0
    doc = json.loads(capsys.readouterr().out)
    for key in ("patient_id", "risk", "percentile", "group", "cutoff", "survival", "composition", "slides", "warnings"):
        assert key in doc  # nothing renamed
    assert doc["context"]["cancer_type"]["match"] is False and doc["context"]["area"]["scope"] == "all tissue"
    assert (
        doc["clinical"]["values"] == {"stage": "2", "age": "70"}
        and doc["clinical"]["image_only"]["risk"] == doc["risk"]
    )
    assert main(base) == 0
    out = capsys.readouterr().out
    assert "scored: all tissue on 1 slide" in out and "not validated" in out
    assert "above the cutoff" in out or "at or below the cutoff" in out
    assert "HIGH" not in out and "LOW" not in out
    assert main([*base, "--clinical", "stage=3,age=130"]) == ClinicalError.exit_code
    err = capsys.readouterr().err
    assert "'age' = 130 is outside the range" in err and err.count("\n") == 1
    assert main([*base, "--clinical", "grade=2"]) == ClinicalError.exit_code
    assert "--clinical grade: not a covariate" in capsys.readouterr().err


def test_the_research_use_statement_names_the_signatures_own_cancer() -> None:
    from napari_pathomics.scoring.patient import disclaimer

    assert "derived from pancreatic ductal adenocarcinoma" in disclaimer("pancreatic ductal adenocarcinoma")
    generic = disclaimer(None)
    assert "Research use only" in generic and "colorectal" not in generic and "not a clinical test" in generic


def test_a_pixel_size_set_by_the_user_is_said_in_the_score_json_report_and_cli(tmp_path, sig_bundle, capsys) -> None:
    """A slide without µm/px scored with one the user gave: never silent (the area, the score and the
    percentile rest on it)."""
    from napari_pathomics.wsi.synthetic import synthetic_he, write_slide

    p = write_slide(tmp_path / "nompp.tif", synthetic_he(1024, 1536, seed=1), mpp=None, fmt="tiff", min_size=256)
    ps = score_patient([p], sig_bundle, device="cpu", slide_mpp=0.25)
    mark = "µm/px 0.25, set by the user"
    doc = ps.to_json()
    assert ps.slides[0].mpp_source == "user" and doc["slides"][0]["mpp_source"] == "user"
    assert mark in doc["context"]["area"]["text"]
    assert any(w.startswith(f"nompp.tif: {mark}") for w in doc["context"]["warnings"])
    assert mark in render_report_html(ps, load_signature(sig_bundle), slides_images=[None])
    capsys.readouterr()
    assert main(["score", str(p), "--bundle", str(sig_bundle.path), "--slide-mpp", "0.25", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "scored: all tissue on 1 slide" in out and f"({mark})" in out and "warning: nompp.tif: " + mark in out
    # a pixel size read from the file carries no such mark
    own = score_patient([small_slide(tmp_path / "own.svs")], sig_bundle, device="cpu")
    assert own.slides[0].mpp_source == "file" and "set by the user" not in json.dumps(own.to_json())
