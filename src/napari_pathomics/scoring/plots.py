"""Figures of a patient's score: survival in context and tissue composition.

Plain ``matplotlib.figure.Figure`` objects (no pyplot, so no global state and no GUI backend):
the Score dock wraps them in a Qt canvas, the report renders them to PNG with Agg. Every string
that comes from input (signature, class, marker and level names, titles) goes through
:func:`plain_text`, so matplotlib never reads it as mathtext.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..colormaps import class_palette
from ..units import per_year

__all__ = [
    "plain_text",
    "survival_figure",
    "composition_figure",
    "interplay_figure",
    "forest_figure",
    "figure_png",
    "GROUP_COLORS",
    "PATIENT_COLOR",
]

GROUP_COLORS = {"high": "#c0392b", "low": "#1e8449"}
PATIENT_COLOR = "#1f3fbf"


def plain_text(value: object) -> str:
    """``value`` as text matplotlib draws as it is: ``$`` escaped, so a name like ``$\\undefined$``
    is never parsed as mathtext (which raises in ``savefig`` or in a Qt canvas's paint)."""
    return str(value).replace("$", r"\$")


def _signature_score(score: Any) -> Any:
    """Accept a PatientScore (``.score``) or a SignatureScore."""
    return getattr(score, "score", score) if not hasattr(score, "curve_times") else score


def survival_figure(
    signature: Any,
    score: Any,
    *,
    figsize: tuple[float, float] = (6.4, 4.2),
    dpi: int = 100,
    patient_label: str | None = None,
    title: str | None = None,
) -> Figure:
    """The patient's predicted S(t) over the reference cohort's Kaplan–Meier curves per group.

    At-risk counts of each reference group are printed under the axis at the grid's ticks;
    the signature's horizons are dashed lines with the patient's survival labelled.
    """
    sc = _signature_score(score)
    km = signature.reference_km
    f = 1.0 / per_year(sc.time_unit)
    unit = "years" if f != 1.0 or sc.time_unit == "years" else sc.time_unit
    grid = np.asarray(km["grid"], float) * f
    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    gs = fig.add_gridspec(2, 1, height_ratios=[5, 1])
    ax = fig.add_subplot(gs[0])
    tab = fig.add_subplot(gs[1], sharex=ax)
    groups = [g for g in ("low", "high") if g in km]
    for g in groups:
        d = km[g]
        col = GROUP_COLORS.get(g, "#555")
        ax.step(grid, d["survival"], where="post", color=col, lw=1.6, label=f"reference {g} risk (n={d.get('n', '?')})")
        if "ci_lower" in d and "ci_upper" in d:
            ax.fill_between(grid, d["ci_lower"], d["ci_upper"], step="post", color=col, alpha=0.12, lw=0)
    t = np.asarray(sc.curve_times, float) * f
    ax.step(
        t,
        sc.curve_survival,
        where="post",
        color=PATIENT_COLOR,
        lw=2.4,
        label=plain_text(patient_label or f"this patient ({sc.group} risk)"),
    )
    for key, s in sc.survival_at.items():
        h = float(key) * f
        ax.axvline(h, color="#888", ls="--", lw=0.8)
        ax.plot([h], [s], "o", color=PATIENT_COLOR, ms=5)
        ax.annotate(
            f"{100 * s:.0f} %", (h, s), textcoords="offset points", xytext=(4, 6), fontsize=8, color=PATIENT_COLOR
        )
    ax.set_ylim(0, 1.02)
    if grid.size:
        ax.set_xlim(0, float(grid[-1]))
    ax.set_ylabel("overall survival")
    ax.set_title(plain_text(title or f"Predicted survival vs reference cohort ({signature.name})"), fontsize=10)
    ax.grid(alpha=0.3)
    narrow = fig.get_figwidth() < 5.5
    ax.legend(loc="lower left", fontsize=7 if narrow else 8, frameon=narrow, framealpha=0.85)
    ax.tick_params(labelbottom=False)
    # at-risk table: number of reference patients still at risk at each x tick, per group
    ticks = [float(x) for x in ax.get_xticks() if grid.size and grid[0] <= x <= grid[-1]]
    rows = []
    for g in groups:
        ar = np.asarray(km[g].get("at_risk", []), float)
        if ar.size == grid.size and grid.size:
            idx = np.clip(np.searchsorted(grid, ticks, side="right") - 1, 0, grid.size - 1)
            rows.append((g, [int(ar[i]) for i in idx]))
    for k, (g, counts) in enumerate(rows):
        y = len(rows) - 1 - k
        for x, c in zip(ticks, counts):
            tab.text(x, y, str(c), ha="center", va="center", fontsize=8, color=GROUP_COLORS.get(g, "#333"))
    tab.set_ylim(-0.6, max(len(rows), 1) - 0.4)
    tab.set_yticks(range(len(rows)), [g for g, _ in reversed(rows)], fontsize=8)
    tab.set_xticks(ticks)
    tab.set_xlabel(
        f"time ({unit}); numbers at risk in the reference cohort"
        if not narrow
        else f"time ({unit})\nat risk in the reference cohort",
        fontsize=9 if not narrow else 8,
    )
    for side in ("top", "right", "left"):
        tab.spines[side].set_visible(False)
    tab.tick_params(axis="y", length=0, pad=16)
    return fig


def composition_figure(
    score: Any,
    colors: Mapping[str, str] | Sequence[str] | None = None,
    *,
    figsize: tuple[float, float] = (6.4, 3.0),
    dpi: int = 100,
    title: str | None = None,
    ylabel: str = "mean class probability (%)",
) -> Figure:
    """Bar chart of the patient's tissue composition (mean class probability) in class colours.

    ``score`` is a PatientScore (its ``composition`` and ``class_colors`` are used; background
    classes are left out when its ``context`` says which they are) or a plain ``{class: share}``
    mapping with ``colors`` given.
    """
    comp = dict(getattr(score, "composition", score))
    ctx = (getattr(score, "context", None) or {}).get("composition") if hasattr(score, "composition") else None
    if ctx and ctx.get("tissue"):
        comp = dict(ctx["tissue"])
        ylabel = "% of tissue"
    names = list(comp)
    if colors is None:  # the viewer's class map colours, not the bundle's (which may be H&E pinks)
        cls = list(getattr(score, "class_names", []))
        colors = dict(zip(cls, class_palette(cls, list(getattr(score, "class_colors", [])))))
    if not isinstance(colors, Mapping):
        colors = dict(zip(names, colors))
    vals = np.array([comp[n] for n in names], float) * 100
    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    ax = fig.add_subplot(111)
    bars = ax.bar(
        [plain_text(n) for n in names], vals, color=[colors.get(n, "#999999") for n in names], edgecolor="#333", lw=0.6
    )
    for b, v in zip(bars, vals):
        ax.annotate(
            f"{v:.0f}",
            (b.get_x() + b.get_width() / 2, v),
            textcoords="offset points",
            xytext=(0, 2),
            ha="center",
            fontsize=8,
        )
    ax.set_ylabel(plain_text(ylabel), fontsize=8)
    ax.set_ylim(0, max(10.0, float(vals.max()) * 1.15) if vals.size else 100)
    if title is None:
        scope = ((getattr(score, "context", None) or {}).get("area") or {}).get("scope")
        title = f"Tissue composition ({'tiles in ROIs' if scope == 'ROIs' else scope or 'scored tiles'})"
    ax.set_title(plain_text(title), fontsize=10)
    narrow = fig.get_figwidth() < 4.5 and len(names) > 6
    ax.tick_params(axis="x", labelsize=7 if narrow else 8, labelrotation=45 if narrow else 0)
    ax.grid(axis="y", alpha=0.3)
    return fig


def figure_png(fig: Figure, dpi: int | None = None) -> bytes:
    """Render a Figure to PNG bytes with the Agg canvas (works without any display)."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi or fig.dpi)
    return buf.getvalue()


LEVEL_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


def _hr_text(hr: Mapping[str, Any] | None) -> str:
    if not hr:
        return "HR n/a"
    return f"HR {hr['hr']:.2f} [{hr['ci_lower']:.2f}, {hr['ci_upper']:.2f}], p={hr['p']:.2g}"


def interplay_figure(
    result: Mapping[str, Any],
    time_unit: str = "days",
    *,
    figsize: tuple[float, float] = (9.6, 4.0),
    dpi: int = 100,
    patient: Mapping[str, Any] | None = None,
    rows: int = 1,
) -> Figure:
    """Kaplan–Meier curves of each marker / treatment level, one panel per pathomics risk group.

    ``result`` is what ``signature.interplay.analyze_interaction`` or ``analyze_benefit`` returns;
    each panel's title gives the level's hazard ratio in that group, the figure's the interaction p.
    ``patient`` (``{"group": "low", "level": "marker > 37"}``, from ``scoring.combined``) places a
    patient: their curve is drawn bold and labelled, the other curves and the other group fade.
    ``rows=2`` stacks the panels (for a narrow dock).
    """
    f = 1.0 / per_year(time_unit)
    grid = np.asarray(result["grid"], float) * f
    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    axes = fig.subplots(rows, 3 - rows, sharey=True, squeeze=False).ravel()
    pg, plevel = (patient or {}).get("group"), (patient or {}).get("level")
    for ax, g in zip(axes, ("low", "high")):
        grp = result["groups"][g]
        faded = patient is not None and g != pg
        for k, level in enumerate(result["levels"]):
            km = grp["km"].get(level)
            if km is None:
                continue
            col = LEVEL_COLORS[k % len(LEVEL_COLORS)]
            mine = patient is not None and g == pg and level == plevel
            alpha = 0.35 if faded or (patient is not None and plevel is not None and not mine) else 1.0
            ax.step(
                grid,
                km["survival"],
                where="post",
                color=col,
                lw=3.0 if mine else 1.6,
                alpha=alpha,
                label=plain_text(
                    f"{level} (n={km['n']}, {km['events']} events)" + ("  ← this patient" if mine else "")
                ),
            )
            ax.fill_between(
                grid, km["ci_lower"], km["ci_upper"], step="post", color=col, alpha=0.16 if mine else 0.06, lw=0
            )
        if patient is not None and g == pg:
            for side in ax.spines.values():
                side.set_color("#1f3fbf")
                side.set_linewidth(1.6)
        hrs = [f"{lv}: {_hr_text(h)}" for lv, h in grp["hazard_ratio"].items()]
        mark = (
            (" — this patient's group" if rows == 1 else "\nthis patient's group")
            if patient is not None and g == pg
            else ""
        )
        ax.set_title(plain_text(f"pathomics {g}-risk group (n={grp['n']}){mark}\n" + "\n".join(hrs)), fontsize=8)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel(plain_text(f"time ({'years' if f != 1.0 else time_unit})"))
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left", fontsize=7, frameon=False)
    for ax in axes[:: 3 - rows]:
        ax.set_ylabel("survival")
    p = result["interaction"].get("p")
    what = result.get("marker") or result.get("treatment") or ""
    sep = "\n" if rows > 1 else " — "
    fig.suptitle(
        plain_text(
            f"{what} within pathomics risk groups{sep}interaction p = {p:.2g}"
            if p is not None
            else f"{what} within pathomics risk groups"
        ),
        fontsize=10,
    )
    return fig


def forest_figure(rows: Sequence[Mapping[str, Any]], *, dpi: int = 100) -> Figure:
    """Subgroup forest plot: HR (log scale, 95 % CI) of the pathomics high vs low group per subgroup."""
    n = len(rows)
    fig = Figure(figsize=(7.2, 0.9 + 0.28 * n), dpi=dpi, layout="constrained")
    ax = fig.add_subplot(111)
    labels = []
    for i, r in enumerate(rows):
        y = n - 1 - i
        labels.append(
            f"{r['covariate']}: {r['level']}  (n={r['n']}, {r['events']} ev.)"
            if r["covariate"] != "all patients"
            else f"all patients  (n={r['n']}, {r['events']} ev.)"
        )
        hr = r.get("hazard_ratio")
        if not hr:
            ax.text(1.0, y, "not estimable", va="center", ha="center", fontsize=7, color="#888")
            continue
        ax.plot([hr["ci_lower"], hr["ci_upper"]], [y, y], color="#333", lw=1.2)
        ax.plot([hr["hr"]], [y], "s", color="#c0392b" if r["covariate"] == "all patients" else "#1f3fbf", ms=5)
    ax.axvline(1.0, color="#888", ls="--", lw=0.8)
    ax.set_xscale("log")
    ax.set_yticks(range(n), [plain_text(lb) for lb in reversed(labels)], fontsize=7)
    ax.set_xlabel("hazard ratio, pathomics high vs low risk (95 % CI, log scale)", fontsize=8)
    ax.set_title("Subgroups: does the pathomics group separate patients in each?", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    return fig
