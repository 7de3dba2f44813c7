"""Out-of-range numbers are refused at the boundary, in one line, before they reach an allocator.

``--threads -1`` once raised ``RuntimeError: set_num_threads``, an infinite follow-up time a
``TypeError`` from lifelines, a bundle ``input_size`` of 4096 a 4 GiB allocation and µm/px 1e-4 an
attempted 13.7 TiB array. Options are range-checked argparse types (exit 2), tables are checked
for finite values (exit 8), bundle numbers by the schema (exit 7; the whole hostile corpus is in
``tests/bundle/test_hostile_bundles.py``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from _bundles import tiny_bundle
from _cli import assert_one_line, run_cli
from _signature_sim import simulate_cox
from napari_pathomics.bundle import Bundle
from napari_pathomics.cli import main as cli_main
from napari_pathomics.errors import BundleError, SignatureError

OPTIONS = [
    ("infer", ["--threads", "-1"], "--threads"),
    ("infer", ["--threads", "0"], "--threads"),
    ("infer", ["--batch-size", "0"], "--batch-size"),
    ("infer", ["--batch-size", "1e9"], "--batch-size"),
    ("infer", ["--min-tissue", "2"], "--min-tissue"),
    ("infer", ["--slide-mpp", "1e-4"], "--slide-mpp"),
    ("infer", ["--slide-mpp", "nan"], "--slide-mpp"),
    ("tiles", ["--tile-um", "inf"], "--tile-um"),
    ("tiles", ["--mpp", "1e-4"], "--mpp"),
    ("tiles", ["--tile-um", "0"], "--tile-um"),
    ("score", ["--batch-size", "-3"], "--batch-size"),
    ("score-cohort", ["--out", "o", "--threads-per-worker", "-1"], "--threads-per-worker"),
    ("score-cohort", ["--out", "o", "--workers", "-2"], "--workers"),
    ("classify-tiles", ["--threads", "-1"], "--threads"),
    ("train-patch", ["--out", "o", "--input-size", "4096"], "--input-size"),
    ("import-model", ["--out", "o", "--mpp", "1e-4"], "--mpp"),
    ("build-signature", ["--time", "t", "--event", "e", "--min-group", "0.9"], "--min-group"),
    ("build-signature", ["--time", "t", "--event", "e", "--folds", "1"], "--folds"),
]


@pytest.mark.parametrize("command, argv, option", OPTIONS)
def test_out_of_range_options_are_one_line(tmp_path: Path, capsys, command: str, argv: list[str], option: str) -> None:
    with pytest.raises(SystemExit) as info:
        cli_main([command, str(tmp_path / "input.svs"), *argv])
    assert info.value.code == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and f"argument {option}" in err[0] and "Traceback" not in err[0], err
    assert err[0].startswith(f"pathomics {command}: error: ")


def test_argparse_errors_in_a_child_process() -> None:
    assert_one_line(run_cli("infer", "x.svs", "--threads", "-1"), 2, "must be ≥ 1")
    assert_one_line(run_cli("infer", "x.svs", "--batch-size", "zero"), 2, "is not an integer")


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_a_non_finite_follow_up_time_is_refused(tmp_path: Path, capsys, bad: float) -> None:
    df, _ = simulate_cox(80, np.array([0.8]), seed=2, n_noise=1)
    df.loc[5, "time"] = bad
    df.to_csv(tmp_path / "t.csv", index=False)
    code = cli_main(
        [
            "build-signature",
            str(tmp_path / "t.csv"),
            "--time",
            "time",
            "--event",
            "event",
            "--features",
            "f0,f1",
            "--no-cv",
            "--permutations",
            "0",
            "--out",
            str(tmp_path / "s.json"),
        ]
    )
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == SignatureError.exit_code and len(err) == 1 and "time" in err[0], err
    assert not (tmp_path / "s.json").exists()


@pytest.mark.parametrize(
    "field, value",
    [("input_size", 4096), ("input_size", 4), ("mpp", 1e-4), ("mpp", 1e9), ("tile_um", 1e9), ("num_classes", 10**7)],
)
def test_bundle_numbers_out_of_range_are_refused_at_load(tmp_path: Path, field: str, value, capsys) -> None:
    src = tiny_bundle(tmp_path / "good").path
    b = tmp_path / "b"
    shutil.copytree(src, b)
    man = json.loads((b / "manifest.json").read_text())
    man["model"][field] = value
    (b / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(BundleError, match=f"model.{field}"):
        Bundle.load(b)
    assert cli_main(["validate-bundle", str(b)]) == BundleError.exit_code
    assert f"model.{field}" in capsys.readouterr().out
