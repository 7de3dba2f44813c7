"""QuPath GeoJSON, read and written without losing anything: ROIs, points, cells, detections.

QuPath is what pathologists exchange annotations with, so its GeoJSON dialect (versions 0.2 to
0.5) is the file format. A file is read into ``objects``, in file order: area annotations
become :class:`Annotation` (the ROIs the plugin tiles and scores, also listed as
``annotations``); everything else — point annotations, lines, cells with their nucleus,
detections, tiles, features it cannot read — becomes a :class:`QuPathObject` that keeps its
feature verbatim. Writing ``objects`` back gives the same features, except for what the user
edited: an unedited ROI is written from its original feature (ids, ``isLocked``, ``isEllipse``,
derived classes, colours in either form and unknown properties kept), an edited one from its
new geometry with its other properties kept.

Broken polygons are repaired in bounded time (``wsi.geometry``) and said so; geometry off the
slide is clipped for tiling, and an ROI wholly off the slide is kept in ``objects`` but left out
of ``annotations``.
"""

from __future__ import annotations

import copy
import json
import math
import os
import stat
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import shapely
from shapely.geometry import mapping, shape
from shapely.geometry.base import BaseGeometry

from ..atomic import atomic_write_text
from ..colors import qupath_color
from ..errors import AnnotationError
from ..provenance import strict_json
from .geometry import Area, as_area, clip_area, ellipse_polygon, repair_area

__all__ = [
    "Annotation",
    "QuPathObject",
    "ReadResult",
    "parse_geojson",
    "read_geojson",
    "write_geojson",
    "to_geojson",
    "clip_annotations",
    "union_area",
    "ellipse_polygon",
    "classification_of",
    "measurements_of",
    "DEFAULT_CLASS",
    "DEFAULT_COLOR",
]

DEFAULT_CLASS = "Tumor"
DEFAULT_COLOR: tuple[int, int, int] = (200, 0, 0)
#: QuPath 0.2 wrote the object type as the feature id (and no ``objectType``).
_QUPATH02_IDS = {
    "PathAnnotationObject": "annotation",
    "PathDetectionObject": "detection",
    "PathCellObject": "cell",
    "PathTileObject": "tile",
    "PathRootObject": "root",
}


def _is_type_id(value: Any) -> bool:
    return isinstance(value, str) and value in _QUPATH02_IDS


def classification_of(props: dict[str, Any]) -> tuple[str | None, tuple[int, int, int] | None]:
    """A QuPath classification's display name and colour (0.4+ derived classes join with ': ')."""
    cls = props.get("classification")
    if cls is None:
        return None, None
    if not isinstance(cls, dict):
        return str(cls), None
    name = cls.get("name")
    names = cls.get("names")
    if not name and isinstance(names, list) and names:
        name = ": ".join(str(n) for n in names)
    raw = cls.get("color", cls.get("colorRGB"))
    return (str(name) if name else None), (qupath_color(raw, DEFAULT_COLOR) if raw is not None else None)


def measurements_of(props: dict[str, Any]) -> dict[str, float]:
    """QuPath measurements as {name: value}: 0.2/0.3 write a list of {name, value}, 0.4+ a map."""
    raw = props.get("measurements")
    pairs: Iterable[tuple[Any, Any]]
    if isinstance(raw, dict):
        pairs = raw.items()
    elif isinstance(raw, list):
        pairs = ((m.get("name"), m.get("value")) for m in raw if isinstance(m, dict))
    else:
        return {}
    out: dict[str, float] = {}
    for k, v in pairs:
        try:
            out[str(k)] = float(v)
        except (TypeError, ValueError):
            continue
    return out


