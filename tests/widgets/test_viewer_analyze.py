"""Analyze dock on the real viewer: a real run fills layers that line up with the slide."""

import numpy as np
import pytest

from _bundles import make_bundle
from _slides import textured_he
from napari_pathomics.layers import tile_readout
from napari_pathomics.widgets import layer_registry
from napari_pathomics.widgets.analyze_widget import AnalyzeWidget
from napari_pathomics.widgets.result_layers import find_layer
from napari_pathomics.wsi.synthetic import write_slide

pytestmark = [pytest.mark.viewer, pytest.mark.slow]

MPP = 0.5
TILE = 64  # the test bundle: 32 µm tiles at 0.5 µm/px → 64 level-0 px on this slide
ROW, COL = 5, 7  # the marked tile


@pytest.fixture
def marked_tissue_slide(tmp_path):
    img = textured_he(1024, 1536, seed=2)
    img[ROW * TILE : (ROW + 1) * TILE, COL * TILE : (COL + 1) * TILE] = (0, 0, 255)
    return write_slide(tmp_path / "marked.svs", img, mpp=MPP, fmt="svs", min_size=128)


def _bbox(mask):
    ys, xs = np.nonzero(mask)
    return np.array([ys.min(), xs.min(), ys.max(), xs.max()])


def _run(qtbot, widget):
    worker = widget.run()
    assert worker is not None
    qtbot.waitUntil(lambda: widget.worker is None, timeout=120_000)  # the dock's own end (no signal race)


def test_run_fills_aligned_layers(make_napari_viewer, qtbot, tmp_path, marked_tissue_slide):
    bundle = make_bundle(tmp_path / "bundle")
    viewer = make_napari_viewer(show=True)
    img = layer_registry.add_slide(viewer, marked_tissue_slide)
    slide = layer_registry.slide_of(img)
    w = AnalyzeWidget(viewer)
    w.bundle_path.setText(str(bundle.path))
    w._refresh_bundle()
    w.cam_on.setChecked(True)
    _run(qtbot, w)
    res = w.results[str(slide.path)]
    assert res.n_done == len(res) and (res.status == 1).sum() > 100
    cls_layer = find_layer(viewer, slide, "class_map")
    risk_layer = find_layer(viewer, slide, "risk_map")
    ram_layer = find_layer(viewer, slide, "cam:risk")
    assert cls_layer is not None and risk_layer is not None and ram_layer is not None
    assert find_layer(viewer, slide, "cam:TUM") is not None
    i = res.tile_at(COL * TILE + 1, ROW * TILE + 1)
    assert i is not None and (res.rows[i], res.cols[i]) == (ROW, COL)

    # the world centre of the marked tile's pixels maps to that cell in every result layer
    centre_world = np.array([(ROW * TILE + TILE / 2 - 0.5) * MPP, (COL * TILE + TILE / 2 - 0.5) * MPP])
    assert tuple(np.round(risk_layer.world_to_data(centre_world)).astype(int)) == (ROW, COL)
    k = res.cam_size("risk")
    assert tuple(np.floor(ram_layer.world_to_data(centre_world) / k + 0.5 / k).astype(int)) == (ROW, COL)
    assert cls_layer.data[ROW, COL] == res.pred[i] + 1
    assert "risk" in tile_readout(res, slide, tuple(centre_world))

    # screenshots: the lit heatmap cell covers exactly the blue tile, at level 0 and a coarse level
    for zoom in (3.0, 0.3):
        viewer.camera.center = tuple(centre_world)
        viewer.camera.zoom = zoom
        for ly in viewer.layers:
            ly.visible = ly is img
        shot = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
        blue = (shot[..., 2] > 180) & (shot[..., 0] < 80) & (shot[..., 1] < 80)
        if zoom < 1:
            assert img.data_level > 0
        lit = np.full_like(risk_layer.data, -1.0)
        lit[ROW, COL] = 1.0
        risk_layer.data = lit
        risk_layer.opacity = 1.0
        viewer.text_overlay.visible = False  # the map's title is drawn in the canvas's corner
        if hasattr(risk_layer, "colorbar"):
            risk_layer.colorbar.visible = False
        img.visible = False
        risk_layer.visible = True
        shot2 = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
        bright = shot2.sum(-1) > 300
        assert blue.sum() > 20 and bright.sum() > 20
        assert np.abs(_bbox(blue) - _bbox(bright)).max() <= 2


def test_cached_results_show_at_once_and_cancel_is_clean(make_napari_viewer, qtbot, tmp_path, marked_tissue_slide):
    bundle = make_bundle(tmp_path / "bundle")
    viewer = make_napari_viewer()
    layer_registry.add_slide(viewer, marked_tissue_slide)
    w = AnalyzeWidget(viewer)
    w.bundle_path.setText(str(bundle.path))
    w._refresh_bundle()
    w.ram.setChecked(False)
    w.batch.setValue(8)
    assert w.run() is not None
    w.cancel()  # cancelled before/within the first batch
    qtbot.waitUntil(lambda: w.worker is None, timeout=120_000)
    slide = layer_registry.slide_of(layer_registry.active_slide_layer(viewer))
    partial = w.results[str(slide.path)]
    assert partial.n_done < len(partial)
    _run(qtbot, w)  # resumes from the cache
    assert w.results[str(slide.path)].complete
    assert "done" in w.status.text()


def test_refused_bundle_is_a_notification(make_napari_viewer, tmp_path, marked_tissue_slide):
    viewer = make_napari_viewer()
    layer_registry.add_slide(viewer, marked_tissue_slide)
    w = AnalyzeWidget(viewer)
    (tmp_path / "nob").mkdir()
    w.bundle_path.setText(str(tmp_path / "nob"))
    w._refresh_bundle()
    assert w.run() is None and "not usable" in w.bundle_info.text()
    assert len(viewer.layers) == 2


def test_a_slide_of_glass_is_the_step_tiling_error_as_a_notification(make_napari_viewer, tmp_path):
    """The dock plans through the per-slide step: an empty plan is its TilingError, as in ``infer``."""
    from napari.utils.notifications import NotificationSeverity, notification_manager

    glass = write_slide(tmp_path / "glass.svs", np.full((1024, 1536, 3), 243, np.uint8), mpp=MPP, fmt="svs")
    viewer = make_napari_viewer()
    layer_registry.add_slide(viewer, glass)
    w = AnalyzeWidget(viewer)
    w.bundle_path.setText(str(make_bundle(tmp_path / "bundle").path))
    w._refresh_bundle()
    start = len(notification_manager.records)
    assert w.run() is None and w.worker is None
    errors = [str(n.message) for n in notification_manager.records[start:] if n.severity == NotificationSeverity.ERROR]
    assert any("tile of glass.svs lies inside its tissue: nothing to analyse" in e for e in errors), errors
