"""ROI geometry in level-0 px: bounded repair of self-intersecting polygons, clipping to a slide.

A freehand ROI with thousands of vertices and a crossing is ordinary, but exact repair
(GEOS ``make_valid``) costs time and memory that grow with the number of self-crossings, which
for a scribble can be millions. Repair is therefore bounded: crossings are counted with a
spatial index and an early stop; a polygon with few crossings is repaired exactly; one with many
is rasterised (even-odd rule, at most ``RASTER_MAX_SIDE`` px a side) and traced back if it has
at most ``RASTER_MAX_VERTICES`` vertices, and refused with a clear message otherwise.
"""

from __future__ import annotations

import math
from typing import TypeAlias

import cv2
import numpy as np
import shapely
import shapely.affinity
from shapely.geometry import MultiPolygon, Polygon, box
from shapely.geometry.base import BaseGeometry

from ..errors import AnnotationError

__all__ = ["Area", "as_area", "repair_area", "clip_area", "ellipse_polygon", "MAX_VERTICES", "EXACT_MAX_CROSSINGS"]

Area: TypeAlias = Polygon | MultiPolygon

#: A single ROI with more vertices than this is refused (QuPath's own exports stay far below).
MAX_VERTICES = 1_000_000
#: Self-crossings up to which GEOS repairs a polygon exactly; beyond, it is rasterised.
EXACT_MAX_CROSSINGS = 2_000
#: Vertices up to which a heavily self-crossing polygon is rasterised; beyond, it is refused.
RASTER_MAX_VERTICES = 20_000
#: Side of the raster a heavily self-crossing polygon is traced from.
RASTER_MAX_SIDE = 2048


def as_area(geom: BaseGeometry | None) -> Area | None:
    """Only the areal part of a geometry (ROIs are areas); None when there is none."""
    if geom is None or geom.is_empty:
        return None
    if isinstance(geom, (Polygon, MultiPolygon)):
        return geom
    polys = [g for g in getattr(geom, "geoms", []) if isinstance(g, (Polygon, MultiPolygon)) and not g.is_empty]
    if not polys:
        return None
    merged = shapely.union_all(polys)
    return merged if isinstance(merged, (Polygon, MultiPolygon)) and not merged.is_empty else None


def _rings(area: Area) -> list[np.ndarray]:
    parts = area.geoms if isinstance(area, MultiPolygon) else [area]
    return [np.asarray(r.coords) for p in parts for r in (p.exterior, *p.interiors)]


def count_crossings(area: Area, limit: int = EXACT_MAX_CROSSINGS) -> int:
    """Pairs of non-adjacent ring segments that intersect, counted until ``limit`` is passed."""
    segs = []
    for ring in _rings(area):
        if len(ring) >= 2:
            segs.append(np.stack([ring[:-1], ring[1:]], axis=1))
    if not segs:
        return 0
    seg = np.concatenate(segs)
    starts = np.cumsum([0] + [len(s) for s in segs])[:-1]
    ring_of = np.repeat(np.arange(len(segs)), [len(s) for s in segs])
    ring_len = np.array([len(s) for s in segs])
    lines = shapely.linestrings(seg)
    tree = shapely.STRtree(lines)
    n, total, chunk = len(lines), 0, 16
    for s in range(0, n, chunk):
        idx = np.arange(s, min(n, s + chunk))
        a, b = tree.query(lines[idx], predicate="intersects")
        a = idx[a]
        same = ring_of[a] == ring_of[b]
        pos_a, pos_b = a - starts[ring_of[a]], b - starts[ring_of[b]]
        adjacent = same & ((np.abs(pos_a - pos_b) <= 1) | (np.abs(pos_a - pos_b) == ring_len[ring_of[a]] - 1))
        total += int(np.count_nonzero((b > a) & ~adjacent))
        if total > limit:
            return total
    return total


