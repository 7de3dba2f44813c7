"""Tile results → the maps a pathologist reads: classes, patch risk, activation maps, uncertainty.

One map is shown at a time over the slide (``Display.shown``). Continuous maps take their
contrast limits from the data (robust percentiles) and carry a colour bar; values below the
user's threshold and cells without a tile are transparent. Activation maps are scaled per slide
(comparable between tiles) or per tile (where within each tile), and their layer names say which.
Tiles whose top-class probability is below ``Display.low_confidence`` are hatched on the class map.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..colormaps import MAPS, class_palette, napari_colormap, robust_limits
from ..colors import hex_to_rgba
from ..results.status import DONE, RISK_CAM
from ..wsi.slide import Slide
from ..wsi.tiling import stitch_tiles
from .base import ROLE_CLASS_MAP, ROLE_RISK_MAP, LayerTuple, cam_role, grid_transform, result_meta, world_to_level0

if TYPE_CHECKING:  # pragma: no cover
    from ..results.tiles import TileResults

ROLE_UNCERTAINTY, ROLE_LOW_CONFIDENCE = "uncertainty", "low_confidence"
#: Layer metadata: the view a layer belongs to, whether it has a colour bar, and its scale facts.
VIEW_KEY, COLORBAR_KEY, SCALE_KEY = "pathomics_view", "pathomics_colorbar", "pathomics_scale"
#: Selector keys of the views besides the CAMs (``cam:<name>``).
VIEW_CLASSES, VIEW_RISK, VIEW_UNCERTAINTY, VIEW_NONE = "classes", "risk", "uncertainty", "none"
CAM_SCALES = ("slide", "tile")
#: Image px per tile edge of the hatch marking low-confidence tiles, and its line spacing.
HATCH_PX, HATCH_STEP = 16, 8


@dataclass
class Display:
    """How results are drawn: which map, thresholds (in the map's units), rendering and palette."""

    shown: str = VIEW_CLASSES
    thresholds: dict[str, float] = field(default_factory=dict)
    smooth: bool = False
    cam_scale: str = "slide"
    palette: str = "contrast"
    low_confidence: float = 0.5
    opacity: float = 0.6


def view_key(role: str) -> str:
    """The selector key of a result layer's role."""
    return {
        ROLE_CLASS_MAP: VIEW_CLASSES,
        ROLE_LOW_CONFIDENCE: VIEW_CLASSES,
        ROLE_RISK_MAP: VIEW_RISK,
        ROLE_UNCERTAINTY: VIEW_UNCERTAINTY,
    }.get(role, role)


def views(results: TileResults) -> list[tuple[str, str]]:
    """(key, title) of every map a result can show, in selector order."""
    out = [(VIEW_CLASSES, "Tissue classes"), (VIEW_RISK, "Patch risk")]
    out += [(cam_role(n), "Risk activation map (RAM)" if n == RISK_CAM else f"Grad-CAM {n}") for n in results.cams]
    return out + [(VIEW_UNCERTAINTY, "Uncertainty"), (VIEW_NONE, "None (slide only)")]


# ---------------------------------------------------------------------------------------------
# classes
def class_colors(results: TileResults, display: Display | None = None) -> list[str]:
    return class_palette(list(results.class_names), list(results.class_colors), (display or Display()).palette)


def class_colormap(results: TileResults, alpha: float = 0.55, display: Display | None = None) -> dict[Any, Any]:
    """Label → RGBA of the class map (label 0 and unknown labels transparent)."""
    colors: dict[Any, Any] = {None: (0.0, 0.0, 0.0, 0.0), 0: (0.0, 0.0, 0.0, 0.0)}
    for i, col in enumerate(class_colors(results, display)):
        colors[i + 1] = hex_to_rgba(col, alpha)
    return colors


def class_map_layer(slide: Slide, results: TileResults, display: Display | None = None) -> LayerTuple:
    """The tissue-class map: one labelled cell per tile (label = class index + 1, 0 = no result)."""
    display = display or Display()
    data = (results.class_map() + 1).astype(np.int32)
    kwargs = grid_transform(slide, results.tile_size_l0)
    kwargs.update(
        name="Tissue classes",
        colormap=class_colormap(results, alpha=1.0, display=display),
        opacity=display.opacity,
        visible=display.shown == VIEW_CLASSES,
        features={"index": np.arange(len(results.class_names) + 1), "class": ["none"] + list(results.class_names)},
        metadata={**result_meta(slide, ROLE_CLASS_MAP, results.tile_size_l0), VIEW_KEY: VIEW_CLASSES},
    )
    return data, kwargs, "labels"


def top_probability(results: TileResults) -> np.ndarray:
    """(N,) top-class probability per tile; NaN where there is no result."""
    done = results.status == DONE
    out = np.full(len(results), np.nan, dtype=np.float32)
    if done.any():
        out[done] = np.nanmax(results.probs[done], axis=1)
    return out


def low_confidence_tiles(results: TileResults, threshold: float) -> np.ndarray:
    """Indices of finished tiles whose top-class probability is below ``threshold``."""
    top = top_probability(results)
    return np.flatnonzero(np.isfinite(top) & (top < threshold))


def low_confidence_layer(slide: Slide, results: TileResults, display: Display | None = None) -> LayerTuple:
    """Diagonal hatching (black and white, readable on any class colour) over low-confidence tiles."""
    display = display or Display()
    k = HATCH_PX
    marked = np.zeros((results.n_rows, results.n_cols), dtype=bool)
    idx = low_confidence_tiles(results, display.low_confidence)
    marked[results.rows[idx], results.cols[idx]] = True
    i, j = np.indices((k, k))
    stripe = (i + j) % HATCH_STEP
    cell = np.zeros((k, k, 4), dtype=np.uint8)
    cell[stripe == 0] = (255, 255, 255, 230)
    cell[stripe == 1] = (0, 0, 0, 230)
    rgba = np.zeros((results.n_rows * k, results.n_cols * k, 4), dtype=np.uint8)
    if marked.any():
        tiled = np.tile(cell, (results.n_rows, results.n_cols, 1))
        mask = np.kron(marked, np.ones((k, k), dtype=bool))
        rgba[mask] = tiled[mask]
    kwargs = grid_transform(slide, results.tile_size_l0 / k)
    kwargs.update(
        name=f"Low confidence < {display.low_confidence:.2f}",  # short: the layer list is narrow
        rgb=True,
        visible=display.shown == VIEW_CLASSES,
        opacity=0.85,
        metadata={
            **result_meta(slide, ROLE_LOW_CONFIDENCE, results.tile_size_l0 / k),
            VIEW_KEY: VIEW_CLASSES,
            "tiles": idx.tolist(),
            "threshold": display.low_confidence,
        },
    )
    return rgba, kwargs, "image"


def class_legend(
    results: TileResults, descriptions: dict[str, str] | None = None, display: Display | None = None
) -> list[dict[str, Any]]:
    """Per class: name, full name, display colour and share of the classified tiles."""
    done = results.status == DONE
    pred = results.pred[done]
    n = max(1, int(done.sum()))
    colors = class_colors(results, display)
    return [
        {
            "name": name,
            "title": (descriptions or {}).get(name, name),
            "color": colors[i],
            "share": float(np.count_nonzero(pred == i)) / n,
            "tiles": int(np.count_nonzero(pred == i)),
        }
        for i, name in enumerate(results.class_names)
    ]


# ---------------------------------------------------------------------------------------------
# continuous maps
def _scalar(
    slide: Slide,
    values: np.ndarray,
    cell_l0: float,
    kind: str,
    key: str,
    role: str,
    name: str,
    display: Display,
    floor: float | None,
    scale_note: str = "",
) -> LayerTuple:
    lo, hi = robust_limits(values, floor=floor)
    eps = (hi - lo) / 50.0
    clim = (lo - eps, hi)
    data = np.where(np.isfinite(values), np.maximum(values, lo), lo - 2 * eps).astype(np.float32)
    spec = MAPS[kind]
    thr = float(display.thresholds.get(key, lo + spec.transparent_below * (hi - lo)))
    fraction = (thr - clim[0]) / (clim[1] - clim[0]) if thr > lo else 0.0
    kwargs = grid_transform(slide, cell_l0)
    kwargs.update(
        name=name,
        colormap=napari_colormap(kind, fraction),
        contrast_limits=clim,
        opacity=1.0,
        blending="translucent",
        visible=display.shown == key,
        interpolation2d="linear" if display.smooth else "nearest",
        metadata={
            **result_meta(slide, role, cell_l0),
            VIEW_KEY: key,
            COLORBAR_KEY: True,
            SCALE_KEY: {
                "limits": [lo, hi],
                "threshold": max(thr, lo),
                "units": spec.units,
                "title": spec.title,
                "scale": scale_note,
            },
        },
    )
    return data, kwargs, "image"


def risk_map_layer(slide: Slide, results: TileResults, display: Display | None = None) -> LayerTuple:
    """Patch risk per tile on a scale fitted to the slide's values (the colour bar reads the values)."""
    return _scalar(
        slide,
        results.risk_map(),
        results.tile_size_l0,
        "risk",
        VIEW_RISK,
        ROLE_RISK_MAP,
        "Patch risk",
        display or Display(),
        floor=None,
    )


def cam_values(results: TileResults, name: str, scale: str = "slide") -> np.ndarray:
    """The stitched map of CAM ``name``; ``scale='tile'`` divides each tile's map by its own maximum."""
    cams = results.cams[name]
    if scale == "tile":
        peak = np.nanmax(np.where(np.isfinite(cams), cams, -np.inf), axis=(1, 2), keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            cams = np.where(peak > 0, cams / peak, np.where(np.isfinite(cams), 0.0, np.nan))
    return stitch_tiles(cams.astype(np.float32), results.rows, results.cols, results.n_rows, results.n_cols)


def cam_layer(slide: Slide, results: TileResults, name: str, display: Display | None = None) -> LayerTuple:
    """The stitched Grad-CAM / RAM mosaic of CAM ``name`` (k × k px per tile)."""
    display = display or Display()
    k = results.cam_size(name)
    scale = display.cam_scale if display.cam_scale in CAM_SCALES else "slide"
    title = "Risk activation map" if name == RISK_CAM else f"Grad-CAM {name}"
    note = "per-slide scale" if scale == "slide" else "per-tile scale (each tile's maximum = 1)"
    return _scalar(
        slide,
        cam_values(results, name, scale),
        results.tile_size_l0 / k,
        "cam",
        cam_role(name),
        cam_role(name),
        title,  # the scale note is in the map's title on the canvas: the layer list is narrow
        display,
        floor=0.0,
        scale_note=note,
    )


def uncertainty_layer(slide: Slide, results: TileResults, display: Display | None = None) -> LayerTuple:
    """1 − top-class probability per tile: bright where the classifier hesitates."""
    values = results.lattice(1.0 - top_probability(results)).astype(np.float32)
    return _scalar(
        slide,
        values,
        results.tile_size_l0,
        "uncertainty",
        VIEW_UNCERTAINTY,
        ROLE_UNCERTAINTY,
        "Uncertainty",  # what it measures is in the map's title and colour-bar units
        display or Display(),
        floor=0.0,
    )


def result_layers(slide: Slide, results: TileResults, display: Display | None = None) -> list[LayerTuple]:
    """Every layer of a result, only ``display.shown``'s visible: classes (+ hatching), risk, CAMs, uncertainty."""
    display = display or Display()
    return [
        class_map_layer(slide, results, display),
        low_confidence_layer(slide, results, display),
        risk_map_layer(slide, results, display),
        *(cam_layer(slide, results, name, display) for name in results.cams),
        uncertainty_layer(slide, results, display),
    ]


def tile_readout(
    results: TileResults,
    slide: Slide,
    world_yx: tuple[float, float],
    descriptions: dict[str, str] | None = None,
    low_confidence: float = 0.5,
) -> str:
    """Status-bar text for the tile under a world (y, x) µm position ('' when none): top-3 classes."""
    xy = world_to_level0(slide, np.asarray([world_yx], dtype=np.float64))[0]
    i = results.tile_at(float(xy[0]), float(xy[1]))
    if i is None:
        return ""
    d = results.describe_tile(i)
    if results.status[i] != DONE:
        return f"tile ({d['x']}, {d['y']}): {d['status']}"
    probs = sorted(d["probs"].items(), key=lambda kv: -kv[1])
    first = probs[0][0]
    title = (descriptions or {}).get(first)
    top = " · ".join(f"{n} {p:.2f}" for n, p in probs[:3])
    doubt = " · low confidence" if probs[0][1] < low_confidence else ""
    return (
        f"tile ({d['x']}, {d['y']}): {first}{f' ({title})' if title else ''} · top 3: {top}"
        f" · patch risk {d['risk']:.2f}{doubt}"
    )
