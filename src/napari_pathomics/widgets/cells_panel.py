"""The Analyze dock's "Nuclei" and "Tumour proposal" panel, a self-contained QWidget.

* **Nuclei**: computes nuclei for the ROIs (∩ tissue) of the active slide off the UI thread
  (napari's ``thread_worker``), with progress and cancel, through the nuclei cache (a second
  run, or reopening the slide, shows them at once; an interrupted run resumes). Layers: the
  nuclear density and the N:C ratio per tile, with colour bars in their units, and the nucleus
  outlines, drawn only for the visible area and only when zoomed in far enough
  (``layers.OUTLINE_MIN_ZOOM``), at most ``layers.OUTLINE_MAX_SHAPES`` at once. Hovering a
  tile shows its nuclear read-out.
* **Tumour proposal**: from the Analyze results of the slide (``results_of``), the smoothed
  tumour probability thresholded at the user's threshold and minimum area, shown in its own
  "Tumor (proposed)" layer. **Accept** adds it (with any edits made to that layer) to the
  slide's ROIs, which autosave; **Discard** removes it. Until then nothing the user drew changes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import napari
import numpy as np
import shapely
from napari.qt.threading import thread_worker
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)
from shapely.geometry import MultiPolygon, Polygon

from ..cells.methods import DEFAULT_METHOD, method_names
from ..cells.results import NucleiResults
from ..cells.run import NucleiRun
from ..errors import PathomicsError
from ..layers import (
    OUTLINE_MAX_SHAPES,
    OUTLINE_MIN_ZOOM,
    ROLE_NUCLEI_OUTLINES,
    ROLE_TUMOUR_PROPOSAL,
    nuclei_map_layer,
    nuclei_outline_layer,
    nuclei_outlines,
    nuclei_readout,
    proposal_layer,
    shape_to_polygon,
)
from ..results import TileResults
from ..results.regions import (
    DEFAULT_MIN_AREA_MM2,
    DEFAULT_SIGMA_TILES,
    DEFAULT_THRESHOLD,
    PROPOSED_CLASS,
    propose_tumour,
)
from ..units import DEFAULT_TILE_UM
from ..wsi.annotations import Annotation
from ..wsi.slide import Slide
from ..wsi.tiling import TileGrid, plan_tiles
from . import layer_registry, notices
from .controls import action_row, spin
from .roi_widget import current_rois, current_tissue

__all__ = ["CellsPanel"]


class CellsPanel(QWidget):
    """Nuclei (compute, maps, lazy outlines, hover) and the tumour proposal (propose, accept, discard)."""

    def __init__(
        self, napari_viewer: napari.Viewer, results_of: Callable[[Slide], TileResults | None] | None = None
    ) -> None:
        super().__init__()
        self.viewer = napari_viewer
        layer_registry.install(napari_viewer)
        self.results_of = results_of or (lambda slide: None)
        self.nuclei: dict[str, NucleiResults] = {}  # slide path -> nuclei
        self._values: dict[str, dict[str, np.ndarray]] = {}
        self.worker: Any = None
        self.cancel_event = threading.Event()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)

        box = QGroupBox("Nuclei")
        bl = QVBoxLayout(box)
        self.model = QComboBox()  # one choice with the CLI's --nuclei-model: the default first
        for name in [DEFAULT_METHOD, *(n for n in method_names() if n != DEFAULT_METHOD)]:
            self.model.addItem(f"{name} (default)" if name == DEFAULT_METHOD else name, name)
        self.model.setToolTip("nuclei method; 'monuseg' is CC BY-NC-SA 4.0 (non-commercial), never the default")
        bl.addWidget(self.model)
        self.case = layer_registry.case_of(napari_viewer)
        self.model.currentIndexChanged.connect(lambda _: self.case.set_nuclei_model(self.model.currentData()))
        self.run_btn, self.cancel_btn, self.progress, self.status = action_row(
            bl, ("Compute nuclei", self.compute), ("Cancel", self.cancel)
        )
        self.outlines_on = QCheckBox(f"nucleus outlines when zoomed in (≥ {OUTLINE_MIN_ZOOM:g} screen px/µm)")
        self.outlines_on.setChecked(True)
        self.outlines_on.toggled.connect(lambda _=None: self.refresh_outlines())
        bl.addWidget(self.outlines_on)
        self.hover = QLabel("")
        self.hover.setWordWrap(True)
        bl.addWidget(self.hover)
        layout.addWidget(box)

        pbox = QGroupBox("Tumour proposal")
        form = QFormLayout(pbox)
        self.threshold = spin(DEFAULT_THRESHOLD, 0.05, 0.95, 0.05, "", 2)
        self.min_area = spin(DEFAULT_MIN_AREA_MM2, 0.0, 1000.0, 0.05, " mm²", 3)
        self.smooth = spin(DEFAULT_SIGMA_TILES, 0.0, 10.0, 0.5, " tiles", 1)
        form.addRow("tumour probability ≥", self.threshold)
        form.addRow("minimum area", self.min_area)
        form.addRow("smoothing σ", self.smooth)
        row = QHBoxLayout()
        self.propose_btn = QPushButton("Propose")
        self.accept_btn = QPushButton("Accept")
        self.discard_btn = QPushButton("Discard")
        for b, slot in (
            (self.propose_btn, self.propose),
            (self.accept_btn, self.accept),
            (self.discard_btn, self.discard),
        ):
            b.clicked.connect(slot)
            row.addWidget(b)
        self.accept_btn.setEnabled(False)
        self.discard_btn.setEnabled(False)
        form.addRow(row)
        self.proposal_status = QLabel("Run the analysis first; the proposal uses its tumour probability.")
        self.proposal_status.setWordWrap(True)
        form.addRow(self.proposal_status)
        layout.addWidget(pbox)

        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(150)
        self._timer.timeout.connect(self.refresh_outlines)
        napari_viewer.camera.events.zoom.connect(self._schedule_outlines)
        napari_viewer.camera.events.center.connect(self._schedule_outlines)
        napari_viewer.mouse_move_callbacks.append(self._on_mouse_move)

    # ------------------------------------------------------------------ helpers
    def _slide(self) -> Slide | None:
        slide = layer_registry.slide_of(layer_registry.active_slide_layer(self.viewer))
        if slide is None:
            notices.show_warning("open a slide first")
        return slide

    def _grid(self, slide: Slide) -> TileGrid:
        """The Analyze run's tiles when there is one (the join is then exact), else ROIs ∩ tissue."""
        res = self.results_of(slide)
        if res is not None and len(res):
            return res.grid(slide)
        rois = current_rois(self.viewer, slide)
        return plan_tiles(slide, rois or None, tissue=current_tissue(self.viewer, slide), tile_um=DEFAULT_TILE_UM)

    # ------------------------------------------------------------------ nuclei
    def compute(self) -> Any:
        """Start the nuclei run of the active slide; returns the worker (tests wait on it)."""
        if self.worker is not None:
            notices.show_warning("nuclei are already being computed")
            return None
        slide = self._slide()
        if slide is None:
            return None
        try:
            grid = self._grid(slide)
            slide.mpp  # noqa: B018 - a slide without µm/px is refused here, with the reason
        except PathomicsError as exc:
            notices.report(exc, "cannot compute nuclei")
            return None
        if len(grid) == 0:
            notices.show_warning("no tile lies inside ROI ∩ tissue: draw or widen an ROI")
            return None
        cancel = self.cancel_event = threading.Event()
        runs: list[NucleiRun] = []
        self.status.setText(f"{len(grid)} tiles…")

        method = self.model.currentData()

        @thread_worker(ignore_errors=True)  # errored is reported below; no re-raise into Qt's loop
        def work() -> Iterator[Any]:
            # loads the model, hashes the slide and reads the cache: off the UI thread
            run = NucleiRun(slide, grid, cancel=cancel, method=method)
            runs.append(run)
            yield from run

        worker = work()
        worker.yielded.connect(self._on_update)
        worker.errored.connect(lambda exc: notices.report(exc, "nuclei failed"))
        worker.finished.connect(lambda: self._on_finished(slide, runs[0] if runs else None))
        self.worker = worker
        self.run_btn.setEnabled(False)
        self.cancel_btn.setEnabled(True)
        worker.start()
        return worker

    def cancel(self) -> None:
        self.cancel_event.set()
        self.status.setText("cancelling after the current tile…")

    def _on_update(self, upd: Any) -> None:
        self.progress.setValue(int(100 * upd.fraction))
        self.status.setText(
            f"{upd.done}/{upd.total} tiles · {upd.nuclei} nuclei" + (" (from cache)" if upd.from_cache else "")
        )

    def _on_finished(self, slide: Slide, run: NucleiRun | None) -> None:
        self.worker = None
        self.run_btn.setEnabled(True)
        self.cancel_btn.setEnabled(False)
        if run is None:
            return
        res = run.results
        if res.n_done == 0:
            return
        self.show_nuclei(slide, res)
        state = "cancelled" if self.cancel_event.is_set() and not res.complete else "done"
        m = run.method.describe()
        self.status.setText(
            f"{state}: {len(res.nuclei)} nuclei in {res.n_done}/{len(res)} tiles · model {m['name']} ({m['licence']})"
            + (f" · {run.cache_warning}" if run.cache_warning else "")
        )

    def show_nuclei(self, slide: Slide, res: NucleiResults) -> dict[str, Any]:
        """Create or refresh the nuclear layers of ``slide``; returns them by role."""
        key = str(slide.path)
        self.nuclei[key] = res
        self._values[key] = res.tile_values()
        out: dict[str, Any] = {}
        for measure in ("density_mm2", "nc_ratio_mean"):
            data, kwargs, kind = nuclei_map_layer(slide, res, measure)
            role = kwargs["metadata"]["pathomics_role"]
            ly = layer_registry.find_layer(self.viewer, slide, role)
            if ly is None:
                ly = layer_registry.add_layer(self.viewer, (data, kwargs, kind))
                ly.colorbar.visible = True
                ly.visible = measure == "density_mm2"
            else:
                ly.data = data
                ly.contrast_limits = kwargs["contrast_limits"]
            out[role] = ly
        if layer_registry.find_layer(self.viewer, slide, ROLE_NUCLEI_OUTLINES) is None:
            layer_registry.add_layer(self.viewer, nuclei_outline_layer(slide))
        out[ROLE_NUCLEI_OUTLINES] = layer_registry.find_layer(self.viewer, slide, ROLE_NUCLEI_OUTLINES)
        self.refresh_outlines()
        return out

    # ------------------------------------------------------------------ outlines
    def _schedule_outlines(self, event: Any = None) -> None:
        if self.nuclei:
            self._timer.start()

    def visible_box(self, slide_layer: Any) -> tuple[float, float, float, float] | None:
        """The level-0 box (x0, y0, x1, y1) the canvas shows of a slide layer, or None (``layer_registry.visible_box``)."""
        slide = layer_registry.slide_of(slide_layer)
        return layer_registry.visible_box(self.viewer, slide) if slide is not None else None

    def refresh_outlines(self) -> int:
        """Draw the outlines of the nuclei in view (none when zoomed out); returns how many are drawn."""
        layer = layer_registry.active_slide_layer(self.viewer)
        slide = layer_registry.slide_of(layer)
        if slide is None or not slide.has_mpp:
            return 0
        res = self.nuclei.get(str(slide.path))
        shapes = layer_registry.find_layer(self.viewer, slide, ROLE_NUCLEI_OUTLINES)
        if res is None or shapes is None:
            return 0
        box = self.visible_box(layer)
        data: list[np.ndarray] = []
        colors: list[str] = []
        if box is not None and self.outlines_on.isChecked() and self.viewer.camera.zoom >= OUTLINE_MIN_ZOOM:
            data, colors = nuclei_outlines(res, box, OUTLINE_MAX_SHAPES)
        with shapes.events.data.blocker():
            shapes.data = []
            if data:
                shapes.add(data, shape_type="polygon", edge_color=colors, face_color="transparent", edge_width=1.5)
        shapes.refresh()
        return len(data)

    # ------------------------------------------------------------------ hover
    def _on_mouse_move(self, viewer: napari.Viewer, event: Any) -> None:
        slide = layer_registry.slide_of(layer_registry.active_slide_layer(viewer))
        if slide is None or not slide.has_mpp:
            return
        res = self.nuclei.get(str(slide.path))
        if res is None:
            return
        self.hover.setText(
            nuclei_readout(res, slide, tuple(viewer.cursor.position[-2:]), self._values.get(str(slide.path)))
        )

    # ------------------------------------------------------------------ proposal
    def proposal_layer_of(self, slide: Slide) -> Any:
        return layer_registry.find_layer(self.viewer, slide, ROLE_TUMOUR_PROPOSAL)

    def propose(self) -> Any:
        """Show a proposed tumour ROI in its own layer (the ROI layer is not touched)."""
        slide = self._slide()
        if slide is None:
            return None
        res = self.results_of(slide)
        if res is None or res.n_done == 0:
            notices.show_warning("run the analysis first: the proposal needs the model's tumour probability")
            return None
        try:
            prop = propose_tumour(
                res,
                threshold=self.threshold.value(),
                min_area_mm2=self.min_area.value(),
                sigma_tiles=self.smooth.value(),
                mpp=slide.mpp[0],
            )
        except PathomicsError as exc:
            notices.report(exc, "cannot propose a tumour ROI")
            return None
        self.discard()
        if not prop.annotations:
            self.proposal_status.setText(f"no region of ≥ {prop.min_area_mm2:g} mm² reaches {prop.threshold:g}")
            return None
        data, kwargs, kind = proposal_layer(slide, prop.annotations)
        kwargs["properties"] = {"part": np.array(_parts(prop.annotations), dtype=object)}
        ly = layer_registry.add_layer(self.viewer, (data, kwargs, kind))
        self.accept_btn.setEnabled(True)
        self.discard_btn.setEnabled(True)
        self.proposal_status.setText(
            f"{len(prop.annotations)} region(s), {prop.area_mm2:.2f} mm² "
            f"({'+'.join(prop.classes)} ≥ {prop.threshold:g}): edit, Accept or Discard"
        )
        return ly

    def accept(self) -> list[Annotation]:
        """Add the (possibly edited) proposal to the slide's ROIs, autosave, and remove the proposal layer."""
        slide = self._slide()
        if slide is None:
            return []
        ly = self.proposal_layer_of(slide)
        if ly is None:
            return []
        anns = proposal_annotations(ly)
        if anns:
            add_rois(self.viewer, slide, anns)
        self.viewer.layers.remove(ly)
        self.accept_btn.setEnabled(False)
        self.discard_btn.setEnabled(False)
        self.proposal_status.setText(f"{len(anns)} proposed region(s) added to the ROIs (saved)")
        return anns

    def discard(self) -> None:
        """Remove the proposal layer; the ROIs stay as they are."""
        slide = layer_registry.slide_of(layer_registry.active_slide_layer(self.viewer))
        if slide is not None:
            while (ly := self.proposal_layer_of(slide)) is not None:
                self.viewer.layers.remove(ly)
        self.accept_btn.setEnabled(False)
        self.discard_btn.setEnabled(False)