@dataclass
class Annotation:
    """A QuPath area annotation (an ROI): an area in level-0 px with its class and colour.

    ``source`` is the feature it was read from (None for a drawn ROI); ``source_geometry`` the
    geometry as read, so an unedited ROI is written back exactly as it came.
    """

    geometry: Area
    classification: str = DEFAULT_CLASS
    color: tuple[int, int, int] = DEFAULT_COLOR
    name: str | None = None
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    properties: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] | None = field(default=None, repr=False, compare=False)
    source_geometry: BaseGeometry | None = field(default=None, repr=False, compare=False)
    #: (classification, color, name, id, properties) as read: an ROI still equal to it is unedited.
    as_read: tuple[Any, ...] | None = field(default=None, repr=False, compare=False)

    @property
    def area_px(self) -> float:
        return float(self.geometry.area)

    def _state(self) -> tuple[Any, ...]:
        return self.classification, self.color, self.name, self.id, self.properties

    def to_feature(self) -> dict[str, Any]:
        if (
            self.source is not None
            and self.geometry is self.source_geometry
            and self.as_read is not None
            and self._state() == self.as_read
        ):
            return copy.deepcopy(self.source)  # unedited: the feature exactly as it was read
        src: dict[str, Any] = copy.deepcopy(self.source) if self.source is not None else {"type": "Feature"}
        old_props = src.get("properties")
        props: dict[str, Any] = old_props if isinstance(old_props, dict) else {}
        props = {**props, **{k: v for k, v in self.properties.items() if k not in ("classification", "name")}}
        if self.source is None:
            props["objectType"] = "annotation"
        old_name, old_color = classification_of(props)
        unchanged = (old_name == self.classification and old_color in (None, self.color)) or (
            old_name is None
            and self.classification == DEFAULT_CLASS
            and old_color in (None, self.color)
            and (old_color is not None or self.color == DEFAULT_COLOR)
        )
        if not unchanged:
            props["classification"] = {"name": self.classification, "color": list(self.color)}
        if self.name:
            if props.get("name") is None or str(props["name"]) != self.name:
                props["name"] = self.name
        elif props.get("name") not in (None, ""):  # the name was removed
            props.pop("name")
        src["properties"] = props
        old_id = self.source.get("id") if self.source is not None else None
        if self.source is None or (old_id and not _is_type_id(old_id) and str(old_id) != self.id):
            src["id"] = self.id  # an id the file did not have (or QuPath 0.2's type id) is not added
        if self.source is None or self.geometry is not self.source_geometry:
            src["geometry"] = mapping(self.geometry)
        return src


@dataclass
class QuPathObject:
    """Any other QuPath object (points, lines, cells, detections, tiles): kept verbatim.

    ``kind`` is QuPath's ``objectType`` ("annotation", "cell", "detection", "tile"...), with point
    and line annotations as "point" and "line"; ``geometry`` is None when it cannot be read.
    """

    feature: dict[str, Any]
    kind: str
    geometry: BaseGeometry | None
    note: str | None = None

    @property
    def properties(self) -> dict[str, Any]:
        p = self.feature.get("properties") if isinstance(self.feature, dict) else None
        return p if isinstance(p, dict) else {}

    @property
    def classification(self) -> str | None:
        return classification_of(self.properties)[0]

    @property
    def color(self) -> tuple[int, int, int] | None:
        return classification_of(self.properties)[1]

    @property
    def name(self) -> str | None:
        n = self.properties.get("name")
        return str(n) if n is not None else None

    @property
    def measurements(self) -> dict[str, float]:
        return measurements_of(self.properties)

    @property
    def nucleus(self) -> BaseGeometry | None:
        """A cell's nucleus outline (QuPath writes it beside the cell geometry)."""
        raw = self.feature.get("nucleusGeometry") or self.properties.get("nucleusGeometry")
        return _shape(raw)[0] if isinstance(raw, dict) else None

    def to_feature(self) -> dict[str, Any]:
        return copy.deepcopy(self.feature)


GeoObject: TypeAlias = Annotation | QuPathObject


@dataclass
class ReadResult:
    """Everything read (``objects``, file order), the ROIs among them, and what was repaired or skipped."""

    annotations: list[Annotation]
    warnings: list[str]
    objects: list[GeoObject] = field(default_factory=list)

    def of_kind(self, *kinds: str) -> list[QuPathObject]:
        """The non-ROI objects of the given kinds ("point", "cell", "detection"...)."""
        return [o for o in self.objects if isinstance(o, QuPathObject) and o.kind in kinds]


