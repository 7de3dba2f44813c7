"""The real napari viewer (under Xvfb) with the real reader, widgets and files; bad input is a
notification, the viewer keeps working, and no drawn annotation is lost.

Bad input: the whole broken-slide corpus through the Slide dock and through napari's own
``viewer.open`` (npe2 reader) with the notification each one produces, bad GeoJSON imports, a
self-intersecting import repaired with a warning, a damaged autosave kept aside, an autosave that
cannot be written (notification, drawing kept in the layer), a deleted ROI layer that does not wipe
the saved file, and the fd count over open/remove cycles (``layer_registry.add_slide`` and ``viewer.open``).
"""

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from napari.layers import Image, Shapes
from napari.utils.notifications import NotificationSeverity, notification_manager

from _slides import make_corpus, open_fds
from napari_pathomics.cli import main
from napari_pathomics.widgets import layer_registry
from napari_pathomics.widgets.io import get_reader
from napari_pathomics.widgets.roi_widget import RoiTilesWidget
from napari_pathomics.widgets.slide_widget import SlideWidget
from napari_pathomics.wsi.roi_store import sidecar_path
from napari_pathomics.wsi.synthetic import write_slide

pytestmark = [pytest.mark.viewer, pytest.mark.slow]

MPP = 0.5


@pytest.fixture
def marked_slide(tmp_path):
    """White slide with a black square over level-0 px x 2000..2099, y 1000..1099."""
    img = np.full((3000, 4000, 3), 255, dtype=np.uint8)
    img[1000:1100, 2000:2100] = 0
    return write_slide(tmp_path / "marked.svs", img, mpp=MPP, fmt="svs", compression="none")


def test_reader_gives_lazy_multiscale_in_microns(make_napari_viewer, pyramid_svs):
    viewer = make_napari_viewer()
    reader = get_reader(str(pyramid_svs))
    assert reader is not None and get_reader("x.png") is None
    layers = [viewer._add_layer_from_data(*t)[0] for t in reader(str(pyramid_svs))]
    (img,) = layers  # the ROI layer follows the first frame: the slide is drawn first
    assert not any(isinstance(ly, Shapes) for ly in viewer.layers)
    rois = layer_registry.roi_layer_of(viewer, layer_registry.slide_of(img))
    assert isinstance(img, Image) and img.multiscale and img.rgb
    assert len(img.data) >= 4 and all(hasattr(lv, "dask") for lv in img.data)
    np.testing.assert_allclose(img.scale, (0.25, 0.25))
    assert tuple(str(u) for u in img.units) == ("micrometer", "micrometer")
    assert isinstance(rois, Shapes) and rois.metadata["pathomics_role"] == "rois"


def test_screenshot_shows_the_slide(make_napari_viewer, sample_slide_path):
    viewer = make_napari_viewer(show=True)
    layer_registry.add_slide(viewer, sample_slide_path)
    viewer.reset_view()
    shot = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    # real H&E fills a good part of the canvas: bright glass with pink/purple tissue, never black
    painted = shot.sum(-1) > 0
    assert painted.mean() > 0.3
    assert shot[painted].mean() > 150
    pinkish = (shot[..., 0] > shot[..., 1] + 20) & (shot[..., 2] > shot[..., 1] + 5)
    assert pinkish[painted].mean() > 0.02


