"""Bundle format: write/load round trip, tamper detection, pickles refused, safe zips, CLI."""

from __future__ import annotations

import json
import pickle
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from napari_pathomics.cli import main as cli_main
from napari_pathomics.errors import BundleError
from napari_pathomics.bundle import Bundle, attach_file, validate_bundle, write_bundle
from napari_pathomics.inference.backbones import build_model
from napari_pathomics.inference.checks import runtime_problems
from napari_pathomics.inference.preprocess import bundle_normalizer
from napari_pathomics.provenance import sha256_file
from napari_pathomics.results.risk import class_risk_weights

ARCH = "test_efficientnet"  # a tiny timm model keeps these tests fast


def _manifest(n: int = 3) -> dict:
    names = ["TUM", "STR", "LYM"][:n]
    colors = ["#D62728", "#F08A24", "#5B2C9F"][:n]
    return {
        "schema_version": "1.0",
        "name": "unit-test",
        "version": "0.0.1",
        "created": "2026-01-01T00:00:00+00:00",
        "description": "tiny test bundle",
        "files": {},
        "model": {
            "architecture": ARCH,
            "weights": "model.safetensors",
            "num_classes": n,
            "classes": [{"name": a, "description": a.lower(), "color": c} for a, c in zip(names, colors)],
            "high_risk_classes": ["TUM", "STR"],
            "input_size": 64,
            "tile_um": 112.0,
            "mpp": 0.5,
            "normalization": {
                "macenko": {
                    "stain_matrix": [[0.56, 0.22], [0.72, 0.80], [0.41, 0.56]],
                    "max_concentrations": [1.97, 1.03],
                    "io": 240,
                    "alpha": 1,
                    "beta": 0.15,
                },
                "mean": [0.485, 0.456, 0.406],
                "std": [0.229, 0.224, 0.225],
            },
            "gradcam_target_layer": "bn2",
        },
        "signature": None,
        "metrics": {"cv": {"accuracy": 0.5}},
        "provenance": {"test": True},
    }


@pytest.fixture
def tiny(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    model = timm.create_model(ARCH, pretrained=False, num_classes=3).eval()
    out = write_bundle(tmp_path / "b", _manifest(), model.state_dict(), {"run_record.json": {"seed": 0}})
    return out, model


def _rewrite_manifest(folder: Path, fn) -> None:
    m = json.loads((folder / "manifest.json").read_text())
    fn(m)
    (folder / "manifest.json").write_text(json.dumps(m))


def test_round_trip(tiny) -> None:
    folder, model = tiny
    b = Bundle.load(folder)
    assert b.class_names == ["TUM", "STR", "LYM"]
    assert b.class_colors[0] == "#D62728"
    assert b.input_size == 64 and b.tile_um == 112.0 and b.mpp == 0.5
    assert b.gradcam_target_layer == "bn2" and b.signature_path is None
    assert set(b.file_hashes) == {"model.safetensors", "run_record.json"}
    assert b.file_hashes["model.safetensors"] == sha256_file(folder / "model.safetensors")
    np.testing.assert_array_equal(class_risk_weights(b), [1, 1, 0])
    assert len(b.bundle_id) == 16
    assert bundle_normalizer(b) is not None and bundle_normalizer(b) is bundle_normalizer(b)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(build_model(b)(x), model(x))
    assert validate_bundle(folder) == [] and runtime_problems(b) == []


def test_tampered_weights_refused(tiny) -> None:
    folder, _ = tiny
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (folder / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"model\.safetensors: sha256 mismatch"):
        Bundle.load(folder)


def test_unknown_schema_version(tiny) -> None:
    folder, _ = tiny
    _rewrite_manifest(folder, lambda m: m.update(schema_version="9.1"))
    with pytest.raises(BundleError, match=r"unsupported schema_version '9.1'; supported: 1.0"):
        Bundle.load(folder)


def test_missing_file_and_bad_json(tiny) -> None:
    folder, _ = tiny
    (folder / "run_record.json").unlink()
    assert any("run_record.json: listed in files but missing" in p for p in validate_bundle(folder))
    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="invalid JSON at line 1"):
        Bundle.load(folder)


def test_schema_and_consistency_problems_are_precise(tiny) -> None:
    folder, _ = tiny

    def bad(m: dict) -> None:
        m["model"]["classes"][1]["color"] = "orange"
        m["model"]["num_classes"] = 4

    _rewrite_manifest(folder, bad)
    probs = validate_bundle(folder)
    assert any("model.classes.1.color" in p for p in probs), probs
    _rewrite_manifest(folder, lambda m: m["model"]["classes"][1].update(color="#FFA500"))
    assert any("num_classes is 4 but model.classes lists 3" in p for p in validate_bundle(folder))
    _rewrite_manifest(folder, lambda m: m["model"].update(num_classes=3, high_risk_classes=["NECROSIS"]))
    assert any("unknown classes ['NECROSIS']" in p for p in validate_bundle(folder))