def _features(doc: Any) -> list[Any]:
    if isinstance(doc, list):
        return list(doc)
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
    if kind in (
        "Polygon",
        "MultiPolygon",
        "GeometryCollection",
        "Point",
        "MultiPoint",
        "LineString",
        "MultiLineString",
    ):
        return [{"type": "Feature", "geometry": doc, "properties": {}}]
    raise AnnotationError(f"not GeoJSON: top-level type is {kind!r}")


def _shape(raw: dict[str, Any]) -> tuple[BaseGeometry | None, str | None]:
    """A GeoJSON geometry as shapely (None and why when it cannot be read)."""
    try:
        with np.errstate(invalid="ignore"):  # NaN coordinates are reported by the caller
            return shape(raw), None
    except Exception as exc:  # noqa: BLE001 - shapely raises several kinds
        return None, f"unreadable {raw.get('type')} geometry ({exc})"


def _kind(obj_type: str, geom: BaseGeometry | None) -> str:
    if obj_type == "annotation" and geom is not None:
        if geom.geom_type in ("Point", "MultiPoint"):
            return "point"
        if geom.geom_type in ("LineString", "MultiLineString", "LinearRing"):
            return "line"
    return obj_type


def parse_geojson(
    doc: Any,
    bounds: tuple[float, float] | None = None,
    source: str = "GeoJSON",
    allow_empty: bool = False,
) -> ReadResult:
    """Turn a parsed GeoJSON document into objects and ROIs, repairing what can be repaired.

    ``bounds`` = (width, height) of level 0: ROIs are clipped to the slide; an ROI wholly off the
    slide stays in ``objects`` (written back as it was) but not in ``annotations``. A document
    without any usable ROI is an error unless ``allow_empty`` (an autosave of points only, say).
    """
    warnings: list[str] = []
    rois: list[Annotation] = []
    objects: list[GeoObject] = []
    feats = _features(doc)
    kept = 0
    for i, feat in enumerate(feats):
        label = f"feature {i + 1}"
        if not isinstance(feat, dict):
            objects.append(QuPathObject(feat, "unknown", None, "not a GeoJSON feature"))
            warnings.append(f"{label}: not a GeoJSON feature, kept as it is")
            continue
        raw_props = feat.get("properties")
        props: dict[str, Any] = raw_props if isinstance(raw_props, dict) else {}
        obj_type = str(props.get("objectType") or _QUPATH02_IDS.get(str(feat.get("id")), "annotation"))
        raw_geom = feat.get("geometry")
        geom, why = _shape(raw_geom) if isinstance(raw_geom, dict) else (None, "no geometry")
        if geom is not None:
            coords = shapely.get_coordinates(geom)
            if coords.size and not np.isfinite(coords).all():
                raise AnnotationError(f"{source}: {label} has NaN or infinite coordinates")
        kind = _kind(obj_type, geom)
        area = as_area(geom) if kind == "annotation" else None
        if area is None:
            objects.append(QuPathObject(feat, kind, geom, why))
            if why:
                warnings.append(f"{label}: {why}, kept as it is")
            elif kind in ("annotation", "line") and isinstance(raw_geom, dict):  # (a read geometry: a dict)
                warnings.append(
                    f"{label}: {raw_geom.get('type')} has no area (ROIs must be polygons), kept but not used as an ROI"
                )
            continue
        loaded = area
        area, note = repair_area(area)
        if note:
            warnings.append(f"{label}: {note}")
        if area is not None and bounds is not None:
            area, note = clip_area(area, bounds)
            if note:
                warnings.append(f"{label}: {note}" + (", kept but not used as an ROI" if area is None else ""))
        if area is None:
            objects.append(QuPathObject(feat, kind, loaded, "no usable area"))
            continue
        name, color = classification_of(props)
        ann = Annotation(
            geometry=area,
            classification=name or DEFAULT_CLASS,
            color=color or DEFAULT_COLOR,
            name=str(props["name"]) if props.get("name") is not None else None,
            id=str(
                feat.get("id")
                if isinstance(feat.get("id"), (str, int)) and not _is_type_id(feat.get("id"))
                else uuid.uuid4()
            ),
            properties={k: v for k, v in props.items() if k not in ("classification", "name")},
            source=feat,
            source_geometry=area,
        )
        ann.as_read = copy.deepcopy(ann._state())
        rois.append(ann)
        objects.append(ann)
        kept += 1
    if not rois and not allow_empty:
        if not feats:
            raise AnnotationError(f"{source} contains no features")
        detail = f" ({warnings[-1]})" if warnings else ""
        raise AnnotationError(f"{source} contains no usable ROI{detail}")
    return ReadResult(rois, warnings, objects)