def test_roi_drawn_in_world_microns_exports_level0_pixels(make_napari_viewer, marked_slide, tmp_path):
    viewer = make_napari_viewer(show=True)
    img = layer_registry.add_slide(viewer, marked_slide)
    rois = layer_registry.roi_layer_of(viewer, layer_registry.slide_of(img))
    # the pathologist outlines the black square: its pixel edges in world µm
    y0, y1 = (1000 - 0.5) * MPP, (1100 - 0.5) * MPP
    x0, x1 = (2000 - 0.5) * MPP, (2100 - 0.5) * MPP
    world = np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]])
    rois.add_polygons([np.array([rois.world_to_data(p) for p in world])])
    out = tmp_path / "rois.geojson"
    widget = RoiTilesWidget(viewer)
    assert widget.export_rois(out) == 1
    coords = np.array(json.loads(out.read_text())["features"][0]["geometry"]["coordinates"][0])
    assert np.abs(coords[:, 0].min() - 2000) <= 0.5 and np.abs(coords[:, 0].max() - 2100) <= 0.5
    assert np.abs(coords[:, 1].min() - 1000) <= 0.5 and np.abs(coords[:, 1].max() - 1100) <= 0.5
    # what the slide shows under the polygon, at level 0 and at a coarse level
    centre = np.array([(y0 + y1) / 2, (x0 + x1) / 2])
    outside = centre + np.array([0.0, 80 * MPP])
    for zoom_level in (0, img.level_shapes.shape[0] - 1):
        viewer.camera.center = tuple(centre)
        viewer.camera.zoom = 4.0 if zoom_level == 0 else 0.02
        viewer.window._qt_viewer.canvas.on_draw(None) if hasattr(viewer.window._qt_viewer, "canvas") else None
        level = img.data_level
        assert (level == 0) == (zoom_level == 0)
        ds = img.downsample_factors[level][0]
        data = np.asarray(img.data[level])
        cy, cx = (centre / MPP / ds).round().astype(int)
        oy, ox = (outside / MPP / ds).round().astype(int)
        assert data[cy, cx].max() < 60 and data[oy, ox].min() > 200
    shot = viewer.screenshot(canvas_only=True, flash=False)
    assert shot[..., :3].min() < 100  # the marked square is visible


def test_roi_autosave_and_reopen(make_napari_viewer, pyramid_svs):
    viewer = make_napari_viewer()
    img = layer_registry.add_slide(viewer, pyramid_svs)
    slide = layer_registry.slide_of(img)
    rois = layer_registry.roi_layer_of(viewer, slide)
    rois.add_rectangles(np.array([[100.0, 100.0], [100.0, 900.0], [700.0, 900.0], [700.0, 100.0]]))
    rois.add_ellipses(np.array([[1500.0, 1500.0], [1500.0, 2500.0], [2000.0, 2500.0], [2000.0, 1500.0]]))
    saved = json.loads(sidecar_path(pyramid_svs).read_text())
    assert len(saved["features"]) == 2
    rois.selected_data = {0}
    rois.remove_selected()
    assert len(json.loads(sidecar_path(pyramid_svs).read_text())["features"]) == 1
    viewer.layers.clear()
    img2 = layer_registry.add_slide(viewer, pyramid_svs)
    back = layer_registry.roi_layer_of(viewer, layer_registry.slide_of(img2))
    assert len(back.data) == 1
    xs = back.data[0][:, 1]
    assert xs.min() == pytest.approx(1500, abs=2) and xs.max() == pytest.approx(2500, abs=2)


