"""Core objects → napari layer data tuples, with the one transform that keeps them aligned.

Qt-free: returns ``(data, kwargs, layer_type)`` tuples that napari's ``Viewer._add_layer_from_data``
or ``add_<type>(data, **kwargs)`` accept; colormaps are plain dicts napari turns into its own
objects. Conventions (docs/architecture.md, "Coordinates"):

* The slide image: level-0 pixel ``i`` is centred on world ``i·mpp`` µm (napari's convention).
* Geometry (ROIs, tiles) is in level-0 *corner* coordinates as GeoJSON/QuPath use them, so pixel
  ``i`` spans ``[i, i+1)``: a Shapes layer with ``scale = mpp`` and ``translate = −mpp/2`` shows
  GeoJSON coordinates exactly over the pixels they name.
* A grid whose cell covers ``s`` level-0 px from origin ``o`` gets ``scale = s·mpp`` and
  ``translate = (o + (s − 1)/2)·mpp``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon

from .cells.results import TILE_UNITS, NucleiResults
from .colors import hex_to_rgba, napari_color, rgb_to_hex
from .results.status import DONE, RISK_CAM
from .wsi.annotations import DEFAULT_CLASS, DEFAULT_COLOR, Annotation, QuPathObject, ellipse_polygon
from .wsi.geometry import as_area, repair_area
from .wsi.slide import Slide

if TYPE_CHECKING:  # pragma: no cover
    from .results.tiles import TileResults

UNITS = ("um", "um")
LayerTuple = tuple[Any, dict[str, Any], str]

#: Layer metadata keys: what a layer shows, and of which slide.
ROLE = "pathomics_role"
SLIDE_PATH = "pathomics_slide_path"
CELL_L0 = "pathomics_cell_l0"
#: Roles of the layers the plugin makes.
ROLE_SLIDE, ROLE_ROIS, ROLE_ROIS_IMPORT, ROLE_TISSUE, ROLE_TILE_GRID = "slide", "rois", "rois_import", "tissue", "tile_grid"
ROLE_CLASS_MAP, ROLE_RISK_MAP = "class_map", "risk_map"
ROLE_ROI_HOLES, ROLE_QUPATH_POINTS, ROLE_QUPATH_CELLS = "roi_holes", "qupath_points", "qupath_cells"


def cam_role(name: str) -> str:
    """Role of the layer of CAM ``name`` ('risk' is the risk activation map)."""
    return f"cam:{name}"


#: Values below 0 (no tile) are transparent; 0..1 runs through an inferno-like ramp.
HEAT_COLORMAP: dict[str, Any] = {
    "name": "pathomics_heat",
    "colors": [[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.12, 0.05, 0.35, 0.85], [0.45, 0.10, 0.45, 0.9],
               [0.78, 0.22, 0.33, 0.9], [0.97, 0.55, 0.15, 0.9], [0.99, 0.95, 0.45, 0.95]],
    "controls": [0.0, 0.0099, 0.0101, 0.25, 0.5, 0.75, 1.0],
}
HEAT_LIMITS = (-0.01, 1.0)


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
            "metadata": {SLIDE_PATH: str(slide.path), ROLE: ROLE_SLIDE},
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


def tissue_layer(slide: Slide, mask: np.ndarray, downsample: float) -> LayerTuple:
    kwargs = grid_transform(slide, downsample)
    kwargs.update(name="Tissue", opacity=0.35, metadata={ROLE: ROLE_TISSUE, SLIDE_PATH: str(slide.path),
                                                         "pathomics_downsample": downsample})
    return mask.astype(np.uint8), kwargs, "labels"


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


def _reapply_holes(outer: Polygon | MultiPolygon, orig: Annotation, notes: list[str] | None) -> Polygon | MultiPolygon:
    """``outer`` with the holes of ``orig`` that still lie inside it cut out again."""
    parts = orig.geometry.geoms if isinstance(orig.geometry, MultiPolygon) else [orig.geometry]
    holes = [Polygon(h) for p in parts for h in p.interiors]
    kept = [h for h in holes if outer.contains(h)]
    if len(kept) < len(holes) and notes is not None:
        notes.append(f"ROI {orig.name or orig.id}: {len(holes) - len(kept)} of its {len(holes)} holes no longer lie "
                     "inside the edited outline and were dropped; the previous version is kept as .<file>.previous")
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
        color = napari_color(edge_colors[first], DEFAULT_COLOR) if edge_colors is not None and len(edge_colors) > first \
            else (orig.color if orig else DEFAULT_COLOR)
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
        hit = next((i for i in left if len(parts_yx[i]) == len(ext)
                    and np.allclose(np.asarray(parts_yx[i])[:, ::-1], ext, atol=1e-6)), None)
        if hit is None:
            return False
        left.remove(hit)
    return True


#: Point annotations and cell centroids are drawn this wide (µm), whatever the zoom.
POINT_SIZE_UM = 8.0


def _object_color(obj: QuPathObject) -> str:
    return rgb_to_hex(obj.color or DEFAULT_COLOR)


def qupath_point_layers(slide: Slide, objects: list[QuPathObject]) -> list[LayerTuple]:
    """One Points layer per class of QuPath point annotations (cell counts, calibration points)."""
    by_class: dict[str, list[QuPathObject]] = {}
    for o in objects:
        if o.kind == "point" and o.geometry is not None:
            by_class.setdefault(o.classification or "Unclassified", []).append(o)
    out: list[LayerTuple] = []
    size = POINT_SIZE_UM / (slide_scale(slide)[1] or 1.0)
    for cls, objs in by_class.items():
        pts = [(pt.y, pt.x) for o in objs for pt in getattr(o.geometry, "geoms", [o.geometry])]
        names = [o.name or "" for o in objs for _ in getattr(o.geometry, "geoms", [o.geometry])]
        kwargs = geometry_transform(slide)
        kwargs.update(name=f"{cls} points", size=size, face_color=_object_color(objs[0]), border_color="white",
                      features={"name": names, "classification": [cls] * len(names)},
                      metadata={ROLE: ROLE_QUPATH_POINTS, SLIDE_PATH: str(slide.path), "classification": cls})
        out.append((np.asarray(pts, dtype=np.float64).reshape(-1, 2), kwargs, "points"))
    return out


def qupath_cell_layer(slide: Slide, objects: list[QuPathObject]) -> LayerTuple | None:
    """QuPath cells, detections and tiles as centroids coloured by class, measurements as features."""
    objs = [o for o in objects if o.kind in ("cell", "detection", "tile") and o.geometry is not None]
    if not objs:
        return None
    cents = [o.geometry.representative_point() if not o.geometry.is_empty else None for o in objs]
    keep = [i for i, c in enumerate(cents) if c is not None]
    objs, cents = [objs[i] for i in keep], [cents[i] for i in keep]
    keys = sorted({k for o in objs for k in o.measurements})
    features: dict[str, Any] = {"kind": [o.kind for o in objs], "classification": [o.classification or "" for o in objs]}
    for k in keys:
        features[k] = np.array([o.measurements.get(k, np.nan) for o in objs], dtype=np.float64)
    kwargs = geometry_transform(slide)
    kwargs.update(name=f"{slide.path.name} QuPath cells and detections", size=POINT_SIZE_UM / 2 / (slide_scale(slide)[1] or 1.0),
                  face_color=[_object_color(o) for o in objs], border_width=0, features=features,
                  metadata={ROLE: ROLE_QUPATH_CELLS, SLIDE_PATH: str(slide.path),
                            "pathomics_outlines": [o.nucleus or o.geometry for o in objs]})
    return np.asarray([(c.y, c.x) for c in cents], dtype=np.float64).reshape(-1, 2), kwargs, "points"


def roi_holes_layer(slide: Slide, annotations: list[Annotation]) -> LayerTuple:
    """The ROIs' hole rings, drawn dashed-looking (thin, dark) over the ROI layer, which cannot show holes."""
    rings = [np.asarray(h.coords)[:-1, ::-1].copy() for a in annotations
             for p in (a.geometry.geoms if isinstance(a.geometry, MultiPolygon) else [a.geometry]) for h in p.interiors]
    kwargs = geometry_transform(slide)
    kwargs.update(name=f"{slide.path.name} ROI holes", shape_type=["polygon"] * len(rings), edge_width=2,
                  edge_color="#00e5ff", face_color=[0.0, 0.9, 1.0, 0.15], opacity=1.0,
                  metadata={ROLE: ROLE_ROI_HOLES, SLIDE_PATH: str(slide.path)})
    return rings, kwargs, "shapes"


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
        ROLE: ROLE_TILE_GRID, SLIDE_PATH: str(slide.path), "tile_count": len(grid), CELL_L0: grid.tile_size_l0 / k})
    return rgba, kwargs, "image"


