"""Case report of one scored patient: a JSON record and a self-contained HTML page.

The HTML (a Jinja2 template with autoescaping, ``templates/report.html.j2``) has inline CSS and
every image embedded as base64 PNG, so it can be mailed, archived or opened offline and still
shows the same thing. It carries no script, no external link, and a Content-Security-Policy that
forbids both. Both files are written atomically (temp file, then rename).
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ..atomic import atomic_write_json, atomic_write_text
from ..bundle import Bundle
from ..colormaps import class_palette, mpl_colormap, robust_limits
from ..errors import SignatureError
from ..outputs import OutputError, check_output
from ..provenance import now_iso, strict_json
from ..results import TileResults
from ..signature import Signature
from ..units import years_label
from ..wsi.annotations import Annotation
from ..wsi.slide import Slide, open_slide
from .combined import RESEARCH_ONLY, combined_as_score, interplay_docs, load_clinical_signature
from .context import case_context
from .patient import PatientScore, ordinal
from .plots import composition_figure, figure_png, interplay_figure, plain_text, survival_figure
from .tiles import load_signature

__all__ = ["write_report_json", "write_report_html", "render_report_html", "slide_overview_png", "report_targets"]


def report_targets(
    html_path: str | Path | None, json_path: str | Path | None, inputs: Sequence[str | Path | None] = ()
) -> tuple[Path | None, Path | None]:
    """Where the HTML report and its JSON twin go (the twin defaults to the HTML name with .json).

    Refused in one line before any work: a target that is an input (a slide, an ROI file, the
    bundle), an existing file of another kind, or an HTML report and JSON twin on the same file.
    """
    html_p = Path(html_path) if html_path else None
    json_p = Path(json_path) if json_path else (html_p.with_suffix(".json") if html_p else None)
    if html_p is not None and json_p is not None and html_p.expanduser().resolve() == json_p.expanduser().resolve():
        raise OutputError(
            f"the HTML report and its JSON twin would both be {html_p}; give the report a .html name "
            "or --report-json another file"
        )
    if html_p is not None:
        check_output(html_p, "HTML report", inputs)
    if json_p is not None:
        check_output(json_p, "JSON", inputs)
    return html_p, json_p


# ---------------------------------------------------------------------------------------------
def write_report_json(score: PatientScore, path: str | Path) -> Path:
    """All numbers, bundle id and file hashes, versions and slide hashes, as strict JSON."""
    doc = score.to_json()
    doc["report_written"] = now_iso()
    return atomic_write_json(path, strict_json(doc))  # a non-finite number is null, never a traceback


# ---------------------------------------------------------------------------------------------
def _roi_lines(rois: Sequence[Annotation] | None) -> list[np.ndarray]:
    out: list[np.ndarray] = []
    for a in rois or []:
        g = a.geometry
        for poly in getattr(g, "geoms", [g]):
            for ring in [poly.exterior, *poly.interiors]:
                out.append(np.asarray(ring.coords))
    return out


def slide_overview_png(
    slide: Slide,
    results: TileResults | None,
    rois: Sequence[Annotation] | None = None,
    *,
    max_side: int = 640,
    dpi: int = 100,
) -> bytes:
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
        colors = class_palette(list(results.class_names), list(results.class_colors))  # as the viewer draws them
        lut = np.array([to_rgba(c, alpha=0.6) for c in colors] + [(0, 0, 0, 0)], dtype=float)
        rgba = lut[np.where(cmap >= 0, cmap, len(results.class_colors))]
        axes[1].imshow(rgba, extent=ext, interpolation="nearest")
        present = sorted({int(k) for k in np.unique(cmap) if k >= 0})
        if present:
            handles = [
                Patch(facecolor=colors[k], edgecolor="#333", label=plain_text(results.class_names[k])) for k in present
            ]
            axes[1].legend(handles=handles, fontsize=6, loc="upper right", framealpha=0.8, ncol=1)
        risk_map = results.risk_map()
        lo, hi = robust_limits(risk_map)  # the viewer's scale and colours for the same slide
        im = axes[2].imshow(
            np.ma.masked_invalid(risk_map),
            extent=ext,
            interpolation="nearest",
            cmap=mpl_colormap("risk"),
            vmin=lo,
            vmax=hi,
            alpha=0.85,
        )
        cb = fig.colorbar(im, ax=axes[2], fraction=0.046, pad=0.02)
        cb.ax.tick_params(labelsize=7)
        cb.set_label("patch risk", fontsize=7)
    for ax in axes:
        for xy in lines:
            ax.plot(xy[:, 0], xy[:, 1], color="#00c853", lw=1.2)
    return figure_png(fig)


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
.high{color:#c0392b}.low{color:#1e8449}.neutral{color:#444;font-size:18px}
.context{background:#f4f6fb;border:1px solid #c5cbe0;padding:6px 12px;border-radius:4px;font-size:13px}
table{border-collapse:collapse;font-size:13px;margin:6px 0}td,th{border:1px solid #ddd;padding:3px 8px;
text-align:left}th{background:#f5f5f5}td.n{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;height:auto;border:1px solid #eee}code{font-size:12px;word-break:break-all}
"""


