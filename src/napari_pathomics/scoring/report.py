"""Case report of one scored patient: a JSON record and a self-contained HTML page.

The HTML has inline CSS and every image embedded as base64 PNG, so it can be mailed, archived
or opened offline and still shows the same thing; it carries no script and no external link.
Both files are written atomically (temp file, then rename).
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ..atomic import atomic_write_json, atomic_write_text
from ..bundle import Bundle
from ..errors import SignatureError
from ..provenance import now_iso
from ..results import TileResults
from ..signature import Signature
from ..units import years_label
from ..wsi.annotations import Annotation
from ..wsi.slide import Slide, open_slide
from .patient import DISCLAIMER, PatientScore, load_signature, ordinal
from .plots import composition_figure, figure_png, survival_figure

__all__ = ["write_report_json", "write_report_html", "render_report_html", "slide_overview_png"]

RISK_CMAP = "RdYlBu_r"


# ---------------------------------------------------------------------------------------------
def write_report_json(score: PatientScore, path: str | Path) -> Path:
    """All numbers, bundle id and file hashes, versions and slide hashes, as strict JSON."""
    doc = score.to_json()
    doc["report_written"] = now_iso()
    return atomic_write_json(path, json.loads(json.dumps(doc, allow_nan=False)))


# ---------------------------------------------------------------------------------------------
def _roi_lines(rois: Sequence[Annotation] | None) -> list[np.ndarray]:
    out: list[np.ndarray] = []
    for a in rois or []:
        g = a.geometry
        for poly in getattr(g, "geoms", [g]):
            for ring in [poly.exterior, *poly.interiors]:
                out.append(np.asarray(ring.coords))
    return out


def slide_overview_png(slide: Slide, results: TileResults | None, rois: Sequence[Annotation] | None = None,
                       *, max_side: int = 640, dpi: int = 100) -> bytes:
    """Thumbnail with ROI outlines, the tile class map and the tile risk heatmap (PNG bytes).

    Everything is drawn in level-0 px: the thumbnail spans (0..width, 0..height) and lattice
    cell (r, c) spans ``[c·s, (c+1)·s) × [r·s, (r+1)·s)`` with ``s = tile_size_l0`` — the same
    geometry as the napari layers, so what the report shows is what the viewer showed.
    """
    thumb = np.asarray(slide.thumbnail(max_side=max_side))
    W, H = float(slide.width), float(slide.height)
    panels = ["slide + ROIs" if rois else "slide (all tissue)"]
    if results is not None and len(results):
        panels += ["tissue classes", "patch risk"]
    aspect = H / W if W else 1.0
    ncol = len(panels)
    fig = Figure(figsize=(3.4 * ncol, max(2.0, 3.4 * aspect) + 0.6), dpi=dpi, layout="constrained")
    axes = fig.subplots(1, ncol, squeeze=False)[0]
    lines = _roi_lines(rois)
    for ax, title in zip(axes, panels):
        ax.imshow(thumb, extent=(0, W, H, 0), interpolation="bilinear")
        ax.set_title(title, fontsize=9)
        ax.set_xlim(0, W)
        ax.set_ylim(H, 0)
        ax.set_xticks([])
        ax.set_yticks([])
    if results is not None and len(results):
        s = float(results.tile_size_l0)
        ext = (0, results.n_cols * s, results.n_rows * s, 0)
        cmap = results.class_map()
        lut = np.array([to_rgba(c, alpha=0.6) for c in results.class_colors] + [(0, 0, 0, 0)], dtype=float)
        rgba = lut[np.where(cmap >= 0, cmap, len(results.class_colors))]
        axes[1].imshow(rgba, extent=ext, interpolation="nearest")
        present = sorted({int(k) for k in np.unique(cmap) if k >= 0})
        if present:
            handles = [Patch(facecolor=results.class_colors[k], edgecolor="#333", label=results.class_names[k])
                       for k in present]
            axes[1].legend(handles=handles, fontsize=6, loc="upper right", framealpha=0.8, ncol=1)
        risk = np.ma.masked_invalid(results.risk_map())
        im = axes[2].imshow(risk, extent=ext, interpolation="nearest", cmap=RISK_CMAP, vmin=0, vmax=1, alpha=0.7)
        cb = fig.colorbar(im, ax=axes[2], fraction=0.046, pad=0.02)
        cb.ax.tick_params(labelsize=7)
        cb.set_label("patch risk", fontsize=7)
    for ax in axes:
        for xy in lines:
            ax.plot(xy[:, 0], xy[:, 1], color="#00c853", lw=1.2)
    return figure_png(fig)


def _b64_png(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _img(data: bytes | None, alt: str) -> str:
    if not data:
        return f"<p class='muted'>({html.escape(alt)}: no image)</p>"
    return f"<img alt='{html.escape(alt, quote=True)}' src='{_b64_png(data)}'>"


def _fmt(v: Any, nd: int = 3) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        if not math.isfinite(v):
            return "—"
        return f"{v:.{nd}f}"
    return html.escape(str(v))


def _overview_images(score: PatientScore) -> list[bytes | None]:
    """Render each slide's overview from the results kept in the PatientScore."""
    out: list[bytes | None] = []
    n = len(score.slides)
    results = list(score.results) + [None] * (n - len(score.results))
    rois = list(score.rois) + [None] * (n - len(score.rois))
    objs = list(score.slide_objects) + [None] * (n - len(score.slide_objects))
    for summ, res, roi, obj in zip(score.slides, results, rois, objs):
        try:
            if obj is not None:
                out.append(slide_overview_png(obj, res, roi))
            else:
                mpp = summ.mpp[0] if summ.mpp else None
                with open_slide(summ.path, mpp=mpp) as sl:
                    out.append(slide_overview_png(sl, res, roi))
        except Exception:  # noqa: BLE001 - a missing image must not lose the report
            out.append(None)
    return out


