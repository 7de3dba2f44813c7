"""The hostile-bundle corpus (``_hostile_bundles``, generated per run): each bundle is a one-line
BundleError wherever a bundle is loaded for a run, and never a traceback.

* loading for a run (``Bundle.load``, then the engine building its model and risk head),
* ``pathomics validate-bundle`` (it runs the same checks as loading, so it calls none of them valid),
* ``pathomics infer`` (one stderr line, exit 7, nothing written),
* ``pathomics score`` (the same, and no report),
* the real CLI in a child process for a few of them (no traceback reaches stderr from anywhere).

The signature cases (values that cannot score: NaN or short Cox blocks, unknown features, a
hazard table of strings or going back in time, an odd time unit, a million horizons, an empty
reference cohort, patch-risk weights of 1e308) are refused by validate-bundle naming the block,
and by ``score`` in one line (exit 8) before any work; ``infer`` refuses the ones it reads.

The Analyze dock's side is in ``tests/widgets/test_viewer_hostile_bundles.py``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from _cli import assert_one_line, run_cli
from _hostile_bundles import FOLDER_CASES, SIGNATURE_CASES, ZIP_CASES, _set_stain, make_hostile_corpus
from _slides import small_slide
from napari_pathomics.bundle import Bundle, validate_bundle
from napari_pathomics.cli import main as cli_main
from napari_pathomics.errors import BundleError, SignatureError
from napari_pathomics.inference.checks import runtime_problems
from napari_pathomics.inference.engine import Engine

NAMES = [*FOLDER_CASES, *ZIP_CASES]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    return make_hostile_corpus(tmp_path_factory.mktemp("hostile"))


@pytest.fixture(scope="module")
def slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_slide(tmp_path_factory.mktemp("slide") / "case.svs", h=512, w=512, mpp=0.5)


def _one_line_error(exc: BaseException, words: str) -> None:
    msg = str(exc)
    assert isinstance(exc, BundleError), repr(exc)
    assert words in msg and "\n" not in msg and len(msg) < 1000, msg


def test_the_base_bundle_is_valid(corpus) -> None:
    """The corpus derives from a bundle that loads, runs and validates: each hostility is the only fault."""
    base = next(iter(corpus.values()))[0].parent / "base"
    b = Bundle.load(base)
    assert validate_bundle(base) == [] and runtime_problems(b) == []
    assert cli_main(["validate-bundle", str(base)]) == 0


@pytest.mark.parametrize("name", NAMES)
def test_loading_for_a_run_is_a_bundle_error(corpus, name: str) -> None:
    path, words = corpus[name]
    with pytest.raises(Exception) as info:
        b = Bundle.load(path)
        Engine(b, device="cpu").net  # noqa: B018 - builds the model, its risk head and one checked forward
    _one_line_error(info.value, words)


@pytest.mark.parametrize("name", NAMES)
def test_validate_bundle_calls_none_of_them_valid(corpus, name: str, capsys: pytest.CaptureFixture) -> None:
    path, words = corpus[name]
    assert cli_main(["validate-bundle", str(path)]) == BundleError.exit_code
    out, err = capsys.readouterr()
    assert "INVALID" in out and words in out and "Traceback" not in out + err, (out, err)
    assert cli_main(["validate-bundle", str(path), "--json"]) == BundleError.exit_code
    assert '"valid": false' in capsys.readouterr().out


@pytest.mark.parametrize("name", NAMES)
def test_infer_refuses_in_one_line_and_writes_nothing(
    corpus, slide, tmp_path, name: str, capsys: pytest.CaptureFixture
) -> None:
    path, words = corpus[name]
    out = tmp_path / "out"
    code = cli_main(
        ["infer", str(slide), "--bundle", str(path), "--out", str(out), "--device", "cpu", "--no-tissue", "--quiet"]
    )
    _, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == BundleError.exit_code, err
    assert len(lines) == 1 and lines[0].startswith("pathomics infer: error: ") and words in lines[0], err
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("name", NAMES)
def test_score_refuses_in_one_line_and_writes_no_report(
    corpus, slide, tmp_path, name: str, capsys: pytest.CaptureFixture
) -> None:
    """``pathomics score`` (the base carries a signature, so scoring reaches the model) and its report."""
    path, words = corpus[name]
    report = tmp_path / "case.html"
    code = cli_main(["score", str(slide), "--bundle", str(path), "--report", str(report), "--device", "cpu", "--quiet"])
    _, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == BundleError.exit_code, err
    assert len(lines) == 1 and lines[0].startswith("pathomics score: error: ") and words in lines[0], err
    assert not report.exists() and not report.with_suffix(".json").exists()


def test_a_refused_zip_leaves_nothing_extracted(corpus) -> None:
    for name in ZIP_CASES:
        with pytest.raises(BundleError):
            Bundle.load(corpus[name][0])
    cache = Path(os.environ["PATHOMICS_CACHE_DIR"]) / "bundles"
    left = [p for p in cache.rglob("*")] if cache.exists() else []
    assert not [p for p in left if p.name.endswith(".bin") or p.name.startswith(".extract-")], left


@pytest.mark.slow
@pytest.mark.parametrize("name", ["risk-head-corrupt", "offsets-int", "encrypted-zip"])
def test_child_process_cli_one_line(corpus, slide, tmp_path, name: str) -> None:
    path, words = corpus[name]
    r = run_cli(
        "infer", slide, "--bundle", path, "--out", tmp_path / "out", "--device", "cpu", "--no-tissue", "--quiet"
    )
    assert_one_line(r, BundleError.exit_code, words)
    r = run_cli("validate-bundle", path)
    assert r.returncode == BundleError.exit_code and "INVALID" in r.stdout and words in r.stdout
    assert "Traceback" not in r.stderr and not r.stderr.strip(), r.stderr


@pytest.mark.parametrize("name", list(SIGNATURE_CASES))
def test_signature_values_are_refused_by_validate_bundle_and_score(
    corpus, slide, tmp_path, name: str, capsys: pytest.CaptureFixture
) -> None:
    """What validate-bundle accepts, score does not fail on: both refuse, naming the same block."""
    path, words = corpus[name]
    refused_by_infer = SIGNATURE_CASES[name][2]
    assert cli_main(["validate-bundle", str(path), "--no-model"]) == BundleError.exit_code
    out, err = capsys.readouterr()
    assert "INVALID" in out and words in out and "Traceback" not in out + err, (out, err)
    report = tmp_path / "case.html"
    code = cli_main(["score", str(slide), "--bundle", str(path), "--report", str(report), "--device", "cpu", "--quiet"])
    _, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == SignatureError.exit_code, err
    assert len(lines) == 1 and lines[0].startswith("pathomics score: error: ") and words in lines[0], err
    assert not report.exists() and not report.with_suffix(".json").exists()
    out_dir = tmp_path / "out"
    code = cli_main(
        ["infer", str(slide), "--bundle", str(path), "--out", str(out_dir), "--device", "cpu", "--no-tissue", "--quiet"]
    )
    err = capsys.readouterr().err
    assert "Traceback" not in err and "internal error" not in err, err
    if refused_by_infer:
        assert code == BundleError.exit_code and words in err, err
    else:  # a run of the model reads no Cox model: it goes on, and the results hold no NaN
        assert code == 0, err


def test_validate_bundle_lists_every_problem_one_line_each(corpus, tmp_path, capsys: pytest.CaptureFixture) -> None:
    """Two hostile values in one bundle (a stain reference of zeros, a NaN Cox coefficient): two lines."""
    folder = tmp_path / "two"
    shutil.copytree(corpus["cox-nan"][0], folder)
    _set_stain([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])(folder)
    assert cli_main(["validate-bundle", str(folder), "--json"]) == BundleError.exit_code
    doc = json.loads(capsys.readouterr().out)
    probs = doc["problems"]
    assert any("macenko" in p for p in probs) and any("cox.coefficients" in p for p in probs), probs
    assert all("\n" not in p for p in probs)