def even_odd_mask(
    rings: list[np.ndarray], shape: tuple[int, int], scale: float, origin: tuple[float, float]
) -> np.ndarray:
    """Pixels whose centre lies inside ``rings`` by the even-odd rule (holes and crossings alike).

    Pixel (r, c) is centred on ``origin + ((c + ½), (r + ½)) / scale``. A scanline fill in numpy:
    time grows with rows × edges, never with the number of self-crossings.
    """
    h, w = shape
    segs = np.concatenate([np.stack([r[:-1], r[1:]], axis=1) for r in rings if len(r) >= 2])
    x0, y0 = (segs[:, 0, 0] - origin[0]) * scale, (segs[:, 0, 1] - origin[1]) * scale
    x1, y1 = (segs[:, 1, 0] - origin[0]) * scale, (segs[:, 1, 1] - origin[1]) * scale
    keep = y0 != y1
    x0, y0, x1, y1 = x0[keep], y0[keep], x1[keep], y1[keep]
    mask = np.zeros((h, w), dtype=bool)
    xc = np.arange(w) + 0.5
    step = max(1, int(4_000_000 // max(1, x0.size)))  # rows per chunk: bounded temporary memory
    for r0 in range(0, h, step):
        yc = (np.arange(r0, min(h, r0 + step)) + 0.5)[:, None]
        crosses = (y0 <= yc) != (y1 <= yc)
        with np.errstate(divide="ignore", invalid="ignore"):
            xs = np.where(crosses, x0 + (yc - y0) * (x1 - x0) / (y1 - y0), np.inf)
        xs.sort(axis=1)
        counts = np.count_nonzero(crosses, axis=1)
        for i in range(xs.shape[0]):
            if counts[i]:
                mask[r0 + i] = (np.searchsorted(xs[i, : counts[i]], xc) % 2).astype(bool)
    return mask


def _raster_repair(area: Area) -> Area | None:
    """The even-odd interior of ``area``'s rings, traced from a bounded raster.

    Fragments smaller than 1/100 of the raster side squared are dropped (a scribble's dust).
    """
    minx, miny, maxx, maxy = area.bounds
    side = max(maxx - minx, maxy - miny, 1e-9)
    scale = min(1.0, RASTER_MAX_SIDE / side)  # raster px per level-0 px
    w = int(math.ceil((maxx - minx) * scale)) + 2
    h = int(math.ceil((maxy - miny) * scale)) + 2
    origin = (minx - 1 / scale, miny - 1 / scale)
    from skimage import morphology  # heavy (~0.5 s): only a scribbled ROI needs it

    mask = even_odd_mask(_rings(area), (h, w), scale, origin)
    dust = max(16, int((max(h, w) / 100) ** 2))
    mask = morphology.remove_small_holes(morphology.remove_small_objects(mask, max_size=dust), max_size=dust)
    contours, hierarchy = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return None
    hier = hierarchy[0]
    polys = []
    for i, c in enumerate(contours):
        if hier[i][3] != -1 or len(c) < 3:
            continue  # holes are attached to their outer contour below
        holes = []
        j = hier[i][2]
        while j != -1:
            if len(contours[j]) >= 3:
                holes.append(contours[j][:, 0, :] + 0.5)
            j = hier[j][0]
        poly = Polygon(c[:, 0, :] + 0.5, holes)
        polys.append(poly if poly.is_valid else shapely.make_valid(poly, method="structure", keep_collapsed=False))
    traced = as_area(shapely.coverage_union_all(polys)) if polys else None  # components do not overlap
    if traced is None:
        return None
    back = shapely.affinity.affine_transform(traced, [1 / scale, 0, 0, 1 / scale, origin[0], origin[1]])
    return as_area(back)


def repair_area(area: Area) -> tuple[Area | None, str | None]:
    """A valid version of ``area`` in bounded time and memory, and what was done (None: it was valid)."""
    n = int(shapely.get_num_coordinates(area))
    if n > MAX_VERTICES:
        raise AnnotationError(
            f"an ROI with {n} vertices is more than the {MAX_VERTICES} this tool accepts; "
            "simplify it in QuPath (Objects > Annotations > Simplify shape) first"
        )
    if area.is_valid:
        return area, None
    reason = shapely.is_valid_reason(area)
    crossings = count_crossings(area)
    if crossings <= EXACT_MAX_CROSSINGS:
        fixed = as_area(shapely.make_valid(area, method="structure", keep_collapsed=False))
        how = "repaired"
    elif n > RASTER_MAX_VERTICES:
        raise AnnotationError(
            f"an ROI with {n} vertices crosses itself more than {EXACT_MAX_CROSSINGS} times; "
            "it cannot be repaired reliably: redraw it or simplify it in QuPath first"
        )
    else:
        fixed = _raster_repair(area)
        how = (
            f"has more than {EXACT_MAX_CROSSINGS} self-crossings; its even-odd interior was traced "
            f"at {min(1.0, RASTER_MAX_SIDE / max(1.0, *(np.subtract(area.bounds[2:], area.bounds[:2])))):.3g} "
            "raster px per level-0 px"
        )
    if fixed is None:
        return None, f"invalid polygon ({reason}) could not be repaired"
    return fixed, f"invalid polygon ({reason}) {how}"


def clip_area(area: Area, bounds: tuple[float, float]) -> tuple[Area | None, str | None]:
    """``area`` clipped to a slide of ``bounds`` = (width, height), and what happened."""
    slide_box = box(0, 0, bounds[0], bounds[1])
    if slide_box.contains(area):
        return area, None
    clipped = as_area(area.intersection(slide_box))
    if clipped is None or clipped.area < 1.0:
        return None, "lies entirely off the slide"
    return clipped, "clipped to the slide bounds"


def ellipse_polygon(center_xy: tuple[float, float], radii_xy: tuple[float, float], n: int = 64) -> Polygon:
    """An ellipse as a polygon (GeoJSON has no ellipses; QuPath exports them the same way)."""
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    xs = center_xy[0] + radii_xy[0] * np.cos(t)
    ys = center_xy[1] + radii_xy[1] * np.sin(t)
    return Polygon(np.column_stack([xs, ys]))
