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
