"""The "ROIs, tissue and tiles" dock: QuPath GeoJSON in/out, tissue detection, tiling preview."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import napari
from napari.layers import Labels, Shapes
from napari.qt.threading import thread_worker
from qtpy.QtWidgets import (
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..errors import PathomicsError
from ..layers import ROLE_TILE_GRID, ROLE_TISSUE, tile_grid_overlay, tissue_layer
from ..outputs import check_output
from ..units import DEFAULT_MPP, DEFAULT_TILE_UM
from ..wsi.annotations import Annotation, GeoObject, ReadResult, read_geojson, write_geojson
from ..wsi.slide import Slide
from ..wsi.tiling import DEFAULT_MIN_TISSUE, TileGrid, plan_tiles
from ..wsi.tissue import TissueMask, detect_tissue
from . import layer_registry, notices
from .controls import spin


def tissue_layer_of(viewer: napari.Viewer, slide: Slide) -> Labels | None:
    return layer_registry.find_layer(viewer, slide, ROLE_TISSUE, Labels)


def current_tissue(viewer: napari.Viewer, slide: Slide) -> TissueMask | None:
    """The user's (possibly brush-edited) tissue layer, or None to detect afresh."""
    ly = tissue_layer_of(viewer, slide)
    if ly is None:
        return None
    return TissueMask.from_labels(ly.data, ly.metadata["pathomics_downsample"])


def current_rois(viewer: napari.Viewer, slide: Slide) -> list[Annotation]:
    ly = layer_registry.roi_layer_of(viewer, slide)
    return layer_registry.layer_annotations(ly) if ly is not None else []