def test_widget_tiles_equal_cli(make_napari_viewer, pyramid_svs, tmp_path, capsys):
    roi = tmp_path / "roi.geojson"
    roi.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "geometry": {
                            "type": "Polygon",
                            "coordinates": [[[200, 300], [3500, 250], [3300, 2900], [400, 2700], [200, 300]]],
                        },
                        "properties": {
                            "objectType": "annotation",
                            "classification": {"name": "Tumor", "color": [200, 0, 0]},
                        },
                    }
                ],
            }
        )
    )
    viewer = make_napari_viewer()
    layer_registry.add_slide(viewer, pyramid_svs)
    w = RoiTilesWidget(viewer)
    assert w.import_rois(roi) == 1
    grid = w.preview_tiles()
    assert grid is not None and len(grid) > 0
    capsys.readouterr()
    assert main(["tiles", str(pyramid_svs), "--roi", str(roi), "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert cli["tile_count"] == len(grid)
    assert cli["origins"] == grid.origins.tolist()
    overlay = [ly for ly in viewer.layers if ly.metadata.get("pathomics_role") == "tile_grid"]
    assert len(overlay) == 1


def test_many_tiles_are_one_overlay_layer(make_napari_viewer, pyramid_svs):
    viewer = make_napari_viewer()
    layer_registry.add_slide(viewer, pyramid_svs)
    w = RoiTilesWidget(viewer)
    w.tile_um.setValue(5.0)
    w.mpp.setValue(0.25)
    w.min_tissue.setValue(0.0)
    tissue = w.detect_tissue()
    tissue.data[:] = 1  # the pathologist paints everything as tissue
    grid = w.preview_tiles()
    assert len(grid) >= 20_000
    overlay = [ly for ly in viewer.layers if ly.metadata.get("pathomics_role") == "tile_grid"]
    assert len(overlay) == 1 and overlay[0].data.ndim == 3
    assert str(len(grid)) in w.tile_count.text()


def test_slide_widget_facts_and_missing_mpp(make_napari_viewer, tmp_path, he_image):
    p = write_slide(tmp_path / "nompp.tif", he_image[:1024, :1024], mpp=None, fmt="tiff", min_size=256)
    viewer = make_napari_viewer()
    w = SlideWidget(viewer)
    w.open_path(p)
    img = layer_registry.active_slide_layer(viewer)
    assert img is not None and "unknown" in w.fields["µm/px"].text()
    assert "pixel size" in w.mpp_note.text()
    # no pre-filled guess: the box asks, and Set with nothing entered sets nothing
    assert w.mpp_spin.value() == 0 and w.mpp_spin.text() == "enter µm/px"
    w._apply_mpp()
    assert not layer_registry.slide_of(img).has_mpp
    w.mpp_spin.setValue(0.5)
    w._apply_mpp()
    np.testing.assert_allclose(img.scale, (0.5, 0.5))
    assert "0.5000" in w.fields["µm/px"].text() and "set by the user" in w.fields["µm/px"].text()
    rois = layer_registry.roi_layer_of(viewer, layer_registry.slide_of(img))
    np.testing.assert_allclose(rois.scale, (0.5, 0.5))


def test_bad_slide_in_viewer_is_a_notification(make_napari_viewer, tmp_path, pyramid_svs):
    viewer = make_napari_viewer()
    layer_registry.add_slide(viewer, pyramid_svs)
    rois = layer_registry.roi_layer_of(viewer, layer_registry.slide_of(viewer.layers[0]))
    rois.add_rectangles(np.array([[10.0, 10.0], [10.0, 90.0], [90.0, 90.0], [90.0, 10.0]]))
    bad = tmp_path / "bad.svs"
    bad.write_bytes(b"garbage" * 100)
    w = SlideWidget(viewer)
    w.open_path(bad)  # must not raise
    assert len(rois.data) == 1 and len(viewer.layers) == 2


def test_npe2_open_sample_open_and_save(make_napari_viewer, pyramid_svs, tmp_path):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-pathomics", "cmu1-small-region")
    assert viewer.layers[0].multiscale and viewer.layers[0].data[0].shape == (2967, 2220, 3)
    assert viewer.scale_bar.visible  # the sample, like File ▸ Open, turns the µm scale bar on
    viewer.layers.clear()
    viewer.scale_bar.visible = False
    (img,) = viewer.open(str(pyramid_svs), plugin="napari-pathomics")
    assert viewer.scale_bar.visible and tuple(str(u) for u in img.units) == ("micrometer", "micrometer")
    rois = layer_registry.roi_layer_of(viewer, layer_registry.slide_of(img))
    rois.add_polygons([np.array([[100.0, 200.0], [100.0, 600.0], [500.0, 400.0]])])
    out = tmp_path / "saved.geojson"
    rois.save(str(out), plugin="napari-pathomics")
    feats = json.loads(out.read_text())["features"]
    assert len(feats) == 1 and feats[0]["properties"]["objectType"] == "annotation"
    xs = [p[0] for p in feats[0]["geometry"]["coordinates"][0]]
    assert min(xs) == pytest.approx(200) and max(xs) == pytest.approx(600)
    # dropping the GeoJSON back onto the slide adds an ROI layer with the same geometry
    back = viewer.open(str(out), plugin="napari-pathomics")[0]
    np.testing.assert_allclose(back.data[0], rois.data[0])


def test_plain_shapes_layer_in_microns_saves_as_level0(make_napari_viewer, marked_slide, tmp_path):
    viewer = make_napari_viewer()
    layer_registry.add_slide(viewer, marked_slide)
    y0, x0 = (1000 - 0.5) * MPP, (2000 - 0.5) * MPP
    y1, x1 = (1100 - 0.5) * MPP, (2100 - 0.5) * MPP
    plain = viewer.add_shapes(
        [np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]])], shape_type="rectangle", units=("um", "um")
    )
    out = tmp_path / "plain.geojson"
    plain.save(str(out), plugin="napari-pathomics")
    ring = np.array(json.loads(out.read_text())["features"][0]["geometry"]["coordinates"][0])
    assert ring[:, 0].min() == pytest.approx(2000) and ring[:, 0].max() == pytest.approx(2100)
    assert ring[:, 1].min() == pytest.approx(1000) and ring[:, 1].max() == pytest.approx(1100)