class _Boom:
    """Unpickling this creates a marker file: proves the loader never unpickles."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_disguised_as_safetensors_is_refused_without_unpickling(tiny, tmp_path: Path) -> None:
    folder, _ = tiny
    marker = tmp_path / "PWNED"
    (folder / "model.safetensors").write_bytes(pickle.dumps(_Boom(marker), protocol=2))
    digest = sha256_file(folder / "model.safetensors")
    _rewrite_manifest(folder, lambda m: m["files"].update({"model.safetensors": digest}))
    with pytest.raises(BundleError, match=r"model\.safetensors: refused, file is pickle data"):
        Bundle.load(folder)
    assert not marker.exists()


def test_torch_checkpoint_refused(tiny) -> None:
    folder, model = tiny
    torch.save(model.state_dict(), folder / "model.pt")
    digest = sha256_file(folder / "model.pt")

    def use_pt(m: dict) -> None:
        m["files"]["model.pt"] = digest
        m["model"]["weights"] = "model.pt"

    _rewrite_manifest(folder, use_pt)
    with pytest.raises(BundleError, match="model.weights"):
        Bundle.load(folder)
    # Even under a .safetensors name, a torch zip checkpoint is recognised by content.
    shutil.copy(folder / "model.pt", folder / "model.safetensors")
    digest = sha256_file(folder / "model.safetensors")

    def back(m: dict) -> None:
        m["files"] = {k: v for k, v in m["files"].items() if k != "model.pt"}
        m["files"]["model.safetensors"] = digest
        m["model"]["weights"] = "model.safetensors"

    _rewrite_manifest(folder, back)
    with pytest.raises(BundleError, match="data.pkl"):
        Bundle.load(folder)


def test_path_traversal_in_files_refused(tiny, tmp_path: Path) -> None:
    folder, _ = tiny
    (tmp_path / "outside.json").write_text("{}")
    digest = sha256_file(tmp_path / "outside.json")
    _rewrite_manifest(folder, lambda m: m["files"].update({"../outside.json": digest}))
    with pytest.raises(BundleError, match="outside.json"):
        Bundle.load(folder)


def test_wrong_architecture_weights_refused(tiny) -> None:
    folder, _ = tiny
    _rewrite_manifest(folder, lambda m: m["model"].update(architecture="test_resnet"))
    b = Bundle.load(folder)  # hashes fine; the mismatch appears when building the model
    with pytest.raises(BundleError, match="weights do not fit test_resnet"):
        build_model(b)


def _zip_folder(folder: Path, dest: Path, prefix: str = "bundle/") -> Path:
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(folder.iterdir()):
            zf.write(p, prefix + p.name)
    return dest


def test_zip_bundle_loads(tiny, tmp_path: Path) -> None:
    folder, _ = tiny
    z = _zip_folder(folder, tmp_path / "b.zip")
    b = Bundle.load(z)
    assert b.class_names == ["TUM", "STR", "LYM"]
    assert b.bundle_id == Bundle.load(folder).bundle_id
    assert validate_bundle(z) == []


@pytest.mark.parametrize(
    "entry, match",
    [("bundle/../../evil.txt", "refusing entry"), ("/etc/evil.txt", "refusing entry")],
)
def test_zip_traversal_refused(tiny, tmp_path: Path, entry: str, match: str) -> None:
    folder, _ = tiny
    z = _zip_folder(folder, tmp_path / "b.zip")
    with zipfile.ZipFile(z, "a") as zf:
        zf.writestr(entry, "x")
    with pytest.raises(BundleError, match=match):
        Bundle.load(z)
    assert not (tmp_path.parent / "evil.txt").exists()


def test_zip_symlink_refused(tiny, tmp_path: Path) -> None:
    folder, _ = tiny
    z = _zip_folder(folder, tmp_path / "b.zip")
    info = zipfile.ZipInfo("bundle/link")
    info.external_attr = (0o120777 << 16)
    with zipfile.ZipFile(z, "a") as zf:
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(BundleError, match="symlink"):
        Bundle.load(z)


def test_zip_bomb_refused(tiny, tmp_path: Path) -> None:
    folder, _ = tiny
    z = _zip_folder(folder, tmp_path / "b.zip")
    with zipfile.ZipFile(z, "a", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("bundle/zeros.bin", b"\0" * (8 * 1024 * 1024))
    with pytest.raises(BundleError, match="zip bomb"):
        Bundle.load(z)


def test_attach_file_signature(tiny) -> None:
    folder, _ = tiny
    before = Bundle.load(folder).bundle_id
    attach_file(folder, "signature.json", {"coef": [0.1, -0.2]}, manifest_key="signature",
                manifest_updates={"signature_summary": {"n_features": 2}})
    b = Bundle.load(folder)
    assert b.signature_path == folder.resolve() / "signature.json"
    assert json.loads(b.signature_path.read_text()) == {"coef": [0.1, -0.2]}
    assert b.manifest["signature_summary"] == {"n_features": 2}
    assert b.file_hashes["signature.json"] == sha256_file(folder / "signature.json")
    assert b.bundle_id != before
    with pytest.raises(BundleError):
        attach_file(folder, "../escape.json", {})
    with pytest.raises(BundleError):
        attach_file(folder, "weights.pkl", b"\x80\x02.")


def test_cli_validate_bundle(tiny, capsys: pytest.CaptureFixture) -> None:
    folder, _ = tiny
    assert cli_main(["validate-bundle", str(folder), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["valid"] is True and out["classes"] == ["TUM", "STR", "LYM"]
    (folder / "run_record.json").write_text('{"seed": 1}')
    assert cli_main(["validate-bundle", str(folder)]) == BundleError.exit_code
    text = capsys.readouterr().out
    assert "INVALID" in text and "run_record.json: sha256 mismatch" in text