# ---------------------------------------------------------------------------------------------
# result layers
def _result_meta(slide: Slide, role: str, cell_l0: float) -> dict[str, Any]:
    return {ROLE: role, SLIDE_PATH: str(slide.path), CELL_L0: cell_l0}


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
                  metadata=_result_meta(slide, ROLE_CLASS_MAP, results.tile_size_l0))
    return data, kwargs, "labels"


def risk_map_layer(slide: Slide, results: TileResults) -> LayerTuple:
    """The patch-risk heatmap: one cell per tile, below-zero (no tile) transparent."""
    data = np.nan_to_num(results.risk_map(), nan=-1.0)
    kwargs = grid_transform(slide, results.tile_size_l0)
    kwargs.update(name="Patch risk", colormap=HEAT_COLORMAP, contrast_limits=HEAT_LIMITS, opacity=0.6,
                  blending="translucent", visible=True,
                  metadata=_result_meta(slide, ROLE_RISK_MAP, results.tile_size_l0))
    return data, kwargs, "image"


def cam_layer(slide: Slide, results: TileResults, name: str) -> LayerTuple:
    """The stitched Grad-CAM mosaic of CAM ``name`` (k × k px per tile)."""
    k = results.cam_size(name)
    data = np.nan_to_num(results.cam_mosaic(name), nan=-1.0).astype(np.float32)
    kwargs = grid_transform(slide, results.tile_size_l0 / k)
    kwargs.update(name="Risk activation map" if name == RISK_CAM else f"Grad-CAM {name}", colormap=HEAT_COLORMAP,
                  contrast_limits=HEAT_LIMITS, opacity=0.6, blending="translucent",
                  metadata=_result_meta(slide, cam_role(name), results.tile_size_l0 / k))
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


