"""The shipped default bundle: loads, validates, and reproduces its recorded training accuracy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_pathomics import resources
from napari_pathomics.bundle import Bundle, validate_bundle
from napari_pathomics.cli import main as cli_main
from napari_pathomics.inference.backbones import build_model
from napari_pathomics.inference.classify import classify_arrays
from napari_pathomics.inference.preprocess import bundle_normalizer, preprocess_batch
from napari_pathomics.results.risk import class_risk_weights
from napari_pathomics.wsi.images import list_images
from napari_pathomics.wsi.images import read_rgb as read_image

NCT = ["ADI", "BACK", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM"]


@pytest.fixture(scope="module")
def bundle() -> Bundle:
    torch.set_num_threads(2)
    return Bundle.load(resources.DEFAULT_BUNDLE)


@pytest.fixture(scope="module")
def model(bundle: Bundle):
    return build_model(bundle)


def test_default_bundle_is_valid(bundle: Bundle) -> None:
    assert validate_bundle(resources.DEFAULT_BUNDLE) == []
    assert bundle.class_names == NCT
    assert bundle.manifest["model"]["architecture"] == "efficientnet_lite0"
    assert len(set(bundle.class_colors)) == 9
    np.testing.assert_array_equal(class_risk_weights(bundle), [0, 0, 1, 0, 0, 0, 0, 1, 1])
    assert bundle_normalizer(bundle) is not None
    for key in ("cv_loo_linear_probe", "cv_source", "train"):
        assert key in bundle.metrics
    assert "run_record.json" in bundle.file_hashes


def test_default_bundle_reproduces_training_predictions(bundle: Bundle, model) -> None:
    files = list_images(resources.NCT_TILES_DIR)
    assert len(files) == 41
    probs = classify_arrays([read_image(f) for f in files], bundle, model=model)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    pred = [bundle.class_names[i] for i in probs.argmax(1)]
    truth = [f.parent.name for f in files]
    acc = float(np.mean([p == t for p, t in zip(pred, truth)]))
    assert acc == pytest.approx(bundle.metrics["train"]["accuracy"], abs=1e-6)
    rec = json.loads((bundle.path / "run_record.json").read_text())
    assert {f"{f.parent.name}/{f.name}": p for f, p in zip(files, pred)} == rec["train_predictions"]


def test_preprocess_batch_contract(bundle: Bundle) -> None:
    tiles = np.stack([read_image(next((resources.NCT_TILES_DIR / c).iterdir())) for c in ("TUM", "BACK")])
    x, fb = preprocess_batch(tiles, bundle, return_fallback=True)
    assert x.shape == (2, 3, 224, 224) and x.dtype == torch.float32
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert fb.tolist() == [False, True]  # background has no stain to estimate
    # Without Macenko the tumour tile changes, the background one does not.
    x0 = preprocess_batch(tiles, bundle, normalizer=False)
    assert not torch.allclose(x[0], x0[0]) and torch.equal(x[1], x0[1])
    # Any input size: resized to the bundle's input size.
    big = np.repeat(np.repeat(tiles, 2, axis=1), 2, axis=2)
    assert preprocess_batch(big, bundle).shape == (2, 3, 224, 224)


def test_any_size_tile_classified_like_original(bundle: Bundle, model) -> None:
    img = read_image(sorted((resources.NCT_TILES_DIR / "LYM").iterdir())[0])
    big = np.repeat(np.repeat(img, 2, axis=0), 2, axis=1)  # 448 px of the same 112 µm
    p = classify_arrays([img, big], bundle, model=model)
    assert p[0].argmax() == p[1].argmax()
    assert np.abs(p[0] - p[1]).max() < 0.1


def test_cli_classify_tiles_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = sorted((resources.NCT_TILES_DIR / "TUM").iterdir())[:2]
    for f in src:
        (tmp_path / f.name).write_bytes(f.read_bytes())
    assert cli_main(["classify-tiles", str(tmp_path), "--json"]) == 0
    recs = json.loads(capsys.readouterr().out)
    assert [Path(r["file"]).name for r in recs] == sorted(f.name for f in src)
    for r in recs:
        assert set(r["probabilities"]) == set(NCT)
        assert sum(r["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
        assert r["class"] == max(r["probabilities"], key=r["probabilities"].get)
    assert cli_main(["classify-tiles", str(tmp_path / "missing")]) != 0
