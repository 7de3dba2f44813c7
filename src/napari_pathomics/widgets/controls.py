"""Small Qt building blocks shared by the docks (spin boxes, action row with progress/status, alerts)."""

from __future__ import annotations

from collections.abc import Callable

from qtpy.QtWidgets import QDoubleSpinBox, QHBoxLayout, QLabel, QLayout, QProgressBar, QPushButton, QVBoxLayout

#: An alert box readable in napari's dark and light themes (its own background, dark red text).
ALERT_STYLE = "QLabel{background:#fdecea;color:#7a1c1c;border:1px solid #e57373;border-radius:3px;padding:4px}"


def spin(value: float, lo: float, hi: float, step: float, suffix: str, decimals: int = 3) -> QDoubleSpinBox:
    s = QDoubleSpinBox()
    s.setDecimals(decimals)
    s.setRange(lo, hi)
    s.setSingleStep(step)
    s.setValue(value)
    s.setSuffix(suffix)
    return s


def action_row(
    layout: QVBoxLayout, main: tuple[str, Callable[[], object]], second: tuple[str, Callable[[], object]]
) -> tuple[QPushButton, QPushButton, QProgressBar, QLabel]:
    """Two buttons (the second starts disabled), a progress bar and a wrapped status line."""
    row = QHBoxLayout()
    buttons = []
    for text, slot in (main, second):
        b = QPushButton(text)
        b.clicked.connect(slot)
        row.addWidget(b)
        buttons.append(b)
    buttons[1].setEnabled(False)
    layout.addLayout(row)
    progress = QProgressBar()
    progress.setRange(0, 100)
    layout.addWidget(progress)
    status = QLabel("")
    status.setWordWrap(True)
    layout.addWidget(status)
    return buttons[0], buttons[1], progress, status


def clear_layout(layout: QLayout) -> None:
    """Empty ``layout``: each widget hidden and unparented now, deleted later (never left drawn at (0, 0))."""
    while layout.count():
        item = layout.takeAt(0)
        if widget := item.widget():
            widget.hide()
            widget.setParent(None)
            widget.deleteLater()
