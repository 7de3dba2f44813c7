"""ROIs and QuPath objects ↔ Shapes/Points layers: holes, ids and classes survive napari's edits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon

from ..colors import napari_color, rgb_to_hex
from ..wsi.annotations import DEFAULT_CLASS, DEFAULT_COLOR, Annotation, GeoObject, QuPathObject, ellipse_polygon
from ..wsi.geometry import as_area, repair_area
from ..wsi.slide import Slide
from .base import (
    OUTLINE_MAX_SHAPES,
    ROLE,
    ROLE_QUPATH_CELLS,
    ROLE_QUPATH_OUTLINES,
    ROLE_QUPATH_POINTS,
    ROLE_ROI_HOLES,
    SLIDE_PATH,
    LayerTuple,
    geometry_transform,
    slide_scale,
)


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
            colors.append(rgb_to_hex(ann.color))
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
        rx = float(np.linalg.norm(v[1] - v[0])) / 2
        ry = float(np.linalg.norm(v[2] - v[1])) / 2
        angle = np.arctan2(v[1][1] - v[0][1], v[1][0] - v[0][0])
        base = ellipse_polygon((0.0, 0.0), (rx, ry))
        pts = np.asarray(base.exterior.coords)
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        return Polygon(pts @ rot.T + center)
    if shape_type in ("line", "path") or len(v) < 3:
        return None
    return Polygon(v)


def _reapply_holes(outer: Polygon | MultiPolygon, orig: Annotation, notes: list[str] | None) -> Polygon | MultiPolygon:
    """``outer`` with the holes of ``orig`` that still lie inside it cut out again."""
    parts = orig.geometry.geoms if isinstance(orig.geometry, MultiPolygon) else [orig.geometry]
    holes = [Polygon(h) for p in parts for h in p.interiors]
    kept = [h for h in holes if outer.contains(h)]
    if len(kept) < len(holes) and notes is not None:
        notes.append(
            f"ROI {orig.name or orig.id}: {len(holes) - len(kept)} of its {len(holes)} holes no longer lie "
            "inside the edited outline and were dropped; the previous version is kept as .<file>.previous"
        )
    if not kept:
        return outer
    cut = as_area(outer.difference(shapely.union_all(kept)))
    return cut if cut is not None else outer


def shapes_to_annotations(
    data: list[np.ndarray],
    shape_types: list[str],
    properties: dict[str, Any] | None = None,
    edge_colors: np.ndarray | None = None,
    originals: dict[str, Annotation] | None = None,
    notes: list[str] | None = None,
) -> list[Annotation]:
    """Read a Shapes layer back into annotations (level-0 coordinates).

    Shapes sharing a ``roi_id`` are the parts of one ROI. An ROI whose parts are all unchanged
    comes back whole (holes, properties and id as imported). An edited ROI keeps its id, class
    and properties, gets its new outline, and has its old holes cut out again where they still
    lie inside (``notes`` says when some cannot be). Shapes without an id are new ROIs. Lines and
    paths have no area and are ignored.
    """
    properties = properties or {}
    originals = originals or {}
    roi_ids = list(properties.get("roi_id", [None] * len(data)))
    classes = list(properties.get("classification", [None] * len(data)))
    groups: dict[str, list[int]] = {}
    order: list[str] = []
    for i, rid in enumerate(roi_ids):
        key = rid if isinstance(rid, str) and rid else f"__new_{i}"
        if key not in groups:
            order.append(key)
        groups.setdefault(key, []).append(i)
    out: list[Annotation] = []
    for key in order:
        idxs = groups[key]
        orig = originals.get(key)
        if orig is not None and _unchanged(orig, [data[i] for i in idxs], [shape_types[i] for i in idxs]):
            out.append(orig)
            continue
        polys = [p for i in idxs if (p := shape_to_polygon(data[i], shape_types[i])) is not None and p.area > 0]
        if not polys:
            continue
        area = as_area(shapely.union_all([p if p.is_valid else repair_area(p)[0] or p for p in polys]))
        if area is None:
            continue
        first = idxs[0]
        cls = str(classes[first] or (orig.classification if orig else DEFAULT_CLASS))
        color = (
            napari_color(edge_colors[first], DEFAULT_COLOR)
            if edge_colors is not None and len(edge_colors) > first
            else (orig.color if orig else DEFAULT_COLOR)
        )
        if orig is not None:
            out.append(replace(orig, geometry=_reapply_holes(area, orig, notes), classification=cls, color=color))
        else:
            ann = Annotation(geometry=area, classification=cls, color=color)
            if not key.startswith("__new_"):
                ann.id = key
            out.append(ann)
    return out


def _unchanged(orig: Annotation, parts_yx: list[np.ndarray], types: list[str]) -> bool:
    """Whether the shapes are exactly the exteriors of ``orig``'s parts (in any order)."""
    parts = orig.geometry.geoms if isinstance(orig.geometry, MultiPolygon) else [orig.geometry]
    if len(parts) != len(parts_yx) or any(t != "polygon" for t in types):
        return False
    left = list(range(len(parts_yx)))
    for part in parts:
        ext = np.asarray(part.exterior.coords)[:-1]
        hit = next(
            (
                i
                for i in left
                if len(parts_yx[i]) == len(ext) and np.allclose(np.asarray(parts_yx[i])[:, ::-1], ext, atol=1e-6)
            ),
            None,
        )
        if hit is None:
            return False
        left.remove(hit)
    return True


