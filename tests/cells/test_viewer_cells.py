"""The Analyze dock's Nuclei and Tumour proposal panel on the real viewer (Xvfb)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _cells_helpers import nuclei_slide, tile_results

from napari_pathomics.cells.methods import DEFAULT_METHOD
from napari_pathomics.layers import (
    OUTLINE_MAX_SHAPES,
    ROLE_NC_RATIO,
    ROLE_NUCLEI_DENSITY,
    ROLE_NUCLEI_OUTLINES,
    ROLE_TUMOUR_PROPOSAL,
    UNITS_KEY,
    nuclei_readout,
)
from napari_pathomics.widgets import layer_registry
from napari_pathomics.widgets.analyze_widget import AnalyzeWidget
from napari_pathomics.wsi.annotations import read_geojson
from napari_pathomics.wsi.roi_store import saved_rois_path

pytestmark = [pytest.mark.viewer, pytest.mark.slow]
MPP = 0.5
S = 224  # 112 µm tiles at 0.5 µm/px


@pytest.fixture
def planted_slide(tmp_path: Path) -> Path:
    path, _ = nuclei_slide(tmp_path / "planted.svs", side=4 * S, seed=7)
    return path


def _compute(qtbot, panel) -> None:  # noqa: ANN001 - qtbot and the panel are fixtures' objects
    worker = panel.compute()
    assert worker is not None
    # the panel clears ``worker`` when the run finishes; a cached run can finish before any
    # waitSignal would start listening, so wait on that state instead of the signal
    qtbot.waitUntil(lambda: panel.worker is None, timeout=180_000)


def test_nuclei_layers_lazy_outlines_and_hover(make_napari_viewer, qtbot, planted_slide: Path) -> None:
    viewer = make_napari_viewer(show=True)
    img = layer_registry.add_slide(viewer, planted_slide)
    slide = layer_registry.slide_of(img)
    dock = AnalyzeWidget(viewer)
    panel = dock.cells  # embedded in the Analyze dock
    assert panel.model.currentData() == DEFAULT_METHOD  # the chooser starts on the default, like the CLI
    _compute(qtbot, panel)
    res = panel.nuclei[str(slide.path)]
    assert res.complete and len(res.nuclei) > 100
    assert f"model {DEFAULT_METHOD}" in panel.status.text()  # the panel names the model it used
    dens = layer_registry.find_layer(viewer, slide, ROLE_NUCLEI_DENSITY)
    nc = layer_registry.find_layer(viewer, slide, ROLE_NC_RATIO)
    outlines = layer_registry.find_layer(viewer, slide, ROLE_NUCLEI_OUTLINES)
    assert dens is not None and nc is not None and outlines is not None
    assert dens.colorbar.visible and nc.colorbar.visible
    assert dens.metadata[UNITS_KEY] == "nuclei/mm²" and "nuclei/mm²" in dens.name
    assert tuple(str(u) for u in dens.units) == tuple(str(u) for u in img.units)
    # a tile's cell of the density layer sits on that tile
    row, col = 2, 1
    centre = np.array([(row * S + S / 2 - 0.5) * MPP, (col * S + S / 2 - 0.5) * MPP])
    assert tuple(np.round(dens.world_to_data(centre)).astype(int)) == (row, col)
    i = res.tile_at(col * S + 1, row * S + 1)
    assert dens.data[row, col] == pytest.approx(min(res.tile_values()["density_mm2"][i], dens.contrast_limits[1]))

    # zoomed out (the whole slide in view): no outlines at all
    viewer.reset_view()
    viewer.camera.zoom = 0.05
    qtbot.wait(50)
    panel.refresh_outlines()
    assert len(outlines.data) == 0
    # zoomed in on one tile: the nuclei of the visible area only, never more than the cap
    viewer.camera.center = tuple(centre)
    viewer.camera.zoom = 4.0
    qtbot.wait(100)
    img.refresh()
    qtbot.wait(100)
    n = panel.refresh_outlines()
    assert 0 < n <= OUTLINE_MAX_SHAPES and len(outlines.data) == n
    box = panel.visible_box(img)
    assert box is not None and (box[2] - box[0]) < 4 * S  # only part of the slide is in view
    assert n < len(res.nuclei)
    # hover read-out of a tile's nuclear values
    text = nuclei_readout(res, slide, tuple(centre))
    assert "nuclei" in text and "/mm²" in text and "N:C" in text
    viewer.cursor.position = tuple(centre)
    panel._on_mouse_move(viewer, None)
    assert "N:C" in panel.hover.text()

    # a second compute comes from the cache at once
    _compute(qtbot, panel)
    assert "from cache" in panel.status.text() or "done" in panel.status.text()


def test_proposal_accept_and_discard(make_napari_viewer, qtbot, planted_slide: Path) -> None:
    viewer = make_napari_viewer(show=True)
    img = layer_registry.add_slide(viewer, planted_slide)
    slide = layer_registry.slide_of(img)
    dock = AnalyzeWidget(viewer)
    panel = dock.cells
    roi_layer = layer_registry.roi_layer_of(viewer, slide)
    assert roi_layer is not None and len(roi_layer.data) == 0
    # no analysis yet: a warning, nothing proposed
    assert panel.propose() is None
    tum = np.zeros((4, 4), bool)
    tum[1:3, 1:4] = True
    dock.results[str(slide.path)] = tile_results(tum, tile_px=S, mpp=MPP)
    panel.threshold.setValue(0.5)
    panel.min_area.setValue(0.0)
    panel.smooth.setValue(0.0)
    ly = panel.propose()
    assert ly is not None and ly.metadata["pathomics_role"] == ROLE_TUMOUR_PROPOSAL
    assert len(roi_layer.data) == 0  # nothing the user drew (or did not) changes before Accept
    panel.discard()
    assert layer_registry.find_layer(viewer, slide, ROLE_TUMOUR_PROPOSAL) is None and len(roi_layer.data) == 0
    # the user draws an ROI, proposes, accepts: the drawn ROI stays, the proposal joins it, autosaved
    roi_layer.add(np.array([[0, 0], [0, 100], [100, 100], [100, 0]], float), shape_type="polygon")
    panel.propose()
    anns = panel.accept()
    assert len(anns) == 1 and anns[0].classification == "Tumor (proposed)"
    assert anns[0].geometry.area == pytest.approx(tum.sum() * S * S)
    assert layer_registry.find_layer(viewer, slide, ROLE_TUMOUR_PROPOSAL) is None
    saved = read_geojson(saved_rois_path(slide.path)).annotations
    assert sorted(a.classification for a in saved) == ["Tumor", "Tumor (proposed)"]
    assert len(layer_registry.layer_annotations(roi_layer)) == 2
