"""The bundled default signature on the real (vendored) TCGA CRC cohort: stored == recomputed."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from napari_pathomics.resources import DEFAULT_BUNDLE, TCGA_COHORT_CSV
from napari_pathomics.signature import Signature, SignatureFitter, concordance, hazard_ratio

SIG_PATH = DEFAULT_BUNDLE / "signature.json"
pytestmark = pytest.mark.skipif(not SIG_PATH.exists(), reason="default bundle has no signature.json")


@pytest.fixture(scope="module")
def sig() -> Signature:
    return Signature.from_json(SIG_PATH)


@pytest.fixture(scope="module")
def cohort(sig: Signature) -> pd.DataFrame:
    d = pd.read_csv(TCGA_COHORT_CSV)
    return d.rename(columns={c: f"tme_mean_{c}" for c in sig.feature_spec.classes})


def test_stored_apparent_figures_recompute(sig: Signature, cohort: pd.DataFrame) -> None:
    risk = np.array([sig.risk(r) for r in cohort[sig.features].to_dict("records")])
    np.testing.assert_allclose(np.sort(risk), sig.reference_risks, atol=1e-9, rtol=0)
    t, e = cohort["days_to_event"].to_numpy(float), cohort["vital_status"].to_numpy(int)
    m = sig.metrics
    assert concordance(t, risk, e) == pytest.approx(m["apparent_c_index"], abs=1e-12)
    hr = hazard_ratio(risk > sig.cutoff["cutoff"], t, e)
    assert hr["hr"] == pytest.approx(m["hazard_ratio_high_vs_low"]["hr"], rel=1e-6)
    assert sig.to_json()["reference"]["n"] == 500 and sig.to_json()["reference"]["n_events"] == 106


@pytest.mark.slow
def test_stored_cv_c_index_recomputes(sig: Signature, cohort: pd.DataFrame) -> None:
    """Refit with the stored settings and seed: same covariates, coefficients and CV C-index."""
    tr = sig.to_json()["training"]
    settings = dict(tr["settings"])
    settings["n_permutations"] = sig.cutoff["n_permutations"]
    fitter = SignatureFitter(**settings)
    again = fitter.fit(cohort, tr["duration_col"], tr["event_col"], tr["input_features"], feature_spec=sig.feature_spec)
    assert again.features == sig.features
    np.testing.assert_allclose(again.cox.beta, sig.cox.beta, atol=1e-9)
    assert again.metrics["cv"]["c_index_mean"] == pytest.approx(sig.metrics["cv"]["c_index_mean"], abs=1e-9)
    assert again.cutoff["p_value"] == sig.cutoff["p_value"]


def test_manifest_records_signature(sig: Signature) -> None:
    man_path = DEFAULT_BUNDLE / "manifest.json"
    if not man_path.exists():
        pytest.skip("default bundle manifest not there yet")
    man = json.loads(man_path.read_text())
    assert man.get("signature") == "signature.json"
    assert man["signature_summary"]["cv_c_index"] == pytest.approx(sig.metrics["cv"]["c_index_mean"])


# ------------------------------------------------------------------ the combined (clinical) signature
CLIN_PATH = DEFAULT_BUNDLE / "signature_clinical.json"


@pytest.fixture(scope="module")
def clin() -> Signature:
    if not CLIN_PATH.exists():
        pytest.skip("default bundle has no signature_clinical.json")
    return Signature.from_json(CLIN_PATH)


def test_combined_signature_records_three_models_and_its_rows(clin: Signature) -> None:
    assert clin.clinical.names == ["cleanstage", "years_to_birth"]
    assert [c.title for c in clin.clinical.covariates] == ["stage (I–IV)", "age at diagnosis (years)"]
    assert clin.cancer_type == "colorectal adenocarcinoma"
    ev = clin.evaluation
    for m in ("image", "clinical", "combined"):
        assert 0.5 < ev["models"][m]["cv_c_index"] < 1 and ev["models"][m]["cv_c_index_sd"] > 0
    assert ev["design"]["folds"] == 5 and ev["design"]["repeats"] == 5
    assert ev["models"]["clinical"]["cv_c_index"] > ev["models"]["image"]["cv_c_index"]
    inc = ev["increment"]["combined_minus_clinical"]
    assert inc["ci_lower"] <= inc["delta_c"] <= inc["ci_upper"] and 0 <= inc["likelihood_ratio_test"]["p"] <= 1
    rows = ev["rows"]
    assert rows["total"] == 500 and rows["used"] == 465 and rows["n_excluded"] == 35
    assert rows["excluded"] == {"follow-up <= 0 days": 19, "missing cleanstage": 15, "missing years_to_birth": 1}
    assert set(clin.image_features) <= set(Signature.from_json(SIG_PATH).feature_spec.feature_names)


def test_combined_signature_recomputes_on_the_tcga_rows_it_used(clin: Signature) -> None:
    from napari_pathomics.signature import score_combined

    d = pd.read_csv(TCGA_COHORT_CSV)
    d = d[(d["days_to_event"] > 0) & d["cleanstage"].notna() & d["years_to_birth"].notna()].reset_index(drop=True)
    feats = d.rename(columns={c: f"tme_mean_{c}" for c in clin.feature_spec.classes})
    risk = np.array(
        [
            score_combined(clin, f, {"cleanstage": s, "years_to_birth": a}).risk
            for f, s, a in zip(feats[clin.image_features].to_dict("records"), d["cleanstage"], d["years_to_birth"])
        ]
    )
    np.testing.assert_allclose(np.sort(risk), clin.reference_risks, atol=1e-9, rtol=0)
    t, e = d["days_to_event"].to_numpy(float), d["vital_status"].to_numpy(int)
    assert concordance(t, risk, e) == pytest.approx(clin.metrics["apparent_c_index"], abs=1e-12)
    assert clin.to_json()["reference"]["n_events"] == int(e.sum())


def test_manifest_records_the_combined_signature(clin: Signature) -> None:
    man = json.loads((DEFAULT_BUNDLE / "manifest.json").read_text())
    assert man["signature_clinical"] == "signature_clinical.json" and man["signature"] == "signature.json"
    assert man["cancer_type"] == clin.cancer_type
    summ = man["signature_clinical_summary"]
    for m in ("image", "clinical", "combined"):
        assert summ["models"][m]["cv_c_index"] == pytest.approx(clin.evaluation["models"][m]["cv_c_index"])
    assert summ["clinical"] == ["cleanstage", "years_to_birth"] and summ["n"] == 465


@pytest.mark.slow
def test_combined_signature_refits_from_its_recorded_command(clin: Signature, tmp_path) -> None:
    """The README's build-signature command (into a copy of the bundle) gives the shipped model."""
    import shutil

    from napari_pathomics.cli import main

    bundle = tmp_path / "b"
    shutil.copytree(DEFAULT_BUNDLE, bundle)
    tr = clin.to_json()["training"]
    assert (
        main(
            [
                "build-signature",
                str(TCGA_COHORT_CSV),
                "--time",
                tr["duration_col"],
                "--event",
                tr["event_col"],
                "--id",
                tr["id_col"],
                "--tme-classes",
                "DEB,MUS,TUM",
                "--clinical",
                "cleanstage:ordinal,years_to_birth:numeric(years)",
                "--clinical-label",
                "cleanstage=stage (I–IV)",
                "--clinical-label",
                "years_to_birth=age at diagnosis (years)",
                "--clinical-missing",
                "drop",
                "--min-follow-up",
                "0",
                "--cv-repeats",
                "5",
                "--seed",
                "0",
                "--name",
                clin.name,
                "--cancer-type",
                clin.cancer_type,
                "--bundle",
                str(bundle),
            ]
        )
        == 0
    )
    again = Signature.from_json(bundle / "signature_clinical.json")
    assert again.features == clin.features
    assert again.to_json()["clinical"] == clin.to_json()["clinical"]  # the human labels included
    np.testing.assert_allclose(again.cox.beta, clin.cox.beta, atol=1e-9)
    for m in ("image", "clinical", "combined"):
        assert again.evaluation["models"][m]["cv_c_index"] == pytest.approx(
            clin.evaluation["models"][m]["cv_c_index"], abs=1e-9
        )


def test_combined_signature_carries_the_msi_curves_a_patient_is_placed_on(clin: Signature) -> None:
    from napari_pathomics.scoring.combined import interplay_docs, patient_level

    docs = {d["marker"]: d for _, d in interplay_docs(clin)}
    msi = docs["msi_status"]
    assert msi["signature"] == clin.name and msi["cutoff"] == pytest.approx(clin.cutoff["cutoff"])
    assert set(msi["groups"]) == {"low", "high"} and 0 <= msi["interaction"]["p"] <= 1
    assert patient_level(msi, "MSI-H") == "MSI-H" and patient_level(msi, "mss") == "MSS"
