"""``pathomics train-nuclei``: bad input gets one line and a non-zero exit; a run writes a usable model
folder; an interrupted run resumes from its checkpoint."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from _cli import assert_one_line, run_cli
from napari_pathomics.cells.model_folder import validate_model_folder

DSB = Path(__file__).parents[1] / "data" / "nuclei-dsb2018"
TRAINING = 12  # errors.TrainingError.exit_code


def _data(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    shutil.copytree(DSB, d, ignore=shutil.ignore_patterns("*.txt", "*.tsv"))
    return d


def test_an_empty_or_missing_folder_is_refused(tmp_path: Path) -> None:
    assert_one_line(run_cli("train-nuclei", tmp_path / "nope", "--out", tmp_path / "m"), TRAINING, "not found")
    (tmp_path / "empty" / "images").mkdir(parents=True)
    assert_one_line(run_cli("train-nuclei", tmp_path / "empty", "--out", tmp_path / "m"), TRAINING, "no images")


def test_missing_and_mismatched_labels_are_refused(tmp_path: Path) -> None:
    d = _data(tmp_path)
    first = sorted((d / "labels").glob("*.png"))[0]
    first.rename(d / "labels" / "zzzz.png")
    r = run_cli("train-nuclei", d, "--out", tmp_path / "m", "--mpp", "0.3")
    assert_one_line(r, TRAINING, "no labels for")
    (d / "labels" / "zzzz.png").rename(first)
    shutil.copy(first, d / "labels" / "orphan.png")
    assert_one_line(run_cli("train-nuclei", d, "--out", tmp_path / "m", "--mpp", "0.3"), TRAINING, "without an image")


def test_labels_of_the_wrong_dtype_or_size_are_refused(tmp_path: Path) -> None:
    d = _data(tmp_path)
    lab = sorted((d / "labels").glob("*.png"))[0]
    arr = cv2.imread(str(lab), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(lab), (arr > 0).astype(np.uint8) * 255)
    assert_one_line(run_cli("train-nuclei", d, "--out", tmp_path / "m", "--mpp", "0.3"), TRAINING, "16-bit")
    cv2.imwrite(str(lab), arr[:100, :100])
    assert_one_line(run_cli("train-nuclei", d, "--out", tmp_path / "m", "--mpp", "0.3"), TRAINING, "px, the image is")


def test_an_image_that_is_not_he_is_refused(tmp_path: Path) -> None:
    d = _data(tmp_path)
    img = sorted((d / "images").glob("*.png"))[0]
    grey = np.asarray(Image.open(img).convert("L"))
    Image.fromarray(np.stack([grey] * 3, -1)).save(img)
    assert_one_line(run_cli("train-nuclei", d, "--out", tmp_path / "m", "--mpp", "0.3"), TRAINING, "no colour")


def test_train_then_segment_with_the_new_model(tmp_path: Path) -> None:
    d = _data(tmp_path)
    out = tmp_path / "model"
    args = ["--mpp", "0.3", "--epochs", "1", "--steps-per-epoch", "2", "--no-pretrained", "--threads", "1"]
    r = run_cli("train-nuclei", d, "--out", out, *args, "--licence", "CC0-1.0", "--json", "--quiet", timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    assert validate_model_folder(out) == []
    man = json.loads((out / "manifest.json").read_text())
    assert man["licence"] == "CC0-1.0" and len(man["training"]["data"]["validation"]) == 1
    # figures from a run that held the validation image out; the model itself trained again on all
    assert "val_aji" in man["training"]["validation_run"]["history"][0]
    assert man["training"]["data"]["refit_on_all"] and len(man["training"]["data"]["train"]) == len(
        list((d / "images").glob("*.png"))
    )
    assert not (tmp_path / ".model.train").exists()  # the checkpoint folder goes once the model is written
    img = sorted((d / "images").glob("*.png"))[0]
    r = run_cli("nuclei", img, "--mpp", "0.3", "--out", tmp_path / "o", "--nuclei-model", out, "--json", timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads(r.stdout)
    assert summary["nuclei_model"]["name"] == "model" and summary["nuclei_model"]["licence"] == "CC0-1.0"
    (out / "weights.safetensors").write_bytes((out / "weights.safetensors").read_bytes()[:-8] + b"\0" * 8)
    r = run_cli("nuclei", img, "--mpp", "0.3", "--out", tmp_path / "o2", "--nuclei-model", out)
    assert_one_line(r, 16, "sha256 mismatch")


def test_an_interrupted_run_resumes_after_its_last_epoch(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from napari_pathomics.training.nuclei import Sample, TrainConfig, train_nuclei

    samples = []
    for p in sorted((DSB / "images").glob("*.png"))[:2]:
        rgb = np.asarray(Image.open(p).convert("RGB"))
        lab = np.asarray(Image.open(DSB / "labels" / p.name)).astype(np.int32)
        samples.append(Sample(p.stem, rgb, lab, 0.3))
    cfg = TrainConfig(epochs=1, steps_per_epoch=1, batch=2, crop=64, pretrained=False)
    _, state = train_nuclei(samples[:1], tmp_path / "w", cfg, val=samples[1:])
    assert state["epoch"] == 1 and (tmp_path / "w" / "checkpoint.safetensors").is_file()
    said: list[str] = []
    _, state = train_nuclei(
        samples[:1], tmp_path / "w", TrainConfig(**{**cfg.__dict__, "epochs": 2}), val=samples[1:], log=said.append
    )
    assert said[0].startswith("resuming after epoch 1") and [h["epoch"] for h in state["history"]] == [1, 2]
    with pytest.raises(ValueError, match="other settings"):
        train_nuclei(samples[:1], tmp_path / "w", TrainConfig(**{**cfg.__dict__, "crop": 96}), val=samples[1:])


def test_the_moving_average_is_kept_and_resumed(tmp_path: Path) -> None:
    """A run cut after each epoch ends with the same averaged weights as one that was not cut."""
    pytest.importorskip("torch")
    from safetensors.torch import load_file

    from napari_pathomics.training.nuclei import Sample, TrainConfig, train_nuclei

    p = sorted((DSB / "images").glob("*.png"))[0]
    s = Sample(
        p.stem,
        np.asarray(Image.open(p).convert("RGB")),
        np.asarray(Image.open(DSB / "labels" / p.name)).astype(np.int32),
        0.3,
    )
    cfg = TrainConfig(epochs=2, steps_per_epoch=2, batch=2, crop=64, pretrained=False, ema=0.5, bf16=False)
    whole, _ = train_nuclei([s], tmp_path / "whole", cfg, val=[])

    def cut(step: int, total: int, figures: dict) -> None:
        if step == 3:  # the first step of the second epoch
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_nuclei([s], tmp_path / "cut", cfg, val=[], progress=cut)
    resumed, _ = train_nuclei([s], tmp_path / "cut", cfg, val=[])
    ck = load_file(str(tmp_path / "cut" / "checkpoint.safetensors"))
    raw = {k[6:]: v for k, v in ck.items() if k.startswith("model.")}
    avg = {k[4:]: v for k, v in ck.items() if k.startswith("ema.")}
    for k, v in resumed.state_dict().items():
        assert np.allclose(v.numpy(), whole.state_dict()[k].numpy(), atol=1e-5), k
        assert np.allclose(v.numpy(), avg[k].numpy())
    assert any(not np.allclose(raw[k].numpy(), avg[k].numpy()) for k in raw if raw[k].is_floating_point())


def test_post_processing_is_tuned_only_from_three_validation_images() -> None:
    """One image's best thresholds follow that image; from three on they are tuned, else the defaults stay."""
    torch = pytest.importorskip("torch")
    from napari_pathomics.cells.learned import PostParams
    from napari_pathomics.training.nuclei import TUNE_MIN_IMAGES, Sample, tune_post

    yy, xx = np.mgrid[:64, :64]
    cheb = np.maximum(abs(yy - 31.5), abs(xx - 31.5))
    truth = (cheb < 10).astype(np.int32)  # one 20-px nucleus
    fg = np.where(truth > 0, 0.95, np.where(cheb < 14, 0.55, 0.02))  # a faint 4-px halo around it
    maps = np.stack([np.log(fg / (1 - fg)), np.full(fg.shape, -10.0), np.clip(1 - cheb / 10, 0, 1)])

    class Fixed(torch.nn.Module):
        def forward(self, x):  # the same maps whatever the input
            return torch.from_numpy(maps.astype(np.float32))[None]

    s = Sample("a", np.full((64, 64, 3), 200, np.uint8), truth, 0.5)
    kept, figs = tune_post(Fixed(), [s], 0.5)
    assert kept == PostParams() and figs["aji"] < 0.6  # the halo counts at the default 0.5
    tuned, figs = tune_post(Fixed(), [s] * TUNE_MIN_IMAGES, 0.5)
    assert tuned.foreground > 0.55 and figs["aji"] > 0.95