# ---------------------------------------------------------------------------------------------
# nuclei and the tumour proposal
ROLE_NUCLEI_DENSITY, ROLE_NC_RATIO = "nuclei_density", "nc_ratio"
ROLE_NUCLEI_OUTLINES, ROLE_TUMOUR_PROPOSAL = "nuclei_outlines", "tumour_proposal"
UNITS_KEY = "pathomics_units"
#: Below the lowest value (no tile) transparent, then a magma-like ramp (density) or viridis-like (N:C).
DENSITY_COLORMAP: dict[str, Any] = {
    "name": "pathomics_density",
    "colors": [[0, 0, 0, 0], [0, 0, 0, 0], [0.05, 0.03, 0.2, 0.85], [0.45, 0.12, 0.5, 0.9], [0.85, 0.27, 0.4, 0.9],
               [0.99, 0.6, 0.36, 0.95], [0.99, 0.99, 0.75, 0.95]],
    "controls": [0.0, 0.0099, 0.0101, 0.25, 0.5, 0.75, 1.0],
}
NC_COLORMAP: dict[str, Any] = {
    "name": "pathomics_nc_ratio",
    "colors": [[0, 0, 0, 0], [0, 0, 0, 0], [0.27, 0.0, 0.33, 0.85], [0.23, 0.32, 0.55, 0.9], [0.13, 0.57, 0.55, 0.9],
               [0.37, 0.79, 0.38, 0.95], [0.99, 0.91, 0.14, 0.95]],
    "controls": [0.0, 0.0099, 0.0101, 0.25, 0.5, 0.75, 1.0],
}
#: Outlines are drawn only when zoomed in to at least this many screen px per µm (a 10 µm nucleus
#: is then 15 px across), for the visible area only, and at most this many at once.
OUTLINE_MIN_ZOOM = 1.5
OUTLINE_MAX_SHAPES = 4000
NUCLEUS_EDGE, LYMPHOCYTE_EDGE = "#00a0ff", "#ffc800"


def _scalar_map(lattice: np.ndarray, lo: float | None = None, hi: float | None = None
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
    kwargs.update(name=name, colormap=cmap, contrast_limits=limits, opacity=0.6, blending="translucent",
                  metadata={**_result_meta(slide, role, nuclei.tile_size_l0), UNITS_KEY: TILE_UNITS[measure],
                            "pathomics_measure": measure})
    return data, kwargs, "image"


def nuclei_outlines(nuclei: NucleiResults, box_l0: tuple[float, float, float, float],
                    max_shapes: int = OUTLINE_MAX_SHAPES) -> tuple[list[np.ndarray], list[str]]:
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


def nuclei_outline_layer(slide: Slide, data: list[np.ndarray] | None = None, colors: list[str] | None = None
                         ) -> LayerTuple:
    """The (lazily filled) Shapes layer of nucleus outlines: geometry in level-0 corner coordinates."""
    kwargs = geometry_transform(slide)
    data = data or []
    kwargs.update(name="Nuclei", edge_width=1.5, face_color="transparent", opacity=0.9,
                  edge_color=colors or NUCLEUS_EDGE, metadata={ROLE: ROLE_NUCLEI_OUTLINES, SLIDE_PATH: str(slide.path)})
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
    kwargs.update(name="Tumor (proposed)", face_color="transparent", edge_color="#ff8c00",
                  edge_width=widths or 3.0, opacity=1.0,
                  metadata={ROLE: ROLE_TUMOUR_PROPOSAL, SLIDE_PATH: str(slide.path),
                            "pathomics_annotations": list(annotations)})
    if data:
        kwargs["shape_type"] = ["polygon"] * len(data)
    return data, kwargs, "shapes"


def nuclei_readout(nuclei: NucleiResults, slide: Slide, world_yx: tuple[float, float],
                   values: dict[str, np.ndarray] | None = None) -> str:
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

    return (f"tile ({d['x']}, {d['y']}): {int(d['count'])} nuclei · {f(d['density_mm2'], '.0f')}/mm² · "
            f"area {f(d['area_mean_um2'], '.1f')} µm² · N:C {f(d['nc_ratio_mean'], '.2f')} · "
            f"large {f(100 * d['large_fraction'], '.0f')} % · lymphocyte-like {f(100 * d['lymphocyte_fraction'], '.0f')} %")
