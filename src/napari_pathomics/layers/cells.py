"""Nuclei and the tumour proposal as layers: per-tile nuclear maps, outlines when zoomed in, the proposed ROI."""

from __future__ import annotations

from typing import Any

import numpy as np
from shapely.geometry import MultiPolygon

from ..cells.results import TILE_UNITS, NucleiResults
from ..wsi.annotations import Annotation
from ..wsi.slide import Slide
from .base import (
    OUTLINE_MAX_SHAPES,
    ROLE,
    SLIDE_PATH,
    LayerTuple,
    geometry_transform,
    grid_transform,
    result_meta,
    world_to_level0,
)

ROLE_NUCLEI_DENSITY, ROLE_NC_RATIO = "nuclei_density", "nc_ratio"
ROLE_NUCLEI_OUTLINES, ROLE_TUMOUR_PROPOSAL = "nuclei_outlines", "tumour_proposal"
UNITS_KEY = "pathomics_units"
#: Below the lowest value (no tile) transparent, then a magma-like ramp (density) or viridis-like (N:C).
DENSITY_COLORMAP: dict[str, Any] = {
    "name": "pathomics_density",
    "colors": [
        [0, 0, 0, 0],
        [0, 0, 0, 0],
        [0.05, 0.03, 0.2, 0.85],
        [0.45, 0.12, 0.5, 0.9],
        [0.85, 0.27, 0.4, 0.9],
        [0.99, 0.6, 0.36, 0.95],
        [0.99, 0.99, 0.75, 0.95],
    ],
    "controls": [0.0, 0.0099, 0.0101, 0.25, 0.5, 0.75, 1.0],
}
NC_COLORMAP: dict[str, Any] = {
    "name": "pathomics_nc_ratio",
    "colors": [
        [0, 0, 0, 0],
        [0, 0, 0, 0],
        [0.27, 0.0, 0.33, 0.85],
        [0.23, 0.32, 0.55, 0.9],
        [0.13, 0.57, 0.55, 0.9],
        [0.37, 0.79, 0.38, 0.95],
        [0.99, 0.91, 0.14, 0.95],
    ],
    "controls": [0.0, 0.0099, 0.0101, 0.25, 0.5, 0.75, 1.0],
}
NUCLEUS_EDGE, LYMPHOCYTE_EDGE = "#00a0ff", "#ffc800"


def _scalar_map(
    lattice: np.ndarray, lo: float | None = None, hi: float | None = None
) -> tuple[np.ndarray, tuple[float, float]]:
    """A per-tile map whose colour bar reads in its own units: NaN cells sit below the lowest colour."""
    finite = lattice[np.isfinite(lattice)]
    if lo is None or hi is None:
        lo_, hi_ = (float(np.percentile(finite, 2)), float(np.percentile(finite, 98))) if finite.size else (0.0, 1.0)
        lo = lo_ if lo is None else lo
        hi = hi_ if hi is None else hi
    if hi <= lo:
        hi = lo + (abs(lo) * 0.1 or 1.0)
    eps = (hi - lo) / 99.0
    data = np.where(np.isfinite(lattice), np.clip(lattice, lo, hi), lo - 2 * eps).astype(np.float32)
    return data, (lo - eps, hi)


def nuclei_map_layer(slide: Slide, nuclei: NucleiResults, measure: str) -> LayerTuple:
    """A per-tile nuclear map (``density_mm2`` or ``nc_ratio_mean``) on the tile lattice, in its units."""
    lattice = nuclei.lattice(measure)
    if measure == "nc_ratio_mean":
        data, limits = _scalar_map(lattice)
        name, cmap, role = "Nuclear N:C ratio", NC_COLORMAP, ROLE_NC_RATIO
    else:
        data, limits = _scalar_map(lattice, lo=0.0)
        name, cmap, role = f"Nuclear density ({TILE_UNITS[measure]})", DENSITY_COLORMAP, ROLE_NUCLEI_DENSITY
    kwargs = grid_transform(slide, nuclei.tile_size_l0)
    kwargs.update(
        name=name,
        colormap=cmap,
        contrast_limits=limits,
        opacity=0.6,
        blending="translucent",
        metadata={
            **result_meta(slide, role, nuclei.tile_size_l0),
            UNITS_KEY: TILE_UNITS[measure],
            "pathomics_measure": measure,
        },
    )
    return data, kwargs, "image"


