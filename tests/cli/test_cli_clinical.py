"""``build-signature --clinical`` (JSON keys, bundle slot, bad covariates in one line) and
``analyze-interaction`` / ``analyze-benefit`` (files written, warnings, one-line errors)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from _cli import assert_one_line, run_cli
from napari_pathomics.bundle import validate_bundle
from napari_pathomics.cli import main
from napari_pathomics.cohort.generator import TISSUE_CLASSES, CohortSpec, draw_table
from napari_pathomics.errors import ClinicalError
from napari_pathomics.resources import DEFAULT_BUNDLE
from napari_pathomics.signature import Signature

FAST = ["--folds", "3", "--permutations", "20", "--bootstrap", "100", "--penalizers", "0.01,0.05"]


def _table(n: int = 200, seed: int = 2) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(n, 3))
    stage = rng.integers(1, 5, n)
    age = rng.uniform(40, 85, n).round()
    lp = 0.5 * f[:, 0] + 0.8 * (stage - 2.5) + 0.02 * (age - 60)
    te, tc = rng.exponential(1 / (0.01 * np.exp(lp))), rng.exponential(150.0, n)
    d = pd.DataFrame(f, columns=["f0", "f1", "f2"])
    d.insert(0, "pid", [f"P{i}" for i in range(n)])
    d["stage"], d["age"] = stage, age
    d["time"], d["event"] = np.round(np.minimum(te, tc), 3) + 0.01, (te <= tc).astype(int)
    return d


def _build(tmp_path: Path, d: pd.DataFrame, extra: list[str], capsys) -> tuple[int, str, str]:
    p = tmp_path / "t.csv"
    d.to_csv(p, index=False)
    rc = main(
        [
            "build-signature",
            str(p),
            "--time",
            "time",
            "--event",
            "event",
            "--id",
            "pid",
            "--features",
            "f0,f1,f2",
            *FAST,
            *extra,
        ]
    )
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_build_signature_clinical_json_has_the_three_models(tmp_path, capsys) -> None:
    d = _table()
    d.loc[:3, "stage"] = np.nan
    out = tmp_path / "sig.json"
    rc, so, se = _build(
        tmp_path,
        d,
        [
            "--clinical",
            "stage:ordinal,age:numeric(years)",
            "--clinical-label",
            "stage=stage (I–IV)",
            "--clinical-missing",
            "drop",
            "--out",
            str(out),
            "--json",
        ],
        capsys,
    )
    assert rc == 0, se
    doc = json.loads(so)
    for m in ("image", "clinical", "combined"):
        assert isinstance(doc["evaluation"]["models"][m]["cv_c_index"], float)
        assert isinstance(doc["evaluation"]["models"][m]["cv_c_index_sd"], float)
    assert doc["evaluation"]["rows"]["excluded"] == {"missing stage": 4}
    sig = Signature.from_json(out)
    assert sig.to_json()["evaluation"]["models"] == doc["evaluation"]["models"]
    assert sig.clinical.names == ["stage", "age"]
    # the human label is stored with the covariate (the Score dock shows it); unlabelled: the column name
    assert [c.title for c in sig.clinical.covariates] == ["stage (I–IV)", "age"]
    assert json.loads(out.read_text())["clinical"]["covariates"][0]["label"] == "stage (I–IV)"


def test_human_output_states_rows_models_and_increment(tmp_path, capsys) -> None:
    d = _table()
    d.loc[:1, "age"] = np.nan
    rc, so, se = _build(
        tmp_path,
        d,
        ["--clinical", "stage:ordinal,age:numeric", "--clinical-missing", "drop", "--out", str(tmp_path / "s.json")],
        capsys,
    )
    assert rc == 0, se
    assert "rows: 198 of 200 used (2 left out: missing age: 2)" in so
    assert "combined - clinical: delta C" in so and "LRT" in so
    for m in ("image", "clinical", "combined"):
        assert f"    {m}" in so


def test_clinical_signature_goes_into_its_own_bundle_slot(tmp_path, capsys) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(DEFAULT_BUNDLE, bundle)
    main_sig = hashlib.sha256((bundle / "signature.json").read_bytes()).hexdigest()
    rc, so, se = _build(
        tmp_path,
        _table(),
        ["--clinical", "stage:ordinal,age:numeric", "--bundle", str(bundle), "--cancer-type", "test cancer"],
        capsys,
    )
    assert rc == 0, se
    assert hashlib.sha256((bundle / "signature.json").read_bytes()).hexdigest() == main_sig
    man = json.loads((bundle / "manifest.json").read_text())
    assert man["signature"] == "signature.json" and man["signature_clinical"] == "signature_clinical.json"
    assert set(man["signature_clinical_summary"]["models"]) == {"image", "clinical", "combined"}
    assert man["cancer_type"] == "test cancer"
    assert validate_bundle(bundle) == []


@pytest.mark.parametrize(
    "mutate, clinical, words",
    [
        (lambda d: d, "grade:ordinal", "clinical column 'grade' is not in the table"),
        (
            lambda d: d.assign(age=d["age"].astype(object).where(d.index != 2, "n.k.")),
            "age:numeric",
            "'age' is declared numeric but patient 'P2' holds 'n.k.'",
        ),
        (
            lambda d: d.assign(stage=d["stage"].where(d.index != 5)),
            "stage:ordinal",
            "'stage' has 1 missing values (first: patient 'P5')",
        ),
        (lambda d: d.assign(age=60), "age:numeric", "'age' has one value only (60)"),
        (lambda d: d, "stage:integer", "TYPE must be one of numeric, ordinal, categorical"),
    ],
)
def test_bad_covariate_is_one_line_naming_column_and_value(tmp_path, capsys, mutate, clinical, words) -> None:
    rc, so, se = _build(tmp_path, mutate(_table()), ["--clinical", clinical, "--out", str(tmp_path / "x.json")], capsys)
    assert rc == ClinicalError.exit_code, se
    assert words in se and se.count("\n") == 1 and "Traceback" not in se
    assert not (tmp_path / "x.json").exists()


# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def virtual(tmp_path_factory) -> tuple[Path, Path]:
    """A null training cohort -> a frozen signature; a planted cohort to analyse."""
    root = tmp_path_factory.mktemp("virtual")
    train = pd.DataFrame(draw_table(CohortSpec(patients=300, seed=99, marker_hr=1.0, treatment_hr=1.0)))
    train.to_csv(root / "train.csv", index=False)
    sig = root / "sig.json"
    feats = ",".join(f"true_{c}" for c in TISSUE_CLASSES)
    assert (
        main(
            [
                "build-signature",
                str(root / "train.csv"),
                "--time",
                "time",
                "--event",
                "event",
                "--features",
                feats,
                "--no-cv",
                "--permutations",
                "0",
                "--time-unit",
                "months",
                "--out",
                str(sig),
            ]
        )
        == 0
    )
    test = pd.DataFrame(draw_table(CohortSpec(patients=400, seed=1, marker_hr=4.0, treatment_hr=0.33)))
    test.to_csv(root / "test.csv", index=False)
    return sig, root / "test.csv"


def test_analyze_interaction_writes_json_figures_and_page(virtual, tmp_path, capsys) -> None:
    sig, table = virtual
    rc = main(
        [
            "analyze-interaction",
            str(table),
            "--signature",
            str(sig),
            "--marker",
            "marker",
            "--marker-cutoff",
            "37",
            "--subgroups",
            "true_TUM",
            "--out",
            str(tmp_path / "ia"),
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert "low-risk group" in out and "interaction (risk group x marker): p = " in out
    doc = json.loads((tmp_path / "ia" / "interaction.json").read_text())
    assert doc["interaction"]["p"] < 0.05 and doc["groups"]["low"]["hazard_ratio"]["marker > 37"]["hr"] > 1
    page = (tmp_path / "ia" / "interaction.html").read_text()
    assert "Research use only" in page and "<script" not in page and "data:image/png;base64," in page
    assert (tmp_path / "ia" / "interaction-km.png").stat().st_size > 1000
    assert (tmp_path / "ia" / "interaction-forest.png").stat().st_size > 1000


def test_analyze_benefit_says_observational(virtual, tmp_path, capsys) -> None:
    sig, table = virtual
    rc = main(
        [
            "analyze-benefit",
            str(table),
            "--signature",
            str(sig),
            "--treatment",
            "treatment",
            "--json",
            "--out",
            str(tmp_path / "b"),
        ]
    )
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0 and "not randomised" in doc["warning"]
    assert doc["groups"]["high"]["hazard_ratio"]["treatment = 1"]["hr"] < 1
    assert "not randomised" in (tmp_path / "b" / "benefit.html").read_text()


@pytest.mark.parametrize(
    "mutate, args, words",
    [
        (
            lambda d: d.assign(treatment=0),
            ["analyze-benefit", "--treatment", "treatment"],
            "treatment column 'treatment' has one level only ('0')",
        ),
        (lambda d: d, ["analyze-benefit", "--treatment", "chemo"], "column 'chemo' is not in the table"),
        (
            lambda d: d,
            ["analyze-interaction", "--marker", "marker", "--marker-cutoff", "high"],
            "--marker-cutoff must be a number or 'auto'",
        ),
        (
            lambda d: d.iloc[:22],
            ["analyze-interaction", "--marker", "marker", "--marker-cutoff", "auto"],
            "events among the patients with a marker value (< 10)",
        ),
    ],
)
def test_analysis_bad_input_is_one_line(virtual, tmp_path, capsys, mutate, args, words) -> None:
    sig, table = virtual
    p = tmp_path / "t.csv"
    mutate(pd.read_csv(table)).to_csv(p, index=False)
    rc = main([args[0], str(p), "--signature", str(sig), *args[1:]])
    err = capsys.readouterr().err
    assert rc == ClinicalError.exit_code and words in err and err.count("\n") == 1


@pytest.mark.slow
def test_analysis_error_through_the_real_cli_is_one_line(virtual, tmp_path) -> None:
    sig, table = virtual
    p = tmp_path / "t.csv"
    pd.read_csv(table).assign(treatment=1).to_csv(p, index=False)
    r = run_cli("analyze-benefit", p, "--signature", sig, "--treatment", "treatment")
    assert_one_line(r, ClinicalError.exit_code, "has one level only ('1')")


# ---------------------------------------------------------------------------------------------
# rows used and why the others were not; bad values at scoring time (a combined signature)
def test_output_says_rows_used_under_every_missing_rule(tmp_path, capsys) -> None:
    d = _table()
    rc, so, se = _build(
        tmp_path, d, ["--clinical", "stage:ordinal,age:numeric", "--out", str(tmp_path / "a.json")], capsys
    )
    assert rc == 0, se
    assert "rows: all 200 used (none left out)" in so
    d.loc[[3, 4, 8], "age"] = np.nan
    rc, so, se = _build(
        tmp_path,
        d,
        ["--clinical", "stage:ordinal,age:numeric", "--clinical-missing", "impute", "--out", str(tmp_path / "b.json")],
        capsys,
    )
    assert rc == 0, se
    med = float(np.nanmedian(d["age"]))
    assert f"rows: all 200 used (missing values imputed: missing age: 3 filled with {med!r})" in so
    rc, so, se = _build(
        tmp_path,
        d,
        [
            "--clinical",
            "stage:ordinal,age:numeric",
            "--clinical-missing",
            "drop",
            "--no-cv",
            "--json",
            "--out",
            str(tmp_path / "c.json"),
        ],
        capsys,
    )
    assert rc == 0, se
    doc = json.loads(so)  # no CV: the rows still say what was fitted on
    assert doc["rows"] == {"total": 200, "used": 197, "excluded": {"missing age": 3}, "n_excluded": 3}
    assert Signature.from_json(tmp_path / "c.json").to_json()["reference"]["n"] == 197
    rc, so, se = _build(
        tmp_path,
        d,
        [
            "--clinical",
            "stage:ordinal,age:numeric",
            "--clinical-missing",
            "drop",
            "--no-cv",
            "--out",
            str(tmp_path / "d.json"),
        ],
        capsys,
    )
    assert rc == 0 and "rows: 197 of 200 used (3 left out: missing age: 3)" in so


@pytest.mark.parametrize(
    "mutate, clinical, words",
    [
        (
            lambda d: d.assign(grade=np.where(d.index % 2, "G1", "G2")),
            "grade:ordinal",
            "ordinal column 'grade' has text levels (G1, G2); give their order",
        ),
        (
            lambda d: d.assign(site=np.where(d.index < 2, "other", "colon")),
            "site:categorical",
            "clinical column 'site': level 'other' has only 2 rows (< 5)",
        ),
        (
            lambda d: d.assign(stage=d["stage"].astype(object).where(d.index != 7, "IV")),
            "stage:ordinal(1<2<3<4)",
            "clinical column 'stage': patient 'P7' holds 'IV', not one of the declared levels (1, 2, 3, 4)",
        ),
        (
            lambda d: d.assign(age=d["age"].where(d.index != 9, np.inf)),
            "age:numeric",
            "clinical column 'age': patient 'P9' holds inf (not finite)",
        ),
    ],
)
def test_more_bad_covariates_are_one_line(tmp_path, capsys, mutate, clinical, words) -> None:
    rc, so, se = _build(tmp_path, mutate(_table()), ["--clinical", clinical, "--out", str(tmp_path / "x.json")], capsys)
    assert rc == ClinicalError.exit_code, se
    assert words in se and se.count("\n") == 1 and "Traceback" not in se


@pytest.fixture(scope="module")
def combined_virtual(tmp_path_factory) -> tuple[Path, Path]:
    """A combined signature (true composition + stage + age) and a planted cohort carrying stage and age."""
    root = tmp_path_factory.mktemp("combined")

    def with_clinical(d: pd.DataFrame, seed: int) -> pd.DataFrame:
        rng = np.random.default_rng(seed)
        return d.assign(stage=rng.integers(1, 5, len(d)), age=rng.uniform(40, 85, len(d)).round())

    train = with_clinical(
        pd.DataFrame(draw_table(CohortSpec(patients=300, seed=98, marker_hr=1.0, treatment_hr=1.0))), 0
    )
    from napari_pathomics.signature import SignatureFitter

    sig = SignatureFitter(cross_validate=False, n_permutations=0).fit(
        train, "time", "event", [f"true_{c}" for c in TISSUE_CLASSES], clinical="stage:ordinal,age:numeric(years)"
    )
    sig.save(root / "combined.json")
    test = with_clinical(
        pd.DataFrame(draw_table(CohortSpec(patients=400, seed=3, marker_hr=4.0, treatment_hr=0.33))), 1
    )
    test["age"] = test["age"].clip(train["age"].min(), train["age"].max())
    test.to_csv(root / "test.csv", index=False)
    return root / "combined.json", root / "test.csv"


def test_analysis_with_a_combined_signature_counts_rows_without_clinical_values(
    combined_virtual, tmp_path, capsys
) -> None:
    sig, table = combined_virtual
    d = pd.read_csv(table)
    d.loc[:5, "stage"] = np.nan
    d.loc[10:12, "treatment"] = np.nan
    p = tmp_path / "t.csv"
    d.to_csv(p, index=False)
    rc = main(["analyze-benefit", str(p), "--signature", str(sig), "--treatment", "treatment", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert doc["rows"] == {
        "total": 400,
        "used": 391,
        "excluded": {"missing stage": 6, "missing treatment": 3},
        "n_excluded": 9,
    }
    assert doc["n"] == 391
    rc = main(["analyze-benefit", str(p), "--signature", str(sig), "--treatment", "treatment"])
    out = capsys.readouterr().out
    assert rc == 0 and "391 of 400 patients" in out and "left out missing stage: 6, missing treatment: 3" in out


@pytest.mark.parametrize(
    "mutate, words",
    [
        (
            lambda d: d.assign(stage=d["stage"].where(d.index != 4, 5)),
            "row 5: clinical covariate 'stage' = 5 is not one of the signature's levels (1, 2, 3, 4)",
        ),
        (
            lambda d: d.assign(stage=d["stage"].where(d.index > 1).where(d.index != 6, 0)),  # rows 1-2 left out first
            "row 7: clinical covariate 'stage' = 0 is not one of the signature's levels (1, 2, 3, 4)",
        ),
        (
            lambda d: d.assign(age=d["age"].where(d.index != 0, 130.0)),
            "row 1: clinical covariate 'age' = 130 is outside the range the signature was fitted on",
        ),
        (
            lambda d: d.assign(age=d["age"].astype(object).where(d.index != 2, "old")),
            "row 3: clinical covariate 'age' = 'old' is not a number",
        ),
        (lambda d: d.drop(columns=["age"]), "the signature's clinical covariate 'age' is not a column of the table"),
    ],
)
def test_scoring_values_outside_the_frozen_encoding_are_one_line(
    combined_virtual, tmp_path, capsys, mutate, words
) -> None:
    sig, table = combined_virtual
    p = tmp_path / "t.csv"
    mutate(pd.read_csv(table)).to_csv(p, index=False)
    rc = main(["analyze-interaction", str(p), "--signature", str(sig), "--marker", "marker", "--marker-cutoff", "37"])
    err = capsys.readouterr().err
    assert rc == ClinicalError.exit_code and words in err and err.count("\n") == 1, err


def test_too_few_events_in_a_treatment_level_is_one_line(virtual, tmp_path, capsys) -> None:
    sig, table = virtual
    d = pd.read_csv(table)
    treated = np.flatnonzero(d["treatment"] == 1)
    d.loc[treated[7:], "event"] = 0  # at most 7 events among the treated
    p = tmp_path / "t.csv"
    d.to_csv(p, index=False)
    rc = main(["analyze-benefit", str(p), "--signature", str(sig), "--treatment", "treatment", "--id", "patient_id"])
    err = capsys.readouterr().err
    assert rc == ClinicalError.exit_code and err.count("\n") == 1
    assert "treatment column 'treatment': level 'treatment = 1' has only" in err and "(< 10)" in err


def test_too_few_events_after_dropping_rows_says_so(tmp_path, capsys) -> None:
    d = _table()
    d["event"] = 0
    d.loc[:11, "event"] = 1  # 12 events, 4 of them in rows without a stage
    d.loc[:3, "stage"] = np.nan
    rc, so, se = _build(
        tmp_path,
        d,
        ["--clinical", "stage:ordinal", "--clinical-missing", "drop", "--out", str(tmp_path / "x.json")],
        capsys,
    )
    assert rc != 0 and se.count("\n") == 1
    assert "only 8 events; at least 10 are needed" in se
    assert "on the 196 of 200 rows left after leaving out 4 (missing stage: 4)" in se


def test_a_categorical_level_without_events_is_named(tmp_path, capsys) -> None:
    d = _table()
    d["site"] = np.where(d.index % 4 == 0, "colon", "rectum")
    d.loc[(d.index % 4 == 0) & (d.index < 40), "site"] = "appendix"
    d.loc[d["site"] == "appendix", "event"] = 0
    rc, so, se = _build(tmp_path, d, ["--clinical", "site:categorical", "--out", str(tmp_path / "x.json")], capsys)
    assert rc == ClinicalError.exit_code and se.count("\n") == 1
    assert "clinical column 'site': level 'appendix' has no events among its 10 patients" in se


def test_an_analysis_attached_to_a_bundle_places_a_patient_on_its_curves(virtual, tmp_path, capsys) -> None:
    from napari_pathomics.scoring.combined import interplay_docs, patient_level

    sig, table = virtual
    bundle = tmp_path / "b"
    shutil.copytree(DEFAULT_BUNDLE, bundle)
    shutil.copy(sig, bundle / "signature.json")
    args = [
        "analyze-interaction",
        str(table),
        "--signature",
        str(bundle / "signature.json"),
        "--marker",
        "marker",
        "--marker-cutoff",
        "37",
        "--attach",
        str(bundle),
    ]
    assert main(args) == 0 and main(args) == 0  # attached twice: replaced, not repeated
    assert "stored in" in capsys.readouterr().out
    assert validate_bundle(bundle) == []
    stored = Signature.from_json(bundle / "signature.json")
    docs = interplay_docs(stored)
    assert len(docs) == 1 and docs[0][1]["marker"] == "marker" and "excluded_ids" not in docs[0][1]["rows"]
    assert patient_level(docs[0][1], 50) == "marker > 37" and patient_level(docs[0][1], 10) == "marker ≤ 37"
    # a signature from elsewhere cannot be stored in a bundle it does not belong to
    rc = main(
        ["analyze-interaction", str(table), "--signature", str(sig), "--marker", "marker", "--attach", str(bundle)]
    )
    err = capsys.readouterr().err
    assert rc == ClinicalError.exit_code and "give --signature as one of that bundle's signature files" in err


@pytest.mark.parametrize(
    "label, words",
    [
        ("grade=tumour grade", "not a --clinical column"),
        ("stage", "expected COL=TEXT"),
        ("stage=", "expected COL=TEXT"),
    ],
)
def test_a_label_for_no_declared_column_is_one_line(tmp_path, capsys, label: str, words: str) -> None:
    extra = ["--clinical", "stage:ordinal,age:numeric", "--clinical-label", label, "--out", str(tmp_path / "x.json")]
    rc, so, se = _build(tmp_path, _table(), extra, capsys)
    assert rc != 0 and words in se and len(se.strip().splitlines()) == 1 and "Traceback" not in se, se
    assert not (tmp_path / "x.json").exists()
