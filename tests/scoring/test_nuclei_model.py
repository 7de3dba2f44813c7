"""``--nuclei-model`` behind a score: one choice, named with its licence, a warning when it is not the
signature's, no effect without nuclear features, and a bad one refused in one line before any work."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from _bundles import nuclear_signature, tiny_bundle
from _slides import small_slide
from napari_pathomics.cells.methods import LICENCE, method_spec, resolve_method, same_method
from napari_pathomics.cli import main as cli_main
from napari_pathomics.errors import NucleiError
from napari_pathomics.resources import NUCLEI_MODELS, cache_dir
from napari_pathomics.signature import FeatureSpec, Signature

SHIFT = "shift between nuclei methods"


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny bundle whose signature uses nuclear density, its features recorded as from ``otsu``."""
    root = tmp_path_factory.mktemp("nucmodel")
    sig = nuclear_signature(resolve_method("otsu").describe())
    bundle = tiny_bundle(root / "bundle", signature=sig)
    return {"root": root, "bundle": bundle, "slide": small_slide(root / "a.svs", seed=1, mpp=0.5)}


def _score(case: dict, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    argv = ["score", str(case["slide"]), "--bundle", str(case["bundle"].path), "--device", "cpu", "--amp", "fp32"]
    code = cli_main([*argv, "--quiet", *extra])
    out, err = capsys.readouterr()
    return code, out, err


def test_score_names_each_nuclei_model_and_warns_when_it_is_not_the_signatures(
    case: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _score(case, capsys, "--nuclei-model", "otsu", "--json")
    assert code == 0, err
    otsu = json.loads(out)
    assert otsu["nuclei_model"]["name"] == "otsu" and otsu["nuclei_model"]["licence"] == LICENCE
    for key in ("patient_id", "risk", "percentile", "group", "features", "slides", "bundle", "warnings"):
        assert key in otsu  # every key the JSON had before stays
    assert not any(SHIFT in w for w in otsu["warnings"])  # the signature's own method: no warning

    report = tmp_path / "case.html"
    code, out, err = _score(case, capsys, "--nuclei-model", "classical", "--json", "--report", str(report))
    assert code == 0, err
    classical = json.loads(out)
    assert classical["nuclei_model"]["name"] == "classical"
    assert any(SHIFT in w and "'otsu'" in w for w in classical["warnings"])
    # another segmentation, other nuclear numbers: the two methods never share the nuclei cache
    assert classical["features"] != otsu["features"]
    assert len(list(cache_dir("nuclei").glob("*.npz"))) == 2
    assert "nuclei model <b>classical</b> (licence BSD-3-Clause" in report.read_text()
    doc = json.loads(report.with_suffix(".json").read_text())
    assert doc["nuclei_model"]["name"] == "classical" and any(SHIFT in w for w in doc["warnings"])

    code, out, err = _score(case, capsys, "--nuclei-model", "classical")
    assert code == 0, err
    assert "nuclei model classical, licence BSD-3-Clause" in out
    assert "warning: the signature's nuclear features were computed with nuclei model 'otsu'" in out


def test_the_default_model_is_named_too(case: dict, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _score(case, capsys, "--json")
    assert code == 0, err
    assert json.loads(out)["nuclei_model"]["name"] == resolve_method(None).name


def test_without_nuclear_features_the_option_has_no_effect(
    sig_bundle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    case = {"slide": small_slide(tmp_path / "a.svs"), "bundle": sig_bundle}
    code, out, err = _score(case, capsys, "--json")
    assert code == 0, err
    plain = json.loads(out)
    code, out, err = _score(case, capsys, "--json", "--nuclei-model", "classical")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["nuclei_model"] is None and plain["nuclei_model"] is None
    assert doc["risk"] == plain["risk"] and doc["features"] == plain["features"]
    assert "has no effect" in err and not list(cache_dir("nuclei").glob("*.npz"))


def _bad_models(tmp_path: Path) -> dict[str, tuple[str, str]]:
    """Each bad ``--nuclei-model`` and words its one line must hold."""
    empty = tmp_path / "empty"
    empty.mkdir()
    pickled = tmp_path / "pickled"
    shutil.copytree(NUCLEI_MODELS["monuseg"], pickled)
    man = json.loads((pickled / "manifest.json").read_text())
    (pickled / "weights.pkl").write_bytes(b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00K\x01.")
    man["files"]["weights.pkl"] = "0" * 64
    (pickled / "manifest.json").write_text(json.dumps(man))
    tampered = tmp_path / "tampered"
    shutil.copytree(NUCLEI_MODELS["monuseg"], tampered)
    with open(tampered / "weights.safetensors", "r+b") as fh:
        fh.seek(-4, 2)
        fh.write(b"\x00\x01\x02\x03")
    return {
        "unknown": ("no-such-model", "neither a model folder"),
        "empty": (str(empty), "no manifest.json"),
        "pickle": (str(pickled), "pickle"),
        "hash": (str(tampered), "sha256 mismatch"),
    }


def test_a_bad_nuclei_model_is_one_line_before_any_work(
    case: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if not (NUCLEI_MODELS["monuseg"] / "manifest.json").is_file():
        pytest.skip("the shipped monuseg model is not in this build")
    csv = tmp_path / "cohort.csv"
    csv.write_text(f"patient_id,slide_path,time,event\nP1,{case['slide']},10,1\n")
    for what, (model, words) in _bad_models(tmp_path).items():
        for argv in (
            ["score", str(case["slide"]), "--bundle", str(case["bundle"].path), "--quiet"],
            ["score-cohort", str(csv), "--out", str(tmp_path / f"out-{what}"), "--bundle", str(case["bundle"].path)],
            ["train-signature", str(csv), "--time", "time", "--event", "event", "--out", str(tmp_path / "sig")],
        ):
            code = cli_main([*argv, "--nuclei-model", model])
            out, err = capsys.readouterr()
            lines = [ln for ln in err.splitlines() if ln.strip()]
            assert code == NucleiError.exit_code, (argv[0], what, err)
            assert len(lines) == 1 and words in lines[0] and "Traceback" not in err, (argv[0], what, err)
    assert not list(tmp_path.glob("out-*")) and not (tmp_path / "sig").exists()  # nothing was started
    assert not list(cache_dir("results").glob("*")) and not list(cache_dir("embeddings").glob("*"))


def test_a_method_travels_to_a_worker_by_its_spec(tmp_path: Path) -> None:
    for name in ("otsu", "classical"):
        assert method_spec(resolve_method(name)) == name
    if (NUCLEI_MODELS["monuseg"] / "manifest.json").is_file():
        shipped = resolve_method("monuseg")
        assert method_spec(shipped) == "monuseg"
        own = resolve_method(shutil.copytree(NUCLEI_MODELS["monuseg"], tmp_path / "mine"))
        assert Path(method_spec(own)) == (tmp_path / "mine").resolve()
        assert resolve_method(method_spec(own)).key == own.key == shipped.key  # same weights, same output
        assert shipped.describe()["licence"] == "CC-BY-NC-SA-4.0" and shipped.describe()["key"] == shipped.key


def test_the_spec_records_its_nuclei_model_and_old_specs_read_as_unknown() -> None:
    otsu = resolve_method("otsu")
    spec = FeatureSpec([], tme_stats=[], nuclear=["density_mm2"], nuclei_model=otsu.describe())
    back = FeatureSpec.from_json(json.loads(json.dumps(spec.to_json())))
    assert back.nuclei_model == otsu.describe()
    old = spec.to_json()
    del old["nuclear"]["nuclei_model"]
    assert FeatureSpec.from_json(old).nuclei_model is None
    assert same_method(None, otsu) and same_method(otsu.describe(), otsu)
    assert not same_method(otsu.describe(), resolve_method("classical"))
    assert same_method({"name": "otsu"}, otsu)  # a record without a key is matched by name
    sig = Signature.from_json(nuclear_signature(otsu.describe()))
    assert sig.nuclei_model == otsu.describe()
    assert Signature.from_json(nuclear_signature()).nuclei_model is None