def _parts(annotations: list[Annotation]) -> list[str]:
    """Per drawn shape: '<index>:ext' or '<index>:hole' (the order ``layers.proposal_layer`` draws)."""
    out = []
    for k, ann in enumerate(annotations):
        parts = ann.geometry.geoms if isinstance(ann.geometry, MultiPolygon) else [ann.geometry]
        for part in parts:
            out.append(f"{k}:ext")
            out.extend(f"{k}:hole" for _ in part.interiors)
    return out


def proposal_annotations(layer: Any) -> list[Annotation]:
    """The proposal layer's regions as annotations: exteriors minus their holes, edits included.

    Shapes the user added have no part tag and become regions of their own.
    """
    originals: list[Annotation] = list(layer.metadata.get("pathomics_annotations") or [])
    parts = list(layer.properties.get("part", [])) if len(layer.properties) else []
    ext: dict[str, list[Polygon]] = {}
    holes: dict[str, list[Polygon]] = {}
    for i, (verts, stype) in enumerate(zip(layer.data, layer.shape_type)):
        poly = shape_to_polygon(np.asarray(verts), stype)
        if poly is None or poly.area <= 0:
            continue
        tag = str(parts[i]) if i < len(parts) and isinstance(parts[i], str) and ":" in str(parts[i]) else f"new{i}:ext"
        k, kind = tag.split(":", 1)
        (holes if kind == "hole" else ext).setdefault(k, []).append(shapely.make_valid(poly))
    out: list[Annotation] = []
    for k, polys in ext.items():
        geom = shapely.union_all(polys)
        if k in holes:
            geom = geom.difference(shapely.union_all(holes[k]))
        if not isinstance(geom, (Polygon, MultiPolygon)) or geom.is_empty:
            continue
        src = originals[int(k)] if k.isdigit() and int(k) < len(originals) else None
        out.append(
            Annotation(
                geometry=geom,
                classification=PROPOSED_CLASS,
                color=src.color if src is not None else (255, 140, 0),
                name=src.name if src is not None else "Tumor (proposed, drawn)",
                properties=dict(src.properties) if src is not None else {},
            )
        )
    return out


def add_rois(viewer: napari.Viewer, slide: Slide, annotations: list[Annotation]) -> Any:
    """Append ROIs to the slide's ROI layer (what was drawn stays) and autosave (``layer_registry``)."""
    ly = layer_registry.roi_layer_of(viewer, slide)
    if ly is None:
        ly = layer_registry.add_layer(viewer, layer_registry.roi_layer_data(slide, []))
    merged = layer_registry.layer_annotations(ly) + list(annotations)
    data, kwargs, _ = layer_registry.roi_layer_data(slide, merged)
    ly.metadata["pathomics_annotations"] = kwargs["metadata"]["pathomics_annotations"]
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
    layer_registry.autosave_now(ly, viewer)
    return ly
