"""train-signature end to end on a small semi-synthetic cohort (tiny random-weight backbone)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from _bundles import tiny_bundle
from napari_pathomics.bundle import Bundle
from napari_pathomics.cohort.generator import CohortSpec, make_cohort
from napari_pathomics.errors import CohortError
from napari_pathomics.training.signature import TrainSettings, fit_risk_head, train_signature, weak_labels


def test_weak_labels_follow_the_seed_study() -> None:
    t = np.array([6.0, 6.0, 20.0, 40.0, 40.0, 30.0])
    e = np.array([1, 0, 1, 1, 0, 0])
    assert weak_labels(t, e, 12, 36).tolist() == [1, -1, -1, 0, 0, -1]


def test_risk_head_separates_and_needs_both_labels() -> None:
    rng = np.random.default_rng(0)
    good = [rng.normal(0, 1, (20, 8)) for _ in range(5)]
    poor = [rng.normal(0, 1, (20, 8)) + np.eye(8)[0] * 2 for _ in range(5)]
    head = fit_risk_head(good + poor, np.array([0] * 5 + [1] * 5), l2=0.01)
    assert head.predict(np.concatenate(poor)).mean() > head.predict(np.concatenate(good)).mean() + 0.3
    with pytest.raises(CohortError, match="both poor and good"):
        fit_risk_head(good, np.zeros(5, int))


@pytest.mark.slow
def test_train_signature_writes_a_loadable_evaluated_bundle(tmp_path: Path) -> None:
    make_cohort(tmp_path / "c", CohortSpec(patients=36, seed=11, tiles_per_side=5))
    base = tiny_bundle(tmp_path / "base")
    s = TrainSettings(
        outcomes=str(tmp_path / "c" / "outcomes.csv"),
        oracle_col="true_log_hazard",
        permutations=50,
        amp="fp32",
        threads=1,
        cache_dir=str(tmp_path / "emb"),
        test_fraction=0.3,
    )
    rep = train_signature(tmp_path / "c" / "cohort.csv", tmp_path / "new", bundle=base.path, settings=s, progress=False)
    b = Bundle.load(tmp_path / "new")
    assert b.manifest["risk_head"]["weights"] == "risk_head.safetensors" and b.signature_path.is_file()
    assert b.file_hashes["model.safetensors"] == base.file_hashes["model.safetensors"]
    test = rep["evaluation"]["test"]
    assert test["n"] >= 10 and test["oracle_c_index"] is not None and 0.0 <= test["c_index"] <= 1.0
    ev = json.loads((tmp_path / "new" / "evaluation.json").read_text())
    assert set(ev["split"]["train"]).isdisjoint(ev["split"]["test"])
    # embeddings were cached: a second run with another seed computes no new ones
    n_cache = len(list((tmp_path / "emb").glob("*.npz")))
    assert n_cache == 36
    s.seed = 1
    rep2 = train_signature(
        tmp_path / "c" / "cohort.csv", tmp_path / "new2", bundle=tmp_path / "new", settings=s, progress=False
    )
    assert len(list((tmp_path / "emb").glob("*.npz"))) == n_cache  # same backbone -> same cache
    assert rep2["evaluation"]["split"]["test"] != ev["split"]["test"]


def test_missing_outcome_is_a_clear_error(tmp_path: Path) -> None:
    make_cohort(tmp_path / "c", CohortSpec(patients=2, seed=1, tiles_per_side=3))
    (tmp_path / "o.csv").write_text("patient_id,time,event\nP0001,3,1\n")
    with pytest.raises(CohortError, match="no outcome for patient 'P0002'"):
        train_signature(
            tmp_path / "c" / "cohort.csv",
            tmp_path / "b",
            bundle=tiny_bundle(tmp_path / "base").path,
            settings=TrainSettings(outcomes=str(tmp_path / "o.csv")),
            progress=False,
        )


@pytest.mark.slow
def test_train_signature_records_its_nuclei_model_and_score_warns_on_another(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from napari_pathomics.cli import main as cli_main
    from napari_pathomics.scoring import load_signature

    make_cohort(tmp_path / "c", CohortSpec(patients=32, seed=11, tiles_per_side=3), progress=False)
    base = tiny_bundle(tmp_path / "base")
    argv = ["train-signature", str(tmp_path / "c" / "cohort.csv"), "--time", "time", "--event", "event"]
    argv += ["--outcomes", str(tmp_path / "c" / "outcomes.csv"), "--bundle", str(base.path)]
    argv += ["--out", str(tmp_path / "new"), "--features", "tme,nuc", "--nuclei-model", "classical", "--no-tissue"]
    argv += ["--permutations", "10", "--test-fraction", "0.2", "--amp", "fp32", "--threads", "1", "--quiet"]
    assert cli_main([*argv, "--cache-dir", str(tmp_path / "emb"), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["nuclei_model"]["name"] == "classical" and rep["nuclei_model"]["licence"].startswith("BSD")
    sig = load_signature(Bundle.load(tmp_path / "new"))
    assert sig.nuclei_model is not None and sig.nuclei_model["name"] == "classical"  # in the signature's spec
    record = json.loads((tmp_path / "new" / "train_record.json").read_text())
    assert record["nuclei_model"]["name"] == "classical" and record["settings"]["nuclei_model"] == "classical"
    assert any(f.startswith("nuc_") for f in sig.features), sig.features  # this seeded cohort selects one
    slide = next((tmp_path / "c").rglob("*.svs"))
    argv = ["score", str(slide), "--bundle", str(tmp_path / "new"), "--amp", "fp32", "--quiet", "--json"]
    assert cli_main([*argv, "--nuclei-model", "otsu"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["nuclei_model"]["name"] == "otsu"
    assert any("'classical'" in w and "shift between nuclei methods" in w for w in doc["warnings"])