# ---- bad input, lost work, leaked handles ------------------------------------------------------
def test_open_close_slides_leaks_no_file_handles(make_napari_viewer, pyramid_svs):
    viewer = make_napari_viewer()
    layer_registry.add_slide(viewer, pyramid_svs)  # warm-up: GL, caches, lazy imports
    viewer.layers.clear()
    start = open_fds()
    for _ in range(10):
        img = layer_registry.add_slide(viewer, pyramid_svs)
        np.asarray(img.data[-1])  # read pixels so the file is really in use
        viewer.layers.clear()
    assert open_fds() <= start


def test_bad_geojson_and_bad_slide_keep_drawings(make_napari_viewer, pyramid_svs, tmp_path):
    viewer = make_napari_viewer()
    layer_registry.add_slide(viewer, pyramid_svs)
    rois = layer_registry.roi_layer_of(viewer, layer_registry.slide_of(viewer.layers[0]))
    rois.add_rectangles(np.array([[10.0, 10.0], [10.0, 90.0], [90.0, 90.0], [90.0, 10.0]]))
    w = RoiTilesWidget(viewer)
    for text in (
        "{not json",
        '{"type": "FeatureCollection", "features": []}',
        '{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": '
        '[[[1e9, 1e9], [1e9, 2e9], [2e9, 2e9], [1e9, 1e9]]]}, "properties": {}}',
    ):
        bad = tmp_path / "bad.geojson"
        bad.write_text(text)
        assert w.import_rois(bad) == 0
    junk = tmp_path / "junk.svs"
    junk.write_bytes(b"\x00" * 1000)
    SlideWidget(viewer).open_path(junk)
    assert len(rois.data) == 1 and len(viewer.layers) == 2
    assert len(json.loads(sidecar_path(pyramid_svs).read_text())["features"]) == 1
    # the viewer still works: another slide opens
    layer_registry.add_slide(viewer, pyramid_svs)
    assert len(viewer.layers) == 4


def test_unreadable_autosave_is_kept_aside_not_overwritten(make_napari_viewer, pyramid_svs):
    side = sidecar_path(pyramid_svs)
    side.write_text("{ this was the pathologist's work, damaged")
    viewer = make_napari_viewer()
    layer_registry.add_slide(viewer, pyramid_svs)
    kept = list(side.parent.glob(side.name + ".unreadable-*"))
    assert len(kept) == 1 and "pathologist" in kept[0].read_text()


RECT = np.array([[10.0, 10.0], [10.0, 90.0], [90.0, 90.0], [90.0, 10.0]])


class _Notes:
    """Notifications shown since creation (napari's manager keeps every record)."""

    def __init__(self) -> None:
        self.start = len(notification_manager.records)

    def new(self, severity: NotificationSeverity | None = None) -> list[str]:
        recs = notification_manager.records[self.start :]
        return [str(r.message) for r in recs if severity is None or r.severity == severity]


def _viewer_with_drawing(make_napari_viewer, slide: Path):
    viewer = make_napari_viewer()
    layer_registry.add_slide(viewer, slide)
    rois = layer_registry.roi_layer_of(viewer, layer_registry.slide_of(viewer.layers[0]))
    rois.add_rectangles(RECT)
    return viewer, rois


def _saved_features(slide: Path) -> int:
    return len(json.loads(sidecar_path(slide).read_text())["features"])


def test_every_broken_slide_is_one_notification_and_the_viewer_keeps_working(make_napari_viewer, pyramid_svs, tmp_path):
    logging.getLogger("tifffile").setLevel(logging.CRITICAL)
    corpus = {
        k: v
        for k, v in make_corpus(tmp_path / "bad").items()
        if k not in ("good.svs", "striped.tif", "no-mpp.tif", "odd path")
    }
    viewer, rois = _viewer_with_drawing(make_napari_viewer, pyramid_svs)
    dock = SlideWidget(viewer)
    for name, path in corpus.items():
        notes = _Notes()
        dock.open_path(path)  # must not raise
        errors = notes.new(NotificationSeverity.ERROR)
        assert len(errors) == 1 and name in errors[0] and errors[0].startswith("cannot open slide: "), errors
    assert len(viewer.layers) == 2 and len(rois.data) == 1 and _saved_features(pyramid_svs) == 1
    img = layer_registry.add_slide(viewer, corpus["zero.svs"].parent / "good.svs")  # still opens slides
    assert len(viewer.layers) == 4 and np.asarray(img.data[-1]).size > 0


