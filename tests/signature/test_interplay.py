"""Marker interplay and treatment benefit within pathomics risk groups, on virtual cohorts with
planted effects (found, with the right sign) and null ones (not systematically found); bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from napari_pathomics.cohort.generator import TISSUE_CLASSES, CohortSpec, draw_table
from napari_pathomics.errors import ClinicalError
from napari_pathomics.signature import Signature, SignatureFitter
from napari_pathomics.signature.interplay import (
    OBSERVATIONAL_WARNING,
    analyze_benefit,
    analyze_interaction,
    marker_levels,
    treatment_levels,
)

FEATURES = [f"true_{c}" for c in TISSUE_CLASSES]
PLANTED = {"marker_hr": 4.0, "treatment_hr": 0.33}  # the sizes the benchmark sweeps too
COLS = {"time_col": "time", "event_col": "event"}


def _cohort(seed: int, n: int = 400, **effects: float) -> pd.DataFrame:
    return pd.DataFrame(
        draw_table(CohortSpec(patients=n, seed=seed, **(effects or {"marker_hr": 1.0, "treatment_hr": 1.0})))
    )


@pytest.fixture(scope="module")
def sig() -> Signature:
    """A frozen signature on the true composition of an independent null cohort."""
    train = _cohort(999)
    return SignatureFitter(cross_validate=False, n_permutations=0).fit(train, "time", "event", FEATURES)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_planted_interplay_and_benefit_are_found_with_the_right_sign(sig: Signature, seed: int) -> None:
    d = _cohort(seed, **PLANTED)
    a = analyze_interaction(sig, d, "marker", cutoff=37, **COLS)
    high_marker = "marker > 37"
    low = a["groups"]["low"]["hazard_ratio"][high_marker]
    assert low["hr"] > 1.5 and low["p"] < 0.05  # prognostic in the low-risk group...
    assert a["interaction"]["p"] < 0.05  # ...and differently so in the high-risk group
    assert a["interaction"]["wald"]["ratio_of_hazard_ratios"] < 1
    b = analyze_benefit(sig, d, "treatment", **COLS)
    treated = "treatment = 1"
    high = b["groups"]["high"]["hazard_ratio"][treated]
    assert high["hr"] < 0.8 and high["p"] < 0.05
    assert b["interaction"]["p"] < 0.05 and b["interaction"]["wald"]["ratio_of_hazard_ratios"] < 1
    assert b["warning"] == OBSERVATIONAL_WARNING and "not randomised" in b["warning"]
    json.dumps(a, allow_nan=False)
    json.dumps(b, allow_nan=False)


def test_null_cohorts_are_not_systematically_significant(sig: Signature) -> None:
    p_int, p_ben = [], []
    for seed in range(10, 16):
        d = _cohort(seed)
        p_int.append(analyze_interaction(sig, d, "marker", cutoff=37, **COLS)["interaction"]["p"])
        p_ben.append(analyze_benefit(sig, d, "treatment", **COLS)["interaction"]["p"])
    assert sum(p < 0.05 for p in p_int) <= 1 and sum(p < 0.05 for p in p_ben) <= 1
    assert np.median(p_int) > 0.15 and np.median(p_ben) > 0.15  # uniform p-values have median 0.5


def test_layout_rows_and_forest(sig: Signature) -> None:
    d = _cohort(5, **PLANTED)
    d.loc[:9, "marker"] = np.nan
    d["site"] = np.where(np.arange(len(d)) % 3, "colon", "rectum")
    a = analyze_interaction(sig, d, "marker", cutoff="auto", subgroups=["site", "true_TUM"], **COLS)
    assert a["rows"] == {"total": len(d), "used": len(d) - 10, "excluded": {"missing marker": 10}, "n_excluded": 10}
    assert a["rule"].startswith("split at the median") and a["n"] == len(d) - 10
    assert set(a["groups"]) == {"low", "high"} and set(a["groups"]["low"]["km"]) == set(a["levels"])
    km = a["groups"]["high"]["km"][a["levels"][0]]
    assert len(km["survival"]) == len(a["grid"]) and km["survival"][0] == 1.0
    covs = [(r["covariate"], r["level"]) for r in a["forest"]]
    assert covs[0] == ("all patients", "all") and ("site", "colon") in covs and ("site", "rectum") in covs
    assert sum(c == "true_TUM" for c, _ in covs) == 2  # numeric: split at its median
    assert all(r["hazard_ratio"] is None or r["hazard_ratio"]["hr"] > 0 for r in a["forest"])


def test_levels_rules() -> None:
    lv = marker_levels(["MSS", "MSI-H", "MSS", None, "MSI-L", "MSS"], "msi")
    assert lv.labels[0] == "MSS" and list(lv.codes) == [0, lv.labels.index("MSI-H"), 0, -1, lv.labels.index("MSI-L"), 0]
    assert marker_levels([0, 1, 1, 0], "m").labels == ("0", "1")
    assert treatment_levels(["yes", "no", "yes"], "chemo").labels == ("chemo = no", "chemo = yes")
    assert list(treatment_levels(["A", "B", "A"], "arm", treated="B").codes) == [0, 1, 0]


@pytest.mark.parametrize(
    "mutate, kind, kwargs, words",
    [
        (lambda d: d.assign(treatment=1), "benefit", {}, "treatment column 'treatment' has one level only ('1')"),
        (lambda d: d.assign(treatment=d.index % 3), "benefit", {}, "has 3 levels"),
        (lambda d: d.assign(treatment=np.where(d.index % 2, "A", "B")), "benefit", {}, "give --treated VALUE"),
        (lambda d: d, "benefit", {"treatment": "chemo"}, "column 'chemo' is not in the table"),
        (lambda d: d, "interaction", {"cutoff": None}, "give --marker-cutoff V"),
        (lambda d: d.drop(columns=["true_STR"]), "interaction", {}, "no column for the signature's feature 'true_STR'"),
        (
            lambda d: d.assign(event=np.where(d["marker"] > 37, 0, d["event"])),
            "interaction",
            {},
            "level 'marker > 37' has only 0 events",
        ),
        (lambda d: d.iloc[:30], "interaction", {}, "has only"),
    ],
)
def test_bad_input_is_one_clear_message(sig: Signature, mutate, kind: str, kwargs: dict, words: str) -> None:
    d = mutate(_cohort(7, n=300, **PLANTED))
    with pytest.raises(ClinicalError, match=words.replace("(", r"\(").replace(")", r"\)")):
        if kind == "benefit":
            analyze_benefit(sig, d, kwargs.pop("treatment", "treatment"), **COLS)
        else:
            analyze_interaction(sig, d, "marker", cutoff=kwargs.get("cutoff", 37), **COLS)


def test_too_few_events_in_a_risk_group_names_the_group(sig: Signature) -> None:
    d = _cohort(8, n=300, **PLANTED)
    risk = np.array([sig.risk(r) for r in d[sig.features].to_dict("records")])
    d.loc[risk <= sig.cutoff["cutoff"], "event"] = 0
    d.loc[np.flatnonzero(risk <= sig.cutoff["cutoff"])[:4], "event"] = 1
    with pytest.raises(ClinicalError, match="pathomics risk group 'low' has only 4 events"):
        analyze_benefit(sig, d, "treatment", **COLS)
