"""A cohort analysis (marker interplay or treatment benefit) as files: JSON, figures and a page.

``write_analysis`` writes ``<stem>.json`` (every number, strict JSON), ``<stem>-km.png`` (Kaplan–
Meier curves per level within each pathomics risk group), ``<stem>-forest.png`` (the subgroup
forest plot) and ``<stem>.html`` (the same, self-contained, autoescaped, no script), atomically.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from markupsafe import Markup

from ..atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from ..provenance import now_iso, strict_json
from .plots import figure_png, forest_figure, interplay_figure
from .report import _CSS, _ENV

__all__ = ["write_analysis", "render_analysis_html"]


def render_analysis_html(result: Mapping[str, Any], km_png: bytes, forest_png: bytes) -> str:
    """The analysis page (Jinja2 with autoescaping; images embedded)."""
    groups = []
    for g in ("low", "high"):
        grp = result["groups"][g]
        groups.append(
            {
                "name": g,
                "n": grp["n"],
                "events": grp["events"],
                "levels": grp["levels"],
                "hrs": list(grp["hazard_ratio"].items()),
            }
        )
    return _ENV.get_template("cohort_analysis.html.j2").render(
        css=Markup(_CSS),
        r=result,
        groups=groups,
        km_png=km_png,
        forest_png=forest_png,
        what=result.get("marker") or result.get("treatment"),
        kind="Treatment benefit" if result.get("kind") == "pathomics-benefit" else "Marker interplay",
        written=now_iso(),
    )


def write_analysis(
    result: Mapping[str, Any], out_dir: str | Path, stem: str | None = None, time_unit: str = "days"
) -> dict[str, str]:
    """Write the analysis files into ``out_dir``; returns their paths by kind."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = stem or ("benefit" if result.get("kind") == "pathomics-benefit" else "interaction")
    doc = strict_json(dict(result))
    km = figure_png(interplay_figure(result, time_unit))
    forest = figure_png(forest_figure(result["forest"]))
    paths = {
        "json": out / f"{stem}.json",
        "km": out / f"{stem}-km.png",
        "forest": out / f"{stem}-forest.png",
        "html": out / f"{stem}.html",
    }
    atomic_write_json(paths["json"], doc)
    atomic_write_bytes(paths["km"], km)
    atomic_write_bytes(paths["forest"], forest)
    atomic_write_text(paths["html"], render_analysis_html(result, km, forest))
    return {k: str(v) for k, v in paths.items()}
