"""Core results → napari layer data tuples, with the scale/translate that keeps them aligned.

Qt-free: returns ``(data, kwargs, layer_type)`` tuples that napari's ``Viewer._add_layer_from_data``
or ``add_<type>(data, **kwargs)`` accept. Conventions (DESIGN.md decision 1):

* The slide image: level-0 pixel ``i`` is centred on world ``i·mpp`` µm (napari's convention).
* Geometry (ROIs, tiles) is in level-0 *corner* coordinates as GeoJSON/QuPath use them, so pixel
  ``i`` spans ``[i, i+1)``: a Shapes layer with ``scale = mpp`` and ``translate = −mpp/2`` shows
  GeoJSON coordinates exactly over the pixels they name.
* A grid whose cell covers ``s`` level-0 px from origin ``o`` gets ``scale = s·mpp`` and
  ``translate = (o + (s − 1)/2)·mpp``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from shapely.geometry import MultiPolygon, Polygon

from .annotations import DEFAULT_CLASS, DEFAULT_COLOR, Annotation, ellipse_polygon
from .slide import Slide

UNITS = ("um", "um")
LayerTuple = tuple[Any, dict[str, Any], str]


def slide_scale(slide: Slide) -> tuple[float, float]:
    """(y, x) µm per level-0 px; 1.0 when the pixel size is unknown (then the axes are px)."""
    if slide.has_mpp:
        mx, my = slide.mpp
        return my, mx
    return 1.0, 1.0


def slide_units(slide: Slide) -> tuple[str, str]:
    return UNITS if slide.has_mpp else ("pixel", "pixel")


def slide_layer(slide: Slide, name: str | None = None) -> LayerTuple:
    """The multiscale RGB image of a slide, lazy (dask) at every level."""
    return (
        slide.levels,
        {
            "name": name or slide.path.name,
            "rgb": True,
            "multiscale": True,
            "scale": slide_scale(slide),
            "units": slide_units(slide),
            "contrast_limits": (0, 255),
            "metadata": {"pathomics_slide_path": str(slide.path), "pathomics_role": "slide"},
        },
        "image",
    )


def grid_transform(slide: Slide, cell_l0: float, origin_l0: float = 0.0) -> dict[str, Any]:
    """scale/translate of a grid layer whose cell covers ``cell_l0`` level-0 px from ``origin_l0``."""
    sy, sx = slide_scale(slide)
    return {
        "scale": (cell_l0 * sy, cell_l0 * sx),
        "translate": ((origin_l0 + (cell_l0 - 1) / 2) * sy, (origin_l0 + (cell_l0 - 1) / 2) * sx),
        "units": slide_units(slide),
    }


def geometry_transform(slide: Slide) -> dict[str, Any]:
    """scale/translate under which layer data are level-0 corner (GeoJSON) coordinates."""
    sy, sx = slide_scale(slide)
    return {"scale": (sy, sx), "translate": (-sy / 2, -sx / 2), "units": slide_units(slide)}


def world_to_level0(slide: Slide, yx_um: np.ndarray) -> np.ndarray:
    """World (y, x) µm → level-0 corner coordinates (x, y)."""
    sy, sx = slide_scale(slide)
    yx = np.asarray(yx_um, dtype=np.float64)
    return np.column_stack([yx[:, 1] / sx + 0.5, yx[:, 0] / sy + 0.5])


def level0_to_world(slide: Slide, xy: np.ndarray) -> np.ndarray:
    """Level-0 corner coordinates (x, y) → world (y, x) µm."""
    sy, sx = slide_scale(slide)
    xy = np.asarray(xy, dtype=np.float64)
    return np.column_stack([(xy[:, 1] - 0.5) * sy, (xy[:, 0] - 0.5) * sx])


def tissue_layer(slide: Slide, mask: np.ndarray, downsample: float) -> LayerTuple:
    kwargs = grid_transform(slide, downsample)
    kwargs.update(name="Tissue", opacity=0.35, metadata={"pathomics_role": "tissue",
                                                         "pathomics_downsample": downsample})
    return mask.astype(np.uint8), kwargs, "labels"


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _parse_hex(color: Any) -> tuple[int, int, int]:
    arr = np.asarray(color, dtype=float).ravel()
    if arr.size >= 3:
        if arr.max() <= 1.0:
            arr = arr * 255
        return tuple(int(round(v)) for v in arr[:3])  # type: ignore[return-value]
    return DEFAULT_COLOR


def annotations_to_shapes(annotations: list[Annotation]) -> tuple[list[np.ndarray], dict[str, Any]]:
    """Shapes-layer data (level-0 (y, x) vertices) and kwargs for a list of annotations.

    napari shapes have no holes: each polygon part becomes one shape showing its exterior, and
    the full geometry (holes included) is kept in ``metadata`` keyed by ``roi_id`` so that an
    unedited shape exports exactly as it was imported.
    """
    data: list[np.ndarray] = []
    ids: list[str] = []
    classes: list[str] = []
    colors: list[str] = []
    for ann in annotations:
        parts = ann.geometry.geoms if isinstance(ann.geometry, MultiPolygon) else [ann.geometry]
        for part in parts:
            ext = np.asarray(part.exterior.coords)[:-1]
            data.append(ext[:, ::-1].copy())
            ids.append(ann.id)
            classes.append(ann.classification)
            colors.append(_hex(ann.color))
    kwargs = {
        "shape_type": ["polygon"] * len(data),
        "properties": {"roi_id": np.array(ids, dtype=object), "classification": np.array(classes, dtype=object)},
        "edge_color": colors or "#c80000",
        "metadata": {"pathomics_annotations": {a.id: a for a in annotations}},
    }
    return data, kwargs


def shape_to_polygon(vertices_yx: np.ndarray, shape_type: str) -> Polygon | None:
    """One napari shape (level-0 (y, x) vertices) as a polygon; lines and paths have no area."""
    v = np.asarray(vertices_yx, dtype=np.float64)[:, ::-1]  # → (x, y)
    if shape_type == "ellipse":
        # napari stores an ellipse as the 4 corners of its bounding box
        center = v.mean(axis=0)
        rx = np.linalg.norm(v[1] - v[0]) / 2
        ry = np.linalg.norm(v[2] - v[1]) / 2
        angle = np.arctan2(v[1][1] - v[0][1], v[1][0] - v[0][0])
        base = ellipse_polygon((0.0, 0.0), (rx, ry))
        pts = np.asarray(base.exterior.coords)
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        return Polygon(pts @ rot.T + center)
    if shape_type in ("line", "path") or len(v) < 3:
        return None
    return Polygon(v)


def shapes_to_annotations(
    data: list[np.ndarray],
    shape_types: list[str],
    properties: dict[str, Any] | None = None,
    edge_colors: np.ndarray | None = None,
    originals: dict[str, Annotation] | None = None,
) -> list[Annotation]:
    """Read a Shapes layer back into annotations (level-0 coordinates).

    Shapes whose ``roi_id`` names an imported annotation and whose vertices are unchanged give
    that annotation back whole (holes and all MultiPolygon parts); edited or new shapes become
    new polygons. Lines and paths are ignored (no area).
    """
    properties = properties or {}
    originals = originals or {}
    roi_ids = list(properties.get("roi_id", [None] * len(data)))
    classes = list(properties.get("classification", [None] * len(data)))
    by_id: dict[str, list[int]] = {}
    for i, rid in enumerate(roi_ids):
        if isinstance(rid, str) and rid in originals:
            by_id.setdefault(rid, []).append(i)
    out: list[Annotation] = []
    used: set[int] = set()
    for rid, idxs in by_id.items():
        orig = originals[rid]
        parts = orig.geometry.geoms if isinstance(orig.geometry, MultiPolygon) else [orig.geometry]
        matched: list[int] = []
        for part in parts:
            ext = np.asarray(part.exterior.coords)[:-1]
            hit = next((i for i in idxs if i not in matched and shape_types[i] == "polygon"
                        and len(data[i]) == len(ext)
                        and np.allclose(np.asarray(data[i])[:, ::-1], ext, atol=1e-6)), None)
            if hit is None:
                break
            matched.append(hit)
        if len(matched) == len(parts):  # unedited: give the original back, holes and all
            out.append(orig)
            used.update(matched)
    for i, (verts, stype) in enumerate(zip(data, shape_types)):
        if i in used:
            continue
        poly = shape_to_polygon(verts, stype)
        if poly is None or poly.area <= 0:
            continue
        if not poly.is_valid:
            from shapely import make_valid

            fixed = make_valid(poly)
            if not isinstance(fixed, (Polygon, MultiPolygon)):
                continue
            poly = fixed
        color = _parse_hex(edge_colors[i]) if edge_colors is not None and len(edge_colors) > i else DEFAULT_COLOR
        # a shape that inherited an imported ROI's id (napari copies the current properties to
        # new shapes) or an edited part becomes a new ROI with its own id
        rid = roi_ids[i] if isinstance(roi_ids[i], str) and roi_ids[i] not in originals else None
        ann = Annotation(geometry=poly, classification=str(classes[i] or DEFAULT_CLASS), color=color)
        if rid:
            ann.id = rid
        out.append(ann)
    return out


def tile_grid_overlay(slide: Slide, grid: Any, max_side: int = 4096) -> LayerTuple:
    """One RGBA image showing every kept tile's outline: 20 000 tiles stay one cheap layer.

    Each lattice cell becomes ``k`` × ``k`` image px (``k`` ≤ 16, bounded by ``max_side``), with
    a 1-px border; the layer uses the grid transform for a cell of ``tile_size_l0/k`` px.
    """
    n_rows, n_cols = grid.n_rows, grid.n_cols
    k = int(max(2, min(16, max_side // max(1, n_rows, n_cols))))
    kept = np.zeros((n_rows, n_cols), dtype=bool)
    kept[grid.rows, grid.cols] = True
    cell = np.zeros((k, k), dtype=np.uint8)
    cell[0, :] = cell[-1, :] = cell[:, 0] = cell[:, -1] = 2  # border
    cell[1:-1, 1:-1] = 1  # fill
    pattern = np.kron(kept.astype(np.uint8), np.ones((k, k), dtype=np.uint8)) * np.tile(cell, (n_rows, n_cols))
    rgba = np.zeros(pattern.shape + (4,), dtype=np.uint8)
    rgba[pattern == 2] = (0, 200, 255, 255)
    rgba[pattern == 1] = (0, 200, 255, 40)
    kwargs = grid_transform(slide, grid.tile_size_l0 / k)
    kwargs.update(name="Tile grid", rgb=True, metadata={
        "pathomics_role": "tile_grid", "tile_count": len(grid), "pathomics_cell_l0": grid.tile_size_l0 / k})
    return rgba, kwargs, "image"