class RoiTilesWidget(QWidget):
    """Draw/import ROIs, detect tissue, and preview the tiles a run will read."""

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        layer_registry.install(napari_viewer)
        self.last_grid: TileGrid | None = None
        self.import_worker: Any = None
        layout = QVBoxLayout(self)

        rois = QGroupBox("Tumour ROIs (QuPath GeoJSON, level-0 px)")
        rl = QVBoxLayout(rois)
        row = QHBoxLayout()
        draw = QPushButton("Draw")
        draw.setToolTip(
            "Select the slide's ROI layer in polygon mode (rectangle, ellipse, freehand: use the layer controls)"
        )
        draw.clicked.connect(self.start_drawing)
        imp = QPushButton("Import…")
        imp.clicked.connect(self._import_dialog)
        exp = QPushButton("Export…")
        exp.clicked.connect(self._export_dialog)
        for b in (draw, imp, exp):
            row.addWidget(b)
        rl.addLayout(row)
        self.roi_status = QLabel("ROIs autosave beside the slide on every change.")
        self.roi_status.setWordWrap(True)
        rl.addWidget(self.roi_status)
        layout.addWidget(rois)

        tissue = QGroupBox("Tissue")
        tl = QVBoxLayout(tissue)
        det = QPushButton("Detect tissue")
        det.clicked.connect(self.detect_tissue)
        tl.addWidget(det)
        self.tissue_status = QLabel("Editable Labels layer: paint 1 = tissue, 0 = glass.")
        self.tissue_status.setWordWrap(True)
        tl.addWidget(self.tissue_status)
        layout.addWidget(tissue)

        tiles = QGroupBox("Tiles")
        form = QFormLayout(tiles)
        self.tile_um = spin(DEFAULT_TILE_UM, 1.0, 4096.0, 8.0, " µm", 1)
        self.mpp = spin(DEFAULT_MPP, 0.05, 64.0, 0.05, " µm/px", 3)
        self.min_tissue = spin(DEFAULT_MIN_TISSUE, 0.0, 1.0, 0.05, "", 2)
        form.addRow("tile size", self.tile_um)
        form.addRow("read at", self.mpp)
        form.addRow("min ROI ∩ tissue", self.min_tissue)
        prev = QPushButton("Preview tiles")
        prev.clicked.connect(self.preview_tiles)
        form.addRow(prev)
        self.tile_count = QLabel("—")
        form.addRow("tiles", self.tile_count)
        layout.addWidget(tiles)
        layout.addStretch(1)

    # ------------------------------------------------------------------ helpers
    def _slide(self) -> Slide | None:
        slide = layer_registry.slide_of(layer_registry.active_slide_layer(self.viewer))
        if slide is None:
            notices.show_warning("open a slide first (File ▸ Open, or the Slide widget)")
        return slide

    def roi_layer(self, slide: Slide) -> Shapes:
        ly = layer_registry.roi_layer_of(self.viewer, slide)
        if ly is None:
            ly = layer_registry.add_layer(self.viewer, layer_registry.roi_layer_data(slide, []))
        return ly

    # ------------------------------------------------------------------ ROIs
    def start_drawing(self) -> None:
        slide = self._slide()
        if slide is None:
            return
        ly = self.roi_layer(slide)
        self.viewer.layers.selection.active = ly
        ly.mode = "add_polygon"

    def _import_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import ROIs", "", "GeoJSON (*.geojson *.json)")
        if path:
            self.import_rois_in_background(path)

    def import_rois(self, path: str | Path) -> int:
        """Add the ROIs of a GeoJSON file to the slide's ROI layer; nothing drawn is replaced."""
        slide = self._slide()
        if slide is None:
            return 0
        try:
            res = read_geojson(path, bounds=slide.dimensions)
        except PathomicsError as exc:
            notices.report(exc, "import failed")
            return 0
        return self._add_read(slide, path, res)

    def import_rois_in_background(self, path: str | Path) -> Any:
        """``import_rois`` with the reading and repair in a worker thread (what the Import button does).

        Repairing a scribbled ROI is bounded but can take a second; the viewer stays responsive
        meanwhile. Returns the worker (tests wait on it), None when no slide is open.
        """
        slide = self._slide()
        if slide is None:
            return None
        self.roi_status.setText(f"reading {Path(path).name}…")

        @thread_worker(ignore_errors=True)  # errored is reported below; no re-raise into Qt's loop
        def work() -> ReadResult:
            return read_geojson(path, bounds=slide.dimensions)

        worker = work()
        worker.returned.connect(lambda res: self._add_read(slide, path, res))
        worker.errored.connect(
            lambda exc: (
                notices.report(exc, "import failed"),
                self.roi_status.setText(f"{Path(path).name} not imported"),
            )
        )
        self.import_worker = worker
        worker.finished.connect(lambda: setattr(self, "import_worker", None))
        worker.start()
        return worker

    def _add_read(self, slide: Slide, path: str | Path, res: ReadResult) -> int:
        if not any(layer_registry.slide_of(ly) is slide for ly in layer_registry.slide_layers(self.viewer)):
            notices.show_warning(
                f"{Path(path).name}: {slide.path.name} was closed before its ROIs were read; nothing imported"
            )
            return 0
        for w in res.warnings:
            notices.show_warning(f"{Path(path).name}: {w}")
        self.add_annotations(slide, res.annotations, others=[o for o in res.objects if o not in res.annotations])
        others = len(res.objects) - len(res.annotations)
        self.roi_status.setText(
            f"{len(res.annotations)} ROI(s) imported from {Path(path).name}"
            + (f", {others} other QuPath object(s) kept" if others else "")
        )
        return len(res.annotations)

    def add_annotations(self, slide: Slide, annotations: list[Annotation], others: list[GeoObject] = ()) -> Shapes:
        """Append ROIs (and other QuPath objects) to the slide's (drawn ones stay) and autosave."""
        ly = self.roi_layer(slide)
        objects = layer_registry.layer_objects(ly) + list(annotations) + list(others)
        merged = [o for o in objects if isinstance(o, Annotation)]
        data, kwargs, _ = layer_registry.roi_layer_data(slide, merged, objects)
        ly.metadata["pathomics_annotations"] = kwargs["metadata"]["pathomics_annotations"]
        ly.metadata["pathomics_objects"] = objects
        with ly.events.data.blocker():
            ly.data = []
            if data:
                ly.add(
                    data,
                    shape_type=kwargs["shape_type"],
                    edge_color=kwargs["edge_color"],
                    face_color="transparent",
                    edge_width=3,
                )
        ly.properties = kwargs["properties"]
        layer_registry.autosave_now(ly, self.viewer)
        if others:
            layer_registry.show_object_layers(self.viewer, slide, objects)
        return ly

    def _export_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export ROIs", "", "GeoJSON (*.geojson)")
        if path:
            self.export_rois(path)

    def export_rois(self, path: str | Path) -> int:
        slide = self._slide()
        if slide is None:
            return 0
        ly = layer_registry.roi_layer_of(self.viewer, slide)
        objects = layer_registry.layer_objects(ly) if ly is not None else []
        try:
            write_geojson(objects, check_output(path, "GeoJSON", inputs=[slide.path]))
        except (OSError, PathomicsError) as exc:
            notices.report(exc, "export failed")
            return 0
        n = sum(isinstance(o, Annotation) for o in objects)
        self.roi_status.setText(
            f"{n} ROI(s) exported to {Path(path).name}"
            + (f" with {len(objects) - n} other object(s)" if len(objects) > n else "")
        )
        return n

    # ------------------------------------------------------------------ tissue and tiles
    def detect_tissue(self) -> Labels | None:
        slide = self._slide()
        if slide is None:
            return None
        try:
            mask = detect_tissue(slide)
        except PathomicsError as exc:
            notices.report(exc, "tissue detection failed")
            return None
        old = tissue_layer_of(self.viewer, slide)
        if old is not None:
            self.viewer.layers.remove(old)
        data, kwargs, _ = tissue_layer(slide, mask.mask, mask.downsample)
        ly = self.viewer.add_labels(data, **kwargs)
        self.tissue_status.setText(f"tissue covers {100 * mask.fraction:.1f} % of the slide")
        return ly

    def plan(self, slide: Slide) -> TileGrid:
        """Exactly what ``pathomics tiles`` computes, with the user's ROIs and tissue edits."""
        rois = current_rois(self.viewer, slide)
        return plan_tiles(
            slide,
            rois or None,
            tissue=current_tissue(self.viewer, slide),
            tile_um=self.tile_um.value(),
            mpp=self.mpp.value(),
            min_tissue=self.min_tissue.value(),
        )

    def preview_tiles(self) -> TileGrid | None:
        slide = self._slide()
        if slide is None:
            return None
        try:
            grid = self.plan(slide)
        except PathomicsError as exc:
            notices.report(exc, "tiling failed")
            self.tile_count.setText("—")
            return None
        while (old := layer_registry.find_layer(self.viewer, slide, ROLE_TILE_GRID)) is not None:
            self.viewer.layers.remove(old)
        data, kwargs, _ = tile_grid_overlay(slide, grid)
        self.viewer.add_image(data, **kwargs)
        self.tile_count.setText(f"{len(grid)} tiles of {grid.tile_um:g} µm ({grid.tile_px} px)")
        self.last_grid = grid
        return grid
