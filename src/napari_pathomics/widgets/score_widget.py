"""The "Score" dock: a patient's prognostic risk from the bundle's signature, with its context.

Runs inference where results are missing (cached results make it instant), then shows the risk
score, its percentile in the reference cohort, the risk group by the frozen cutoff, predicted
survival at the horizons, the survival curve over the reference Kaplan–Meier curves, and the
tissue composition; exports an HTML + JSON case report.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import napari
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from napari.qt.threading import thread_worker
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..errors import PathomicsError
from ..resources import DEFAULT_BUNDLE
from ..scoring import DISCLAIMER, load_signature, ordinal, score_patient
from ..scoring.engines import load_bundle, shared_engine
from ..scoring.plots import GROUP_COLORS, composition_figure, survival_figure
from ..scoring.report import report_targets, write_report_html, write_report_json
from ..units import years_short
from . import session
from .controls import action_row
from .result_layers import show_results
from .roi_widget import current_rois


class ScoreWidget(QWidget):
    """Select a patient's slides, press Score, read the risk in context, export a report."""

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        session.install(napari_viewer)
        self.patient_score: Any = None
        self.signature: Any = None
        self.worker: Any = None
        self.cancel_event = threading.Event()
        layout = QVBoxLayout(self)

        box = QGroupBox("Patient")
        form = QFormLayout(box)
        self.bundle_path = QLineEdit(str(DEFAULT_BUNDLE))
        form.addRow("bundle", self.bundle_path)
        self.patient_id = QLineEdit("")
        self.patient_id.setPlaceholderText("patient ID (default: first slide's name)")
        form.addRow("patient", self.patient_id)
        self.slides = QListWidget()
        self.slides.setMaximumHeight(90)
        form.addRow("slides", self.slides)
        layout.addWidget(box)

        self.score_btn, self.export_btn, self.progress, self.status = action_row(
            layout, ("Score", self.score), ("Export report…", self._export_dialog))

        res = QGroupBox("Risk")
        rf = QFormLayout(res)
        self.out: dict[str, QLabel] = {}
        for key in ("risk score", "percentile", "risk group", "survival"):
            lab = QLabel("—")
            lab.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            lab.setWordWrap(True)
            self.out[key] = lab
            rf.addRow(key, lab)
        self.disclaimer = QLabel("")
        self.disclaimer.setWordWrap(True)
        rf.addRow(self.disclaimer)
        layout.addWidget(res)
        self.plots = QVBoxLayout()
        layout.addLayout(self.plots)
        layout.addStretch(1)

        napari_viewer.layers.events.inserted.connect(self.refresh_slides)
        napari_viewer.layers.events.removed.connect(self.refresh_slides)
        self.refresh_slides()

    # ------------------------------------------------------------------ slides
    def refresh_slides(self, event: object = None) -> None:
        checked = {self.slides.item(i).data(Qt.ItemDataRole.UserRole)
                   for i in range(self.slides.count())
                   if self.slides.item(i).checkState() == Qt.CheckState.Checked}
        self.slides.clear()
        for ly in session.slide_layers(self.viewer):
            path = str(session.slide_of(ly).path)
            item = QListWidgetItem(Path(path).name)
            item.setData(Qt.ItemDataRole.UserRole, path)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if (path in checked or not checked) else Qt.CheckState.Unchecked)
            self.slides.addItem(item)

    def selected_slides(self) -> list[Any]:
        wanted = {self.slides.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.slides.count())
                  if self.slides.item(i).checkState() == Qt.CheckState.Checked}
        return [session.slide_of(ly) for ly in session.slide_layers(self.viewer)
                if str(session.slide_of(ly).path) in wanted]

    # ------------------------------------------------------------------ scoring
    def score(self) -> Any:
        """Score the checked slides as one patient; returns the worker (tests wait on it)."""
        if self.worker is not None:
            return None
        slides = self.selected_slides()
        if not slides:
            session.show_warning("open and tick at least one slide")
            return None
        try:
            bundle = load_bundle(self.bundle_path.text())
            signature = load_signature(bundle)
            shared_engine(bundle)  # built in the UI thread, so the worker joins the tuned heap (see Engine)
        except PathomicsError as exc:
            session.report(exc, "cannot score")
            return None
        rois = [current_rois(self.viewer, s) or None for s in slides]
        patient = self.patient_id.text().strip() or None
        self.cancel_event = threading.Event()

        @thread_worker(ignore_errors=True)  # errored is reported below; no re-raise into Qt's loop
        def work() -> Any:
            return score_patient(slides, bundle, patient_id=patient, rois=rois, cancel=self.cancel_event,
                                 progress=lambda msg, frac: None)

        worker = work()
        worker.returned.connect(lambda ps: self._show_safely(ps, signature))
        worker.errored.connect(lambda exc: session.report(exc, "scoring failed"))
        worker.finished.connect(self._finished)
        self.worker = worker
        self.score_btn.setEnabled(False)
        self.status.setText(f"scoring {len(slides)} slide(s)… (inference runs where results are missing)")
        self.progress.setRange(0, 0)
        worker.start()
        return worker

    def _finished(self) -> None:
        self.worker = None
        self.score_btn.setEnabled(True)
        self.progress.setRange(0, 100)

    def _show_safely(self, ps: Any, signature: Any) -> None:
        """An exception in a Qt slot would abort napari: report it instead."""
        try:
            self._show(ps, signature)
        except Exception as exc:  # noqa: BLE001
            session.report(exc, "cannot display the score")

    def _show(self, ps: Any, signature: Any) -> None:
        self.patient_score = ps
        self.signature = signature
        self.progress.setValue(100)
        sc = ps.score
        self.out["risk score"].setText(f"{sc.risk:+.3f}")
        self.out["percentile"].setText(f"{ordinal(sc.percentile)} of the reference cohort")
        color = GROUP_COLORS.get(sc.group, "#333")
        self.out["risk group"].setText(f"<b style='color:{color}'>{sc.group.upper()}</b> "
                                       f"(frozen cutoff {sc.cutoff:+.3f})")
        self.out["survival"].setText(" · ".join(f"{years_short(float(k), sc.time_unit)}: {100 * v:.0f} %"
                                                for k, v in sc.survival_at.items()))
        self.disclaimer.setText(DISCLAIMER)
        self.status.setText(f"patient {ps.patient_id}: {len(ps.slides)} slide(s) scored")
        self.export_btn.setEnabled(True)
        self._draw_plots(ps, signature)
        for slide, res in zip(self.selected_slides(), getattr(ps, "results", []) or []):
            if res is not None:
                show_results(self.viewer, slide, res)

    def _draw_plots(self, ps: Any, signature: Any) -> None:
        while self.plots.count():
            item = self.plots.takeAt(0)
            if item.widget():
                item.widget().deleteLater()
        for fig in (survival_figure(signature, ps.score), composition_figure(ps)):
            canvas = FigureCanvasQTAgg(fig)
            canvas.setMinimumHeight(220)
            self.plots.addWidget(canvas)

    # ------------------------------------------------------------------ report
    def _export_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export case report", "", "HTML report (*.html)")
        if path:
            self.export_report(path)

    def export_report(self, html_path: str | Path) -> tuple[Path, Path] | None:
        """Write the HTML report and its JSON twin (same name, .json)."""
        if self.patient_score is None:
            session.show_warning("score a patient first")
            return None
        ps = self.patient_score
        b = Path(ps.bundle["path"]) if ps.bundle.get("path") else None
        inputs = [s.path for s in ps.slides] + ([b, *b.iterdir()] if b is not None and b.is_dir() else [b])
        try:
            html_path, json_path = report_targets(html_path, None, inputs)  # never over a slide, ROI file or bundle
            write_report_html(ps, html_path, signature=self.signature)
            write_report_json(ps, json_path)
        except (PathomicsError, OSError) as exc:
            session.report(exc, "report export failed")
            return None
        self.status.setText(f"report written: {html_path.name} and {json_path.name}")
        return html_path, json_path