def nuclei_outlines(
    nuclei: NucleiResults, box_l0: tuple[float, float, float, float], max_shapes: int = OUTLINE_MAX_SHAPES
) -> tuple[list[np.ndarray], list[str]]:
    """Outlines ((y, x) level-0 corner vertices) and edge colours of the nuclei in a level-0 box.

    At most ``max_shapes`` (the nuclei nearest the box centre first), so a zoomed-out view never
    asks napari for 10⁶ polygons.
    """
    x0, y0, x1, y1 = box_l0
    idx = nuclei.nuclei_in_box(x0, y0, x1, y1)
    t = nuclei.nuclei
    if idx.size > max_shapes:
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        idx = idx[np.argsort((t.x[idx] - cx) ** 2 + (t.y[idx] - cy) ** 2, kind="stable")[:max_shapes]]
    data, colors = [], []
    for i in idx:
        ring = t.outline(int(i))
        if len(ring) >= 3:
            data.append(ring[:, ::-1].astype(np.float64))
            colors.append(LYMPHOCYTE_EDGE if t.lymphocyte[i] else NUCLEUS_EDGE)
    return data, colors


def nuclei_outline_layer(
    slide: Slide, data: list[np.ndarray] | None = None, colors: list[str] | None = None
) -> LayerTuple:
    """The (lazily filled) Shapes layer of nucleus outlines: geometry in level-0 corner coordinates."""
    kwargs = geometry_transform(slide)
    data = data or []
    kwargs.update(
        name="Nuclei",
        edge_width=1.5,
        face_color="transparent",
        opacity=0.9,
        edge_color=colors or NUCLEUS_EDGE,
        metadata={ROLE: ROLE_NUCLEI_OUTLINES, SLIDE_PATH: str(slide.path)},
    )
    if data:
        kwargs["shape_type"] = ["polygon"] * len(data)
    return data, kwargs, "shapes"


def proposal_layer(slide: Slide, annotations: list[Annotation]) -> LayerTuple:
    """The proposed tumour ROI as its own Shapes layer: exteriors and holes drawn as outlines.

    napari shapes have no holes, so each hole is drawn as a thinner outline of its own; the annotations (holes and all) travel in ``metadata`` and are what Accept saves.
    """
    data: list[np.ndarray] = []
    widths: list[float] = []
    for ann in annotations:
        parts = ann.geometry.geoms if isinstance(ann.geometry, MultiPolygon) else [ann.geometry]
        for part in parts:
            data.append(np.asarray(part.exterior.coords)[:-1, ::-1].copy())
            widths.append(3.0)
            for ring in part.interiors:
                data.append(np.asarray(ring.coords)[:-1, ::-1].copy())
                widths.append(1.5)
    kwargs = geometry_transform(slide)
    kwargs.update(
        name="Tumor (proposed)",
        face_color="transparent",
        edge_color="#ff8c00",
        edge_width=widths or 3.0,
        opacity=1.0,
        metadata={ROLE: ROLE_TUMOUR_PROPOSAL, SLIDE_PATH: str(slide.path), "pathomics_annotations": list(annotations)},
    )
    if data:
        kwargs["shape_type"] = ["polygon"] * len(data)
    return data, kwargs, "shapes"


def nuclei_readout(
    nuclei: NucleiResults, slide: Slide, world_yx: tuple[float, float], values: dict[str, np.ndarray] | None = None
) -> str:
    """Status-bar text of the nuclear values of the tile under a world (y, x) µm position ('' when none)."""
    xy = world_to_level0(slide, np.asarray([world_yx], dtype=np.float64))[0]
    i = nuclei.tile_at(float(xy[0]), float(xy[1]))
    if i is None:
        return ""
    d = nuclei.describe_tile(i, values)
    if "count" not in d:
        return f"tile ({d['x']}, {d['y']}) nuclei: {d['status']}"

    def f(v: float, spec: str) -> str:
        return format(v, spec) if np.isfinite(v) else "–"

    return (
        f"tile ({d['x']}, {d['y']}): {int(d['count'])} nuclei · {f(d['density_mm2'], '.0f')}/mm² · "
        f"area {f(d['area_mean_um2'], '.1f')} µm² · N:C {f(d['nc_ratio_mean'], '.2f')} · "
        f"large {f(100 * d['large_fraction'], '.0f')} % · lymphocyte-like {f(100 * d['lymphocyte_fraction'], '.0f')} %"
    )
