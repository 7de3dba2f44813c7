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
Exports an HTML + JSON case report.
"""

from __future__ import annotations

import html
import re
import threading
from pathlib import Path
from typing import Any

import napari
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from napari.qt.threading import thread_worker
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..errors import ClinicalError, PathomicsError
from ..resources import DEFAULT_BUNDLE
from ..scoring import load_signature, ordinal, score_patient
from ..scoring.combined import RESEARCH_ONLY, clinical_fields, combined_score, interplay_docs, load_clinical_signature
from ..scoring.context import CASE_TYPES, USER, case_source_text, refresh_context
from ..scoring.engine_cache import load_bundle, shared_engine
from ..scoring.plots import GROUP_COLORS, composition_figure, interplay_figure, survival_figure
from ..scoring.report import report_targets, write_report_html, write_report_json
from ..signature import SignatureScore
from ..units import years_short
from . import session
from .controls import action_row
from .result_layers import show_results
from .roi_widget import current_rois

#: An alert box readable in napari's dark and light themes (its own background, dark red text).
_ALERT = "QLabel{background:#fdecea;color:#7a1c1c;border:1px solid #e57373;border-radius:3px;padding:4px}"


def _drop(widget: QWidget) -> None:
    """Take a widget out now (hidden, unparented) and delete it later: never left drawn at (0, 0)."""
    widget.hide()
    widget.setParent(None)
    widget.deleteLater()


def _field_label(f: dict[str, Any]) -> QLabel:
    """A clinical field's row label: the signature's human name (and unit), the column name in small print."""
    label = str(f.get("label") or f["name"])
    unit = f" ({f['unit']})" if f.get("unit") and f["unit"] not in label else ""
    text = html.escape(label + unit) + ("" if f["in_score"] else " *")
    if label != f["name"]:
        text += f"<br><small style='color:#888'>{html.escape(f['name'])}</small>"
    lab = QLabel(text)
    lab.setTextFormat(Qt.TextFormat.RichText)
    return lab


class ScoreWidget(QWidget):
    """Select a patient's slides, press Score, read the risk in context, export a report."""

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        session.install(napari_viewer)
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
        self.mismatch.setStyleSheet(_ALERT)
        self.mismatch.setVisible(False)
        rf.addRow(self.mismatch)
        self.disclaimer = QLabel("")
        self.disclaimer.setWordWrap(True)
        rf.addRow(self.disclaimer)
        layout.addWidget(res)

        self.clinical_box = QGroupBox("Clinical values (combined signature)")
        cl = QVBoxLayout(self.clinical_box)
        self.clinical_intro = QLabel("")
        self.clinical_intro.setWordWrap(True)
        cl.addWidget(self.clinical_intro)
        self.clinical_form = QFormLayout()
        self.clinical_form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
        cl.addLayout(self.clinical_form)
        self.apply_btn = QPushButton("Apply clinical values")
        self.apply_btn.clicked.connect(lambda *_: self.apply_clinical())  # clicked(bool) would fill redraw
        cl.addWidget(self.apply_btn)
        self.clinical_error = QLabel("")
        self.clinical_error.setWordWrap(True)
        self.clinical_error.setStyleSheet(_ALERT)
        self.clinical_error.setVisible(False)
        self.clinical_error.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        cl.addWidget(self.clinical_error)
        self.compare = QGridLayout()
        self.compare.setHorizontalSpacing(10)
        self.compare.setVerticalSpacing(3)
        cl.addLayout(self.compare)
        self.compare_note = QLabel("")
        self.compare_note.setWordWrap(True)
        self.compare_note.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        cl.addWidget(self.compare_note)
        research = QLabel(RESEARCH_ONLY)
        research.setWordWrap(True)
        research.setStyleSheet("QLabel{font-size:11px;font-style:italic}")
        cl.addWidget(research)
        self.clinical_box.setVisible(False)
        layout.addWidget(self.clinical_box)
        self.fields: dict[str, Any] = {}  # covariate name -> QLineEdit / QComboBox
        self.field_specs: dict[str, dict[str, Any]] = {}
        self.combined: Any = None  # the bundle's combined signature, when it has one
        self._fields_for: str | None = None  # bundle path the fields were generated from
        self.bundle_path.editingFinished.connect(self.load_fields)
        QTimer.singleShot(0, self.load_fields)

        self.plots = QVBoxLayout()
        layout.addLayout(self.plots)
        layout.addStretch(1)

        napari_viewer.layers.events.inserted.connect(self.refresh_slides)
        napari_viewer.layers.events.removed.connect(self.refresh_slides)
        self.refresh_slides()
        self.case = session.case_of(napari_viewer)
        session.listen(self, self.case.adapted_changed, self._on_adapted_head)

    # ------------------------------------------------------------------ slides
    def refresh_slides(self, event: object = None) -> None:
        checked = {
            self.slides.item(i).data(Qt.ItemDataRole.UserRole)
            for i in range(self.slides.count())
            if self.slides.item(i).checkState() == Qt.CheckState.Checked
        }
        self.slides.clear()
        for ly in session.slide_layers(self.viewer):
            path = str(session.slide_of(ly).path)
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
            session.slide_of(ly) for ly in session.slide_layers(self.viewer) if str(session.slide_of(ly).path) in wanted
        ]

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
        self.load_fields()
        self.manifest = dict(bundle.manifest)
        rois = [current_rois(self.viewer, s) or None for s in slides]
        patient = self.patient_id.text().strip() or None
        case_type = self.case_type.currentText().strip() or None
        self.cancel_event = threading.Event()
        head = self.case.adapted_head(bundle.bundle_id)  # the Correct panel's, until saved or reverted

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
            )

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
        except Exception as exc:  # noqa: BLE001
            session.report(exc, "cannot display the score")

    def _show(self, ps: Any, signature: Any) -> None:
        self.patient_score = ps
        self.signature = signature
        self.progress.setValue(100)
        sc = ps.score
        n_ref = signature.summary().get("n")
        self.out["risk score"].setText(f"{sc.risk:+.3f}")
        self.out["percentile"].setText(
            f"{ordinal(sc.percentile)} of the reference cohort" + (f" ({n_ref} patients)" if n_ref else "")
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
        )
        self.export_btn.setEnabled(True)
        if self.combined is not None and self._entered():
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
        while self.plots.count():
            item = self.plots.takeAt(0)
            if item.widget():
                _drop(item.widget())
        c = getattr(ps, "clinical", None)
        figs = []
        wi = min(4.6, max(3.0, (self.width() - 24) / 100))  # inches at 100 dpi: laid out for the dock's width
        if c and self.combined is not None:
            curve = c.get("survival_curve") or {}
            csc = SignatureScore(
                risk=c["risk"],
                percentile=c["percentile"],
                group=c["group"],
                cutoff=c["cutoff"],
                survival_at=dict(c.get("survival") or {}),
                curve_times=list(curve.get("times", [])),
                curve_survival=list(curve.get("survival", [])),
                time_unit=c.get("time_unit", "days"),
            )
            figs.append(
                survival_figure(
                    self.combined,
                    csc,
                    figsize=(wi, 3.6),
                    patient_label="this patient (pathomics + clinical)",
                    title="Combined model",
                )
            )
        else:
            figs.append(
                survival_figure(
                    signature,
                    ps.score,
                    figsize=(wi, 3.6),
                    patient_label=f"this patient ({(ps.context or {}).get('group_headline', ps.score.group)})",
                    title="Pathomics only",
                )
            )
        figs.append(composition_figure(ps, figsize=(wi, 2.8)))
        if c:
            places = {(p.get("column"), p.get("signature")): p for p in c.get("interplay") or []}
            for sig, doc in interplay_docs(self.combined, signature):
                pl = places.get((doc.get("marker") or doc.get("treatment"), sig.name)) or {}
                figs.append(
                    interplay_figure(
                        doc, sig.time_unit, figsize=(wi, 6.0), rows=2, patient=pl if pl.get("level") else None
                    )
                )
        for fig in figs:
            canvas = FigureCanvasQTAgg(fig)
            canvas.setMinimumSize(200, int(fig.get_figheight() * 62))  # narrow docks shrink the figure, not widen
            self.plots.addWidget(canvas)

    # ------------------------------------------------------------------ clinical values
    def load_fields(self) -> None:
        """Fields for the bundle's combined signature (hidden when the bundle has none)."""
        path = self.bundle_path.text().strip()
        if path == self._fields_for:
            return
        self._fields_for = path
        while self.clinical_form.rowCount():
            self.clinical_form.removeRow(0)
        self.fields, self.field_specs, self.combined = {}, {}, None
        try:
            bundle = load_bundle(path)
            self.combined = load_clinical_signature(bundle)
            image = load_signature(bundle) if bundle.signature_path else None
        except Exception as exc:  # noqa: BLE001 - a slot must not raise; score() reports an unusable bundle itself
            self.clinical_box.setVisible(False)
            if not isinstance(exc, PathomicsError) or "clinical" in str(exc):
                session.report(exc, "combined signature not usable")
            self.combined = None
            return
        self.clinical_box.setVisible(self.combined is not None)
        if self.combined is None:
            return
        ev = self.combined.evaluation.get("rows") or {}
        used = f"; fitted on {ev['used']} of {ev['total']} patients" if ev.get("total") else ""
        self.clinical_intro.setText(
            f"<b>{self.combined.name}</b>: pathomics + {self.combined.clinical.describe()}"
            f"{used}. Enter every value to use it; leave all empty for pathomics only."
        )
        for f in clinical_fields(self.combined, [image]):
            if f["levels"]:
                w: Any = QComboBox()
                w.setEditable(True)  # a typed value outside the levels is named, not silently replaced
                w.addItems(["", *f["levels"]])
                w.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
                w.setMinimumContentsLength(6)
                w.lineEdit().setPlaceholderText(f["allowed"])
                w.lineEdit().returnPressed.connect(self.apply_clinical)
                w.activated.connect(lambda _i: self.apply_clinical())
            else:
                w = QLineEdit()
                w.setPlaceholderText(f["allowed"] if f["type"] == "numeric" else "value")
                w.returnPressed.connect(self.apply_clinical)
            w.setToolTip(f["hint"])
            self.fields[f["name"]] = w
            self.field_specs[f["name"]] = f
            self.clinical_form.addRow(_field_label(f), w)
        if any(not f["in_score"] for f in self.field_specs.values()):
            star = QLabel("<i>* places the patient on the interplay curves; not in the score</i>")
            star.setWordWrap(True)
            self.clinical_form.addRow(star)

    def clinical_values(self) -> dict[str, str]:
        """The text of every clinical field, by covariate name."""
        return {n: (w.currentText() if isinstance(w, QComboBox) else w.text()).strip() for n, w in self.fields.items()}

    def set_clinical_values(self, values: dict[str, Any]) -> None:
        for n, v in values.items():
            w = self.fields[n]
            if isinstance(w, QComboBox):
                w.setEditText(str(v))
            else:
                w.setText(str(v))

    def _entered(self) -> bool:
        return any(self.clinical_values().values())

    def _alert(self, text: str) -> None:
        self.clinical_error.setText(text)
        self.clinical_error.setVisible(bool(text))

    def _mark(self, bad: set[str]) -> None:
        for n, w in self.fields.items():
            w.setStyleSheet("border:2px solid #e53935;" if n in bad else "")

    def _bad_fields(self, values: dict[str, str]) -> set[str]:
        bad = set()
        spec = self.combined.clinical if self.combined is not None else None
        for n, v in values.items():
            if not v or spec is None or n not in spec.names:
                continue
            try:
                spec.covariate(n).encode(v)
            except ClinicalError:
                bad.add(n)
        return bad

    def apply_clinical(self, redraw: bool = True) -> dict[str, Any] | None:
        """Score with the combined signature from the entered values (None: image only, or refused)."""
        ps = self.patient_score
        if self.combined is None:
            return None
        values = self.clinical_values()
        if ps is None:
            self._alert("score the patient first; the values are kept")
            return None
        previous = ps.clinical
        try:
            c = combined_score(ps, self.combined, values, self.signature)
        except (ClinicalError, PathomicsError) as exc:
            bad = self._bad_fields(values) or {n for n in self.fields if f"{n!r}" in str(exc) or f"{n} =" in str(exc)}
            self._mark(bad)
            self._alert(f"⚠ {exc}. The pathomics-only result above is unchanged.")
            ps.clinical = None
            self._show_compare(None)
            if redraw and previous is not None:
                self._draw_plots(ps, self.signature)
            return None
        self._mark(set())
        self._alert("")
        ps.clinical = c
        self._show_compare(c)
        if redraw:
            self._draw_plots(ps, self.signature)
        self.status.setText(
            f"patient {ps.patient_id}: "
            + ("combined signature (pathomics + clinical)" if c else "pathomics-only signature (no clinical values)")
        )
        return c

    def _show_compare(self, c: dict[str, Any] | None) -> None:
        while self.compare.count():
            item = self.compare.takeAt(0)
            if item.widget():
                _drop(item.widget())
        self.compare_note.setText("")
        if not c:
            return
        img = c.get("image_only") or {}
        m = c["models"]

        def cidx(rec: dict[str, Any]) -> str:
            v, sd = rec.get("cv_c_index"), rec.get("cv_c_index_sd")
            return "—" if v is None else f"{v:.2f}" + (f" ± {sd:.2f}" if sd is not None else "")

        def head(side: dict[str, Any]) -> str:
            ev = side.get("evidence") or {}
            h = side.get("group_headline", "—")
            return (
                f"<b style='color:{GROUP_COLORS.get(side.get('group'), '#333')}'>{h}</b>" if ev.get("validated") else h
            )

        rows = [
            ("", "<b>pathomics only</b>", "<b>pathomics + clinical</b>"),
            ("risk", f"{img.get('risk', float('nan')):+.3f}" if img else "—", f"{c['risk']:+.3f}"),
            ("percentile", ordinal(img["percentile"]) if img else "—", ordinal(c["percentile"])),
            ("group", head(img) if img else "—", head(c)),
        ]
        for h, v in (c.get("survival") or {}).items():
            iv = (img.get("survival") or {}).get(h)
            rows.append(
                (
                    f"survival {years_short(float(h), c.get('time_unit', 'days'))}",
                    "—" if iv is None else f"{100 * iv:.0f} %",
                    f"{100 * v:.0f} %",
                )
            )
        rows.append(("CV C-index*", cidx(m["image"]), cidx(m["combined"])))
        for r, row in enumerate(rows):
            for col, text in enumerate(row):
                lab = QLabel(text)
                lab.setWordWrap(True)  # a ~320 px dock: cells wrap rather than widen it
                lab.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
                self.compare.addWidget(lab, r, col)
        self.compare.setColumnStretch(1, 1)
        self.compare.setColumnStretch(2, 1)
        inc = c.get("increment_over_clinical") or {}
        note = (
            "* nested CV of the combined signature: both models refitted in the same folds on the same "
            f"{(self.combined.evaluation.get('rows') or {}).get('used', '')} patients"
        )
        own = (
            ((self.patient_score.context or {}).get("evidence") or {}).get("cv_c_index") if self.patient_score else None
        )
        if (
            own is not None
            and m["image"].get("cv_c_index") is not None
            and abs(own - m["image"]["cv_c_index"]) >= 0.005
        ):
            note += f" (the image-only signature's own CV, on its cohort: C {own:.2f})"
        note += f".<br>clinical values alone: C {cidx(m['clinical'])}"
        if inc.get("delta_c") is not None:
            note += (
                f"; combined − clinical ΔC {inc['delta_c']:+.3f} [{inc.get('ci_lower', 0):+.3f}, "
                f"{inc.get('ci_upper', 0):+.3f}] — what the image adds to the clinical values"
            )
        parts = c.get("contributions") or {}
        if parts:
            note += "<br>log-hazard parts (vs the reference mean): " + " · ".join(
                f"{k} {v:+.2f}" for k, v in parts.items()
            )
        for pl in c.get("interplay") or []:
            note += f"<br>{pl['column']} curves: {pl['note']}" + (
                f" (interaction p = {pl['interaction_p']:.2g})" if pl.get("interaction_p") is not None else ""
            )
        self.compare_note.setText(note)

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
            write_report_html(ps, html_path, signature=self.signature, combined=self.combined if ps.clinical else None)
            write_report_json(ps, json_path)
        except (PathomicsError, OSError) as exc:
            session.report(exc, "report export failed")
            return None
        self.status.setText(f"report written: {html_path.name} and {json_path.name}")
        return html_path, json_path
