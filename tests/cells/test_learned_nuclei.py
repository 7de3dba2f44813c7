"""Learned nuclei: post-processing, model folders (format, validation, refusal), the method choice."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from napari_pathomics.cells.learned import PostParams, labels_at, postprocess, predict_maps
from napari_pathomics.cells.methods import DEFAULT_METHOD, Classical, Learned, Otsu, method_names, resolve_method
from napari_pathomics.cells.metrics import aji, dice, pq
from napari_pathomics.cells.model_folder import load_model_folder, validate_model_folder, write_model_folder
from napari_pathomics.errors import NucleiError
from napari_pathomics.resources import NUCLEI_MODELS

DSB = Path(__file__).parents[1] / "data" / "nuclei-dsb2018"


def _dsb(stem: str = "0bf33d3db4282d91") -> tuple[np.ndarray, np.ndarray]:
    rgb = np.asarray(Image.open(DSB / "images" / f"{stem}.png").convert("RGB"))
    return rgb, np.asarray(Image.open(DSB / "labels" / f"{stem}.png")).astype(np.int32)


def _two_touching_discs() -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:40, :60]
    truth = np.zeros((40, 60), np.int32)
    dist = np.zeros((40, 60), np.float32)
    for i, cx in enumerate((22, 38), start=1):
        r = np.hypot(yy - 20, xx - cx)
        inside = (r < 9) & (truth == 0)
        truth[inside] = i
        dist = np.maximum(dist, np.clip(1 - r / 9, 0, 1) * inside)
    maps = np.stack([np.where(truth > 0, 6.0, -6.0), np.full(truth.shape, -6.0), dist]).astype(np.float32)
    return maps, truth


def test_postprocess_splits_touching_nuclei_at_their_distance_peaks() -> None:
    maps, truth = _two_touching_discs()
    lab = postprocess(maps, PostParams())
    assert lab.max() == 2
    assert aji(truth, lab) > 0.9 and pq(truth, lab) > 0.9
    merged = postprocess(maps, PostParams(marker=0.05))  # one marker over both: they merge
    assert merged.max() == 1


def test_a_faint_nucleus_without_a_marker_is_kept_as_its_own() -> None:
    yy, xx = np.mgrid[:40, :80]
    truth = np.zeros((40, 80), np.int32)
    dist = np.zeros((40, 80), np.float32)
    for i, (cx, peak) in enumerate(((20, 1.0), (60, 0.4)), start=1):  # the second never reaches 0.45
        r = np.hypot(yy - 20, xx - cx)
        truth[r < 9] = i
        dist = np.maximum(dist, peak * np.clip(1 - r / 9, 0, 1))
    maps = np.stack([np.where(truth > 0, 6.0, -6.0), np.full(truth.shape, -6.0), dist]).astype(np.float32)
    lab = postprocess(maps, PostParams())
    assert lab.max() == 2 and aji(truth, lab) > 0.95


def test_labels_come_back_on_the_input_grid_within_the_foreground() -> None:
    maps, truth = _two_touching_discs()
    lab = postprocess(maps, PostParams())
    fg = 1 / (1 + np.exp(-maps[0]))
    up = labels_at(lab, fg, (80, 120), 0.5)
    assert up.shape == (80, 120) and up.max() == 2
    big = np.kron(truth, np.ones((2, 2), np.int32))
    assert dice(big, up) > 0.95


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised model folder (mechanics only; the shipped ones carry trained weights)."""
    torch = pytest.importorskip("torch")
    from napari_pathomics.cells.unet import build_unet

    torch.manual_seed(0)
    net = build_unet()
    out = tmp_path_factory.mktemp("models") / "tiny"
    manifest = {"name": "tiny", "licence": "CC0-1.0", "architecture": {"encoder": "efficientnet_lite0"}, "mpp": 0.5}
    manifest["post"] = PostParams().to_json()
    return write_model_folder(out, net.state_dict(), manifest, "# tiny\n")


def test_a_written_model_folder_validates_and_segments(tiny_model: Path) -> None:
    assert validate_model_folder(tiny_model) == []
    method = resolve_method(tiny_model)
    assert isinstance(method, Learned)
    assert method.describe()["licence"] == "CC0-1.0" and method.describe()["name"] == "tiny"
    rgb, _ = _dsb()
    seg = method.segment(rgb, 0.3)
    assert seg.labels.shape == rgb.shape[:2] and seg.labels.dtype == np.int32


