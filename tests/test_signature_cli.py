"""``pathomics build-signature``: a working run and one-line errors for bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_pathomics.cli import main
from napari_pathomics.errors import SignatureError
from napari_pathomics.signature import Signature

from _signature_sim import simulate_cox

ARGS = ["--time", "time", "--event", "event", "--features", "f0,f1,f2", "--no-cv", "--permutations", "50", "--folds", "3"]


@pytest.fixture()
def table(tmp_path):
    df, _ = simulate_cox(200, np.array([0.8, -0.4]), seed=11, n_noise=1)
    df.insert(0, "pid", [f"P{i}" for i in range(len(df))])
    return df, tmp_path


def _run(df, tmp_path, extra, capsys):
    path = tmp_path / "t.csv"
    df.to_csv(path, index=False)
    rc = main(["build-signature", str(path), *extra])
    return rc, capsys.readouterr()


def test_cli_fits_and_writes(table, capsys) -> None:
    df, tmp = table
    out = tmp / "sig.json"
    rc, cap = _run(df, tmp, [*ARGS, "--id", "pid", "--out", str(out), "--json", "--horizons", "30,90"], capsys)
    assert rc == 0, cap.err
    summary = json.loads(cap.out)
    sig = Signature.from_json(out)
    assert summary["covariates"] == sig.coefficients
    assert sig.horizons == [30.0, 90.0]
    assert "f0" in sig.features


@pytest.mark.parametrize(
    "mutate, extra, message",
    [
        (lambda d: d.drop(columns=["f1"]), [], "missing columns"),
        (lambda d: d.assign(time=d["time"].where(d.index != 3)), [], "missing values"),
        (lambda d: d.assign(time=d["time"].where(d.index != 3, -1.0)), [], "negative"),
        (lambda d: d.assign(event=d["event"].where(d.index != 3, 2)), [], "0/1"),
        (lambda d: d.assign(event=(d.index < 4).astype(int)), [], "events"),
        (lambda d: d.assign(f2=d["f2"].where(d.index != 3)), [], "NaN"),
        (lambda d: d.assign(pid="same"), ["--id", "pid"], "duplicate"),
        (lambda d: d, ["--bundle", "/nonexistent"], "not a bundle"),
    ],
)
def test_cli_bad_input_is_one_line(table, capsys, mutate, extra, message) -> None:
    df, tmp = table
    rc, cap = _run(mutate(df), tmp, [*ARGS, "--out", str(tmp / "x.json"), *extra], capsys)
    assert rc == SignatureError.exit_code
    assert message in cap.err and cap.err.count("\n") == 1 and "Traceback" not in cap.err


def test_cli_tme_classes_mapping(table, capsys) -> None:
    df, tmp = table
    df = df.rename(columns={"f0": "STR", "f1": "TUM", "f2": "LYM"})
    out = tmp / "sig.json"
    extra = ["--time", "time", "--event", "event", "--tme-classes", "STR,TUM,LYM", "--no-cv", "--permutations", "20", "--folds", "3"]
    rc, cap = _run(df, tmp, [*extra, "--out", str(out)], capsys)
    assert rc == 0, cap.err
    sig = Signature.from_json(out)
    assert all(f.startswith("tme_mean_") for f in sig.features)
    assert sig.feature_spec.combine == "max" and sig.feature_spec.tme_stats == ["mean"]