def test_broken_slide_through_napari_open(make_napari_viewer, pyramid_svs, tmp_path):
    viewer, rois = _viewer_with_drawing(make_napari_viewer, pyramid_svs)
    bad = tmp_path / "trunc.svs"
    bad.write_bytes(pyramid_svs.read_bytes()[:4000])
    notes = _Notes()
    with pytest.raises(Exception) as info:  # napari wraps the reader's error in its own
        viewer.open(str(bad), plugin="napari-pathomics")
    assert "trunc.svs" in str(info.value)
    errors = notes.new(NotificationSeverity.ERROR)
    assert len(errors) == 1 and "cannot open trunc.svs" in errors[0]
    assert len(viewer.layers) == 2 and len(rois.data) == 1
    added = viewer.open(str(pyramid_svs), plugin="napari-pathomics")  # and it still works
    assert len(added) == 1 and layer_registry.roi_layer_of(viewer, layer_registry.slide_of(added[0])) is not None


def test_self_intersecting_import_is_repaired_with_a_warning(make_napari_viewer, pyramid_svs, tmp_path):
    viewer, rois = _viewer_with_drawing(make_napari_viewer, pyramid_svs)
    bowtie = {
        "type": "Feature",
        "properties": {"objectType": "annotation"},
        "geometry": {"type": "Polygon", "coordinates": [[[100, 100], [900, 900], [900, 100], [100, 900], [100, 100]]]},
    }
    p = tmp_path / "bowtie.geojson"
    p.write_text(json.dumps(bowtie))
    notes = _Notes()
    assert RoiTilesWidget(viewer).import_rois(p) == 1
    warns = notes.new(NotificationSeverity.WARNING)
    assert any("bowtie.geojson" in w and "repaired" in w for w in warns), warns
    assert _saved_features(pyramid_svs) >= 2  # the drawing and the repaired import (2 triangles or 1 multi)
    assert len(rois.data) >= 2


def test_autosave_that_cannot_be_written_keeps_the_drawing(make_napari_viewer, pyramid_svs):
    viewer, rois = _viewer_with_drawing(make_napari_viewer, pyramid_svs)
    side = sidecar_path(pyramid_svs)
    side.unlink()
    side.mkdir()  # the save target is now a folder: os.replace fails
    notes = _Notes()
    rois.add_rectangles(RECT + 200)
    errors = notes.new(NotificationSeverity.ERROR)
    assert errors and errors[0].startswith("ROI autosave failed: "), errors
    assert len(rois.data) == 2  # nothing drawn is lost from the layer
    side.rmdir()
    rois.add_rectangles(RECT + 400)  # the next change saves everything again
    assert _saved_features(pyramid_svs) == 3


def test_deleting_the_roi_layer_does_not_wipe_the_saved_rois(make_napari_viewer, pyramid_svs):
    viewer, rois = _viewer_with_drawing(make_napari_viewer, pyramid_svs)
    viewer.layers.remove(rois)
    assert _saved_features(pyramid_svs) == 1
    viewer.layers.clear()
    layer_registry.add_slide(viewer, pyramid_svs)  # reopening restores them
    again = layer_registry.roi_layer_of(viewer, layer_registry.slide_of(viewer.layers[0]))
    assert len(again.data) == 1


def test_open_remove_cycles_through_napari_open_leak_no_handles(make_napari_viewer, pyramid_svs, tmp_path):
    copies = [shutil.copy(pyramid_svs, tmp_path / f"c{i}.svs") for i in range(2)]
    viewer = make_napari_viewer()
    for c in copies:  # warm-up: GL, caches, lazy imports
        viewer.open(str(c), plugin="napari-pathomics")
    viewer.layers.clear()
    start = open_fds()
    for i in range(10):
        layers = viewer.open(str(copies[i % 2]), plugin="napari-pathomics")
        np.asarray(layers[0].data[-1])  # read pixels so the file is really in use
        for ly in layers if i % 2 else layers[::-1]:  # image first, or ROIs first
            viewer.layers.remove(ly)
    assert open_fds() <= start, f"{open_fds() - start} handles leaked over 10 cycles"