#: Point annotations and cell centroids are drawn this wide (µm), whatever the zoom.
POINT_SIZE_UM = 8.0


def _object_color(obj: QuPathObject) -> str:
    return rgb_to_hex(obj.color or DEFAULT_COLOR)


def qupath_point_layers(slide: Slide, objects: Sequence[GeoObject]) -> list[LayerTuple]:
    """One Points layer per class of QuPath point annotations (cell counts, calibration points)."""
    by_class: dict[str, list[QuPathObject]] = {}
    for o in objects:
        if isinstance(o, QuPathObject) and o.kind == "point" and o.geometry is not None:
            by_class.setdefault(o.classification or "Unclassified", []).append(o)
    out: list[LayerTuple] = []
    size = POINT_SIZE_UM / (slide_scale(slide)[1] or 1.0)
    for cls, objs in by_class.items():
        pts = [(pt.y, pt.x) for o in objs for pt in getattr(o.geometry, "geoms", [o.geometry])]
        names = [o.name or "" for o in objs for _ in getattr(o.geometry, "geoms", [o.geometry])]
        kwargs = geometry_transform(slide)
        kwargs.update(
            name=f"{cls} points",
            size=size,
            face_color=_object_color(objs[0]),
            border_color="white",
            features={"name": names, "classification": [cls] * len(names)},
            metadata={ROLE: ROLE_QUPATH_POINTS, SLIDE_PATH: str(slide.path), "classification": cls},
        )
        out.append((np.asarray(pts, dtype=np.float64).reshape(-1, 2), kwargs, "points"))
    return out


def qupath_cell_layer(slide: Slide, objects: Sequence[GeoObject]) -> LayerTuple | None:
    """QuPath cells, detections and tiles as centroids coloured by class, measurements as features."""
    found = [
        (o, o.geometry)
        for o in objects
        if isinstance(o, QuPathObject) and o.kind in ("cell", "detection", "tile") and o.geometry is not None
    ]
    if not found:
        return None
    kept = [(o, g) for o, g in found if not g.is_empty]
    objs, geoms = [o for o, _ in kept], [g for _, g in kept]
    cents = [g.representative_point() for g in geoms]
    keys = sorted({k for o in objs for k in o.measurements})
    features: dict[str, Any] = {
        "kind": [o.kind for o in objs],
        "classification": [o.classification or "" for o in objs],
    }
    for k in keys:
        features[k] = np.array([o.measurements.get(k, np.nan) for o in objs], dtype=np.float64)
    colors = [_object_color(o) for o in objs]
    # what is drawn when zoomed in: each object's outline, and a cell's nucleus inside it
    outlines = [[g for g in (o.geometry, o.nucleus) if g is not None and not g.is_empty] for o in objs]
    bounds = np.asarray([g.bounds for g in geoms], dtype=np.float64).reshape(-1, 4)
    kwargs = geometry_transform(slide)
    kwargs.update(
        name=f"{slide.path.name} QuPath cells and detections",
        size=POINT_SIZE_UM / 2 / (slide_scale(slide)[1] or 1.0),
        face_color=colors,
        border_width=0,
        features=features,
        metadata={
            ROLE: ROLE_QUPATH_CELLS,
            SLIDE_PATH: str(slide.path),
            "pathomics_outlines": outlines,
            "pathomics_outline_bounds": bounds,
            "pathomics_outline_colors": colors,
        },
    )
    return np.asarray([(c.y, c.x) for c in cents], dtype=np.float64).reshape(-1, 2), kwargs, "points"


