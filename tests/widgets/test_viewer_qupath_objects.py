"""A pathologist's QuPath objects through the real viewer: shown, kept, and exported unchanged (issue 10).

A QuPath 0.4-style export with an ROI, point annotations of two classes, a cell with its nucleus,
a detection and a tile is imported through the ROIs dock: the ROI goes into the ROI layer, the
points into one Points layer per class (names, class and colour kept), cells/detections/tiles into
one layer with their measurements as features. Deleting the ROI in the viewer keeps every other
object in the autosave; reopening the slide shows them again; exporting writes them back verbatim.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from napari.layers import Points

from _slides import small_slide
from napari_pathomics.layers import ROLE, ROLE_QUPATH_CELLS, ROLE_QUPATH_POINTS
from napari_pathomics.widgets import layer_registry
from napari_pathomics.widgets.roi_widget import RoiTilesWidget
from napari_pathomics.wsi.roi_store import sidecar_path

pytestmark = [pytest.mark.viewer, pytest.mark.slow]


def _sq(x0: float, y0: float, s: float) -> dict:
    return {"type": "Polygon", "coordinates": [[[x0, y0], [x0 + s, y0], [x0 + s, y0 + s], [x0, y0 + s], [x0, y0]]]}


FEATURES = [
    {
        "type": "Feature",
        "id": "00000000-0000-4000-8000-000000000001",
        "geometry": _sq(100, 100, 600),
        "properties": {
            "objectType": "annotation",
            "name": "tumour",
            "isLocked": True,
            "classification": {"names": ["Tumor", "Positive"], "color": [200, 0, 0]},
            "unknownField": [1, 2],
        },
    },
    {
        "type": "Feature",
        "id": "00000000-0000-4000-8000-000000000002",
        "geometry": {"type": "MultiPoint", "coordinates": [[150, 160], [170, 180], [190, 200]]},
        "properties": {
            "objectType": "annotation",
            "name": "lymphocytes",
            "classification": {"name": "Immune cells", "color": [160, 90, 160]},
        },
    },
    {
        "type": "Feature",
        "id": "00000000-0000-4000-8000-000000000003",
        "geometry": {"type": "Point", "coordinates": [800.0, 600.0]},
        "properties": {
            "objectType": "annotation",
            "name": "calibration",
            "classification": {"name": "Other", "color": [0, 200, 0]},
        },
    },
    {
        "type": "Feature",
        "id": "00000000-0000-4000-8000-000000000004",
        "geometry": _sq(300, 300, 30),
        "nucleusGeometry": _sq(310, 310, 10),
        "properties": {
            "objectType": "cell",
            "classification": {"name": "Tumor", "color": [200, 0, 0]},
            "measurements": {"Nucleus: Area µm^2": 25.0, "Cell: Area µm^2": 225.0},
        },
    },
    {
        "type": "Feature",
        "id": "00000000-0000-4000-8000-000000000005",
        "geometry": _sq(900, 500, 20),
        "properties": {
            "objectType": "detection",
            "classification": {"name": "Stroma", "colorRGB": -6895466},
            "measurements": [{"name": "Hematoxylin OD mean", "value": 0.3}],
        },
    },
    {
        "type": "Feature",
        "id": "00000000-0000-4000-8000-000000000006",
        "geometry": _sq(1024, 512, 256),
        "properties": {"objectType": "tile", "measurements": {"prob_TUM": 0.9}},
    },
]


def _layers(viewer, role: str) -> list:
    return [ly for ly in viewer.layers if ly.metadata.get(ROLE) == role]


def _check_object_layers(viewer) -> None:
    points = {ly.metadata["classification"]: ly for ly in _layers(viewer, ROLE_QUPATH_POINTS)}
    assert sorted(points) == ["Immune cells", "Other"]
    imm = points["Immune cells"]
    assert isinstance(imm, Points) and len(imm.data) == 3
    np.testing.assert_allclose(imm.data, [[160, 150], [180, 170], [200, 190]])  # (y, x) level-0 px
    assert list(imm.features["name"]) == ["lymphocytes"] * 3
    np.testing.assert_allclose(imm.face_color[0][:3], np.array([160, 90, 160]) / 255, atol=1 / 255)
    (cells,) = _layers(viewer, ROLE_QUPATH_CELLS)
    assert list(cells.features["kind"]) == ["cell", "detection", "tile"]
    np.testing.assert_allclose(cells.features["Nucleus: Area µm^2"], [25.0, np.nan, np.nan])
    np.testing.assert_allclose(cells.features["Hematoxylin OD mean"], [np.nan, 0.3, np.nan])
    # the layers sit on the slide: same world transform as its image
    img = layer_registry.active_slide_layer(viewer)
    np.testing.assert_allclose(imm.scale, img.scale[-2:])


def test_qupath_objects_are_shown_kept_and_exported_unchanged(make_napari_viewer, tmp_path: Path) -> None:
    slide_path = small_slide(tmp_path / "case.svs")
    src = tmp_path / "qupath.geojson"
    src.write_text(json.dumps({"type": "FeatureCollection", "features": FEATURES}))
    viewer = make_napari_viewer()
    layer_registry.add_slide(viewer, slide_path)
    w = RoiTilesWidget(viewer)
    assert w.import_rois(src) == 1
    assert "5 other QuPath object(s) kept" in w.roi_status.text()
    _check_object_layers(viewer)

    # export: everything written back as it was read
    out = tmp_path / "export.geojson"
    assert w.export_rois(out) == 1
    assert json.loads(out.read_text())["features"] == FEATURES

    # delete the ROI in the viewer: the autosave keeps the five other objects, verbatim
    slide = layer_registry.slide_of(layer_registry.active_slide_layer(viewer))
    rois = layer_registry.roi_layer_of(viewer, slide)
    rois.selected_data = {0}
    rois.remove_selected()
    saved = json.loads(sidecar_path(slide_path).read_text())["features"]
    assert saved == FEATURES[1:]

    # reopen the slide: the points and cells come back from the autosave
    viewer.layers.clear()
    layer_registry.add_slide(viewer, slide_path)
    _check_object_layers(viewer)
    slide = layer_registry.slide_of(layer_registry.active_slide_layer(viewer))
    assert len(layer_registry.roi_layer_of(viewer, slide).data) == 0


def test_cells_are_outlined_when_zoomed_in_and_only_then(make_napari_viewer, qtbot, tmp_path: Path) -> None:
    from napari_pathomics.layers import OUTLINE_MIN_ZOOM, ROLE_QUPATH_OUTLINES

    slide_path = small_slide(tmp_path / "case.svs", mpp=0.5)
    src = tmp_path / "qupath.geojson"
    src.write_text(json.dumps({"type": "FeatureCollection", "features": FEATURES}))
    viewer = make_napari_viewer()
    layer_registry.add_slide(viewer, slide_path)
    RoiTilesWidget(viewer).import_rois(src)
    viewer.reset_view()
    assert viewer.camera.zoom < OUTLINE_MIN_ZOOM
    assert layer_registry.refresh_qupath_outlines(viewer) == 0  # zoomed out: centroids only
    # zoom onto the cell (level-0 px 300..330 at 0.5 µm/px): outlines follow the camera
    viewer.camera.center = (315 * 0.5, 315 * 0.5)
    viewer.camera.zoom = 4 * OUTLINE_MIN_ZOOM
    qtbot.waitUntil(
        lambda: bool(_layers(viewer, ROLE_QUPATH_OUTLINES)) and len(_layers(viewer, ROLE_QUPATH_OUTLINES)[0].data) > 0,
        timeout=5_000,
    )
    (outlines,) = _layers(viewer, ROLE_QUPATH_OUTLINES)
    rings = [np.asarray(d) for d in outlines.data]
    assert any(
        np.allclose(sorted(map(tuple, r)), sorted([(300, 300), (300, 330), (330, 330), (330, 300)])) for r in rings
    )  # the cell, in level-0 px like the slide's other geometry
    assert any(
        np.allclose(sorted(map(tuple, r)), sorted([(310, 310), (310, 320), (320, 320), (320, 310)])) for r in rings
    )  # and its nucleus
    np.testing.assert_allclose(outlines.scale, layer_registry.active_slide_layer(viewer).scale[-2:])
    # zoom out again: the outlines go, the centroids stay
    viewer.reset_view()
    qtbot.waitUntil(lambda: len(outlines.data) == 0, timeout=5_000)


def test_the_import_button_reads_and_repairs_in_a_worker(make_napari_viewer, qtbot, tmp_path: Path) -> None:
    """A scribbled 3 000-vertex ROI is repaired off the UI thread; a broken file is one notification."""
    from napari.utils.notifications import NotificationSeverity, notification_manager

    slide_path = small_slide(tmp_path / "case.svs")
    pts = np.random.default_rng(0).uniform(50, 1000, (3_000, 2)).tolist()
    scribble = tmp_path / "scribble.geojson"
    scribble.write_text(
        json.dumps(
            {
                "type": "Feature",
                "properties": {"objectType": "annotation"},
                "geometry": {"type": "Polygon", "coordinates": [pts + [pts[0]]]},
            }
        )
    )
    broken = tmp_path / "broken.geojson"
    broken.write_text('{"type": "FeatureCollection", "features": [')
    viewer = make_napari_viewer()
    layer_registry.add_slide(viewer, slide_path)
    w = RoiTilesWidget(viewer)
    start = len(notification_manager.records)
    assert w.import_rois_in_background(scribble) is not None
    qtbot.waitUntil(lambda: w.import_worker is None, timeout=120_000)  # (finished may come before a waitSignal)
    rois = layer_registry.roi_layer_of(viewer, layer_registry.slide_of(layer_registry.active_slide_layer(viewer)))
    assert len(layer_registry.layer_annotations(rois)) >= 1 and "imported from scribble.geojson" in w.roi_status.text()
    warnings = [
        str(r.message) for r in notification_manager.records[start:] if r.severity == NotificationSeverity.WARNING
    ]
    assert any("even-odd" in m for m in warnings), warnings  # the repair is said
    start = len(notification_manager.records)
    assert w.import_rois_in_background(broken) is not None
    qtbot.waitUntil(lambda: w.import_worker is None, timeout=60_000)
    errors = [str(r.message) for r in notification_manager.records[start:] if r.severity == NotificationSeverity.ERROR]
    assert len(errors) == 1 and "not valid JSON" in errors[0] and "unexpected" not in errors[0], errors
    assert "not imported" in w.roi_status.text()
