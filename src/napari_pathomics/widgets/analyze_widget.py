"""The "Analyze" dock: run a model bundle over ROI ∩ tissue off the UI thread, with progress/cancel.

Layers fill in as batches finish; cached results of the same slide × bundle × grid show at
once and an interrupted run resumes. The "Show" box picks the one map drawn over the slide
(Alt+1…Alt+6 too), where it starts, how it is rendered, and explains the classes.

The dock keeps no state another dock needs: results, the bundle and how maps are drawn are the
viewer's case (``layers.case.Case``); the dock writes them there and redraws when they change.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import napari
from napari.qt.threading import thread_worker
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..bundle import Bundle
from ..colormaps import PALETTES, class_palette
from ..errors import PathomicsError
from ..inference.analyze import analyze_slide
from ..inference.engine import InferenceRun
from ..layers import CAM_SCALES, SCALE_KEY, VIEW_KEY, class_legend, views
from ..resources import DEFAULT_BUNDLE
from ..results import TileResults
from ..scoring.engine_cache import load_bundle, shared_engine
from ..wsi.slide import Slide
from . import layer_registry, notices
from .cells_panel import CellsPanel
from .controls import action_row
from .correct_panel import CorrectPanel
from .result_layers import readout, redraw, select_shown, show_results
from .roi_widget import current_rois, current_tissue


class AnalyzeWidget(QWidget):
    """Run the patch model; show tissue classes, patch risk, Grad-CAM and the RAM as layers."""

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        layer_registry.install(napari_viewer)
        self.case = layer_registry.case_of(napari_viewer)
        self.worker: Any = None
        self.cancel_event = threading.Event()
        self._last_draw = 0.0
        self._shown_before = self.case.display.shown
        layout = QVBoxLayout(self)

        box = QGroupBox("Model bundle")
        form = QFormLayout(box)
        row = QHBoxLayout()
        self.bundle_path = QLineEdit(str(DEFAULT_BUNDLE))
        browse = QPushButton("…")
        browse.setMaximumWidth(32)
        browse.clicked.connect(self._browse)
        row.addWidget(self.bundle_path)
        row.addWidget(browse)
        form.addRow("bundle", row)
        self.bundle_info = QLabel("")
        self.bundle_info.setWordWrap(True)
        form.addRow(self.bundle_info)
        self.device = QComboBox()
        self.device.addItems(["auto", "cpu", "cuda", "mps"])
        self.device.currentTextChanged.connect(self._engine_options)
        form.addRow("device", self.device)
        self.batch = QSpinBox()
        self.batch.setRange(1, 512)
        self.batch.setValue(32)
        self.batch.valueChanged.connect(self._engine_options)
        form.addRow("batch size", self.batch)
        layout.addWidget(box)

        cams = QGroupBox("Activation maps")
        cl = QFormLayout(cams)
        self.ram = QCheckBox("risk activation map (RAM)")
        self.ram.setChecked(True)
        cl.addRow(self.ram)
        self.cam_on = QCheckBox("Grad-CAM for class")
        self.cam_class = QComboBox()
        cl.addRow(self.cam_on, self.cam_class)
        for changed in (self.ram.toggled, self.cam_on.toggled, self.cam_class.currentTextChanged):
            changed.connect(self._cams_changed)
        layout.addWidget(cams)

        self.run_btn, self.cancel_btn, self.progress, self.status = action_row(
            layout, ("Run", self.run), ("Cancel", self.cancel)
        )
        layout.addWidget(self._show_box())
        self.legend = QLabel("")
        self.legend.setWordWrap(True)
        self.legend.setTextFormat(Qt.TextFormat.RichText)
        layout.addWidget(self.legend)
        self.hover = QLabel("")
        self.hover.setWordWrap(True)
        layout.addWidget(self.hover)
        self.cells = CellsPanel(napari_viewer, results_of=lambda slide: self.results.get(str(slide.path)))
        layout.addWidget(self.cells)
        self.correct = CorrectPanel(napari_viewer)  # label tiles, adapt the head, suggest, save
        layout.addWidget(self.correct)
        layout.addStretch(1)

        self.bundle_path.editingFinished.connect(self._refresh_bundle)
        self._refresh_bundle()
        self._cams_changed()
        layer_registry.listen(self, self.case.results_changed, self._on_results)
        layer_registry.listen(self, self.case.display_changed, self._on_display_changed)
        layer_registry.listen(self, self.case.bundle_changed, self._on_bundle_changed)
        napari_viewer.mouse_move_callbacks.append(self._on_mouse_move)

    @property
    def results(self) -> dict[str, TileResults]:
        """Slide path -> the analysis shown (the case's)."""
        return self.case.results

    # ------------------------------------------------------------------ bundle
    def _browse(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Model bundle folder", str(DEFAULT_BUNDLE.parent))
        if path:
            self.bundle_path.setText(path)
            self._refresh_bundle()

    def bundle(self) -> Bundle | None:
        try:
            return load_bundle(self.bundle_path.text())
        except PathomicsError as exc:
            notices.report(exc, "bundle refused")
            return None

    def _engine_options(self, *_: Any) -> None:
        self.case.set_bundle(self.bundle_path.text(), self.device.currentText(), self.batch.value())

    def _on_bundle_changed(self) -> None:
        """Another dock changed the case's bundle (the Correct panel saved an adapted model)."""
        if self.case.bundle_path != self.bundle_path.text():
            self.bundle_path.setText(self.case.bundle_path)
            self._refresh_bundle()

    def _cams_changed(self, *_: Any) -> None:
        self.case.cam_names = self.cam_names()

    def _refresh_bundle(self) -> None:
        self._engine_options()
        b = self.bundle()
        self.cam_class.clear()
        if b is None:
            self.bundle_info.setText("⚠ bundle not usable")
            return
        self.cam_class.addItems(b.class_names)
        if "TUM" in b.class_names:
            self.cam_class.setCurrentText("TUM")
        self.bundle_info.setText(
            f"{b.name}: {b.manifest['model']['architecture']}, {len(b.class_names)} classes, "
            f"{b.tile_um:g} µm tiles at {b.mpp:g} µm/px"
        )
        self._update_legend()

    def cam_names(self) -> tuple[str, ...]:
        names = []
        if self.ram.isChecked():
            names.append("risk")
        if self.cam_on.isChecked() and self.cam_class.currentText():
            names.append(self.cam_class.currentText())
        return tuple(names)

    # ------------------------------------------------------------------ run
    def run(self) -> Any:
        """Start the analysis of the active slide; returns the worker (tests wait on it)."""
        if self.worker is not None:
            notices.show_warning("an analysis is already running")
            return None
        layer = layer_registry.active_slide_layer(self.viewer)
        slide = layer_registry.slide_of(layer)
        if slide is None:
            notices.show_warning("open a slide first")
            return None
        bundle = self.bundle()
        if bundle is None:
            return None
        cams = self.cam_names()
        cancel = self.cancel_event = threading.Event()
        try:
            # the engine is built here, in the UI thread, so the worker thread joins the tuned heap (see Engine)
            engine, _ = shared_engine(bundle, device=self.device.currentText(), batch_size=self.batch.value())
            rois = current_rois(self.viewer, slide)
            step = analyze_slide(
                slide, engine, rois, tissue=current_tissue(self.viewer, slide), cancel=cancel, cams=cams
            )  # plans here; the run opens (hashes the slide, reads the cache) in the worker
        except PathomicsError as exc:
            notices.report(exc, "cannot start the analysis")
            return None
        grid = step.grid
        if step.unreadable_mm2:
            notices.show_warning(
                f"{slide.path.name}: {step.unreadable_mm2:.3g} mm² cannot be decoded; "
                "its tiles are attempted and will be reported as failed"
            )
        self.status.setText(f"{len(grid)} tiles · {'RAM + ' if 'risk' in cams else ''}{engine.device}")
        runs: list[InferenceRun] = []

        @thread_worker(ignore_errors=True)  # errored is reported below; no re-raise into Qt's loop
        def work() -> Iterator[Any]:
            runs.append(step.run)
            for update in step:
                yield update, step.results

        worker = work()
        worker.yielded.connect(lambda payload: self._on_update(slide, *payload))
        worker.errored.connect(lambda exc: notices.report(exc, "analysis failed"))
        worker.finished.connect(lambda: self._on_finished(slide, runs[0] if runs else None))
        self.worker = worker
        self.run_btn.setEnabled(False)
        self.cancel_btn.setEnabled(True)
        worker.start()
        return worker

    def cancel(self) -> None:
        self.cancel_event.set()
        self.status.setText("cancelling after the current batch…")

    def _on_update(self, slide: Slide, update: Any, results: TileResults) -> None:
        self.progress.setValue(int(100 * update.fraction))
        now = time.monotonic()
        draw = update.done == update.total or now - self._last_draw > 0.5 or update.from_cache
        self.case.set_results(str(slide.path), results, notify=draw)  # drawn by _on_results
        if draw:
            self._last_draw = now
        self.status.setText(f"{update.done}/{update.total} tiles" + (" (from cache)" if update.from_cache else ""))

    def _on_finished(self, slide: Slide, run: InferenceRun | None) -> None:
        self.worker = None
        self.run_btn.setEnabled(True)
        self.cancel_btn.setEnabled(False)
        if run is None:
            return
        res = run.results
        self.case.set_results(str(slide.path), res)
        c = res.counts()
        state = "cancelled" if self.cancel_event.is_set() and not res.complete else "done"
        self.status.setText(f"{state}: " + ", ".join(f"{v} {k}" for k, v in c.items() if v))
        if res.complete:
            self.case.analysis_finished.emit(str(slide.path))  # an adapted head is applied again

    def _on_results(self, path: str) -> None:
        slide = self.case.slide(path)
        if slide is not None and path in self.case.results:
            self.show_results(slide, self.case.results[path])

    # ------------------------------------------------------------------ hover
    def _on_mouse_move(self, viewer: napari.Viewer, event: Any) -> None:
        slide = layer_registry.slide_of(layer_registry.active_slide_layer(viewer))
        if slide is None or not slide.has_mpp:
            return
        text = readout(viewer, slide, tuple(viewer.cursor.position[-2:]))
        self.hover.setText(text)

    # ------------------------------------------------------------------ show
    def _show_box(self) -> QGroupBox:
        box = QGroupBox("Show")
        form = QFormLayout(box)
        self.view = QComboBox()
        self.view.setToolTip("the one map drawn over the slide (Alt+1 … Alt+6)")
        self.view.currentIndexChanged.connect(self._on_view)
        form.addRow("map", self.view)
        self.threshold = QSlider(Qt.Orientation.Horizontal)
        self.threshold.setRange(0, 100)
        self.threshold.setToolTip("values below this are not drawn (the slide shows through)")
        self.threshold.valueChanged.connect(self._on_threshold)
        self.threshold_label = QLabel("")
        row = QHBoxLayout()
        row.addWidget(self.threshold)
        row.addWidget(self.threshold_label)
        form.addRow("from", row)
        self.smooth = QComboBox()
        self.smooth.addItems(["nearest (tiles)", "smooth (bilinear)"])
        self.smooth.currentIndexChanged.connect(self._on_display)
        form.addRow("rendering", self.smooth)
        self.cam_scale = QComboBox()
        self.cam_scale.addItems([f"per {s}" for s in CAM_SCALES])
        self.cam_scale.setToolTip("per slide: comparable between tiles; per tile: each tile's maximum = 1")
        self.cam_scale.currentIndexChanged.connect(self._on_display)
        form.addRow("CAM scale", self.cam_scale)
        self.palette = QComboBox()
        self.palette.addItems(list(PALETTES))
        self.palette.currentIndexChanged.connect(self._on_display)
        form.addRow("class colours", self.palette)
        self.low_conf = QDoubleSpinBox()
        self.low_conf.setRange(0.0, 1.0)
        self.low_conf.setSingleStep(0.05)
        self.low_conf.setValue(self.case.display.low_confidence)
        self.low_conf.setToolTip("tiles whose top-class probability is below this are hatched on the class map")
        self.low_conf.valueChanged.connect(self._on_display)
        form.addRow("hatch below", self.low_conf)
        for i in range(6):
            self.viewer.bind_key(f"Alt-{i + 1}", lambda _v, i=i: self._select(i), overwrite=True)
        return box

    def _views(self) -> list[tuple[str, str]]:
        res = next(iter(self.results.values()), None)
        slide = layer_registry.slide_of(layer_registry.active_slide_layer(self.viewer))
        res = self.results.get(str(slide.path), res) if slide is not None else res
        return views(res) if res is not None else []

    def _fill_views(self) -> None:
        items = self._views()
        keys = [k for k, _ in items]
        if keys == [self.view.itemData(i) for i in range(self.view.count())]:
            return
        self.view.blockSignals(True)
        self.view.clear()
        for key, title in items:
            self.view.addItem(title, key)
        shown = self.case.display.shown
        self.view.setCurrentIndex(keys.index(shown) if shown in keys else 0)
        self.view.blockSignals(False)

    def _select(self, index: int) -> None:
        if 0 <= index < self.view.count():
            self.view.setCurrentIndex(index)

    def show_view(self, key: str) -> None:
        """Show the map ``key`` (a ``layers.views`` key) alone over the slide."""
        i = self.view.findData(key)
        if i >= 0:
            self.view.setCurrentIndex(i)

    def _on_view(self, _index: int = 0) -> None:
        key = self.view.currentData()
        if key:
            self.case.update_display(shown=key)

    def _on_display_changed(self) -> None:
        """The case's display changed (here or in another panel): redraw, follow it in the controls."""
        redraw(self.viewer)
        shown = self.case.display.shown
        if self.view.currentData() != shown:
            self.view.blockSignals(True)
            self.show_view(shown)
            self.view.blockSignals(False)
        if shown != self._shown_before:
            self._shown_before = shown
            slide = layer_registry.slide_of(layer_registry.active_slide_layer(self.viewer))
            if slide is not None:
                select_shown(self.viewer, slide)
        self._sync_threshold()
        self._update_legend()

    def _shown_scale(self) -> dict[str, Any] | None:
        key = self.case.display.shown
        for ly in self.viewer.layers:
            if ly.metadata.get(VIEW_KEY) == key and SCALE_KEY in ly.metadata:
                return ly.metadata[SCALE_KEY]
        return None

    def _sync_threshold(self) -> None:
        scale = self._shown_scale()
        self.threshold.setEnabled(scale is not None)
        if scale is None:
            self.threshold_label.setText("")
            return
        lo, hi = scale["limits"]
        t = scale["threshold"]
        self.threshold.blockSignals(True)
        self.threshold.setValue(int(round(100 * (t - lo) / (hi - lo))) if hi > lo else 0)
        self.threshold.blockSignals(False)
        self.threshold_label.setText(f"{t:.3g}")

    def _on_threshold(self, value: int) -> None:
        scale = self._shown_scale()
        if scale is None:
            return
        lo, hi = scale["limits"]
        display = self.case.display
        thresholds = {**display.thresholds, display.shown: lo + (hi - lo) * value / 100.0}
        self.case.update_display(thresholds=thresholds)
        self.threshold_label.setText(f"{thresholds[display.shown]:.3g}")

    def _on_display(self, *_: Any) -> None:
        self.case.update_display(
            smooth=self.smooth.currentIndex() == 1,
            cam_scale=CAM_SCALES[self.cam_scale.currentIndex()],
            palette=PALETTES[self.palette.currentIndex()],
            low_confidence=float(self.low_conf.value()),
        )

    def _descriptions(self) -> dict[str, str]:
        b = self.bundle()
        return b.class_descriptions if b is not None else {}

    def show_results(self, slide: Slide, results: TileResults) -> None:
        """Draw a slide's results and bring the map selector, threshold and legend up to date."""
        show_results(self.viewer, slide, results, self._descriptions())
        self._fill_views()
        self._sync_threshold()
        self._update_legend(results)

    def _update_legend(self, results: TileResults | None = None) -> None:
        """Every class with its colour and full name; with results, its share of the classified tiles."""
        if results is None:
            slide = layer_registry.slide_of(layer_registry.active_slide_layer(self.viewer))
            results = self.results.get(str(slide.path)) if slide is not None else None
        if results is None:
            b = self.bundle()
            if b is None:
                self.legend.setText("")
                return
            colors = class_palette(b.class_names, b.class_colors, self.case.display.palette)
            rows = [
                {"name": n, "title": b.class_descriptions.get(n, n), "color": c, "share": None}
                for n, c in zip(b.class_names, colors)
            ]
        else:
            rows = class_legend(results, self._descriptions(), self.case.display)
        cells = []
        for r in rows:
            share = "" if r["share"] is None else f"{100 * r['share']:.0f} %"
            cells.append(
                f"<tr><td style='color:{r['color']};font-size:15px'>■</td><td><b>{r['name']}</b></td>"
                f"<td>{r['title']}</td><td align='right'>{share}</td></tr>"
            )
        head = "<i>share of classified tiles</i>" if results is not None else ""
        self.legend.setText(f"<table cellspacing='2'>{''.join(cells)}</table>{head}")