def test_tiled_prediction_covers_the_whole_image(tiny_model: Path) -> None:
    net = load_model_folder(tiny_model).network()
    rgb = np.ascontiguousarray(np.tile(_dsb()[0], (2, 2, 1))[:400, :600])
    maps = predict_maps(net, rgb, tile=192, overlap=32)
    assert maps.shape == (3, 400, 600)
    assert np.all(np.isfinite(maps)) and np.count_nonzero(maps[0] == 0) == 0  # every tile's centre written


def test_flipped_views_average_the_maps_of_each_flip_brought_back(tiny_model: Path) -> None:
    net = load_model_folder(tiny_model).network()
    rgb = np.ascontiguousarray(np.tile(_dsb()[0], (2, 2, 1))[:192, :192])  # one tile, no padding to mirror
    plain = predict_maps(net, rgb, tile=192)
    mirrored = predict_maps(net, np.ascontiguousarray(rgb[:, ::-1]), tile=192)[:, :, ::-1]
    both = predict_maps(net, rgb, tile=192, views=2)
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    np.testing.assert_allclose(sig(both[:2]), (sig(plain[:2]) + sig(mirrored[:2])) / 2, atol=1e-4)
    np.testing.assert_allclose(both[2], (plain[2] + mirrored[2]) / 2, atol=1e-4)
    assert np.abs(both - plain).max() > 1e-3  # a random network is not flip-invariant: the views count
    with pytest.raises(ValueError, match="views"):
        predict_maps(net, rgb, views=3)


def test_a_model_runs_with_the_views_its_manifest_names(tiny_model: Path, tmp_path: Path) -> None:
    one = _copy(tiny_model, tmp_path / "one")
    man = json.loads((one / "manifest.json").read_text())
    man["post"]["views"] = 1
    (one / "manifest.json").write_text(json.dumps(man))
    a, b = load_model_folder(tiny_model), load_model_folder(one)
    assert a.post.views == PostParams().views and b.post.views == 1
    assert a.key != b.key  # cached results of one are never served for the other
    man["post"]["views"] = 3
    (one / "manifest.json").write_text(json.dumps(man))
    assert any("views" in p for p in validate_model_folder(one))


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_model_folders_with_a_pickle_a_wrong_hash_or_no_manifest_are_refused(tiny_model: Path, tmp_path: Path) -> None:
    a = _copy(tiny_model, tmp_path / "a")
    (a / "extra.pt").write_bytes(pickle.dumps({"x": 1}))
    assert any("not listed" in p for p in validate_model_folder(a))
    b = _copy(tiny_model, tmp_path / "b")
    man = json.loads((b / "manifest.json").read_text())
    (b / "weights.pkl").write_bytes(pickle.dumps({"x": 1}))
    man["files"]["weights.pkl"] = "0" * 64
    (b / "manifest.json").write_text(json.dumps(man))
    assert any("pickle" in p for p in validate_model_folder(b))
    c = _copy(tiny_model, tmp_path / "c")
    with open(c / "weights.safetensors", "r+b") as fh:
        fh.seek(-4, 2)
        fh.write(b"\x00\x01\x02\x03")
    assert any("sha256 mismatch" in p for p in validate_model_folder(c))
    with pytest.raises(NucleiError, match="sha256 mismatch"):
        resolve_method(c)
    d = tmp_path / "d"
    d.mkdir()
    with pytest.raises(NucleiError, match="no manifest.json"):
        resolve_method(d)


def test_names_resolve_to_one_method_each() -> None:
    assert isinstance(resolve_method("classical"), Classical)
    assert isinstance(resolve_method("otsu"), Otsu)
    assert resolve_method(None).name == resolve_method(DEFAULT_METHOD).name
    assert "otsu" in method_names() and "classical" in method_names()
    with pytest.raises(NucleiError, match="neither a model folder"):
        resolve_method("no-such-model")


@pytest.mark.parametrize("name", sorted(NUCLEI_MODELS))
def test_shipped_models_validate_and_name_their_licence(name: str) -> None:
    folder = NUCLEI_MODELS[name]
    if not (folder / "manifest.json").is_file():
        pytest.skip(f"model {name} is not shipped in this build")
    assert validate_model_folder(folder) == []
    model = load_model_folder(folder)
    assert model.licence and model.manifest["training"]["data"]
    if name == "monuseg":
        assert "CC-BY-NC-SA-4.0" in model.licence and "Kumar" in model.manifest["attribution"]
        assert DEFAULT_METHOD != "monuseg"


def test_otsu_baseline_finds_the_nuclei_of_a_real_tile() -> None:
    rgb, truth = _dsb()
    lab = Otsu().segment(rgb, 0.3).labels
    assert dice(truth, lab) > 0.6  # a plain baseline on a dark-nuclei CC0 tile (expert labels)
