"""The "Score" dock: a patient's prognostic risk from the bundle's signature, with its context.

Runs inference where results are missing (cached results make it instant), then shows the risk
score, its percentile in the reference cohort, the side of the frozen cutoff with the
signature's validated evidence beside it (a split that is not validated out of fold is not
called HIGH), which area was scored (ROIs or all tissue, tiles, mm²), predicted survival, a
warning when the case's cancer type (stated here, or in the slide's metadata) is not the
signature's, the survival curve over the reference Kaplan–Meier curves and the tissue
composition without background. When the bundle carries a combined (pathomics + clinical)
signature, fields generated from its frozen encoding take the patient's clinical values; once
they are entered the combined risk is shown beside the pathomics-only one, each with its
nested-CV C-index, the patient is placed on the interplay curves the signature carries, and the
report includes it. A value outside the encoding is named in the dock; nothing else is lost.
While the Analyze dock's Correct panel holds an adapted, unsaved tissue classifier for this
bundle, scores use it (and are redone when it changes), and the status and report say so.
Exports an HTML + JSON case report. The clinical fields are ``clinical_panel``'s, the figures
``score_plots``'; this dock holds the patient and decides when to score.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

import napari
from napari.qt.threading import thread_worker
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QComboBox,
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

from ..errors import ClinicalError, PathomicsError
from ..resources import DEFAULT_BUNDLE
from ..scoring import load_signature, ordinal, score_patient
from ..scoring.combined import CombinedResult
from ..scoring.context import CASE_TYPES, USER, case_source_text, mpp_set_by_user, refresh_context
from ..scoring.engine_cache import load_bundle, shared_engine
from ..scoring.plots import GROUP_COLORS
from ..scoring.report import report_targets, write_report_html, write_report_json
from ..units import years_short
from . import layer_registry, notices
from .clinical_panel import ClinicalPanel
from .controls import ALERT_STYLE, action_row
from .result_layers import show_results
from .roi_widget import current_rois
from .score_plots import draw_score_plots
from .window import bring_into_view


class ScoreWidget(QWidget):
    """Select a patient's slides, press Score, read the risk in context, export a report."""

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        layer_registry.install(napari_viewer)
        self.patient_score: Any = None
        self.signature: Any = None
        self.worker: Any = None
        self._rescore = False  # the Correct panel changed the head while a scoring ran
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
        self.case_type = QComboBox()
        self.case_type.setEditable(True)
        self.case_type.addItems(list(CASE_TYPES))
        self.case_type.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.case_type.setMinimumContentsLength(12)  # long names must not widen the dock
        self.case_type.lineEdit().setPlaceholderText("case's cancer type (default: slide metadata)")
        self.case_type.setToolTip(
            "The case's cancer type, checked against the one the signature was derived "
            "from; left empty, the slide's metadata is asked (if it records a tissue)"
        )
        self.case_type.currentTextChanged.connect(self._case_type_changed)
        self.case_type.lineEdit().textEdited.connect(self._case_type_stated)
        self.case_type.activated.connect(self._case_type_stated)
        self._prefill: tuple[str, str] | None = None  # (text, who pre-filled it) until the user states a type
        form.addRow("case type", self.case_type)
        self.case_type_note = QLabel("")
        self.case_type_note.setWordWrap(True)
        self.case_type_note.setStyleSheet("font-size: small; color: #888")
        form.addRow("", self.case_type_note)
        layout.addWidget(box)

        self.score_btn, self.export_btn, self.progress, self.status = action_row(
            layout, ("Score", self.score), ("Export report…", self._export_dialog)
        )

        res = QGroupBox("Risk (pathomics only)")
        rf = QFormLayout(res)
        rf.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
        self.out: dict[str, QLabel] = {}
        for key in (
            "risk score",
            "percentile",
            "risk group",
            "evidence",
            "area scored",
            "survival",
            "composition",
            "cancer type",
        ):
            lab = QLabel("—")
            lab.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            lab.setWordWrap(True)
            self.out[key] = lab
            rf.addRow(key, lab)
        self.mismatch = QLabel("")
        self.mismatch.setWordWrap(True)
        self.mismatch.setStyleSheet(ALERT_STYLE)
        self.mismatch.setVisible(False)
        rf.addRow(self.mismatch)
        self.disclaimer = QLabel("")
        self.disclaimer.setWordWrap(True)
        rf.addRow(self.disclaimer)
        layout.addWidget(res)

        self.clinical_panel = ClinicalPanel()
        self.clinical_panel.apply_requested.connect(self.apply_clinical)
        layout.addWidget(self.clinical_panel)
        self.bundle_path.editingFinished.connect(self.load_fields)
        QTimer.singleShot(0, self.load_fields)

        self.plots = QVBoxLayout()
        layout.addLayout(self.plots)
        layout.addStretch(1)

        napari_viewer.layers.events.inserted.connect(self.refresh_slides)
        napari_viewer.layers.events.removed.connect(self.refresh_slides)
        self.refresh_slides()
        self.case = layer_registry.case_of(napari_viewer)
        layer_registry.listen(self, self.case.adapted_changed, self._on_adapted_head)

    # ------------------------------------------------------------------ slides
    def refresh_slides(self, event: object = None) -> None:
        checked = {
            self.slides.item(i).data(Qt.ItemDataRole.UserRole)
            for i in range(self.slides.count())
            if self.slides.item(i).checkState() == Qt.CheckState.Checked
        }
        self.slides.clear()
        for ly in layer_registry.slide_layers(self.viewer):
            path = str(layer_registry.slide_of(ly).path)
            item = QListWidgetItem(Path(path).name)
            item.setData(Qt.ItemDataRole.UserRole, path)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if (path in checked or not checked) else Qt.CheckState.Unchecked)
            self.slides.addItem(item)

    def selected_slides(self) -> list[Any]:
        wanted = {
            self.slides.item(i).data(Qt.ItemDataRole.UserRole)
            for i in range(self.slides.count())
            if self.slides.item(i).checkState() == Qt.CheckState.Checked
        }
        return [
            layer_registry.slide_of(ly)
            for ly in layer_registry.slide_layers(self.viewer)
            if str(layer_registry.slide_of(ly).path) in wanted
        ]

    # ------------------------------------------------------------------ scoring
    def score(self) -> Any:
        """Score the checked slides as one patient; returns the worker (tests wait on it)."""
        if self.worker is not None:
            return None
        slides = self.selected_slides()
        if not slides:
            notices.show_warning("open and tick at least one slide")
            return None
        try:
            bundle = load_bundle(self.bundle_path.text())
            signature = load_signature(bundle)
            shared_engine(bundle)  # built in the UI thread, so the worker joins the tuned heap (see Engine)
        except PathomicsError as exc:
            notices.report(exc, "cannot score")
            return None
        self.load_fields()
        self.manifest = dict(bundle.manifest)
        rois = [current_rois(self.viewer, s) or None for s in slides]
        patient = self.patient_id.text().strip() or None
        case_type = self.case_type.currentText().strip() or None
        self.cancel_event = threading.Event()
        head = self.case.adapted_head(bundle.bundle_id)
        nuclei_model = (
            self.case.nuclei_model
        )  # the Nuclei panel's choice  # the Correct panel's, until saved or reverted

        @thread_worker(ignore_errors=True)  # errored is reported below; no re-raise into Qt's loop
        def work() -> Any:
            return score_patient(
                slides,
                bundle,
                patient_id=patient,
                rois=rois,
                cancel=self.cancel_event,
                progress=lambda msg, frac: None,
                case_type=case_type,
                class_head=head,
                nuclei_model=nuclei_model,
            )

        worker = work()
        worker.returned.connect(lambda ps: self._show_safely(ps, signature))
        worker.errored.connect(lambda exc: notices.report(exc, "scoring failed"))
        worker.finished.connect(self._finished)
        self.worker = worker
        self.score_btn.setEnabled(False)
        self.status.setText(f"scoring {len(slides)} slide(s)… (inference runs where results are missing)")
        self.progress.setRange(0, 0)
        worker.start()
        return worker

    def _on_adapted_head(self, bundle_id: str) -> None:
        """The Correct panel adapted (or reverted) this bundle's head: a score on show is redone with it."""
        if self.patient_score is None:
            return
        try:
            if load_bundle(self.bundle_path.text()).bundle_id != bundle_id:
                return
        except PathomicsError:
            return
        if self.worker is not None:  # once the scoring in progress ends
            self._rescore = True
            return
        self.score()

    def _finished(self) -> None:
        self.worker = None
        self.score_btn.setEnabled(True)
        self.progress.setRange(0, 100)
        if self._rescore:
            self._rescore = False
            QTimer.singleShot(0, self.score)

    def _show_safely(self, ps: Any, signature: Any) -> None:
        """An exception in a Qt slot would abort napari: report it instead."""
        try:
            self._show(ps, signature)
            bring_into_view(self.out["risk score"].parentWidget())  # the result, not the form above it
        except Exception as exc:  # noqa: BLE001
            notices.report(exc, "cannot display the score")

    def _show(self, ps: Any, signature: Any) -> None:
        self.patient_score = ps
        self.signature = signature
        self.progress.setValue(100)
        sc = ps.score
        n_ref = signature.summary().get("n")
        self.out["risk score"].setText(f"{sc.risk:+.3f}")
        area = (ps.context or {}).get("area") or {}
        user_mpp = mpp_set_by_user([r for r in area.get("slides", []) if r.get("used")], name_slides=len(ps.slides) > 1)
        self.out["percentile"].setText(  # a pixel size the user set moves the percentile: say so beside it
            f"{ordinal(sc.percentile)} of the reference cohort"
            + (f" ({n_ref} patients)" if n_ref else "")
            + "".join(f"; {note}" for note in user_mpp)
        )
        self.out["survival"].setText(
            " · ".join(f"{years_short(float(k), sc.time_unit)}: {100 * v:.0f} %" for k, v in sc.survival_at.items())
        )
        self._case_type_changed(self.case_type.currentText())  # the context names who gave the case type
        self.disclaimer.setText(ps.disclaimer)
        adapted = (ps.bundle or {}).get("class_head")
        self.status.setText(
            f"patient {ps.patient_id}: {len(ps.slides)} slide(s) scored"
            + (
                f" with the tissue classifier adapted in the Correct panel (not saved; head {adapted['digest']})"
                if adapted
                else ""
            )
            + (
                f"; nuclear features from nuclei model {nuc['name']} ({nuc['licence']})"
                if (nuc := ps.nuclei_model)
                else ""
            )
        )
        self.export_btn.setEnabled(True)
        if self.clinical_panel.combined is not None and self.clinical_panel.entered():
            self.apply_clinical(redraw=False)
        self._draw_plots(ps, signature)
        for slide, res in zip(self.selected_slides(), getattr(ps, "results", []) or []):
            if res is not None:
                show_results(self.viewer, slide, res)

    def _show_context(self, ps: Any) -> None:
        """The group with its evidence, the area scored, the composition note and the cancer-type check."""
        ctx = ps.context or {}
        ev = ctx.get("evidence") or {}
        sc = ps.score
        if ev.get("validated"):
            color = GROUP_COLORS.get(sc.group, "#333")
            head = f"<b style='color:{color}'>{ctx.get('group_headline', sc.group.upper())}</b>"
        else:  # a split that is not validated is stated plainly, not shouted
            head = f"<b>{ctx.get('group_headline', sc.group)}</b>"
        said = re.sub(r" \((?:validated split: )?out-of-fold[^)]*\)", "", str(ctx.get("group_text", "")))
        self.out["risk group"].setText(
            f"{head} (frozen cutoff {sc.cutoff:+.3f})<br><i>{said}</i>"
        )  # the HR is in 'evidence'
        self.out["evidence"].setText(
            ("validated: " if ev.get("validated") else "<b>not a validated split</b>: ") + str(ev.get("text", "—"))
        )
        self.out["area scored"].setText(str((ctx.get("area") or {}).get("text", "—")))
        self.out["composition"].setText(str((ctx.get("composition") or {}).get("text", "—")))
        ct = ctx.get("cancer_type") or {}
        sig_type = ct.get("signature") or "not recorded"
        case = (
            f"{ct['case']} ({ct.get('case_source_text') or ct.get('case_source')})"
            if ct.get("case")
            else "<b>not stated</b> (nor in the slide's metadata): choose the case type above to check it"
        )
        self.out["cancer type"].setText(
            f"signature: {sig_type}; case: {case}" + (" — match" if ct.get("match") else "")
        )
        warn = ct.get("warning")
        self.mismatch.setText(f"⚠ {warn}" if warn else "")
        self.mismatch.setVisible(bool(warn))

    def prefill_case_type(self, text: str, source: str) -> None:
        """Fill in a case type that the user did not state (``source``: e.g. "the demo"); it says so until the
        user edits or picks one."""
        self._prefill = (text, source)
        self.case_type.setCurrentText(text)
        self._case_type_changed(text)

    def case_type_source(self) -> str:
        text = self.case_type.currentText().strip()
        return self._prefill[1] if self._prefill and text == self._prefill[0] else USER

    def _case_type_stated(self, *_: object) -> None:
        self._prefill = None
        self._case_type_changed(self.case_type.currentText())

    def _case_type_changed(self, text: str) -> None:
        source = self.case_type_source()
        self.case_type_note.setText(
            f"{case_source_text(source)}: pick or type the case's own type" if text.strip() and source != USER else ""
        )
        self.case_type_note.setVisible(bool(self.case_type_note.text()))
        if self.patient_score is None or self.signature is None:
            return
        refresh_context(
            self.patient_score, self.signature, getattr(self, "manifest", None), text.strip() or None, source
        )
        self._show_context(self.patient_score)

    def _draw_plots(self, ps: Any, signature: Any) -> None:
        draw_score_plots(self.plots, ps, signature, self.clinical_panel.combined, self.width())

    # ------------------------------------------------------------------ clinical values
    def load_fields(self) -> None:
        """Fields for the bundle's combined signature (hidden when the bundle has none)."""
        self.clinical_panel.load(self.bundle_path.text().strip())

    def apply_clinical(self, redraw: bool = True) -> CombinedResult | None:
        """Score with the combined signature from the entered values (None: image only, or refused)."""
        ps, panel = self.patient_score, self.clinical_panel
        if panel.combined is None:
            return None
        if ps is None:
            panel.alert("score the patient first; the values are kept")
            return None
        previous = ps.clinical
        try:
            c = panel.combined_score(ps, self.signature)
        except (ClinicalError, PathomicsError):
            ps.clinical = None
            if redraw and previous is not None:
                self._draw_plots(ps, self.signature)
            return None
        ps.clinical = c
        if redraw:
            self._draw_plots(ps, self.signature)
        self.status.setText(
            f"patient {ps.patient_id}: "
            + ("combined signature (pathomics + clinical)" if c else "pathomics-only signature (no clinical values)")
        )
        return c

    # ------------------------------------------------------------------ report
    def _export_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export case report", "", "HTML report (*.html)")
        if path:
            self.export_report(path)

    def export_report(self, html_path: str | Path) -> tuple[Path, Path] | None:
        """Write the HTML report and its JSON twin (same name, .json)."""
        if self.patient_score is None:
            notices.show_warning("score a patient first")
            return None
        ps = self.patient_score
        b = Path(ps.bundle["path"]) if ps.bundle.get("path") else None
        inputs = [s.path for s in ps.slides] + ([b, *b.iterdir()] if b is not None and b.is_dir() else [b])
        try:
            html_path, json_path = report_targets(html_path, None, inputs)  # never over a slide, ROI file or bundle
            write_report_html(
                ps, html_path, signature=self.signature, combined=self.clinical_panel.combined if ps.clinical else None
            )
            write_report_json(ps, json_path)
        except (PathomicsError, OSError) as exc:
            notices.report(exc, "report export failed")
            return None
        self.status.setText(f"report written: {html_path.name} and {json_path.name}")
        return html_path, json_path
