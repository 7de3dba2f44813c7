"""Every file a bundle makes the program read goes through one resolver (``Bundle.file``), and a
zip is checked from its central directory before anything is extracted.

* a manifest block naming an absolute path, a ``../`` path or an unlisted file is refused by
  ``validate-bundle``, by loading and by ``score --clinical``, naming the block;
* a listed file changed after loading is refused when it is read (its sha256 is checked again);
* only the manifest and the files it lists leave a zip: unlisted entries never reach the cache;
* a zip entry with a bad CRC is one line naming the entry, and nothing stays extracted.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

import pytest

from _hostile_bundles import FOLDER_CASES, base_bundle, make_hostile_corpus
from _slides import small_slide
from napari_pathomics.bundle import Bundle, validate_bundle
from napari_pathomics.bundle.manifest import named_files
from napari_pathomics.cli import main as cli_main
from napari_pathomics.errors import BundleError
from napari_pathomics.resources import DEFAULT_BUNDLE
from napari_pathomics.scoring.combined import load_clinical_signature
from napari_pathomics.scoring.tiles import load_signature

CLINICAL_CASES = [n for n in FOLDER_CASES if n.startswith("clinical-")]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return base_bundle(tmp_path_factory.mktemp("base") / "base")


def _cache() -> Path:
    return Path(os.environ["PATHOMICS_CACHE_DIR"]) / "bundles"


def test_named_files_is_the_one_list_of_blocks() -> None:
    man = json.loads((DEFAULT_BUNDLE / "manifest.json").read_text())
    assert named_files(man) == {
        "model.weights": "model.safetensors",
        "signature": "signature.json",
        "signature_clinical": "signature_clinical.json",
    }
    man["risk_head"] = {"weights": "rh.safetensors"}
    man["head"] = {"weights": "h.safetensors"}
    assert named_files(man)["risk_head.weights"] == "rh.safetensors"
    assert named_files(man)["head.weights"] == "h.safetensors"


def test_the_shipped_bundle_resolves_each_file_it_names() -> None:
    b = Bundle.load(DEFAULT_BUNDLE)
    for block, name in named_files(b.manifest).items():
        assert b.file(block) == b.path / name
    assert b.file("risk_head.weights") is None
    assert load_clinical_signature(b) is not None


@pytest.mark.parametrize("name", CLINICAL_CASES)
def test_a_clinical_signature_outside_the_rule_is_refused_everywhere(
    tmp_path: Path, name: str, capsys: pytest.CaptureFixture
) -> None:
    """``signature_clinical`` absolute, ``../x`` or unlisted: the file is there and a real combined
    signature, yet nothing reads it; validate-bundle says so, and ``score --clinical`` refuses."""
    path, words = make_hostile_corpus(tmp_path / "c", only=[name])[name]
    probs = validate_bundle(path)
    assert probs and any(p.startswith("signature_clinical") for p in probs), probs
    assert cli_main(["validate-bundle", str(path), "--no-model"]) == BundleError.exit_code
    assert words in capsys.readouterr().out
    slide = small_slide(tmp_path / "case.svs", h=256, w=256, mpp=0.5)
    rc = cli_main(["score", str(slide), "--bundle", str(path), "--clinical", "stage=3", "--device", "cpu", "--quiet"])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == BundleError.exit_code and len(lines) == 1 and "signature_clinical" in lines[0], err


def test_a_file_changed_after_loading_is_refused_when_read(base: Path, tmp_path: Path) -> None:
    folder = tmp_path / "b"
    shutil.copytree(base, folder)
    b = Bundle.load(folder)
    sig = folder / "signature.json"
    data = json.loads(sig.read_text())
    data["cutoff"]["cutoff"] = -1e9  # everyone high risk
    sig.write_text(json.dumps(data))
    with pytest.raises(BundleError, match="sha256 changed"):
        load_signature(b)
    with pytest.raises(BundleError, match="sha256 changed"):
        b.file("signature")


def test_a_symlinked_file_is_refused_by_the_resolver(base: Path, tmp_path: Path) -> None:
    folder = tmp_path / "b"
    shutil.copytree(base, folder)
    b = Bundle.load(folder)
    outside = tmp_path / "elsewhere.json"
    shutil.copyfile(folder / "signature.json", outside)
    (folder / "signature.json").unlink()
    (folder / "signature.json").symlink_to(outside)
    with pytest.raises(BundleError, match="symlink"):
        b.file("signature", verify=False)


def test_only_listed_files_leave_a_zip(base: Path, tmp_path: Path) -> None:
    """Unlisted entries (here 8 MB of padding and a stray script) are never extracted."""
    z = tmp_path / "b.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(base.iterdir()):
            zf.write(p, p.name)
        for i in range(8):
            zf.writestr(f"padding/{i}.dat", os.urandom(1024 * 1024))
        zf.writestr("run_me.sh", "echo hi\n")
    b = Bundle.load(z)
    listed = set(json.loads((base / "manifest.json").read_text())["files"])
    on_disk = {str(p.relative_to(b.path)) for p in b.path.rglob("*") if p.is_file()}
    assert on_disk == listed | {"manifest.json"}
    size = sum(p.stat().st_size for p in _cache().rglob("*") if p.is_file())
    assert size < sum((base / n).stat().st_size for n in listed) + 1024 * 1024


def test_a_bad_crc_is_one_line_and_leaves_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path, words = make_hostile_corpus(tmp_path / "c", only=["zip-bad-crc"])["zip-bad-crc"]
    with pytest.raises(BundleError) as info:
        Bundle.load(path)
    msg = str(info.value)
    assert "signature.json" in msg and "damaged" in msg and "\n" not in msg, msg
    left = [p for p in _cache().rglob("*") if p.is_file()] if _cache().exists() else []
    assert not left, left
    assert cli_main(["validate-bundle", str(path)]) == BundleError.exit_code
    assert words in capsys.readouterr().out
