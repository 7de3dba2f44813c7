"""Tile results → the class map, heatmaps and activation maps a pathologist reads."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..colors import hex_to_rgba
from ..results.status import DONE, RISK_CAM
from ..wsi.slide import Slide
from .base import ROLE_CLASS_MAP, ROLE_RISK_MAP, LayerTuple, cam_role, grid_transform, result_meta, world_to_level0

if TYPE_CHECKING:  # pragma: no cover
    from ..results.tiles import TileResults


#: Values below 0 (no tile) are transparent; 0..1 runs through an inferno-like ramp.
HEAT_COLORMAP: dict[str, Any] = {
    "name": "pathomics_heat",
    "colors": [[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.12, 0.05, 0.35, 0.85], [0.45, 0.10, 0.45, 0.9],
               [0.78, 0.22, 0.33, 0.9], [0.97, 0.55, 0.15, 0.9], [0.99, 0.95, 0.45, 0.95]],
    "controls": [0.0, 0.0099, 0.0101, 0.25, 0.5, 0.75, 1.0],
}
HEAT_LIMITS = (-0.01, 1.0)


def class_colormap(results: TileResults, alpha: float = 0.55) -> dict[Any, Any]:
    """Label → RGBA of the class map (label 0 and unknown labels transparent)."""
    colors: dict[Any, Any] = {None: (0.0, 0.0, 0.0, 0.0), 0: (0.0, 0.0, 0.0, 0.0)}
    for i, col in enumerate(results.class_colors):
        colors[i + 1] = hex_to_rgba(col, alpha)
    return colors


def class_map_layer(slide: Slide, results: TileResults) -> LayerTuple:
    """The tissue-class map: one labelled cell per tile (label = class index + 1, 0 = no result)."""
    data = (results.class_map() + 1).astype(np.int32)
    kwargs = grid_transform(slide, results.tile_size_l0)
    kwargs.update(name="Tissue classes", colormap=class_colormap(results),
                  features={"index": np.arange(len(results.class_names) + 1),
                            "class": ["none"] + list(results.class_names)},
                  metadata=result_meta(slide, ROLE_CLASS_MAP, results.tile_size_l0))
    return data, kwargs, "labels"


def risk_map_layer(slide: Slide, results: TileResults) -> LayerTuple:
    """The patch-risk heatmap: one cell per tile, below-zero (no tile) transparent."""
    data = np.nan_to_num(results.risk_map(), nan=-1.0)
    kwargs = grid_transform(slide, results.tile_size_l0)
    kwargs.update(name="Patch risk", colormap=HEAT_COLORMAP, contrast_limits=HEAT_LIMITS, opacity=0.6,
                  blending="translucent", visible=True,
                  metadata=result_meta(slide, ROLE_RISK_MAP, results.tile_size_l0))
    return data, kwargs, "image"


def cam_layer(slide: Slide, results: TileResults, name: str) -> LayerTuple:
    """The stitched Grad-CAM mosaic of CAM ``name`` (k × k px per tile)."""
    k = results.cam_size(name)
    data = np.nan_to_num(results.cam_mosaic(name), nan=-1.0).astype(np.float32)
    kwargs = grid_transform(slide, results.tile_size_l0 / k)
    kwargs.update(name="Risk activation map" if name == RISK_CAM else f"Grad-CAM {name}", colormap=HEAT_COLORMAP,
                  contrast_limits=HEAT_LIMITS, opacity=0.6, blending="translucent",
                  metadata=result_meta(slide, cam_role(name), results.tile_size_l0 / k))
    return data, kwargs, "image"


def result_layers(slide: Slide, results: TileResults) -> list[LayerTuple]:
    """Every layer of a result: class map, risk heatmap, then one per CAM."""
    return [class_map_layer(slide, results), risk_map_layer(slide, results),
            *(cam_layer(slide, results, name) for name in results.cams)]


def tile_readout(results: TileResults, slide: Slide, world_yx: tuple[float, float]) -> str:
    """Status-bar text for the tile under a world (y, x) µm position ('' when none)."""
    xy = world_to_level0(slide, np.asarray([world_yx], dtype=np.float64))[0]
    i = results.tile_at(float(xy[0]), float(xy[1]))
    if i is None:
        return ""
    d = results.describe_tile(i)
    if results.status[i] != DONE:
        return f"tile ({d['x']}, {d['y']}): {d['status']}"
    probs = sorted(d["probs"].items(), key=lambda kv: -kv[1])
    top = ", ".join(f"{n} {p:.2f}" for n, p in probs[:4])
    return f"tile ({d['x']}, {d['y']}): {d['class']} · risk {d['risk']:.2f} · {top}"


