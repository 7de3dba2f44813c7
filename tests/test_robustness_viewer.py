"""Hardening in the viewer: no leaked file handles, bad input is a notification, nothing lost."""

import json
import os

import numpy as np
import pytest

from napari_pathomics.wsi.roi_store import sidecar_path
from napari_pathomics.widgets import session
from napari_pathomics.widgets.roi_widget import RoiTilesWidget
from napari_pathomics.widgets.slide_widget import SlideWidget

pytestmark = pytest.mark.viewer


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_open_close_slides_leaks_no_file_handles(make_napari_viewer, pyramid_svs):
    viewer = make_napari_viewer()
    session.add_slide(viewer, pyramid_svs)  # warm-up: GL, caches, lazy imports
    viewer.layers.clear()
    start = _fds()
    for _ in range(10):
        img = session.add_slide(viewer, pyramid_svs)
        np.asarray(img.data[-1])  # read pixels so the file is really in use
        viewer.layers.clear()
    assert _fds() <= start


def test_bad_geojson_and_bad_slide_keep_drawings(make_napari_viewer, pyramid_svs, tmp_path):
    viewer = make_napari_viewer()
    session.add_slide(viewer, pyramid_svs)
    rois = session.roi_layer_of(viewer, session.slide_of(viewer.layers[0]))
    rois.add_rectangles(np.array([[10.0, 10.0], [10.0, 90.0], [90.0, 90.0], [90.0, 10.0]]))
    w = RoiTilesWidget(viewer)
    for text in ("{not json", '{"type": "FeatureCollection", "features": []}',
                 '{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": '
                 '[[[1e9, 1e9], [1e9, 2e9], [2e9, 2e9], [1e9, 1e9]]]}, "properties": {}}'):
        bad = tmp_path / "bad.geojson"
        bad.write_text(text)
        assert w.import_rois(bad) == 0
    junk = tmp_path / "junk.svs"
    junk.write_bytes(b"\x00" * 1000)
    SlideWidget(viewer).open_path(junk)
    assert len(rois.data) == 1 and len(viewer.layers) == 2
    assert len(json.loads(sidecar_path(pyramid_svs).read_text())["features"]) == 1
    # the viewer still works: another slide opens
    session.add_slide(viewer, pyramid_svs)
    assert len(viewer.layers) == 4


def test_unreadable_autosave_is_kept_aside_not_overwritten(make_napari_viewer, pyramid_svs):
    side = sidecar_path(pyramid_svs)
    side.write_text("{ this was the pathologist's work, damaged")
    viewer = make_napari_viewer()
    session.add_slide(viewer, pyramid_svs)
    kept = list(side.parent.glob(side.name + ".unreadable-*"))
    assert len(kept) == 1 and "pathologist" in kept[0].read_text()
