"""The case report: one self-contained HTML page (images inline) and its JSON twin.

The HTML carries everything a reader needs offline: the score and how its group was decided,
the survival and composition plots, per slide an overview with ROI outlines and the patch-risk
heatmap, the signature's honest metrics and the disclaimer. The JSON holds every number, the
bundle id and file hashes, slide hashes and versions. Both are written atomically.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..atomic import atomic_write_text
from .plots import composition_figure, figure_png, survival_figure, years_per_unit

if TYPE_CHECKING:  # pragma: no cover
    from ..annotations import Annotation
    from ..results import TileResults
    from ..scoring import PatientScore
    from ..slide import Slide
    from .model import Signature

OVERVIEW_SIDE = 640


def write_report_json(score: "PatientScore", path: str | Path) -> Path:
    return atomic_write_text(path, json.dumps(score.to_json(), indent=1, allow_nan=False) + "\n")


def slide_overview_png(slide: "Slide", results: "TileResults | None", rois: "list[Annotation] | None",
                       side: int = OVERVIEW_SIDE) -> bytes:
    """Thumbnail with the patch-risk heatmap (inferno, 55 %) and ROI outlines, as PNG bytes."""
    from matplotlib.figure import Figure
    from shapely.geometry import MultiPolygon

    thumb = slide.thumbnail(side)
    h, w = thumb.shape[:2]
    fx, fy = w / slide.width, h / slide.height  # thumbnail px per level-0 px
    fig = Figure(figsize=(w / 100, h / 100), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(thumb, extent=(0, w, h, 0))
    if results is not None and len(results):
        risk = np.ma.masked_invalid(results.risk_map())
        s = results.tile_size_l0
        ax.imshow(risk, cmap="inferno", vmin=0, vmax=1, alpha=0.55, interpolation="nearest",
                  extent=(0, results.n_cols * s * fx, results.n_rows * s * fy, 0))
    for ann in rois or []:
        polys = ann.geometry.geoms if isinstance(ann.geometry, MultiPolygon) else [ann.geometry]
        for poly in polys:
            xy = np.asarray(poly.exterior.coords)
            ax.plot(xy[:, 0] * fx, xy[:, 1] * fy, color="#%02x%02x%02x" % ann.color, lw=1.5)
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.axis("off")
    return figure_png(fig)


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _fmt(v: Any, spec: str = ".2f") -> str:
    return "n/a" if v is None else format(v, spec)


def render_report_html(score: "PatientScore", signature: "Signature") -> str:
    """The report as one HTML string (no external resources)."""
    from ..scoring import DISCLAIMER, ordinal

    sc = score.score
    summ = score.signature
    per_year = years_per_unit(sc.time_unit)
    surv_rows = "".join(
        f"<tr><td>{float(h) / per_year:.1f} years</td><td>{100 * p:.1f} %</td></tr>"
        for h, p in sc.survival_at.items())
    comp_rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{100 * v:.1f} %</td></tr>"
                        for k, v in sorted(score.composition.items(), key=lambda kv: -kv[1]))
    hr = summ.get("hazard_ratio") or {}
    cvhr = summ.get("cv_hazard_ratio") or {}
    slides_html = []
    for i, s in enumerate(score.slides):
        slide_obj = score.slide_objects[i] if i < len(score.slide_objects) else None
        res = score.results[i] if i < len(score.results) else None
        picture = ""
        try:
            if slide_obj is None:
                from ..slide import open_slide

                with open_slide(s.path, mpp=s.mpp[0] if s.mpp else None) as opened:
                    picture = _img(slide_overview_png(opened, res, score.rois[i] if score.rois else None),
                                   f"overview of {Path(s.path).name}")
            else:
                picture = _img(slide_overview_png(slide_obj, res, score.rois[i] if score.rois else None),
                               f"overview of {Path(s.path).name}")
        except Exception as exc:  # noqa: BLE001 - a missing picture must not lose the report
            picture = f"<p class='warn'>overview unavailable: {html.escape(str(exc))}</p>"
        slides_html.append(
            f"<div class='slide'><h3>{html.escape(Path(s.path).name)}</h3>{picture}"
            f"<p>{s.width} × {s.height} px · {s.n_done} tiles classified, {s.n_background} background, "
            f"{s.n_failed} failed · sha256 <code>{html.escape(s.sha256 or s.fingerprint)[:16]}…</code></p></div>")
    warnings = "".join(f"<li>{html.escape(w)}</li>" for w in score.warnings)
    group_color = "#c0392b" if sc.group == "high" else "#1e8449"
    surv_png = figure_png(survival_figure(signature, score))
    comp_png = figure_png(composition_figure(score))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Pathomics report · {html.escape(score.patient_id)}</title>
<style>
body{{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;color:#222}}
h1{{margin-bottom:0}} .sub{{color:#666;margin-top:.2em}}
.big{{font-size:1.6em}} table{{border-collapse:collapse}} td,th{{padding:.2em .8em;border-bottom:1px solid #ddd;text-align:left}}
.disclaimer{{background:#fff3cd;border:1px solid #e0c060;padding:.8em;margin:1em 0}}
.warn{{color:#a04000}} img{{max-width:100%}} .slide{{margin:1em 0}} code{{font-size:.9em}}
</style></head><body>
<h1>Pathomics report</h1>
<p class="sub">patient <b>{html.escape(score.patient_id)}</b> · {html.escape(score.finished)} ·
bundle {html.escape(str(score.bundle.get('name')))} ({html.escape(str(score.bundle.get('id')))})</p>
<div class="disclaimer"><b>{html.escape(DISCLAIMER)}</b></div>
<h2>Risk</h2>
<p class="big">risk score <b>{sc.risk:+.3f}</b> · {ordinal(sc.percentile)} percentile of the reference cohort ·
group <b style="color:{group_color}">{sc.group.upper()}</b></p>
<p>High risk when the score exceeds the frozen cutoff {sc.cutoff:+.3f}
({html.escape(str(summ.get('cutoff_method') or 'maximally selected log-rank'))}, selection p =
{_fmt(summ.get('cutoff_p_value'), '.3g')}).</p>
<table><tr><th>horizon</th><th>predicted survival</th></tr>{surv_rows}</table>
{_img(surv_png, 'predicted survival over the reference Kaplan-Meier curves')}
<h2>Tissue composition (tiles in ROIs)</h2>
{_img(comp_png, 'tissue composition')}
<table><tr><th>class</th><th>mean probability</th></tr>{comp_rows}</table>
<h2>Slides</h2>{''.join(slides_html)}
{'<h2>Warnings</h2><ul>' + warnings + '</ul>' if warnings else ''}
<h2>Signature</h2>
<p>{html.escape(str(summ.get('name')))}: reference cohort of {summ.get('n')} patients ({summ.get('n_events')} events).
Cross-validated C-index {_fmt(summ.get('cv_c_index'), '.3f')} ± {_fmt(summ.get('cv_c_index_sd'), '.3f')};
out-of-fold HR high vs low {_fmt(cvhr.get('hr'))} [{_fmt(cvhr.get('ci_lower'))}, {_fmt(cvhr.get('ci_upper'))}];
apparent HR {_fmt(hr.get('hr'))} [{_fmt(hr.get('ci_lower'))}, {_fmt(hr.get('ci_upper'))}] (optimistic: cutoff chosen on the same patients).</p>
<h2>Provenance</h2>
<p>{html.escape(', '.join(f'{k} {v}' for k, v in score.versions.items()))}</p>
<p>bundle files: {html.escape(', '.join(f'{k} {v[:12]}…' for k, v in score.bundle.get('file_hashes', {}).items()))}</p>
</body></html>
"""


def write_report_html(score: "PatientScore", path: str | Path, *, signature: "Signature") -> Path:
    return atomic_write_text(path, render_report_html(score, signature))
