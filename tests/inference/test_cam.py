"""Grad-CAM / risk activation maps: target = patch risk, equality with plain pytorch-grad-cam,
stitching layout and alignment of a marked tile with its level-0 origin."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _slides import textured_he
from napari_pathomics.inference._cam import RISK_CAM, GradCamRunner, RiskTarget, make_targets
from napari_pathomics.inference.backbones import build_model
from napari_pathomics.inference.engine import Engine
from napari_pathomics.layers import grid_transform
from napari_pathomics.results import DONE, patch_risk, patch_risk_weights
from napari_pathomics.wsi.slide import open_slide
from napari_pathomics.wsi.synthetic import write_slide
from napari_pathomics.wsi.tiling import plan_for_bundle, stitch_tiles


@pytest.fixture
def bundle(resnet18_bundle):
    return resnet18_bundle


def test_risk_target_equals_patch_risk(bundle):
    w = patch_risk_weights(bundle)
    logits = torch.randn(6, len(bundle.class_names), generator=torch.Generator().manual_seed(1)) * 3
    target = RiskTarget(w)
    probs = torch.softmax(logits, 1).numpy()
    expected = patch_risk(probs, w)
    got = np.array([float(target(row)) for row in logits])
    np.testing.assert_allclose(got, expected, atol=1e-6)
    # weights with a non-zero floor are normalised the same way
    w2 = np.linspace(-1, 2, len(w)).astype(np.float32)
    np.testing.assert_allclose([float(RiskTarget(w2)(row)) for row in logits], patch_risk(probs, w2), atol=1e-6)


def test_fast_gradcam_equals_plain_pytorch_grad_cam(bundle):
    """The leaf/frozen-parameter shortcut must not change the maps."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.image import scale_cam_image
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = build_model(bundle).module
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    w = patch_risk_weights(bundle)
    for name in (RISK_CAM, "TUM"):
        targets = make_targets(name, 3, bundle.class_names, w)
        ref_model = build_model(bundle).module  # untouched parameters (requires_grad=True)
        with GradCAM(model=ref_model, target_layers=[ref_model.layer4]) as plain:
            ref = plain(input_tensor=x, targets=targets)
        raw = GradCamRunner(model, bundle.gradcam_target_layer, out_size=8).raw(x, targets)
        assert raw.shape == (3, 2, 2)
        np.testing.assert_allclose(scale_cam_image(raw, (64, 64)), ref, atol=1e-4)
    assert isinstance(make_targets("TUM", 1, bundle.class_names, w)[0], ClassifierOutputTarget)


def test_stitch_tiles_places_each_tile_in_its_cell():
    k = 4
    rows, cols = np.array([0, 2, 1]), np.array([3, 0, 1])
    maps = np.stack([np.full((k, k), v, np.float32) for v in (1, 2, 3)])
    maps[0, 1, 2] = 9
    m = stitch_tiles(maps, rows, cols, 3, 4)
    assert m.shape == (12, 16)
    assert m[0:4, 12:16][1, 2] == 9 and np.all(m[8:12, 0:4] == 2) and np.all(m[4:8, 4:8] == 3)
    assert np.isnan(m).sum() == m.size - 3 * k * k


def test_marked_tile_maps_back_to_its_level0_origin(bundle, tmp_path):
    """One tissue tile on glass, at a non-integer tile size (0.3 µm/px slide): the class map,
    risk heatmap and CAM mosaics must light up exactly over that tile."""
    slide_mpp = 0.3
    s = bundle.tile_um / slide_mpp  # 106.67 level-0 px per tile
    h, w = 900, 1200
    img = np.full((h, w, 3), 243, np.uint8)
    r0, c0 = 3, 5
    x0, y0 = int(round(c0 * s)), int(round(r0 * s))
    x1, y1 = int(round((c0 + 1) * s)), int(round((r0 + 1) * s))
    img[y0:y1, x0:x1] = textured_he(y1 - y0, x1 - x0, seed=4)
    path = write_slide(tmp_path / "marked.svs", img, mpp=slide_mpp)
    with open_slide(path) as slide:
        grid = plan_for_bundle(slide, bundle, tissue=False)
        eng = Engine(bundle, batch_size=16, cam_size=8)
        res = eng.run_all(slide, grid, use_cache=False, cams=("risk", "TUM"))
        mpp = slide.mpp
    done = np.flatnonzero(res.status == DONE)
    assert done.size == 1
    i = int(done[0])
    assert tuple(res.origins[i]) == (x0, y0)

    risk = res.risk_map()
    assert np.argwhere(np.isfinite(risk)).tolist() == [[r0, c0]]
    assert res.class_map()[r0, c0] == res.pred[i] and (res.class_map() >= 0).sum() == 1
    # the lattice image of TileGrid agrees
    np.testing.assert_array_equal(
        np.isfinite(grid.lattice_image(np.where(res.status == DONE, 1.0, np.nan))), np.isfinite(risk)
    )

    for name in ("risk", "TUM"):
        mosaic = res.cam_mosaic(name)
        k = res.cam_size(name)
        assert mosaic.shape == (grid.n_rows * k, grid.n_cols * k)
        rr, cc = np.nonzero(np.isfinite(mosaic))
        # mosaic px → level-0 px: (index + 1/2)·s/k is the px centre; the block spans the tile
        t = grid_transform(slide, res.tile_size_l0 / k)
        (sy, sx), (ty, tx) = t["scale"], t["translate"]
        left_um = tx + cc.min() * sx - sx / 2  # world (µm) edge of the first lit mosaic px
        right_um = tx + cc.max() * sx + sx / 2
        top_um = ty + rr.min() * sy - sy / 2
        # a level-0 px p spans world [(p − 1/2)·mpp, (p + 1/2)·mpp] in napari
        assert left_um == pytest.approx((c0 * s - 0.5) * mpp[0], abs=1e-6)
        assert right_um == pytest.approx(((c0 + 1) * s - 0.5) * mpp[0], abs=1e-6)
        assert top_um == pytest.approx((r0 * s - 0.5) * mpp[1], abs=1e-6)
        assert abs(c0 * s - x0) <= 0.5 and abs(r0 * s - y0) <= 0.5  # origins are rounded lattice points
        assert rr.size == k * k
    assert np.nanmax(res.cam_mosaic("risk")) >= 0


def test_bf16_cam_close_to_fp32(bundle):
    """The engine runs the CAM forward under its bf16 autocast: maps stay close to fp32's."""
    model = build_model(bundle).module
    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    targets = make_targets(RISK_CAM, 4, bundle.class_names, patch_risk_weights(bundle))
    a = GradCamRunner(model, "layer4", out_size=8).raw(x, targets)
    b = GradCamRunner(model, "layer4", out_size=8, autocast_dtype=torch.bfloat16).raw(x, targets)
    assert a.shape == b.shape and b.dtype == np.float32
    scale = np.abs(a).max()
    assert scale > 0 and np.abs(a - b).max() < 0.1 * scale
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.98
