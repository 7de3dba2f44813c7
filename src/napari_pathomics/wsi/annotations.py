"""Tumour ROIs as shapely geometries in level-0 pixels, read and written as QuPath GeoJSON.

QuPath is what pathologists exchange annotations with, so its GeoJSON dialect is the file
format: ``objectType: annotation``, ``classification`` with name and RGB colour, polygons with
holes and MultiPolygons kept as they are. Broken geometry is repaired with shapely and
reported; geometry off the slide is clipped, and an ROI entirely off the slide is an error.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon, box, mapping, shape
from shapely.geometry.base import BaseGeometry

from ..atomic import atomic_write_text
from ..colors import qupath_color
from ..errors import AnnotationError
from ..provenance import strict_json

DEFAULT_CLASS = "Tumor"
DEFAULT_COLOR: tuple[int, int, int] = (200, 0, 0)

Area = Polygon | MultiPolygon


@dataclass
class Annotation:
    """One QuPath annotation: an area in level-0 px with its class and colour."""

    geometry: Area
    classification: str = DEFAULT_CLASS
    color: tuple[int, int, int] = DEFAULT_COLOR
    name: str | None = None
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    properties: dict[str, Any] = field(default_factory=dict)

    @property
    def area_px(self) -> float:
        return float(self.geometry.area)

    def to_feature(self) -> dict[str, Any]:
        props: dict[str, Any] = {k: v for k, v in self.properties.items()
                                 if k not in ("objectType", "classification", "name")}
        props["objectType"] = "annotation"
        props["classification"] = {"name": self.classification, "color": list(self.color)}
        if self.name:
            props["name"] = self.name
        return {"type": "Feature", "id": self.id, "geometry": mapping(self.geometry),
                "properties": props}


@dataclass
class ReadResult:
    """Annotations read from a file plus what was repaired or skipped (shown to the user)."""

    annotations: list[Annotation]
    warnings: list[str]


def _features(doc: Any) -> list[dict[str, Any]]:
    if isinstance(doc, list):
        return [f for f in doc if isinstance(f, dict)]
    if not isinstance(doc, dict):
        raise AnnotationError("the file is JSON but not GeoJSON (expected an object or a list of features)")
    kind = doc.get("type")
    if kind == "FeatureCollection":
        feats = doc.get("features")
        if not isinstance(feats, list):
            raise AnnotationError("FeatureCollection without a 'features' list")
        return feats
    if kind == "Feature":
        return [doc]
    if kind in ("Polygon", "MultiPolygon", "GeometryCollection"):
        return [{"type": "Feature", "geometry": doc, "properties": {}}]
    raise AnnotationError(f"not GeoJSON: top-level type is {kind!r}")


def _as_area(geom: BaseGeometry) -> Area | None:
    """Keep only the areal part of a geometry (ROIs are areas)."""
    if isinstance(geom, (Polygon, MultiPolygon)):
        return geom if not geom.is_empty else None
    polys = [g for g in getattr(geom, "geoms", []) if isinstance(g, (Polygon, MultiPolygon))]
    if not polys:
        return None
    merged = shapely.union_all(polys)
    return merged if isinstance(merged, (Polygon, MultiPolygon)) and not merged.is_empty else None


def _clip(area: Area, slide_box: Polygon) -> tuple[Area | None, str | None]:
    """``area`` clipped to the slide, with what happened (None: nothing of it is on the slide)."""
    if slide_box.contains(area):
        return area, None
    clipped = _as_area(area.intersection(slide_box))
    if clipped is None or clipped.area < 1.0:
        return None, "lies entirely off the slide, skipped"
    return clipped, "clipped to the slide bounds"


def clip_annotations(annotations: Iterable[Annotation], bounds: tuple[float, float],
                     source: str = "ROIs") -> ReadResult:
    """ROIs clipped to a slide of ``bounds`` = (width, height) level-0 px, as ``read_geojson`` clips.

    An ROI wholly off the slide is dropped with a warning; if none is left that is an error.
    """
    slide_box = box(0, 0, bounds[0], bounds[1])
    out: list[Annotation] = []
    warnings: list[str] = []
    anns = list(annotations)
    for i, ann in enumerate(anns):
        area, note = _clip(ann.geometry, slide_box)
        if note:
            warnings.append(f"{ann.name or f'ROI {i + 1}'}: {note}")
        if area is None:
            continue
        out.append(ann if area is ann.geometry else replace(ann, geometry=area))
    if anns and not out:
        raise AnnotationError(f"{source}: every ROI lies off the slide ({bounds[0]} x {bounds[1]} px)")
    return ReadResult(out, warnings)


def parse_geojson(
    doc: Any, bounds: tuple[float, float] | None = None, source: str = "GeoJSON",
    allow_empty: bool = False,
) -> ReadResult:
    """Turn a parsed GeoJSON document into annotations, repairing what can be repaired.

    ``bounds`` = (width, height) of level 0: geometry is clipped to the slide; a feature wholly
    off the slide is skipped with a warning, and if none is left that is an error.
    """
    warnings: list[str] = []
    out: list[Annotation] = []
    feats = _features(doc)
    slide_box = box(0, 0, bounds[0], bounds[1]) if bounds else None
    for i, feat in enumerate(feats):
        label = f"feature {i + 1}"
        if not isinstance(feat, dict) or not isinstance(feat.get("geometry"), dict):
            warnings.append(f"{label}: no geometry, skipped")
            continue
        props = feat.get("properties") or {}
        if not isinstance(props, dict):
            props = {}
        obj_type = props.get("objectType", "annotation")
        if obj_type not in ("annotation", "detection", "tile", "cell"):
            warnings.append(f"{label}: objectType {obj_type!r} is not an annotation, skipped")
            continue
        if obj_type != "annotation":
            continue  # detections/tiles are results, not ROIs
        gtype = feat["geometry"].get("type")
        try:
            with np.errstate(invalid="ignore"):  # NaN coordinates are reported below, not as a numpy warning
                geom = shape(feat["geometry"])
        except Exception as exc:  # noqa: BLE001 - shapely raises several kinds
            warnings.append(f"{label}: unreadable {gtype} geometry ({exc}), skipped")
            continue
        coords = shapely.get_coordinates(geom)
        if coords.size and not np.isfinite(coords).all():
            raise AnnotationError(f"{source}: {label} has NaN or infinite coordinates")
        area = _as_area(geom)
        if area is None:
            warnings.append(f"{label}: {gtype} has no area (ROIs must be polygons), skipped")
            continue
        if not area.is_valid:
            reason = shapely.is_valid_reason(area)
            area = _as_area(shapely.make_valid(area))
            if area is None:
                warnings.append(f"{label}: invalid polygon ({reason}) could not be repaired, skipped")
                continue
            warnings.append(f"{label}: invalid polygon ({reason}) repaired")
        if slide_box is not None:
            area, note = _clip(area, slide_box)
            if note:
                warnings.append(f"{label}: {note}")
            if area is None:
                continue
        cls = props.get("classification") or {}
        if not isinstance(cls, dict):
            cls = {"name": str(cls)}
        out.append(Annotation(
            geometry=area,
            classification=str(cls.get("name") or DEFAULT_CLASS),
            color=qupath_color(cls.get("color", cls.get("colorRGB")), DEFAULT_COLOR),
            name=props.get("name"),
            id=str(feat.get("id") or uuid.uuid4()),
            properties={k: v for k, v in props.items() if k not in ("classification",)},
        ))
    if not out and not (allow_empty and not feats):
        if not feats:
            raise AnnotationError(f"{source} contains no features")
        detail = f" ({warnings[-1]})" if warnings else ""
        raise AnnotationError(f"{source} contains no usable ROI{detail}")
    return ReadResult(out, warnings)


def read_geojson(
    path: str | Path, bounds: tuple[float, float] | None = None, allow_empty: bool = False
) -> ReadResult:
    """Read a QuPath GeoJSON file (FeatureCollection, Feature or list of features)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # tolerate a BOM (Windows editors add one)
    except FileNotFoundError:
        raise AnnotationError(f"ROI file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise AnnotationError(f"cannot read ROI file {path.name}: {exc}") from exc
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AnnotationError(f"{path.name} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
    except RecursionError:
        raise AnnotationError(f"{path.name} is not usable GeoJSON (JSON nested too deeply)") from None
    return parse_geojson(doc, bounds=bounds, source=path.name, allow_empty=allow_empty)


def to_geojson(annotations: Iterable[Annotation]) -> dict[str, Any]:
    return {"type": "FeatureCollection", "features": [a.to_feature() for a in annotations]}


def write_geojson(annotations: Iterable[Annotation], path: str | Path) -> Path:
    """Write QuPath GeoJSON atomically (an interrupted save keeps the previous file)."""
    return atomic_write_text(path, json.dumps(strict_json(to_geojson(annotations)), indent=1, allow_nan=False))


def union_area(annotations: Iterable[Annotation]) -> Area | None:
    """All ROIs merged into one area (tiling works on ROI ∩ tissue)."""
    geoms = [a.geometry for a in annotations]
    if not geoms:
        return None
    merged = shapely.union_all(geoms)
    return _as_area(merged)


def ellipse_polygon(center_xy: tuple[float, float], radii_xy: tuple[float, float], n: int = 64) -> Polygon:
    """An ellipse as a polygon (GeoJSON has no ellipses; QuPath exports them the same way)."""
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    xs = center_xy[0] + radii_xy[0] * np.cos(t)
    ys = center_xy[1] + radii_xy[1] * np.sin(t)
    return Polygon(np.column_stack([xs, ys]))
