"""The frozen Signature: JSON validation, scoring fields, errors, evaluation helpers; a mutated
signature JSON gives only a typed one-line error."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from _fuzz import SLOW, mutate
from _signature_sim import simulate_cox
from napari_pathomics.bundle import Bundle
from napari_pathomics.errors import BundleError, PathomicsError, SignatureError
from napari_pathomics.resources import DEFAULT_BUNDLE
from napari_pathomics.scoring.tiles import score_tiles
from napari_pathomics.signature import FeatureSpec, Signature, SignatureFitter, SlideTiles
from napari_pathomics.signature._evaluate import hazard_ratio, km_by_group, time_dependent_auc


@pytest.fixture(scope="module")
def tme_signature() -> Signature:
    """A small TME signature fitted on simulated tile-derived features (fast settings)."""
    rng = np.random.default_rng(2)
    n = 240
    probs = rng.dirichlet([2, 2, 2], size=n)
    lp = 3.0 * (probs[:, 0] - probs[:, 1])
    t = rng.exponential(1 / (0.002 * np.exp(lp)))
    c = rng.exponential(900, size=n)
    df = pd.DataFrame({"tme_mean_STR": probs[:, 0], "tme_mean_TUM": probs[:, 1], "tme_mean_LYM": probs[:, 2]})
    df["T"], df["E"] = np.minimum(t, c), (t <= c).astype(int)
    spec = FeatureSpec(["STR", "TUM", "LYM"], tme_stats=["mean"], combine="max")
    return SignatureFitter(cross_validate=False, n_permutations=50, folds=3).fit(
        df, "T", "E", list(df.columns[:3]), feature_spec=spec
    )


def test_roundtrip_and_score(tme_signature: Signature, tmp_path) -> None:
    path = tme_signature.save(tmp_path / "signature.json")
    sig = Signature.from_json(path)
    assert Signature.from_json(tmp_path).features == sig.features  # a bundle folder works too
    feats = {f: 0.3 for f in sig.features}
    s = sig.score(feats)
    assert s.group == ("high" if s.risk > sig.cutoff["cutoff"] else "low")
    assert 0 <= s.percentile <= 100
    assert len(s.curve_times) == len(s.curve_survival) == len(sig.reference_km["grid"])
    assert np.all(np.diff(s.curve_survival) <= 1e-12)
    json.dumps(s.to_json(), allow_nan=False)
    ref = sig.reference_km
    assert ref["high"]["at_risk"][0] == ref["high"]["n"]
    # the stored reference risks reproduce the percentile definition
    assert s.percentile == pytest.approx(100 * np.mean(sig.reference_risks <= s.risk))


def test_score_tiles_uses_stored_spec(tme_signature: Signature) -> None:
    slide = SlideTiles(np.array([[0.7, 0.2, 0.1], [0.5, 0.3, 0.2]]), ("STR", "TUM", "LYM"))
    a = score_tiles(tme_signature, [slide])[1]
    b = tme_signature.score(tme_signature.feature_spec.transform([slide]))
    assert a.risk == b.risk
    w = tme_signature.patch_risk_weights
    assert set(w) == {c.split("_")[-1] for c in tme_signature.features}
    # a slide made of one repeated tile: risk == sum_c w_c p_c + offset
    tile = np.array([0.6, 0.3, 0.1])
    one = SlideTiles(np.tile(tile, (5, 1)), ("STR", "TUM", "LYM"))
    off = tme_signature.to_json()["patch_risk"]["offset"]
    lin = sum(w[c] * tile[i] for i, c in enumerate(["STR", "TUM", "LYM"]) if c in w) + off
    assert score_tiles(tme_signature, [one])[1].risk == pytest.approx(lin, abs=1e-9)


def test_signature_errors(tme_signature: Signature) -> None:
    d = tme_signature.to_json()
    with pytest.raises(SignatureError, match="not a pathomics signature"):
        Signature.from_json({**d, "kind": "model"})
    with pytest.raises(SignatureError, match="schema_version"):
        Signature.from_json({**d, "schema_version": 99})
    with pytest.raises(SignatureError, match="malformed"):
        Signature.from_json({k: v for k, v in d.items() if k != "cox"})
    with pytest.raises(SignatureError, match="missing features"):
        tme_signature.score({})
    with pytest.raises(SignatureError, match="NaN"):
        tme_signature.score({f: float("nan") for f in tme_signature.features})
    with pytest.raises(SignatureError, match="no signature"):
        Signature.from_json("/nonexistent/bundle")


def test_time_dependent_auc_equals_plain_auc_without_censoring() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    t = rng.exponential(10, 300)
    e = np.ones(300, int)
    r = -np.log(t) + rng.normal(size=300)
    auc = time_dependent_auc(t, e, r, [5.0, 1e9])
    case = t <= 5.0
    assert auc[5.0] == pytest.approx(roc_auc_score(case, r))
    assert auc[1e9] is None


def test_hr_and_km() -> None:
    df, lp = simulate_cox(400, np.array([1.0]), seed=1, n_noise=0)
    high = lp > np.median(lp)
    hr = hazard_ratio(high, df["time"], df["event"])
    assert hr["ci_lower"] < hr["hr"] < hr["ci_upper"] and hr["hr"] > 1.5
    km = km_by_group(df["time"].to_numpy(), df["event"].to_numpy(), high, [0, 50, 100])
    assert km["high"]["survival"][1] < km["low"]["survival"][1]
    assert km["high"]["at_risk"][0] + km["low"]["at_risk"][0] == 400


@pytest.fixture(scope="module")
def signature_doc() -> dict:
    b = Bundle.load(DEFAULT_BUNDLE)
    if b.signature_path is None:
        pytest.skip("the default bundle carries no signature")
    return json.loads(b.signature_path.read_text())


@SLOW
@given(st.data())
def test_signature_mutations_only_typed_errors(signature_doc: dict, data) -> None:
    doc = mutate(data, signature_doc)
    try:
        Signature.from_json(doc)
    except (SignatureError, BundleError) as exc:
        assert "\n" not in str(exc)
    except PathomicsError as exc:  # any typed error is acceptable, but say which
        pytest.fail(f"unexpected typed error {type(exc).__name__}: {exc}")
