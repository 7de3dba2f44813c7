"""Clinical covariates: typed declarations, the frozen encoding, the combined model and its evaluation."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from napari_pathomics.errors import ClinicalError, SignatureError
from napari_pathomics.signature import Signature, SignatureFitter
from napari_pathomics.signature._compare import (
    _null_log_likelihood,
    bootstrap_delta_c,
    comparable_pairs,
    fit_combined,
    likelihood_ratio_test,
    pair_concordance,
)
from napari_pathomics.signature.clinical import ClinicalSpec, Declared, parse_clinical
from napari_pathomics.signature.cox import concordance, fit_lasso_cox
from napari_pathomics.signature.model import signature_problems


def _clinical_table(n: int = 240, seed: int = 3) -> pd.DataFrame:
    """Image features f0-f2 (f0 weakly prognostic), stage 1-4 (strongly), age and a 3-level category."""
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(n, 3))
    stage = rng.integers(1, 5, n)
    age = rng.uniform(35, 85, n).round()
    msi = rng.choice(["MSS", "MSI-L", "MSI-H"], n, p=[0.6, 0.2, 0.2])
    lp = 0.4 * f[:, 0] + 0.7 * (stage - 2.5) + 0.03 * (age - 60) - 0.5 * (msi == "MSI-H")
    t_ev = rng.exponential(1.0 / (0.01 * np.exp(lp)))
    t_c = rng.exponential(150.0, n)
    d = pd.DataFrame(f * 2 + 5, columns=["f0", "f1", "f2"])
    d.insert(0, "pid", [f"P{i:03d}" for i in range(n)])
    d["stage"] = stage.astype(float)
    d["age"] = age
    d["msi"] = msi
    d["time"] = np.round(np.minimum(t_ev, t_c), 3) + 0.01
    d["event"] = (t_ev <= t_c).astype(int)
    return d


FAST = {"folds": 3, "n_permutations": 20, "n_bootstrap": 200, "penalizers": (0.01, 0.05)}


# ------------------------------------------------------------------------------ declarations
def test_parse_clinical_types_units_and_orders() -> None:
    got = parse_clinical("stage:ordinal, age:numeric(years),msi:categorical(MSS|MSI-L|MSI-H),g:ordinal(G1<G2<G3)")
    assert [(d.name, d.type) for d in got] == [
        ("stage", "ordinal"),
        ("age", "numeric"),
        ("msi", "categorical"),
        ("g", "ordinal"),
    ]
    assert got[1].unit == "years" and got[2].levels == ("MSS", "MSI-L", "MSI-H") and got[3].levels == ("G1", "G2", "G3")


@pytest.mark.parametrize(
    "text, words",
    [
        ("stage:integer", "TYPE must be one of"),
        ("stage", "expected COL:TYPE"),
        ("a:numeric,a:ordinal", "twice"),
        ("g:ordinal(G1<G1)", "listed twice"),
    ],
)
def test_parse_clinical_refuses_bad_items(text: str, words: str) -> None:
    with pytest.raises(ClinicalError, match=words):
        parse_clinical(text)


# ------------------------------------------------------------------------------ the encoding
def test_fit_freezes_encoding_and_round_trips() -> None:
    d = _clinical_table()
    spec, used = ClinicalSpec.fit(d, parse_clinical("stage:ordinal,age:numeric(years),msi:categorical"))
    assert used.all()
    assert spec.columns[:2] == ["clin:stage", "clin:age"]
    assert sorted(spec.columns[2:]) == ["clin:msi=MSI-H", "clin:msi=MSI-L"]
    assert spec.covariate("msi").reference == "MSS"  # the most frequent level
    assert spec.covariate("stage").levels == ("1", "2", "3", "4") and spec.covariate("stage").scores == (1, 2, 3, 4)
    enc = spec.encode({"stage": "3", "age": 50, "msi": "MSI-H"})
    assert enc["clin:stage"] == 3.0 and enc["clin:age"] == 50.0 and enc["clin:msi=MSI-H"] == 1.0
    assert spec.encode({"stage": 3.0, "age": 50, "msi": "MSS"}) == spec.encode(
        {"stage": "3", "age": 50.0, "msi": "MSS"}
    )
    again = ClinicalSpec.from_json(json.loads(json.dumps(spec.to_json())))
    assert again.encode({"stage": 2, "age": 60, "msi": "MSI-L"}) == spec.encode({"stage": 2, "age": 60, "msi": "MSI-L"})


@pytest.mark.parametrize(
    "values, words",
    [
        ({"stage": 5, "age": 50, "msi": "MSS"}, "'stage' = 5 is not one of the signature's levels"),
        ({"stage": 2, "age": 120, "msi": "MSS"}, "'age' = 120 is outside the range"),
        ({"stage": 2, "age": "old", "msi": "MSS"}, "'age' = 'old' is not a number"),
        ({"stage": 2, "age": 50, "msi": "MSI-X"}, "'msi' = 'MSI-X' is not one of"),
        ({"stage": 2, "msi": "MSS"}, "missing clinical values for age"),
    ],
)
def test_values_outside_the_frozen_encoding_are_named(values: dict, words: str) -> None:
    spec, _ = ClinicalSpec.fit(_clinical_table(), parse_clinical("stage:ordinal,age:numeric,msi:categorical"))
    with pytest.raises(ClinicalError, match=words.replace("(", r"\(")):
        spec.encode(values)


def test_missing_values_refused_dropped_or_imputed_and_counted() -> None:
    d = _clinical_table()
    d.loc[[3, 7], "stage"] = np.nan
    d.loc[9, "age"] = np.nan
    decl = parse_clinical("stage:ordinal,age:numeric")
    with pytest.raises(ClinicalError, match=r"'stage' has 2 missing values \(first: patient 'P003'\)"):
        ClinicalSpec.fit(d, decl, "refuse", id_col="pid")
    spec, used = ClinicalSpec.fit(d, decl, "drop", id_col="pid")
    assert int((~used).sum()) == 3
    assert spec.rows["excluded"] == {"missing stage": 2, "missing age": 1}
    assert spec.rows["used"] == len(d) - 3 and spec.rows["excluded_ids"] == ["P003", "P007", "P009"]
    spec, used = ClinicalSpec.fit(d, decl, "impute")
    assert used.all() and spec.covariate("age").impute == float(np.nanmedian(d["age"]))
    assert spec.covariate("stage").impute in spec.covariate("stage").levels


@pytest.mark.parametrize(
    "mutate, decl, words",
    [
        (lambda d: d, "grade:ordinal", "clinical column 'grade' is not in the table"),
        (
            lambda d: d.assign(age=d["age"].astype(object).where(d.index != 4, "unknown")),
            "age:numeric",
            "'age' is declared numeric but patient 'P004' holds 'unknown'",
        ),
        (lambda d: d.assign(msi="MSS"), "msi:categorical", "one level only ('MSS')"),
        (
            lambda d: d.assign(msi=np.where(d.index < 3, "rare", "MSS")),
            "msi:categorical",
            "level 'rare' has only 3 rows",
        ),
        (lambda d: d.assign(grade=np.where(d.index % 2, "G1", "G2")), "grade:ordinal", "give their order"),
        (lambda d: d, "msi:categorical(MSS|MSI-H)", "holds 'MSI-L', not one of the declared levels"),
    ],
)
def test_bad_covariate_columns_are_one_clear_message(mutate, decl: str, words: str) -> None:
    with pytest.raises(ClinicalError, match=words.replace("(", r"\(").replace(")", r"\)")):
        ClinicalSpec.fit(mutate(_clinical_table()), parse_clinical(decl), id_col="pid")


def test_clinical_error_is_a_signature_error_with_its_own_exit_code() -> None:
    assert issubclass(ClinicalError, SignatureError) and ClinicalError.exit_code not in (0, 1, SignatureError.exit_code)


# ------------------------------------------------------------------------------ the combined model
def test_folded_combined_model_equals_the_two_stage_lifelines_fit() -> None:
    from lifelines import CoxPHFitter

    d = _clinical_table()
    X = d[["f0", "f1", "f2"]]
    t, e = d["time"].to_numpy(), d["event"].to_numpy()
    img, _, _ = fit_lasso_cox(X, t, e, penalizers=(0.01,), folds=3)
    spec, _ = ClinicalSpec.fit(d, parse_clinical("stage:ordinal,age:numeric"))
    C = spec.encode_table(d)
    frozen, log = fit_combined(img, X[img.covariates], C, t, e)
    assert not log["image_null"] and frozen.covariates == [*img.covariates, *C.columns]
    ref = C.copy()
    ref["s"] = img.risk(X)
    ref["T"], ref["E"] = t, e
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cph = CoxPHFitter().fit(ref, "T", "E")
    XC = pd.concat([X[img.covariates], C], axis=1)
    np.testing.assert_allclose(frozen.risk(XC), cph.predict_log_partial_hazard(ref).to_numpy(), atol=1e-8)
    times = [20.0, 60.0, 120.0]
    np.testing.assert_allclose(
        frozen.survival(frozen.risk(XC[:5]), times),
        cph.predict_survival_function(ref.iloc[:5], times=times).to_numpy(),
        atol=1e-8,
    )
    assert log["score_coefficient"] == pytest.approx(float(cph.params_["s"]), rel=1e-6)


def test_pairs_concordance_matches_lifelines_with_ties() -> None:
    rng = np.random.default_rng(0)
    t = rng.integers(1, 15, 80).astype(float)  # many tied times
    e = rng.integers(0, 2, 80)
    r = rng.integers(0, 5, 80).astype(float)  # tied risks
    i, j = comparable_pairs(t, e)
    assert pair_concordance(r, i, j).mean() == pytest.approx(concordance(t, r, e), abs=1e-12)


def test_bootstrap_delta_c_is_zero_for_one_model_and_positive_for_a_better_one() -> None:
    rng = np.random.default_rng(1)
    folds = []
    for _ in range(3):
        lp = rng.normal(size=120)
        t = rng.exponential(np.exp(-lp))
        e = np.ones(120, int)
        noise = lp + rng.normal(scale=3.0, size=120)
        folds.append({"time": t, "event": e, "a": lp, "b": noise})
    same = bootstrap_delta_c([{**f, "b": f["a"]} for f in folds], 100)
    assert same["delta_c"] == 0 and same["ci_lower"] == 0 and same["ci_upper"] == 0
    better = bootstrap_delta_c(folds, 300, labels=("truth", "noisy"))
    assert better["ci_lower"] > 0 and better["delta_c"] > 0.05 and "C(truth) - C(noisy)" in better["method"]


def test_null_log_likelihood_matches_lifelines_and_lrt_detects_a_real_covariate() -> None:
    from lifelines import CoxPHFitter

    d = _clinical_table()
    t, e = d["time"].to_numpy(), d["event"].to_numpy()
    for tt in (t, np.ceil(t / 10)):  # continuous times, then many ties (Efron's rule, as lifelines)
        cph = CoxPHFitter().fit(pd.DataFrame({"f1": d["f1"], "time": tt, "event": e}), "time", "event")
        assert _null_log_likelihood(tt, e) == pytest.approx(cph._model._ll_null_, rel=1e-9)
    res = likelihood_ratio_test(t, e, d[["age"]], d[["stage"]])
    assert res["df"] == 1 and res["p"] < 1e-6
    assert likelihood_ratio_test(t, e, d[[]], d[["f2"]])["p"] > 0.01


# ------------------------------------------------------------------------------ the fitter
@pytest.fixture(scope="module")
def combined() -> tuple[Signature, pd.DataFrame]:
    d = _clinical_table()
    d.loc[[5, 6], "stage"] = np.nan
    sig = SignatureFitter(**FAST).fit(
        d,
        "time",
        "event",
        ["f0", "f1", "f2"],
        id_col="pid",
        clinical="stage:ordinal,age:numeric(years)",
        clinical_missing="drop",
        cancer_type="test cancer",
    )
    return sig, d


def test_fitter_evaluates_image_clinical_and_combined_in_the_same_folds(combined) -> None:
    sig, d = combined
    ev = sig.to_json()["evaluation"]
    for m in ("image", "clinical", "combined"):
        assert 0.3 < ev["models"][m]["cv_c_index"] < 1 and ev["models"][m]["cv_c_index_sd"] >= 0
        assert len(ev["models"][m]["c_index_per_fold"]) == 3
    # the planted stage effect dwarfs the weak image feature
    assert ev["models"]["clinical"]["cv_c_index"] > ev["models"]["image"]["cv_c_index"] + 0.05
    inc = ev["increment"]["combined_minus_clinical"]
    assert inc["ci_lower"] <= inc["delta_c"] <= inc["ci_upper"]
    assert 0 <= inc["likelihood_ratio_test"]["p"] <= 1
    adj = ev["adjusted_hazard_ratio"]["score_per_sd"]
    assert {"pathomics_score", "clin:stage", "clin:age"} <= set(adj) and adj["clin:stage"]["hr"] > 1.5
    assert ev["rows"] == {
        "total": len(d),
        "used": len(d) - 2,
        "excluded": {"missing stage": 2},
        "n_excluded": 2,
        "excluded_ids": ["P005", "P006"],
    }
    assert sig.to_json()["reference"]["n"] == len(d) - 2
    assert sig.metrics["cv"]["c_index_mean"] == pytest.approx(ev["models"]["combined"]["cv_c_index"])
    assert not signature_problems(sig.to_json())


def test_combined_signature_scores_with_clinical_values_and_names_bad_ones(combined) -> None:
    sig, d = combined
    again = Signature.from_json(json.loads(json.dumps(sig.to_json())))
    assert again.clinical.names == ["stage", "age"] and again.cancer_type == "test cancer"
    assert set(again.image_features) <= {"f0", "f1", "f2"}
    row = d.iloc[0]
    feats = {f: row[f] for f in again.image_features}
    low = again.score(feats, {"stage": 1, "age": 40}).risk
    high = again.score(feats, {"stage": 4, "age": 80}).risk
    assert high > low
    with pytest.raises(ClinicalError, match="needs clinical values for stage, age"):
        again.score(feats)
    with pytest.raises(ClinicalError, match="'stage' = 7"):
        again.score(feats, {"stage": 7, "age": 50})


def test_image_only_signature_carries_models_image_and_old_files_load(tmp_path) -> None:
    d = _clinical_table()
    sig = SignatureFitter(**FAST).fit(d, "time", "event", ["f0", "f1", "f2"])
    ev = sig.to_json()["evaluation"]
    assert list(ev["models"]) == ["image"]
    assert ev["models"]["image"]["cv_c_index"] == pytest.approx(sig.metrics["cv"]["c_index_mean"])
    assert sig.clinical is None and "clinical" not in sig.to_json()
    old = sig.to_json()
    for k in ("evaluation", "cancer_type"):
        old.pop(k, None)
    assert Signature.from_json(old).clinical is None


def test_schema_refuses_a_malformed_clinical_block(combined) -> None:
    sig, _ = combined
    bad = sig.to_json()
    bad["clinical"]["covariates"][0]["type"] = "integer"
    assert any("clinical.covariates.0.type" in p for p in signature_problems(bad))
    bad = sig.to_json()
    bad["clinical"]["covariates"][1].pop("range")
    assert signature_problems(bad)
    bad = sig.to_json()
    del bad["evaluation"]["models"]["image"]["cv_c_index"]
    assert signature_problems(bad)


def test_declared_objects_work_like_text() -> None:
    d = _clinical_table()
    a, _ = ClinicalSpec.fit(d, [Declared("stage", "ordinal"), Declared("age", "numeric", "years")])
    b, _ = ClinicalSpec.fit(d, parse_clinical("stage:ordinal,age:numeric(years)"))
    assert a.to_json() == b.to_json()


# ------------------------------------------------------------------------------ one patient
def test_score_combined_gives_risk_parts_and_validated_c(combined) -> None:
    from napari_pathomics.signature import CombinedScore, score_combined

    sig, d = combined
    row = d.iloc[0]
    feats = {f: float(row[f]) for f in ["f0", "f1", "f2"]}  # extra image features are ignored
    cs = score_combined(sig, feats, {"stage": "3", "age": 64, "unused": "x"})
    assert isinstance(cs, CombinedScore)
    direct = sig.score({f: feats[f] for f in sig.image_features}, {"stage": 3, "age": 64})
    assert cs.risk == pytest.approx(direct.risk) and cs.group == direct.group
    assert cs.score.percentile == pytest.approx(direct.percentile)
    assert set(cs.contributions) == {"pathomics", "stage", "age"}
    assert sum(cs.contributions.values()) == pytest.approx(cs.risk, abs=1e-9)
    assert cs.values == {"stage": "3", "age": 64} and cs.encoded == {"clin:stage": 3.0, "clin:age": 64.0}
    ev = sig.evaluation
    for m in ("image", "clinical", "combined"):
        assert cs.models[m]["cv_c_index"] == pytest.approx(ev["models"][m]["cv_c_index"])
    inc = ev["increment"]["combined_minus_clinical"]
    assert cs.increment["delta_c"] == pytest.approx(inc["delta_c"])
    assert cs.increment["lrt_p"] == pytest.approx(inc["likelihood_ratio_test"]["p"])
    assert cs.rows["used"] == len(d) - 2 and cs.rows["excluded"] == {"missing stage": 2}
    assert "excluded_ids" not in cs.rows
    doc = json.loads(json.dumps(cs.to_json(), allow_nan=False))
    assert doc["group"] in ("low", "high") and doc["models"]["combined"]["cv_c_index"] is not None
    later = score_combined(sig, feats, {"stage": 4, "age": 64})
    assert later.contributions["stage"] > cs.contributions["stage"]
    assert later.contributions["pathomics"] == pytest.approx(cs.contributions["pathomics"])


@pytest.mark.parametrize(
    "values, words",
    [
        ({"stage": 5, "age": 50}, "'stage' = 5 is not one of the signature's levels (1, 2, 3, 4)"),
        ({"stage": 2, "age": 130}, "'age' = 130 is outside the range the signature was fitted on"),
        ({"stage": 2, "age": "sixty"}, "'age' = 'sixty' is not a number"),
        ({"stage": 2}, "missing clinical values for age"),
        ({"stage": "", "age": 50}, "missing clinical values for stage"),
    ],
)
def test_score_combined_names_the_column_and_the_value(combined, values: dict, words: str) -> None:
    from napari_pathomics.signature import score_combined

    sig, d = combined
    feats = {f: float(d.iloc[0][f]) for f in ["f0", "f1", "f2"]}
    with pytest.raises(ClinicalError, match=words.replace("(", r"\(").replace(")", r"\)")):
        score_combined(sig, feats, values)


def test_score_combined_refuses_an_image_only_signature_and_missing_features(combined) -> None:
    from napari_pathomics.signature import score_combined

    sig, d = combined
    image_only = SignatureFitter(**FAST, cross_validate=False).fit(d, "time", "event", ["f0", "f1", "f2"])
    with pytest.raises(SignatureError, match="has no clinical covariates"):
        score_combined(image_only, {"f0": 1.0}, {"stage": 2, "age": 50})
    with pytest.raises(SignatureError, match="needs image features"):
        score_combined(sig, {}, {"stage": 2, "age": 50})
