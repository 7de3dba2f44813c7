"""The Score dock's clinical values: fields generated from a bundle's combined signature.

A combined (pathomics + clinical) signature freezes how each covariate is encoded; the fields
follow that encoding (levels as a list, numbers with their fitted range, the signature's human
label with the column name in small print). A value outside it is named and its field marked;
once every value is entered the panel lays the pathomics-only and combined results side by side,
each with its nested-CV C-index. The dock owns the patient and decides when to score.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import QComboBox, QFormLayout, QGridLayout, QGroupBox, QLabel, QLineEdit, QPushButton, QVBoxLayout

from ..errors import ClinicalError, PathomicsError
from ..scoring import load_signature, ordinal
from ..scoring.combined import RESEARCH_ONLY, CombinedResult, clinical_fields, combined_score, load_clinical_signature
from ..scoring.engine_cache import load_bundle
from ..scoring.plots import GROUP_COLORS
from ..units import years_short
from . import notices
from .controls import ALERT_STYLE, clear_layout


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


def _cidx(rec: dict[str, Any]) -> str:
    v, sd = rec.get("cv_c_index"), rec.get("cv_c_index_sd")
    return "—" if v is None else f"{v:.2f}" + (f" ± {sd:.2f}" if sd is not None else "")


def _headline(side: Mapping[str, Any]) -> str:
    """A side's risk group, in its colour only when its split is validated."""
    ev = side.get("evidence") or {}
    h = side.get("group_headline", "—")
    return f"<b style='color:{GROUP_COLORS.get(side.get('group'), '#333')}'>{h}</b>" if ev.get("validated") else h


