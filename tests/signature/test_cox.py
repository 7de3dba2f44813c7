"""LASSO-Cox fitting: known-model recovery and the JSON rebuild matching lifelines."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter

from _signature_sim import simulate_cox
from napari_pathomics.signature import Signature, SignatureFitter, concordance
from napari_pathomics.signature.cox import FrozenCox, correlation_filter, fit_lasso_cox

TRUE_BETA = np.array([0.8, -0.5, 0.3])


@pytest.fixture(scope="module")
def sim_fit() -> tuple[Signature, pd.DataFrame, np.ndarray]:
    df, lp = simulate_cox(700, TRUE_BETA, seed=3)
    fitter = SignatureFitter(cross_validate=False, n_permutations=100, horizons=(50.0, 100.0), corr_threshold=0.9)
    sig = fitter.fit(df, "time", "event", [c for c in df.columns if c.startswith("f")])
    return sig, df, lp


def test_recovers_known_coefficients(sim_fit) -> None:
    sig, df, _ = sim_fit
    coef = sig.coefficients  # per standardised feature; true standardised beta = beta * sd(x)/sd(x)
    for i, b in enumerate(TRUE_BETA):
        name = f"f{i}"
        assert name in coef, f"{name} (true beta {b}) was not selected: {coef}"
        # x_i = 2 z_i + 5, so the standardised coefficient is beta_i * sd(2z)/2 ~= beta_i * sd(z)
        true_std = b * df[name].std(ddof=0) / 2.0
        assert np.sign(coef[name]) == np.sign(b)
        assert abs(coef[name] - true_std) < 0.2 * abs(true_std) + 0.08, (name, coef[name], true_std)
    for noise in ("f3", "f4"):
        assert abs(coef.get(noise, 0.0)) < 0.1


def test_recovers_planted_c_index_on_fresh_data(sim_fit) -> None:
    sig, _, _ = sim_fit
    test, lp = simulate_cox(3000, TRUE_BETA, seed=99)
    planted = concordance(test["time"].to_numpy(), lp, test["event"].to_numpy())
    got = concordance(test["time"].to_numpy(), sig.cox.risk(test), test["event"].to_numpy())
    assert abs(got - planted) < 0.03, (got, planted)
    assert planted > 0.65  # the simulation has signal, so the check can fail


def _lifelines_pair(seed: int = 0) -> tuple[FrozenCox, CoxPHFitter, pd.DataFrame, pd.DataFrame]:
    df, _ = simulate_cox(300, TRUE_BETA, seed=seed)
    feats = ["f0", "f1", "f2", "f3"]
    X = df[feats]
    frozen, cph, _ = fit_lasso_cox(
        X, df["time"].to_numpy(), df["event"].to_numpy(), penalizers=(0.01, 0.05), folds=3, seed=0
    )
    Z = (X[frozen.covariates] - X[frozen.covariates].mean()) / X[frozen.covariates].std(ddof=0)
    return frozen, cph, X, Z


def test_json_rebuild_equals_lifelines() -> None:
    frozen, cph, X, Z = _lifelines_pair()
    rebuilt = FrozenCox.from_json(json.loads(json.dumps(frozen.to_json())))
    np.testing.assert_allclose(rebuilt.risk(X), cph.predict_log_partial_hazard(Z).to_numpy(), rtol=0, atol=1e-9)
    sf = cph.predict_survival_function(Z)
    np.testing.assert_allclose(rebuilt.survival(rebuilt.risk(X)), sf.to_numpy(), rtol=0, atol=1e-9)
    times = [10.0, 55.5, 123.0, 1e6]
    sft = cph.predict_survival_function(Z, times=times)
    np.testing.assert_allclose(rebuilt.survival(rebuilt.risk(X), times), sft.to_numpy(), rtol=0, atol=1e-9)


def test_json_rebuild_equals_unpenalised_lifelines_with_ties() -> None:
    rng = np.random.default_rng(5)
    n = 200
    d = pd.DataFrame({"a": rng.normal(3, 2, n), "b": rng.uniform(0, 1, n)})
    d["T"] = rng.integers(1, 40, n).astype(float)  # many tied times
    d["E"] = rng.integers(0, 2, n)
    mean, scale = d[["a", "b"]].mean(), d[["a", "b"]].std(ddof=0)
    Z = (d[["a", "b"]] - mean) / scale
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cph = CoxPHFitter().fit(pd.concat([Z, d[["T", "E"]]], axis=1), "T", "E")
    fz = FrozenCox.from_json(json.loads(json.dumps(FrozenCox.from_lifelines(cph, mean, scale, 0.0, 0.0).to_json())))
    np.testing.assert_allclose(fz.risk(d), cph.predict_log_partial_hazard(Z).to_numpy(), atol=1e-9, rtol=0)
    np.testing.assert_allclose(fz.survival(fz.risk(d)), cph.predict_survival_function(Z).to_numpy(), atol=1e-9, rtol=0)


def test_signature_score_matches_lifelines(sim_fit) -> None:
    sig, df, _ = sim_fit
    sig2 = Signature.from_json(json.loads(json.dumps(sig.to_json())))
    row = df.iloc[7]
    s = sig2.score({c: row[c] for c in sig2.features})
    assert s.risk == pytest.approx(float(sig.cox.risk(df.iloc[[7]])[0]), abs=1e-12)
    assert set(s.survival_at) == {"50", "100"}
    assert 0 <= s.survival_at["100"] <= s.survival_at["50"] <= 1
    assert s.group in ("high", "low")


def test_correlation_filter_drops_one_of_a_pair() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=200)
    X = pd.DataFrame({"a": a, "a2": a + 0.01 * rng.normal(size=200), "b": rng.normal(size=200), "c": np.ones(200)})
    kept, dropped = correlation_filter(X, 0.8)
    assert "b" in kept and ("a" in kept) != ("a2" in kept) and "c" not in kept
    assert {d["feature"] for d in dropped} == {"c", "a", "a2"} - set(kept)
