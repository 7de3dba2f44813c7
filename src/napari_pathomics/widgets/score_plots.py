"""The Score dock's figures: survival over the reference Kaplan–Meier curves, composition, interplay.

With clinical values applied, the survival curve is the combined model's and the patient is
placed on the interplay curves the signature carries; otherwise it is the pathomics-only
signature's. The figures are laid out for the dock's width.
"""

from __future__ import annotations

from typing import Any

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from qtpy.QtWidgets import QVBoxLayout

from ..scoring.combined import combined_as_score, interplay_docs
from ..scoring.plots import composition_figure, interplay_figure, survival_figure
from .controls import clear_layout


def score_figures(ps: Any, signature: Any, combined: Any, width_in: float) -> list[Figure]:
    """The figures for patient ``ps`` (``combined``: the bundle's combined signature, or None)."""
    c = getattr(ps, "clinical", None)
    figs = []
    if c and combined is not None:
        figs.append(
            survival_figure(
                combined,
                combined_as_score(c),
                figsize=(width_in, 3.6),
                patient_label="this patient (pathomics + clinical)",
                title="Combined model",
            )
        )
    else:
        figs.append(
            survival_figure(
                signature,
                ps.score,
                figsize=(width_in, 3.6),
                patient_label=f"this patient ({(ps.context or {}).get('group_headline', ps.score.group)})",
                title="Pathomics only",
            )
        )
    figs.append(composition_figure(ps, figsize=(width_in, 2.8)))
    if c:
        places = {(p.get("column"), p.get("signature")): p for p in c.get("interplay") or []}
        for sig, doc in interplay_docs(combined, signature):
            pl = places.get((doc.get("marker") or doc.get("treatment"), sig.name)) or {}
            figs.append(
                interplay_figure(
                    doc, sig.time_unit, figsize=(width_in, 6.0), rows=2, patient=pl if pl.get("level") else None
                )
            )
    return figs


def draw_score_plots(layout: QVBoxLayout, ps: Any, signature: Any, combined: Any, dock_width: int) -> None:
    """Replace the figures in ``layout`` with those of patient ``ps``, sized for a dock ``dock_width`` px wide."""
    clear_layout(layout)
    wi = min(4.6, max(3.0, (dock_width - 24) / 100))  # inches at 100 dpi: laid out for the dock's width
    for fig in score_figures(ps, signature, combined, wi):
        canvas = FigureCanvasQTAgg(fig)
        canvas.setMinimumSize(200, int(fig.get_figheight() * 62))  # narrow docks shrink the figure, not widen
        layout.addWidget(canvas)
