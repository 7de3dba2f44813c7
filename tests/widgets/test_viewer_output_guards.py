"""The docks' writers never overwrite a slide, an ROI file or a bundle (real viewer, real files).

The Score dock's report export (HTML + JSON twin), the ROI dock's GeoJSON export and the plugin's
napari writer (``write_rois``): each refused with one notification (the writer: an ``OutputError``,
which napari shows), the slide byte for byte unchanged.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from napari.utils.notifications import NotificationSeverity, notification_manager

from _bundles import tiny_bundle
from _slides import small_slide
from napari_pathomics.outputs import OutputError
from napari_pathomics.resources import DEFAULT_BUNDLE
from napari_pathomics.widgets import layer_registry
from napari_pathomics.widgets.io import write_rois
from napari_pathomics.widgets.roi_widget import RoiTilesWidget
from napari_pathomics.widgets.score_widget import ScoreWidget

pytestmark = [pytest.mark.viewer, pytest.mark.slow]

RECT = np.array([[64.0, 64.0], [64.0, 900.0], [700.0, 900.0], [700.0, 64.0]])


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _errors_since(start: int) -> list[str]:
    return [str(r.message) for r in notification_manager.records[start:] if r.severity == NotificationSeverity.ERROR]


def test_roi_export_and_napari_save_refuse_the_slide(make_napari_viewer, tmp_path) -> None:
    slide = small_slide(tmp_path / "case.svs")
    (tmp_path / "picture.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(16))
    before = {p.name: _sha(p) for p in (slide, tmp_path / "picture.png")}
    viewer = make_napari_viewer()
    layer_registry.add_slide(viewer, slide)
    rois = layer_registry.roi_layer_of(viewer, layer_registry.slide_of(viewer.layers[0]))
    rois.add_rectangles(RECT)
    dock = RoiTilesWidget(viewer)
    for target in (slide, tmp_path / "picture.png"):
        start = len(notification_manager.records)
        assert dock.export_rois(target) == 0
        errors = _errors_since(start)
        assert len(errors) == 1 and errors[0].startswith("export failed: "), errors
    data, attrs, _ = rois.as_layer_data_tuple()
    with pytest.raises(OutputError):
        write_rois(str(slide), data, attrs)
    assert {p.name: _sha(p) for p in (slide, tmp_path / "picture.png")} == before
    assert dock.export_rois(tmp_path / "rois.geojson") == 1  # a new file is fine


def test_score_dock_report_refuses_inputs_and_the_twin_on_one_file(make_napari_viewer, qtbot, tmp_path) -> None:
    slide = small_slide(tmp_path / "case.svs")
    bundle = tiny_bundle(tmp_path / "bundle", signature=json.loads((DEFAULT_BUNDLE / "signature.json").read_text()))
    viewer = make_napari_viewer()
    layer_registry.add_slide(viewer, slide)
    w = ScoreWidget(viewer)
    w.bundle_path.setText(str(bundle.path))
    worker = w.score()
    assert worker is not None
    with qtbot.waitSignal(worker.finished, timeout=180_000):
        pass
    qtbot.waitUntil(lambda: w.worker is None, timeout=10_000)
    assert w.patient_score is not None
    guarded = [slide, bundle.path / "manifest.json", bundle.path / "signature.json", bundle.path / "model.safetensors"]
    before = {str(p): _sha(p) for p in guarded}
    for target in (*guarded, bundle.path, tmp_path / "r.json"):
        start = len(notification_manager.records)
        assert w.export_report(target) is None, target
        errors = _errors_since(start)
        assert len(errors) == 1 and errors[0].startswith("report export failed: "), (target, errors)
    assert {str(p): _sha(p) for p in guarded} == before
    assert not (tmp_path / "case.json").exists() and not (tmp_path / "r.json").exists()
    html, js = w.export_report(tmp_path / "report.html")
    assert html.read_text().startswith("<!DOCTYPE html>") and json.loads(js.read_text())["patient_id"] == "case"
