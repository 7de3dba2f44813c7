"""Heatmap review on the real viewer: one map at a time, colour bars, uncertainty, holes, a fitting window."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from napari.utils.notifications import NotificationSeverity, notification_manager
from shapely.geometry import Polygon, shape

from _bundles import make_bundle
from _slides import textured_he
from napari_pathomics.layers import COLORBAR_KEY, SCALE_KEY, VIEW_KEY
from napari_pathomics.layers.results import HATCH_PX
from napari_pathomics.results import DONE, TileResults
from napari_pathomics.widgets import layer_registry, notices
from napari_pathomics.widgets.analyze_widget import AnalyzeWidget
from napari_pathomics.widgets.app import build_viewer
from napari_pathomics.widgets.result_layers import display_of, find_layer, show_results
from napari_pathomics.wsi.annotations import Annotation, write_geojson
from napari_pathomics.wsi.synthetic import write_slide
from napari_pathomics.wsi.tiling import plan_tiles

pytestmark = [pytest.mark.viewer, pytest.mark.slow]

MPP, TILE = 0.5, 64  # the test bundle: 32 µm tiles → 64 level-0 px here


@pytest.fixture
def slide_path(tmp_path):
    return write_slide(tmp_path / "case.svs", textured_he(1024, 1536, seed=3), mpp=MPP, fmt="svs", min_size=128)


def _visible_views(viewer, slide) -> set[str]:
    return {
        ly.metadata[VIEW_KEY]
        for ly in viewer.layers
        if ly.visible and VIEW_KEY in ly.metadata and ly.metadata.get("pathomics_slide_path") == str(slide.path)
    }


def _colorbar_visual(viewer, layer):
    visuals = viewer.window._qt_viewer.canvas._layer_overlay_to_visual[layer]
    return next(v for o, v in visuals.items() if type(o).__name__ == "ColorBarOverlay")


def test_one_map_at_a_time_with_colour_bars_that_read_the_limits(make_napari_viewer, qtbot, tmp_path, slide_path):
    bundle = make_bundle(tmp_path / "bundle")
    viewer = make_napari_viewer(show=True)
    img = layer_registry.add_slide(viewer, slide_path)
    slide = layer_registry.slide_of(img)
    w = AnalyzeWidget(viewer)
    w.bundle_path.setText(str(bundle.path))
    w._refresh_bundle()
    w.cam_on.setChecked(True)
    worker = w.run()
    assert worker is not None
    qtbot.waitUntil(lambda: w.worker is None, timeout=120_000)
    assert _visible_views(viewer, slide) == {"classes"} and img.visible  # the slide stays visible beneath
    keys = [w.view.itemData(i) for i in range(w.view.count())]
    assert keys[:2] == ["classes", "risk"] and "cam:risk" in keys and "cam:TUM" in keys and "uncertainty" in keys

    for key in ("risk", "cam:risk", "uncertainty"):
        w.show_view(key)
        assert _visible_views(viewer, slide) == {key}
        shown = next(ly for ly in viewer.layers if ly.visible and ly.metadata.get(VIEW_KEY) == key)
        assert shown.colorbar.visible and shown.metadata[COLORBAR_KEY]
        assert not any(ly.colorbar.visible for ly in viewer.layers if ly is not shown and hasattr(ly, "colorbar"))
        lo, hi = shown.metadata[SCALE_KEY]["limits"]
        values = shown.data[shown.data >= shown.contrast_limits[0] + 1e-9]
        assert (
            lo <= values.min() + 1e-6 and np.percentile(values, 90) <= hi <= values.max() + 1e-6
        )  # fitted to the data
        viewer.screenshot(canvas_only=True, flash=False)  # draws the overlay
        bar = _colorbar_visual(viewer, shown)
        np.testing.assert_allclose(bar.node.ticks.domain, shown.contrast_limits, rtol=1e-6)
        ticks = [float(t) for t in bar.node.ticks._text.text if t.strip()]
        assert len(ticks) >= 2 and shown.contrast_limits[0] - 1e-9 <= min(ticks) <= max(ticks) <= hi + 1e-9
        assert key.split(":")[0] in viewer.text_overlay.text.lower() or shown.name in viewer.text_overlay.text

    # the threshold hides low values (the slide shows through) and says where it starts
    w.show_view("risk")
    risk = find_layer(viewer, slide, "risk_map")
    lo, hi = risk.metadata[SCALE_KEY]["limits"]
    w.threshold.setValue(50)
    assert risk.metadata[SCALE_KEY]["threshold"] == pytest.approx(lo + (hi - lo) / 2)
    below = float(risk.colormap.map(np.array([0.45]))[0][3]) if risk.colormap.controls[1] > 0.45 else None
    assert below is None or below == 0.0
    assert np.asarray(risk.colormap.controls)[1] == pytest.approx(
        (lo + (hi - lo) / 2 - risk.contrast_limits[0]) / (risk.contrast_limits[1] - risk.contrast_limits[0]), abs=1e-6
    )
    # smooth rendering and per-tile CAM scaling are one switch each
    w.smooth.setCurrentIndex(1)
    assert risk.interpolation2d == "linear"
    w.cam_scale.setCurrentIndex(1)
    w.show_view("cam:risk")
    ram = find_layer(viewer, slide, "cam:risk")
    assert "per-tile" in ram.metadata[SCALE_KEY]["scale"] and ram.metadata[SCALE_KEY]["limits"][1] <= 1.0 + 1e-6
    assert "per-tile" in viewer.text_overlay.text  # the map's title says how it is scaled
    # Alt+2 selects the second map
    w._select(1)
    assert _visible_views(viewer, slide) == {"risk"}


def _results_with_one_doubtful_tile(slide, doubtful: tuple[int, int]) -> TileResults:
    grid = plan_tiles(slide, tissue=False, tile_um=TILE * MPP, mpp=MPP)  # every tile of the slide
    res = TileResults.empty(grid, ["STR", "TUM", "LYM"], ["#ff9f1c", "#e6194b", "#00b4d8"])
    res.status[:] = DONE
    res.probs[:] = (0.02, 0.97, 0.01)
    res.risk[:] = 0.5
    i = int(np.flatnonzero((res.rows == doubtful[0]) & (res.cols == doubtful[1]))[0])
    res.probs[i] = (0.35, 0.40, 0.25)
    return res


def test_a_low_confidence_tile_is_hatched_and_read_out(make_napari_viewer, slide_path):
    viewer = make_napari_viewer(show=True)
    slide = layer_registry.slide_of(layer_registry.add_slide(viewer, slide_path))
    row, col = 3, 4
    res = _results_with_one_doubtful_tile(slide, (row, col))
    layers = show_results(viewer, slide, res, {"TUM": "tumour epithelium"})
    hatch = layers["low_confidence"]
    assert hatch.visible and hatch.metadata["tiles"] == [int(np.flatnonzero((res.rows == row) & (res.cols == col))[0])]
    k = HATCH_PX
    painted = hatch.data[..., 3] > 0
    rows, cols = np.nonzero(painted)
    assert set(rows // k) == {row} and set(cols // k) == {col}
    # on screen: the doubtful tile is striped black and white, a confident neighbour is not
    for ly in viewer.layers:
        ly.visible = ly is hatch or ly.metadata.get("pathomics_role") == "class_map"
    centre = np.array([(row + 0.5) * TILE * MPP, (col + 0.5) * TILE * MPP])
    viewer.camera.center = tuple(centre)
    viewer.camera.zoom = 8.0
    shot = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    h, w = shot.shape[:2]
    mid = shot[h // 2 - 110 : h // 2 + 110, w // 2 - 110 : w // 2 + 110]
    assert (mid.sum(-1) > 600).mean() > 0.02 and (mid.sum(-1) < 120).mean() > 0.02
    viewer.camera.center = tuple(centre + np.array([0, 2 * TILE * MPP]))
    shot = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    mid = shot[h // 2 - 110 : h // 2 + 110, w // 2 - 110 : w // 2 + 110]
    assert (mid.sum(-1) > 600).mean() < 0.005
    # a stricter threshold marks every tile; the status bar reads the top-3 classes
    display_of(viewer).low_confidence = 0.99
    layers = show_results(viewer, slide, res)
    assert len(layers["low_confidence"].metadata["tiles"]) == len(res)
    viewer.layers.selection.active = layers["risk_map"]
    viewer.cursor.position = tuple(centre)
    viewer.mouse_over_canvas = True
    status, _ = viewer._calc_status_from_cursor()
    text = status["coordinates"] if isinstance(status, dict) else status
    assert (
        "TUM (tumour epithelium)" in text
        and "top 3: TUM 0.40 · STR 0.35 · LYM 0.25" in text
        and "low confidence" in text
    )


def test_the_hole_of_a_qupath_roi_is_drawn_and_survives_an_edit(make_napari_viewer, slide_path, tmp_path):
    outer = [(200, 100), (1200, 100), (1200, 900), (200, 900)]
    hole = [(500, 300), (900, 300), (900, 700), (500, 700)]
    roi = Annotation(Polygon(outer, [hole]), classification="Tumor", name="holed")
    geo = tmp_path / "holed.geojson"
    write_geojson([roi], geo)
    viewer = make_napari_viewer(show=True)
    img = layer_registry.add_slide(viewer, slide_path)
    slide = layer_registry.slide_of(img)
    viewer.open(str(geo), plugin="napari-pathomics")
    holes = next(ly for ly in viewer.layers if ly.metadata.get("pathomics_role") == "roi_holes")
    for ly in viewer.layers:
        ly.visible = ly is holes
    viewer.reset_view()
    shot = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    cyan = (shot[..., 2] > 200) & (shot[..., 1] > 180) & (shot[..., 0] < 80)
    assert cyan.sum() > 100  # the hole ring is on screen
    ys, xs = np.nonzero(cyan)
    aspect = (xs.max() - xs.min()) / max(1, ys.max() - ys.min())
    assert 0.8 < aspect < 1.25  # a square hole, drawn where it is
    # drag one outer corner of the imported ROI by 5 px: the exported GeoJSON keeps the hole and the id
    rois = next(ly for ly in viewer.layers if ly.metadata.get("pathomics_role") == "rois_import")
    data = [np.asarray(d, dtype=float).copy() for d in rois.data]
    corner = int(np.argmax(data[0].sum(axis=1)))
    data[0][corner] += 5.0
    rois.data = data
    out = tmp_path / "edited.geojson"
    rois.save(str(out), plugin="napari-pathomics")
    feats = json.loads(out.read_text())["features"]
    assert len(feats) == 1 and feats[0]["id"] == roi.id
    got = shape(feats[0]["geometry"])
    assert len(got.interiors) == 1 and Polygon(got.interiors[0]).equals(Polygon(hole))
    assert got.area > roi.geometry.area
    assert slide is not None


def test_the_window_fits_the_screen_with_the_slide_wide_and_a_scale_bar(
    qtbot, slide_path, tmp_path, make_napari_viewer, monkeypatch
):
    import napari

    # the application's own window, made through the fixture so napari's plugin registry is set up and torn down
    monkeypatch.setattr(napari, "Viewer", lambda **kw: make_napari_viewer(show=True, **kw))
    viewer = build_viewer([str(slide_path)])
    try:
        win = viewer.window._qt_window
        win.showNormal()
        win.resize(1920, 1080)
        qtbot.wait(200)
        canvas = viewer.window._qt_viewer.canvas.native
        assert canvas.width() >= 0.6 * win.width(), (canvas.width(), win.width())
        docks = {name: w.parent() for name, w in viewer.window.dock_widgets.items()}  # the dock wrappers
        assert {"Slide", "ROIs, tissue and tiles", "Analyze", "Score"} <= set(docks)
        assert not docks["Slide"].visibleRegion().isEmpty()  # the Slide tab is in front
        assert viewer.scale_bar.visible
        shot = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
        h, w = shot.shape[:2]
        corner = shot[int(h * 0.85) :, int(w * 0.7) :]
        assert (corner.sum(-1) > 700).sum() > 50  # the scale bar's white line and label
    finally:
        monkeypatch.undo()  # the fixture closes the window


def test_problems_shown_together_merge_stale_ones_go_and_library_warnings_are_logged(
    make_napari_viewer, slide_path, caplog
):
    viewer = make_napari_viewer(show=True)
    layer_registry.install(viewer)
    start = len(notification_manager.records)
    notices.show_error("cannot open a.svs: empty")
    notices.show_error("cannot open b.svs: truncated")
    errors = [str(n.message) for n in notification_manager.records[start:] if n.severity == NotificationSeverity.ERROR]
    assert "a.svs" in errors[-1] and "b.svs" in errors[-1] and "2 problems" in errors[-1]
    notices.show_warning("no pixel size", key="mpp:x")
    notices.withdraw("mpp:x")
    assert not any(any(k == "mpp:x" for k, _ in s.messages) for s in notices.shown_notices())
    before = len(notification_manager.records)
    with caplog.at_level(logging.WARNING, logger="napari_pathomics"):
        # what napari's hook and its worker threads call with a warning
        notification_manager.receive_warning(
            "Conversion from CIE-LAB, via XYZ to sRGB", UserWarning, "/site-packages/skimage/color/colorconv.py", 1
        )
    assert len(notification_manager.records) == before
    assert any("CIE-LAB" in r.getMessage() for r in caplog.records)
