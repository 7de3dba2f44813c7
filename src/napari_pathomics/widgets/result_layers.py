"""TileResults → napari layers (class map, risk heatmap, CAM mosaics), updated in place.

Shared by the Analyze and Score docks. Layers are keyed by slide path and role in their
metadata so a rerun replaces them and a second slide keeps its own.
"""

from __future__ import annotations

from typing import Any

import napari
import numpy as np
from napari.utils.colormaps import Colormap, DirectLabelColormap

from ..layers import slide_units
from ..results import TileResults, mosaic_scale_translate
from ..slide import Slide

#: Values below 0 (no tile) are transparent; 0..1 runs through an inferno-like ramp.
_RAMP = np.array([
    [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.12, 0.05, 0.35, 0.85], [0.45, 0.10, 0.45, 0.9],
    [0.78, 0.22, 0.33, 0.9], [0.97, 0.55, 0.15, 0.9], [0.99, 0.95, 0.45, 0.95],
])
HEAT_CMAP = Colormap(colors=_RAMP, controls=[0.0, 0.0099, 0.0101, 0.25, 0.5, 0.75, 1.0], name="pathomics_heat")
HEAT_LIMITS = (-0.01, 1.0)


def _hex_rgba(color: str, alpha: float = 0.55) -> np.ndarray:
    c = color.lstrip("#")
    return np.array([int(c[i:i + 2], 16) / 255 for i in (0, 2, 4)] + [alpha])


def class_colormap(results: TileResults, alpha: float = 0.55) -> DirectLabelColormap:
    colors: dict[Any, Any] = {None: np.zeros(4), 0: np.zeros(4)}
    for i, col in enumerate(results.class_colors):
        colors[i + 1] = _hex_rgba(col, alpha)
    return DirectLabelColormap(color_dict=colors)


def find_layer(viewer: napari.Viewer, slide: Slide, role: str) -> Any:
    for ly in viewer.layers:
        if ly.metadata.get("pathomics_role") == role and ly.metadata.get("pathomics_slide_path") == str(slide.path):
            return ly
    return None


def _transform(slide: Slide, results: TileResults, k: int) -> dict[str, Any]:
    scale, translate = mosaic_scale_translate(results.tile_size_l0, k, slide.mpp)
    return {"scale": scale, "translate": translate, "units": slide_units(slide)}


def _meta(slide: Slide, role: str, cell_l0: float) -> dict[str, Any]:
    return {"pathomics_role": role, "pathomics_slide_path": str(slide.path), "pathomics_cell_l0": cell_l0}


def show_results(viewer: napari.Viewer, slide: Slide, results: TileResults) -> dict[str, Any]:
    """Create or refresh the class map, risk heatmap and every CAM layer of ``results``."""
    out: dict[str, Any] = {}
    cls = (results.class_map() + 1).astype(np.int32)  # 0 = no result
    ly = find_layer(viewer, slide, "class_map")
    if ly is None:
        features = {"index": np.arange(len(results.class_names) + 1),
                    "class": ["none"] + list(results.class_names)}
        ly = viewer.add_labels(cls, name="Tissue classes", colormap=class_colormap(results), features=features,
                               metadata=_meta(slide, "class_map", results.tile_size_l0),
                               **_transform(slide, results, 1))
    else:
        ly.data = cls
    out["class_map"] = ly

    risk = np.nan_to_num(results.risk_map(), nan=-1.0)
    ly = find_layer(viewer, slide, "risk_map")
    if ly is None:
        ly = viewer.add_image(risk, name="Patch risk", colormap=HEAT_CMAP, contrast_limits=HEAT_LIMITS,
                              opacity=0.6, blending="translucent", visible=True,
                              metadata=_meta(slide, "risk_map", results.tile_size_l0),
                              **_transform(slide, results, 1))
    else:
        ly.data = risk
    out["risk_map"] = ly

    for name in results.cams:
        k = results.cam_size(name)
        mosaic = np.nan_to_num(results.cam_mosaic(name), nan=-1.0).astype(np.float32)
        role = f"cam:{name}"
        ly = find_layer(viewer, slide, role)
        title = "Risk activation map" if name == "risk" else f"Grad-CAM {name}"
        if ly is None:
            ly = viewer.add_image(mosaic, name=title, colormap=HEAT_CMAP, contrast_limits=HEAT_LIMITS,
                                  opacity=0.6, blending="translucent",
                                  metadata=_meta(slide, role, results.tile_size_l0 / k),
                                  **_transform(slide, results, k))
        else:
            ly.data = mosaic
        out[role] = ly
    return out


def describe_at(results: TileResults, slide: Slide, world_yx: tuple[float, float]) -> str:
    """Status-bar text for the tile under a world (y, x) µm position ('' when none)."""
    my, mx = slide.mpp[1], slide.mpp[0]
    x, y = world_yx[1] / mx + 0.5, world_yx[0] / my + 0.5  # → level-0 corner coordinates
    i = results.tile_at(x, y)
    if i is None:
        return ""
    d = results.describe_tile(i)
    if d["status"] != "done":
        return f"tile ({d['x']}, {d['y']}): {d['status']}"
    probs = sorted(d["probs"].items(), key=lambda kv: -kv[1])
    top = ", ".join(f"{n} {p:.2f}" for n, p in probs[:4])
    return f"tile ({d['x']}, {d['y']}): {d['class']} · risk {d['risk']:.2f} · {top}"
