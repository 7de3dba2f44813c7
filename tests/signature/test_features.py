"""Patient features: TME composition, slide combination, MIL histograms/TF-IDF, bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from napari_pathomics.errors import SignatureError
from napari_pathomics.resources import TCGA_COHORT_CSV
from napari_pathomics.signature import FeatureSpec, SlideTiles, slide_tme

CLS = ["STR", "TUM", "LYM"]


def _slide(probs, risk=None, classes=CLS, sid="s"):
    return SlideTiles(np.asarray(probs, float), tuple(classes), None if risk is None else np.asarray(risk, float), sid)


def test_slide_tme_mean_and_fraction() -> None:
    f = slide_tme(np.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1]]), CLS)
    assert f["tme_mean_STR"] == pytest.approx(0.4)
    assert f["tme_frac_STR"] == 0.5 and f["tme_frac_TUM"] == 0.5 and f["tme_frac_LYM"] == 0


@pytest.mark.parametrize("how, expected", [("max", 0.8), ("mean", 0.5), ("weighted", (0.2 * 3 + 0.8) / 4)])
def test_combine_over_slides(how: str, expected: float) -> None:
    a = _slide([[0.2, 0.7, 0.1]] * 3, sid="a")
    b = _slide([[0.8, 0.1, 0.1]], sid="b")
    spec = FeatureSpec(CLS, tme_stats=["mean"], combine=how)
    assert spec.transform([a, b])["tme_mean_STR"] == pytest.approx(expected)


def test_class_order_is_by_name_not_position() -> None:
    spec = FeatureSpec(CLS, tme_stats=["mean"])
    s = _slide([[0.1, 0.2, 0.7]], classes=["LYM", "STR", "TUM"])
    f = spec.transform(s)
    assert f["tme_mean_STR"] == pytest.approx(0.2) and f["tme_mean_LYM"] == pytest.approx(0.1)


def test_mil_features_frozen_vocabulary_roundtrip() -> None:
    rng = np.random.default_rng(0)
    patients = {f"p{i}": [_slide(rng.dirichlet([1, 1, 1], size=40), rng.uniform(size=40))] for i in range(6)}
    spec = FeatureSpec(CLS, mil=True).fit(patients.values())
    spec2 = FeatureSpec.from_json(json.loads(json.dumps(spec.to_json())))
    f1 = spec.transform(patients["p2"])
    f2 = spec2.transform(patients["p2"])
    assert f1 == f2
    assert list(f1) == spec.feature_names
    hist = np.array([f1[f"mil_hist_p{b:03d}"] for b in range(101)])
    assert hist.min() == 0 and hist.max() == 1
    tfidf = np.array([v for k, v in f1.items() if k.startswith("mil_tfidf_")])
    assert np.linalg.norm(tfidf) == pytest.approx(1.0)
    # a new patient with words outside the vocabulary still gets the same columns
    new = _slide([[0.3, 0.3, 0.4]], [0.123456])
    assert list(spec2.transform(new)) == spec.feature_names
    tab = spec.transform_many(patients)
    assert isinstance(tab, pd.DataFrame) and tab.shape == (6, len(spec.feature_names))


def test_feature_errors() -> None:
    spec = FeatureSpec(CLS, tme_stats=["mean"])
    with pytest.raises(SignatureError, match="lacks classes"):
        spec.transform(_slide([[0.5, 0.5]], classes=["STR", "TUM"]))
    with pytest.raises(SignatureError, match="no tiles"):
        spec.transform(_slide(np.zeros((0, 3))))
    with pytest.raises(SignatureError, match="NaN"):
        spec.transform(_slide([[np.nan, 0.5, 0.5]]))
    mil = FeatureSpec(CLS, mil=True)
    with pytest.raises(SignatureError, match="not fitted"):
        mil.transform(_slide([[0.2, 0.3, 0.5]], [0.1]))
    with pytest.raises(SignatureError, match="risk"):
        mil.fit([_slide([[0.2, 0.3, 0.5]])])
    with pytest.raises(SignatureError, match="NaN"):
        mil.fit([_slide([[0.2, 0.3, 0.5]], [np.nan])])
    with pytest.raises(SignatureError):
        FeatureSpec.from_json({"kind": "something-else"})
    with pytest.raises(SignatureError):
        FeatureSpec(CLS, combine="median")


def test_tcga_scores_are_per_class_max_of_mean_probabilities() -> None:
    """The evidence behind mapping the TCGA columns to tme_mean_<CLS> with combine='max'."""
    d = pd.read_csv(TCGA_COHORT_CSV)
    X = d[["ADI", "BACK", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM"]].to_numpy()
    s = X.sum(1)
    single = np.abs(s - 1) < 1e-6
    assert single.sum() == 179  # one slide: a mean of softmax vectors sums to 1 (float32 rounding)
    assert s[~single].min() > 1.01  # nothing in between: several slides combined non-linearly
    assert ((X > 0.5).sum(1) >= 2).sum() == 33  # impossible for any (weighted) mean, fine for max
    assert (X > 0).all()  # argmax fractions would have exact zeros for rare classes