class ClinicalPanel(QGroupBox):
    """Clinical fields of the bundle's combined signature (hidden when it has none) and the comparison."""

    #: Apply pressed, Return in a field, or a level picked: the dock scores with the values.
    apply_requested = Signal()

    def __init__(self) -> None:
        super().__init__("Clinical values (combined signature)")
        cl = QVBoxLayout(self)
        self.intro = QLabel("")
        self.intro.setWordWrap(True)
        cl.addWidget(self.intro)
        self.form = QFormLayout()
        self.form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
        cl.addLayout(self.form)
        self.apply_btn = QPushButton("Apply clinical values")
        self.apply_btn.clicked.connect(lambda *_: self.apply_requested.emit())
        cl.addWidget(self.apply_btn)
        self.error = QLabel("")
        self.error.setWordWrap(True)
        self.error.setStyleSheet(ALERT_STYLE)
        self.error.setVisible(False)
        self.error.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        cl.addWidget(self.error)
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
        self.setVisible(False)
        self.fields: dict[str, Any] = {}  # covariate name -> QLineEdit / QComboBox
        self.field_specs: dict[str, dict[str, Any]] = {}
        self.combined: Any = None  # the bundle's combined signature, when it has one
        self._fields_for: str | None = None  # bundle path the fields were generated from

    # ------------------------------------------------------------------ fields
    def load(self, path: str) -> None:
        """Fields for the combined signature of the bundle at ``path`` (once per path)."""
        if path == self._fields_for:
            return
        self._fields_for = path
        while self.form.rowCount():
            self.form.removeRow(0)
        self.fields, self.field_specs, self.combined = {}, {}, None
        try:
            bundle = load_bundle(path)
            self.combined = load_clinical_signature(bundle)
            image = load_signature(bundle) if bundle.signature_path else None
        except Exception as exc:  # noqa: BLE001 - a slot must not raise; score() reports an unusable bundle itself
            self.setVisible(False)
            if not isinstance(exc, PathomicsError) or "clinical" in str(exc):
                notices.report(exc, "combined signature not usable")
            self.combined = None
            return
        self.setVisible(self.combined is not None)
        if self.combined is None:
            return
        ev = self.combined.evaluation.get("rows") or {}
        used = f"; fitted on {ev['used']} of {ev['total']} patients" if ev.get("total") else ""
        self.intro.setText(
            f"<b>{self.combined.name}</b>: pathomics + {self.combined.clinical.describe()}"
            f"{used}. Enter every value to use it; leave all empty for pathomics only."
        )
        for f in clinical_fields(self.combined, [image]):
            w = self._field(f)
            w.setToolTip(f["hint"])
            self.fields[f["name"]] = w
            self.field_specs[f["name"]] = f
            self.form.addRow(_field_label(f), w)
        if any(not f["in_score"] for f in self.field_specs.values()):
            star = QLabel("<i>* places the patient on the interplay curves; not in the score</i>")
            star.setWordWrap(True)
            self.form.addRow(star)

    def _field(self, f: dict[str, Any]) -> QComboBox | QLineEdit:
        """A list of the frozen levels (editable: a typed value outside them is named, not replaced), or a line."""
        if f["levels"]:
            box = QComboBox()
            box.setEditable(True)
            box.addItems(["", *f["levels"]])
            box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            box.setMinimumContentsLength(6)
            box.lineEdit().setPlaceholderText(f["allowed"])
            box.lineEdit().returnPressed.connect(self.apply_requested.emit)
            box.activated.connect(lambda _i: self.apply_requested.emit())
            return box
        line = QLineEdit()
        line.setPlaceholderText(f["allowed"] if f["type"] == "numeric" else "value")
        line.returnPressed.connect(self.apply_requested.emit)
        return line

    def values(self) -> dict[str, str]:
        """The text of every clinical field, by covariate name."""
        return {n: (w.currentText() if isinstance(w, QComboBox) else w.text()).strip() for n, w in self.fields.items()}

    def set_values(self, values: dict[str, Any]) -> None:
        for n, v in values.items():
            w = self.fields[n]
            if isinstance(w, QComboBox):
                w.setEditText(str(v))
            else:
                w.setText(str(v))

    def entered(self) -> bool:
        return any(self.values().values())

    def alert(self, text: str) -> None:
        self.error.setText(text)
        self.error.setVisible(bool(text))

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

    # ------------------------------------------------------------------ scoring
    def combined_score(self, ps: Any, signature: Any) -> CombinedResult | None:
        """The combined result for patient ``ps`` from the entered values (None: none entered), shown beside
        the pathomics-only one. A refused value is marked, named and re-raised; the image-only result stands."""
        values = self.values()
        try:
            c = combined_score(ps, self.combined, values, signature)
        except (ClinicalError, PathomicsError) as exc:
            bad = self._bad_fields(values) or {n for n in self.fields if f"{n!r}" in str(exc) or f"{n} =" in str(exc)}
            self._mark(bad)
            self.alert(f"⚠ {exc}. The pathomics-only result above is unchanged.")
            self._show_compare(None, ps)
            raise
        self._mark(set())
        self.alert("")
        self._show_compare(c, ps)
        return c

    def _show_compare(self, c: CombinedResult | None, ps: Any) -> None:
        clear_layout(self.compare)
        self.compare_note.setText("")
        if not c:
            return
        img = c.get("image_only") or {}
        m = c["models"]
        rows = [
            ("", "<b>pathomics only</b>", "<b>pathomics + clinical</b>"),
            ("risk", f"{img.get('risk', float('nan')):+.3f}" if img else "—", f"{c['risk']:+.3f}"),
            ("percentile", ordinal(img["percentile"]) if img else "—", ordinal(c["percentile"])),
            ("group", _headline(img) if img else "—", _headline(c)),
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
        rows.append(("CV C-index*", _cidx(m["image"]), _cidx(m["combined"])))
        for r, row in enumerate(rows):
            for col, text in enumerate(row):
                lab = QLabel(text)
                lab.setWordWrap(True)  # a ~320 px dock: cells wrap rather than widen it
                lab.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
                self.compare.addWidget(lab, r, col)
        self.compare.setColumnStretch(1, 1)
        self.compare.setColumnStretch(2, 1)
        self.compare_note.setText(self._compare_note(c, ps))

    def _compare_note(self, c: CombinedResult, ps: Any) -> str:
        """How the C-indices were measured, what the image adds, the log-hazard parts, the interplay notes."""
        m = c["models"]
        inc = c.get("increment_over_clinical") or {}
        note = (
            "* nested CV of the combined signature: both models refitted in the same folds on the same "
            f"{(self.combined.evaluation.get('rows') or {}).get('used', '')} patients"
        )
        own = ((ps.context or {}).get("evidence") or {}).get("cv_c_index") if ps is not None else None
        if (
            own is not None
            and m["image"].get("cv_c_index") is not None
            and abs(own - m["image"]["cv_c_index"]) >= 0.005
        ):
            note += f" (the image-only signature's own CV, on its cohort: C {own:.2f})"
        note += f".<br>clinical values alone: C {_cidx(m['clinical'])}"
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
        return note