#: Largest GeoJSON file read (QuPath exports of a whole slide's cell detections stay well below).
MAX_GEOJSON_BYTES = 1 << 30


def read_geojson(path: str | Path, bounds: tuple[float, float] | None = None, allow_empty: bool = False) -> ReadResult:
    """Read a QuPath GeoJSON file (FeatureCollection, Feature or list of features).

    Only a regular file of at most ``MAX_GEOJSON_BYTES`` is read (``/dev/zero`` or a FIFO would never end).
    """
    path = Path(path)
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # before opening: opening a FIFO blocks
            raise AnnotationError(f"ROI file {path} is not a regular file")
        with open(path, "rb") as fh:
            data = fh.read(MAX_GEOJSON_BYTES + 1)
        if len(data) > MAX_GEOJSON_BYTES:
            raise AnnotationError(f"ROI file {path.name} is larger than {MAX_GEOJSON_BYTES >> 20} MB")
        text = data.decode("utf-8-sig")  # tolerate a BOM (Windows editors add one)
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
    except ValueError:  # an integer of thousands of digits (Python's int-string limit)
        raise AnnotationError(f"{path.name} is not usable GeoJSON (a number with thousands of digits)") from None
    return parse_geojson(doc, bounds=bounds, source=path.name, allow_empty=allow_empty)


def to_geojson(objects: Iterable[GeoObject], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A FeatureCollection of the objects (``extra``: members beside ``features``, which QuPath ignores)."""
    return {"type": "FeatureCollection", **(extra or {}), "features": [o.to_feature() for o in objects]}


def _qupath_json(obj: Any) -> Any:
    """``strict_json`` except for non-finite numbers, which stay NaN / ±Infinity as QuPath writes them."""
    if isinstance(obj, dict):
        return {str(k): _qupath_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_qupath_json(v) for v in obj]
    if isinstance(obj, (float, np.floating)) and not math.isfinite(float(obj)):
        return float(obj)
    return strict_json(obj)


def write_geojson(objects: Iterable[GeoObject], path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write QuPath GeoJSON atomically (an interrupted save keeps the previous file).

    A non-finite number (a measurement QuPath could not compute) is written as QuPath itself writes
    it, ``NaN`` / ``Infinity``: QuPath reads measurements as doubles and fails on ``null``, so a
    file it exported must come back in its own dialect, not as strict JSON.
    """
    return atomic_write_text(path, json.dumps(_qupath_json(to_geojson(objects, extra)), indent=1, allow_nan=True))


def clip_annotations(
    annotations: Iterable[Annotation], bounds: tuple[float, float], source: str = "ROIs"
) -> ReadResult:
    """ROIs clipped to a slide of ``bounds`` = (width, height) level-0 px, as ``read_geojson`` clips.

    An ROI wholly off the slide is dropped with a warning; if none is left that is an error.
    """
    out: list[Annotation] = []
    warnings: list[str] = []
    anns = list(annotations)
    for i, ann in enumerate(anns):
        area, note = clip_area(ann.geometry, bounds)
        if note:
            warnings.append(f"{ann.name or f'ROI {i + 1}'}: {note}")
        if area is None:
            continue
        out.append(ann if area is ann.geometry else replace(ann, geometry=area))
    if anns and not out:
        raise AnnotationError(f"{source}: every ROI lies off the slide ({bounds[0]} x {bounds[1]} px)")
    return ReadResult(out, warnings, list(out))


def union_area(annotations: Sequence[Annotation]) -> Area | None:
    """All ROIs merged into one area (tiling works on ROI ∩ tissue)."""
    geoms = [a.geometry for a in annotations]
    if not geoms:
        return None
    return as_area(shapely.union_all(geoms))
