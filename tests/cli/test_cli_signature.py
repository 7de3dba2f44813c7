"""``pathomics build-signature``: a working run, and one-line errors for a bad per-patient table
(in-process, and through a child CLI: exit code, exactly one stderr line, no traceback, no output)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from _cli import assert_one_line, run_cli
from _signature_sim import simulate_cox
from napari_pathomics.cli import main
from napari_pathomics.errors import SignatureError
from napari_pathomics.signature import Signature

ARGS = [
    "--time",
    "time",
    "--event",
    "event",
    "--features",
    "f0,f1,f2",
    "--no-cv",
    "--permutations",
    "50",
    "--folds",
    "3",
]


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
    extra = [
        "--time",
        "time",
        "--event",
        "event",
        "--tme-classes",
        "STR,TUM,LYM",
        "--no-cv",
        "--permutations",
        "20",
        "--folds",
        "3",
    ]
    rc, cap = _run(df, tmp, [*extra, "--out", str(out)], capsys)
    assert rc == 0, cap.err
    sig = Signature.from_json(out)
    assert all(f.startswith("tme_mean_") for f in sig.features)
    assert sig.feature_spec.combine == "max" and sig.feature_spec.tme_stats == ["mean"]


BUILD = {  # csv -> (extra args, words)
    "dup-patients": ("pid,t,e,f1\nA,1,1,0.1\nA,2,0,0.2\nB,3,1,0.3\n", ["--id", "pid"], "duplicate patient ids"),
    "non-numeric-time": ("pid,t,e,f1\nA,x,1,0.1\nB,2,0,0.2\n", [], "time/event columns must be numeric"),
    "negative-time": ("pid,t,e,f1\nA,-1,1,0.1\nB,2,0,0.2\n", [], "time column 't' has 1 negative times"),
    "event-not-0-1": ("pid,t,e,f1\nA,1,3,0.1\nB,2,0,0.2\n", [], "event column 'e' must be 0/1 (found [0.0, 3.0])"),
    "missing-columns": ("pid,time,e,f1\nA,1,1,0.1\n", [], "missing columns: ['t']"),
    "no-rows": ("pid,t,e,f1\n", [], "has no rows"),
}


@pytest.mark.parametrize("name", sorted(BUILD))
def test_build_signature_cli_refuses_bad_table(tmp_path, name: str) -> None:
    text, extra, words = BUILD[name]
    p = tmp_path / f"{name}.csv"
    p.write_text(text)
    r = run_cli(
        "build-signature",
        p,
        "--time",
        "t",
        "--event",
        "e",
        "--features",
        "f1",
        "--no-cv",
        "--out",
        tmp_path / "sig.json",
        *extra,
    )
    assert_one_line(r, SignatureError.exit_code, words)
    assert not (tmp_path / "sig.json").exists()