def _num(v: Any, nd: int = 3) -> str:
    """A number to ``nd`` decimals; '—' for anything that is not a finite number."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
        return "—"
    return f"{float(v):.{nd}f}"


def _signed(v: Any, nd: int = 3) -> str:
    return f"{float(v):+.{nd}f}" if _num(v) != "—" else "—"


def _sig3(v: Any) -> str:
    return f"{float(v):.3g}" if _num(v) != "—" else "—"


def _img(data: bytes | None, alt: str) -> Markup:
    """An embedded PNG (escaped alt text), or a note that it is missing."""
    if not data:
        return Markup("<p class='muted'>({}: no image)</p>").format(alt)
    src = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return Markup("<img alt='{}' src='{}'>").format(alt, src)


_ENV = Environment(
    loader=PackageLoader("napari_pathomics.scoring", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,
)
_ENV.filters.update(
    num=_num, signed=_signed, sig3=_sig3, ordinal=lambda v: ordinal(float(v)) if _num(v) != "—" else "—"
)
_ENV.globals["img"] = _img


def _dict_or_empty(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _context(score: PatientScore, sig: Signature) -> dict[str, Any]:
    if score.context:
        return score.context
    return case_context(score.slides, score.composition, score.class_names, score.score.group, sig)


def _clinical_section(score: PatientScore, sig: Signature, combined: Signature | None) -> dict[str, Any] | None:
    """What the report says about the clinical values and the combined model (None without them)."""
    c = score.clinical
    if not c:
        return None
    if combined is None:
        try:
            path = score.bundle.get("path")
            combined = load_clinical_signature(Bundle.load(path)) if path else None
        except Exception:  # noqa: BLE001 - the numbers are in the score; only the figures need the signature
            combined = None
    units = {}
    if combined is not None and combined.clinical is not None:
        units = {cv.name: (cv.unit, cv.allowed(), cv.type) for cv in combined.clinical.covariates}
    values = [(k, v, *units.get(k, ("", "", ""))) for k, v in (c.get("values") or {}).items()]
    horizons = list((c.get("survival") or {}).keys())
    img: Mapping[str, Any] = c.get("image_only") or {}
    surv = [
        (
            years_label(float(h), c.get("time_unit", "days")),
            (img.get("survival") or {}).get(h),
            (c.get("survival") or {}).get(h),
        )
        for h in horizons
    ]
    figs: list[bytes] = []
    if combined is not None:
        sc = combined_as_score(c)
        figs.append(
            figure_png(
                survival_figure(
                    combined,
                    sc,
                    patient_label="this patient (pathomics + clinical)",
                    title=f"Combined model: predicted survival ({combined.name})",
                )
            )
        )
        placements = {(pl.get("column"), pl.get("signature")): pl for pl in c.get("interplay") or []}
        for s_, doc in interplay_docs(combined, sig):
            col = doc.get("marker") or doc.get("treatment")
            pl = placements.get((col, s_.name)) or {}
            figs.append(figure_png(interplay_figure(doc, s_.time_unit, patient=pl if pl.get("level") else None)))
    own = (_context(score, sig).get("evidence") or {}).get("cv_c_index")
    return {
        "values": values,
        "c": c,
        "img": img,
        "own_c": own,
        "surv": surv,
        "models": c.get("models") or {},
        "inc": {
            "delta_c": None,
            "ci_lower": None,
            "ci_upper": None,
            "lrt_p": None,
            **(c.get("increment_over_clinical") or {}),
        },
        "figs": figs,
        "interplay": c.get("interplay") or [],
        "research": RESEARCH_ONLY,
    }


def render_report_html(
    score: PatientScore,
    signature: Signature | None = None,
    slides_images: Sequence[bytes | None] | None = None,
    combined: Signature | None = None,
) -> str:
    """The report page as one HTML string (see :func:`write_report_html`).

    Every value reaches the page through the template's autoescaping, and the page's
    Content-Security-Policy allows no script at all: a hostile bundle or file name cannot run code.
    """
    sig = signature if signature is not None else _load_signature(score)
    ctx = _context(score, sig)
    sc = score.score
    imgs = list(slides_images) if slides_images is not None else _overview_images(score)
    cut = sig.cutoff
    summ = sig.summary()
    m = sig.metrics
    cv = _dict_or_empty(m.get("cv"))
    slides = []
    for i, sl in enumerate(score.slides):
        slides.append(
            {
                "name": Path(sl.path).name,
                "used": sl.used,
                "n_tiles": sl.n_tiles,
                "n_done": sl.n_done,
                "n_background": sl.n_background,
                "n_failed": sl.n_failed,
                "unreadable_mm2": sl.unreadable_mm2,
                "rois": sl.n_rois if sl.n_rois else "all tissue",
                "width": sl.width,
                "height": sl.height,
                "mpp": ", ".join(f"{v:.4g}" for v in sl.mpp) or "—",
                "fingerprint": sl.fingerprint,
                "sha256": sl.sha256,
                "image": imgs[i] if i < len(imgs) else None,
                "area": (ctx.get("area", {}).get("slides") or [{}] * len(score.slides))[i]
                if i < len(ctx.get("area", {}).get("slides") or [])
                else {},
            }
        )
    context = {
        "css": Markup(_CSS),
        "patient_id": score.patient_id,
        "finished": score.finished,
        "started": score.started,
        "duration": score.duration_s,
        "sig_name": sig.name,
        "bundle_name": str(score.bundle.get("name")),
        "bundle_id": str(score.bundle.get("id")),
        "class_head": str((score.bundle.get("class_head") or {}).get("digest", "")),
        "tta": str(score.bundle.get("tta") or ""),
        "nuclei_model": dict(score.nuclei_model) if score.nuclei_model else None,
        "disclaimer": score.disclaimer,
        "warnings": list(score.warnings),
        "risk": sc.risk,
        "percentile": sc.percentile,
        "percentile_ordinal": ordinal(sc.percentile),
        "ref_n": summ.get("n"),
        "ref_events": summ.get("n_events"),
        "group": sc.group,
        "group_class": sc.group if sc.group in ("high", "low") else "",
        "cutoff": sc.cutoff,
        "cutoff_exact": cut.get("cutoff", sc.cutoff),
        "cutoff_method": str(cut.get("method", "unspecified method")),
        "min_group": cut.get("min_group"),
        "cutoff_p": cut.get("p_value"),
        "n_high": cut.get("n_high"),
        "n_low": cut.get("n_low"),
        "survival": [(years_label(float(k), sc.time_unit), v) for k, v in sc.survival_at.items()],
        "survival_png": figure_png(
            survival_figure(sig, score, patient_label=f"this patient ({ctx.get('group_headline', sc.group)})")
        ),
        "composition_png": figure_png(composition_figure(score)),
        "composition": list((ctx.get("composition") or {}).get("tissue", score.composition).items()),
        "slides": slides,
        "ctx": ctx,
        "validated": bool(ctx.get("evidence", {}).get("validated")),
        "all_warnings": [*score.warnings, *ctx.get("warnings", [])],
        "clinical": _clinical_section(score, sig, combined),
        "sig_description": str(sig.to_json().get("description", "")),
        "coefficients": [(k, score.features.get(k), b) for k, b in sig.coefficients.items()],
        "cv": cv,
        "hr_oof": _dict_or_empty(cv.get("hazard_ratio_out_of_fold")),
        "apparent_c": m.get("apparent_c_index"),
        "hr_app": _dict_or_empty(m.get("hazard_ratio_high_vs_low")),
        "file_hashes": list(score.bundle.get("file_hashes", {}).items()),
        "versions": list(score.versions.items()),
    }
    return _ENV.get_template("report.html.j2").render(**context)


def write_report_html(
    score: PatientScore,
    path: str | Path,
    *,
    signature: Signature | None = None,
    slides_images: Sequence[bytes | None] | None = None,
    combined: Signature | None = None,
) -> Path:
    """Write the self-contained HTML case report (atomically).

    ``signature`` defaults to the one of the bundle recorded in the score; ``slides_images``
    (one PNG per slide, or None) defaults to :func:`slide_overview_png` of each slide with its
    results and ROIs. ``combined`` is the bundle's combined signature when the score carries
    clinical values (default: read from the bundle the score names).
    """
    return atomic_write_text(path, render_report_html(score, signature, slides_images, combined))
