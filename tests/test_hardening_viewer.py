"""Hardening in the real viewer (Xvfb): bad input is a notification, the viewer keeps working, and
no drawn annotation is lost. Complements ``tests/test_robustness_viewer.py`` (session.add_slide fd
check, bad GeoJSON keeps drawings, damaged autosave kept aside) with: the whole broken-slide
corpus through the Slide dock AND through napari's own ``viewer.open`` (npe2 reader) with the
notification each one produces, a self-intersecting import repaired with a warning, an autosave
that cannot be written (notification, drawing kept in the layer), a deleted ROI layer that does
not wipe the saved file, and the fd count over 10 open/remove cycles through ``viewer.open``
with layers removed one by one in either order.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from napari.utils.notifications import NotificationSeverity, notification_manager

from napari_pathomics.wsi.roi_store import sidecar_path
from napari_pathomics.widgets import session
from napari_pathomics.widgets.roi_widget import RoiTilesWidget
from napari_pathomics.widgets.slide_widget import SlideWidget

from _badfiles import make_corpus

pytestmark = pytest.mark.viewer

RECT = np.array([[10.0, 10.0], [10.0, 90.0], [90.0, 90.0], [90.0, 10.0]])


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class _Notes:
    """Notifications shown since creation (napari's manager keeps every record)."""

    def __init__(self) -> None:
        self.start = len(notification_manager.records)

    def new(self, severity: NotificationSeverity | None = None) -> list[str]:
        recs = notification_manager.records[self.start:]
        return [str(r.message) for r in recs if severity is None or r.severity == severity]


def _viewer_with_drawing(make_napari_viewer, slide: Path):
    viewer = make_napari_viewer()
    session.add_slide(viewer, slide)
    rois = session.roi_layer_of(viewer, session.slide_of(viewer.layers[0]))
    rois.add_rectangles(RECT)
    return viewer, rois


def _saved_features(slide: Path) -> int:
    return len(json.loads(sidecar_path(slide).read_text())["features"])


def test_every_broken_slide_is_one_notification_and_the_viewer_keeps_working(make_napari_viewer, pyramid_svs, tmp_path):
    logging.getLogger("tifffile").setLevel(logging.CRITICAL)
    corpus = {k: v for k, v in make_corpus(tmp_path / "bad").items()
              if k not in ("good.svs", "striped.tif", "no-mpp.tif", "odd path")}
    viewer, rois = _viewer_with_drawing(make_napari_viewer, pyramid_svs)
    dock = SlideWidget(viewer)
    for name, path in corpus.items():
        notes = _Notes()
        dock.open_path(path)  # must not raise
        errors = notes.new(NotificationSeverity.ERROR)
        assert len(errors) == 1 and name in errors[0] and errors[0].startswith("cannot open slide: "), errors
    assert len(viewer.layers) == 2 and len(rois.data) == 1 and _saved_features(pyramid_svs) == 1
    img = session.add_slide(viewer, corpus["zero.svs"].parent / "good.svs")  # still opens slides
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
    assert len(viewer.open(str(pyramid_svs), plugin="napari-pathomics")) == 2  # and it still works


def test_self_intersecting_import_is_repaired_with_a_warning(make_napari_viewer, pyramid_svs, tmp_path):
    viewer, rois = _viewer_with_drawing(make_napari_viewer, pyramid_svs)
    bowtie = {"type": "Feature", "properties": {"objectType": "annotation"},
              "geometry": {"type": "Polygon", "coordinates": [[[100, 100], [900, 900], [900, 100], [100, 900], [100, 100]]]}}
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
    session.add_slide(viewer, pyramid_svs)  # reopening restores them
    again = session.roi_layer_of(viewer, session.slide_of(viewer.layers[0]))
    assert len(again.data) == 1


def test_open_remove_cycles_through_napari_open_leak_no_handles(make_napari_viewer, pyramid_svs, tmp_path):
    copies = [shutil.copy(pyramid_svs, tmp_path / f"c{i}.svs") for i in range(2)]
    viewer = make_napari_viewer()
    for c in copies:  # warm-up: GL, caches, lazy imports
        viewer.open(str(c), plugin="napari-pathomics")
    viewer.layers.clear()
    start = _fds()
    for i in range(10):
        layers = viewer.open(str(copies[i % 2]), plugin="napari-pathomics")
        np.asarray(layers[0].data[-1])  # read pixels so the file is really in use
        for ly in (layers if i % 2 else layers[::-1]):  # image first, or ROIs first
            viewer.layers.remove(ly)
    assert _fds() <= start, f"{_fds() - start} handles leaked over 10 cycles"