def _load_signature(score: PatientScore) -> Signature:
    path = score.bundle.get("path")
    if not path:
        raise SignatureError("the score does not say which bundle it came from; pass signature=")
    return load_signature(Bundle.load(path))


# ---------------------------------------------------------------------------------------------
_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1000px;color:#222;
line-height:1.4;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;border-bottom:1px solid #ddd;padding-bottom:3px;margin-top:28px}
.muted{color:#666;font-size:13px}.disclaimer{background:#fff4e5;border:1px solid #f0a040;padding:8px 12px;
border-radius:4px;font-size:14px}.warn{background:#fdecea;border:1px solid #e57373;padding:6px 12px;
border-radius:4px;font-size:13px}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:12px 0}.card{border:1px solid #ddd;border-radius:6px;
padding:10px 14px;min-width:150px}.card .v{font-size:24px;font-weight:600}.card .k{font-size:12px;color:#666}
.high{color:#c0392b}.low{color:#1e8449}
table{border-collapse:collapse;font-size:13px;margin:6px 0}td,th{border:1px solid #ddd;padding:3px 8px;
text-align:left}th{background:#f5f5f5}td.n{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;height:auto;border:1px solid #eee}code{font-size:12px;word-break:break-all}
"""


def render_report_html(score: PatientScore, signature: Signature | None = None,
                       slides_images: Sequence[bytes | None] | None = None) -> str:
    """The report page as one HTML string (see :func:`write_report_html`)."""
    sig = signature if signature is not None else _load_signature(score)
    sc = score.score
    e = html.escape
    imgs = list(slides_images) if slides_images is not None else _overview_images(score)
    surv_png = figure_png(survival_figure(sig, score))
    comp_png = figure_png(composition_figure(score))
    cut = sig.cutoff
    summ = sig.summary()
    m = sig.metrics
    cv = m.get("cv") or {}
    hr_oof = cv.get("hazard_ratio_out_of_fold") or {}
    hr_app = m.get("hazard_ratio_high_vs_low") or {}
    ref_n, ref_events = summ.get("n"), summ.get("n_events")
    parts: list[str] = []
    add = parts.append
    add("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>")
    add(f"<title>Pathomics case report — {e(score.patient_id)}</title><style>{_CSS}</style></head><body>")
    add(f"<h1>Pathomics case report</h1><div class='muted'>patient <b>{e(score.patient_id)}</b> · scored "
        f"{e(score.finished)} · signature <b>{e(sig.name)}</b> · bundle {e(str(score.bundle.get('name')))} "
        f"(id <code>{e(str(score.bundle.get('id')))}</code>)</div>")
    add(f"<p class='disclaimer'><b>{e(DISCLAIMER)}</b></p>")
    if score.warnings:
        add("<div class='warn'><b>Warnings</b><ul>" + "".join(f"<li>{e(w)}</li>" for w in score.warnings)
            + "</ul></div>")

    # --- the score
    add("<h2>Risk score</h2><div class='cards'>")
    add(f"<div class='card'><div class='k'>risk score (Cox linear predictor)</div><div class='v'>{sc.risk:+.3f}</div></div>")
    add(f"<div class='card'><div class='k'>percentile in the reference cohort</div><div class='v'>{ordinal(sc.percentile)}</div>"
        f"<div class='k'>{sc.percentile:.1f} % of {e(str(ref_n))} patients score lower or equal</div></div>")
    add(f"<div class='card'><div class='k'>risk group</div><div class='v {e(sc.group)}'>{e(sc.group.upper())}</div>"
        f"<div class='k'>frozen cutoff {sc.cutoff:+.3f}</div></div>")
    add("</div>")
    pval = cut.get("p_value")
    add(f"<p>The group is <b>high</b> if risk &gt; cutoff ({cut.get('cutoff', sc.cutoff):+.4f}). The cutoff was frozen "
        f"when the signature was built: {e(str(cut.get('method', 'unspecified method')))}"
        + (f", minimum group share {cut.get('min_group')}" if cut.get("min_group") is not None else "")
        + (f", selection-adjusted p = {pval:.3g}" if isinstance(pval, (int, float)) else "")
        + (f" ({cut.get('n_high')} high / {cut.get('n_low')} low in the reference cohort)"
           if cut.get("n_high") is not None else "") + ".</p>")
    add("<table><tr><th>predicted overall survival</th>"
        + "".join(f"<th>{e(years_label(float(k), sc.time_unit))}</th>" for k in sc.survival_at) + "</tr><tr><td>this patient</td>"
        + "".join(f"<td class='n'>{100 * v:.1f} %</td>" for v in sc.survival_at.values()) + "</tr></table>")
    add("<h2>Survival in context</h2>" + _img(surv_png, "predicted survival over the reference Kaplan–Meier curves"))
    add("<h2>Tissue composition</h2>" + _img(comp_png, "tissue composition"))
    add("<table><tr><th>class</th><th>mean probability</th></tr>" + "".join(
        f"<tr><td>{e(k)}</td><td class='n'>{100 * v:.1f} %</td></tr>" for k, v in score.composition.items()) + "</table>")

    # --- slides
    add("<h2>Slides</h2>")
    for i, s in enumerate(score.slides):
        add(f"<h3>{e(Path(s.path).name)}{'' if s.used else ' <span class=high>(not used)</span>'}</h3>")
        add(f"<table><tr><th>tiles</th><th>classified</th><th>background</th><th>failed</th><th>ROIs</th>"
            f"<th>size (px)</th><th>µm/px</th></tr><tr><td class='n'>{s.n_tiles}</td><td class='n'>{s.n_done}</td>"
            f"<td class='n'>{s.n_background}</td><td class='n'>{s.n_failed}</td>"
            f"<td class='n'>{s.n_rois if s.n_rois else 'all tissue'}</td><td class='n'>{s.width} × {s.height}</td>"
            f"<td class='n'>{', '.join(f'{v:.4g}' for v in s.mpp) or '—'}</td></tr></table>")
        add(f"<div class='muted'>fingerprint <code>{e(s.fingerprint)}</code>"
            + (f"<br>sha256 <code>{e(s.sha256)}</code>" if s.sha256 else "") + "</div>")
        add(_img(imgs[i] if i < len(imgs) else None, f"overview of {Path(s.path).name}"))

    # --- features and signature
    add("<h2>Signature</h2>")
    add(f"<p>{e(str(sig.to_json().get('description', '')))}</p>")
    add("<table><tr><th>feature</th><th>this patient</th><th>coefficient</th></tr>" + "".join(
        f"<tr><td>{e(k)}</td><td class='n'>{_fmt(score.features.get(k), 4)}</td><td class='n'>{_fmt(b, 4)}</td></tr>"
        for k, b in sig.coefficients.items()) + "</table>")
    add("<table><tr><th>metric (reference cohort)</th><th>value</th></tr>")
    add(f"<tr><td>patients / events</td><td class='n'>{e(str(ref_n))} / {e(str(ref_events))}</td></tr>")
    if cv:
        add(f"<tr><td>cross-validated C-index ({e(str(cv.get('folds', '?')))}-fold, whole pipeline refitted)</td>"
            f"<td class='n'>{_fmt(cv.get('c_index_mean'))} ± {_fmt(cv.get('c_index_sd'))}</td></tr>")
    if hr_oof:
        add(f"<tr><td>out-of-fold hazard ratio high vs low (95 % CI, p)</td><td class='n'>{_fmt(hr_oof.get('hr'), 2)} "
            f"({_fmt(hr_oof.get('ci_lower'), 2)}–{_fmt(hr_oof.get('ci_upper'), 2)}, p = {_fmt(hr_oof.get('p'), 3)})</td></tr>")
    if m.get("apparent_c_index") is not None:
        add(f"<tr><td>apparent C-index (optimistic)</td><td class='n'>{_fmt(m.get('apparent_c_index'))}</td></tr>")
    if hr_app:
        add(f"<tr><td>apparent hazard ratio high vs low (cutoff chosen on the same patients; optimistic)</td>"
            f"<td class='n'>{_fmt(hr_app.get('hr'), 2)} ({_fmt(hr_app.get('ci_lower'), 2)}–{_fmt(hr_app.get('ci_upper'), 2)})"
            f"</td></tr>")
    add("</table>")

    # --- provenance
    add("<h2>Provenance</h2><table><tr><th>bundle file</th><th>sha256</th></tr>" + "".join(
        f"<tr><td>{e(k)}</td><td><code>{e(v)}</code></td></tr>" for k, v in score.bundle.get("file_hashes", {}).items())
        + "</table>")
    add("<table><tr><th>package</th><th>version</th></tr>" + "".join(
        f"<tr><td>{e(k)}</td><td>{e(v)}</td></tr>" for k, v in score.versions.items()) + "</table>")
    add(f"<p class='muted'>started {e(score.started)} · finished {e(score.finished)} · {score.duration_s:.1f} s</p>")
    add(f"<p class='disclaimer'>{e(DISCLAIMER)}</p></body></html>")
    return "\n".join(parts)


def write_report_html(score: PatientScore, path: str | Path, *, signature: Signature | None = None,
                      slides_images: Sequence[bytes | None] | None = None) -> Path:
    """Write the self-contained HTML case report (atomically).

    ``signature`` defaults to the one of the bundle recorded in the score; ``slides_images``
    (one PNG per slide, or None) defaults to :func:`slide_overview_png` of each slide with its
    results and ROIs.
    """
    return atomic_write_text(path, render_report_html(score, signature, slides_images))