def _rings(geom: Any) -> list[np.ndarray]:
    """Every ring (exteriors and holes) of a polygonal geometry, as (y, x) vertices without the closing one."""
    polys = [g for g in getattr(geom, "geoms", [geom]) if isinstance(g, Polygon)]
    return [
        np.asarray(r.coords, dtype=np.float64)[:-1, ::-1]
        for p in polys
        for r in (p.exterior, *p.interiors)
        if len(r.coords) >= 4
    ]


def qupath_outlines(
    metadata: dict[str, Any], box_l0: tuple[float, float, float, float], max_shapes: int = OUTLINE_MAX_SHAPES
) -> tuple[list[np.ndarray], list[str]]:
    """Outline rings ((y, x) level-0 corner vertices) and edge colours of a QuPath cell layer's objects
    overlapping a level-0 box (``metadata``: the cell layer's).

    At most ``max_shapes`` rings, the objects nearest the box centre first, so a view over 10⁵ cells
    never hands napari 10⁵ polygons.
    """
    bounds = np.asarray(metadata.get("pathomics_outline_bounds", np.zeros((0, 4))), dtype=np.float64).reshape(-1, 4)
    outlines = metadata.get("pathomics_outlines") or []
    colors = metadata.get("pathomics_outline_colors") or []
    x0, y0, x1, y1 = box_l0
    hit = np.nonzero((bounds[:, 0] <= x1) & (bounds[:, 2] >= x0) & (bounds[:, 1] <= y1) & (bounds[:, 3] >= y0))[0]
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    mid = (bounds[hit, :2] + bounds[hit, 2:]) / 2
    hit = hit[np.argsort((mid[:, 0] - cx) ** 2 + (mid[:, 1] - cy) ** 2, kind="stable")]
    data: list[np.ndarray] = []
    edges: list[str] = []
    for i in hit:
        for geom in outlines[i]:
            for ring in _rings(geom):
                if len(data) >= max_shapes:
                    return data, edges
                data.append(ring)
                edges.append(colors[i] if i < len(colors) else rgb_to_hex(DEFAULT_COLOR))
    return data, edges


def qupath_outline_layer(
    slide: Slide, data: list[np.ndarray] | None = None, colors: list[str] | None = None
) -> LayerTuple:
    """The (lazily filled) Shapes layer of QuPath cell/detection outlines, in level-0 corner coordinates."""
    kwargs = geometry_transform(slide)
    data = data or []
    kwargs.update(
        name=f"{slide.path.name} QuPath outlines",
        edge_width=1.5,
        face_color="transparent",
        opacity=0.9,
        edge_color=colors or rgb_to_hex(DEFAULT_COLOR),
        metadata={ROLE: ROLE_QUPATH_OUTLINES, SLIDE_PATH: str(slide.path)},
    )
    if data:
        kwargs["shape_type"] = ["polygon"] * len(data)
    return data, kwargs, "shapes"


def roi_holes_layer(slide: Slide, annotations: list[Annotation]) -> LayerTuple:
    """The ROIs' hole rings, drawn dashed-looking (thin, dark) over the ROI layer, which cannot show holes."""
    rings = [
        np.asarray(h.coords)[:-1, ::-1].copy()
        for a in annotations
        for p in (a.geometry.geoms if isinstance(a.geometry, MultiPolygon) else [a.geometry])
        for h in p.interiors
    ]
    kwargs = geometry_transform(slide)
    kwargs.update(
        name=f"{slide.path.name} ROI holes",
        shape_type=["polygon"] * len(rings),
        edge_width=2,
        edge_color="#00e5ff",
        face_color=[0.0, 0.9, 1.0, 0.15],
        opacity=1.0,
        metadata={ROLE: ROLE_ROI_HOLES, SLIDE_PATH: str(slide.path)},
    )
    return rings, kwargs, "shapes"
