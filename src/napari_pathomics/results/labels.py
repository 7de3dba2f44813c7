"""A pathologist's tile labels: which lattice tiles are which class, by whom and when; saved as QuPath GeoJSON.

``TileLabels`` is Qt-free. It lives on the engine's tile lattice (anchored at level-0 (0, 0),
side ``tile_size_l0`` level-0 px), so a label names the same tile as the results do. It records
the slide it was made on (file name, size, full sha256, level-0 size) and the class-name mapping
used to import QuPath objects. Every edit is one undo step (Ctrl+Z).

On disk it is a QuPath GeoJSON FeatureCollection: one tile square per label, an ``annotation``
with ``classification`` = the class name and colour (so QuPath shows the labels as they are),
``pathomics_label`` = {col, row, by, at} in its properties, and the slide identity, lattice and
mapping under the collection's ``pathomics_labels`` member (QuPath ignores it). It autosaves
atomically beside the slide (``<slide file name>.labels.geojson``), or in the user data folder
when the slide's folder is read-only, by the same rule as the ROIs.

Any QuPath GeoJSON of classified annotations imports as labels: a polygon labels every tile whose
centre lies inside it, a point the tile under it, each through the class-name mapping
("Tumor" → TUM, "Stroma" → STR, "Immune cells" → LYM, "Necrosis" → DEB, ...).
"""

from __future__ import annotations

import getpass
import hashlib
import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry import box

from ..atomic import atomic_write_text
from ..colors import hex_to_rgb
from ..errors import AnnotationError, LabelsError
from ..provenance import now_iso, strict_json
from ..wsi.annotations import Annotation, QuPathObject, parse_geojson
from ..wsi.roi_store import autosave_path, sidecar_path, user_store_dir

__all__ = [
    "TileLabel",
    "SlideIdentity",
    "TileLabels",
    "ImportReport",
    "DEFAULT_MAPPING",
    "IGNORE",
    "LABELS_SUFFIX",
    "labels_path",
    "saved_labels_path",
    "load_saved_labels",
    "read_labels",
    "resolve_class",
    "outline_image",
]

LABELS_SUFFIX = ".labels.geojson"
#: The FeatureCollection member with the slide identity, lattice and mapping (QuPath ignores it).
LABELS_KEY = "pathomics_labels"
#: The feature property with a label's lattice cell and who/when.
LABEL_PROP = "pathomics_label"
LABELS_FORMAT = 1
#: A mapping target meaning "not a tile label" (QuPath's Ignore*, Region*, our own proposals).
IGNORE = ""

#: QuPath class names → NCT-CRC-HE class codes (matched case-insensitively; user-editable, saved
#: with the labels). Targets the bundle does not have are left out when the mapping is used.
DEFAULT_MAPPING: dict[str, str] = {
    "Tumor": "TUM",
    "Tumour": "TUM",
    "Tumor epithelium": "TUM",
    "Tumour epithelium": "TUM",
    "Carcinoma": "TUM",
    "Stroma": "STR",
    "Tumor stroma": "STR",
    "Desmoplastic stroma": "STR",
    "Immune cells": "LYM",
    "Immune": "LYM",
    "Lymphocytes": "LYM",
    "Lymphocyte": "LYM",
    "Inflammation": "LYM",
    "Necrosis": "DEB",
    "Debris": "DEB",
    "Muscle": "MUS",
    "Smooth muscle": "MUS",
    "Adipose": "ADI",
    "Fat": "ADI",
    "Mucus": "MUC",
    "Mucin": "MUC",
    "Normal": "NORM",
    "Normal mucosa": "NORM",
    "Normal tissue": "NORM",
    "Background": "BACK",
    "Glass": "BACK",
    "Whitespace": "BACK",
    "Ignore*": IGNORE,
    "Region*": IGNORE,
    "Tumor (proposed)": IGNORE,
}


@dataclass(frozen=True)
class TileLabel:
    """One labelled lattice tile."""

    col: int
    row: int
    cls: str
    by: str = ""
    at: str = ""


@dataclass(frozen=True)
class SlideIdentity:
    """What a label set records about its slide (the sha256 decides; name and size when it is missing)."""

    name: str
    size: int | None = None
    sha256: str | None = None
    width: int | None = None
    height: int | None = None

    @classmethod
    def of(cls, slide: Any) -> SlideIdentity:
        """The identity of an open ``wsi.Slide``."""
        path = Path(slide.path)
        try:
            size = path.stat().st_size
        except OSError:
            size = None
        return cls(path.name, size, slide.file_hash(), int(slide.width), int(slide.height))

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "size": self.size, "sha256": self.sha256, "width": self.width, "height": self.height}

    @classmethod
    def from_json(cls, doc: Any) -> SlideIdentity | None:
        if not isinstance(doc, dict) or not doc.get("name"):
            return None

        def _int(v: Any) -> int | None:
            return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None

        sha = doc.get("sha256")
        return cls(
            str(doc["name"]),
            _int(doc.get("size")),
            str(sha) if isinstance(sha, str) else None,
            _int(doc.get("width")),
            _int(doc.get("height")),
        )

    def same_slide(self, other: SlideIdentity) -> bool:
        if self.sha256 and other.sha256:
            return self.sha256 == other.sha256
        return (self.name, self.size) == (other.name, other.size)

    def describe(self) -> str:
        return f"{self.name}" + (f" (sha256 {self.sha256[:12]}…)" if self.sha256 else f" ({self.size} bytes)")


@dataclass
class ImportReport:
    """What an import did: tiles labelled per class, objects skipped and why."""

    added: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    conflicts: int = 0
    off_slide: int = 0

    @property
    def n_added(self) -> int:
        return sum(self.added.values())

    def summary(self) -> str:
        parts = [
            f"{self.n_added} tiles labelled"
            + (" (" + ", ".join(f"{c} {n}" for c, n in sorted(self.added.items())) + ")" if self.added else "")
        ]
        if self.off_slide:
            parts.append(f"{self.off_slide} off the slide skipped")
        if self.conflicts:
            parts.append(f"{self.conflicts} tiles in objects of two classes (the later object wins)")
        if self.skipped:
            parts.append(
                f"{len(self.skipped)} objects skipped ({self.skipped[0]}{'…' if len(self.skipped) > 1 else ''})"
            )
        return "; ".join(parts)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name in a container
        return "unknown"


def resolve_class(name: str | None, classes: Sequence[str], mapping: Mapping[str, str]) -> str | None:
    """The bundle class a QuPath class name means: ``None`` = unknown, ``IGNORE`` = not a label.

    A bundle class name matches itself; else the mapping (case-insensitively); a QuPath derived
    class ("Tumor: Positive") falls back to its first part.
    """
    if not name:
        return None
    by_lower = {c.lower(): c for c in classes}
    maps = {k.lower(): v for k, v in mapping.items()}
    for cand in (name, name.split(":")[0].strip()):
        low = cand.strip().lower()
        if low in by_lower:
            return by_lower[low]
        if low in maps:
            target = maps[low]
            if target == IGNORE:
                return IGNORE
            if target.lower() in by_lower:
                return by_lower[target.lower()]
    return None


class TileLabels:
    """Labelled tiles of one slide on one lattice, with undo, QuPath GeoJSON and autosave."""

    def __init__(
        self,
        tile_size_l0: float,
        slide: SlideIdentity | None = None,
        mapping: Mapping[str, str] | None = None,
        tile_um: float | None = None,
        mpp: float | None = None,
    ) -> None:
        if not (math.isfinite(tile_size_l0) and tile_size_l0 > 0):
            raise LabelsError(f"tile side must be a positive number of pixels, got {tile_size_l0!r}")
        self.tile_size_l0 = float(tile_size_l0)
        self.slide = slide
        self.mapping: dict[str, str] = dict(DEFAULT_MAPPING if mapping is None else mapping)
        self.tile_um = tile_um
        self.mpp = mpp
        self._labels: dict[tuple[int, int], TileLabel] = {}
        self._undo: list[dict[tuple[int, int], TileLabel | None]] = []

    # ---- views ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._labels)

    def __iter__(self):  # noqa: ANN204 - an iterator of TileLabel
        return iter(sorted(self._labels.values(), key=lambda t: (t.row, t.col)))

    def __contains__(self, cell: tuple[int, int]) -> bool:
        return tuple(cell) in self._labels

    def get(self, col: int, row: int) -> TileLabel | None:
        return self._labels.get((int(col), int(row)))

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self._labels.values():
            out[t.cls] = out.get(t.cls, 0) + 1
        return dict(sorted(out.items()))

    def arrays(self) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """(cols, rows, classes) of every label, in row-major order."""
        items = list(self)
        return (
            np.array([t.col for t in items], dtype=np.int64),
            np.array([t.row for t in items], dtype=np.int64),
            [t.cls for t in items],
        )

    def origin(self, col: int, row: int) -> tuple[int, int]:
        """Level-0 (x, y) of a tile's top-left corner (the ``TileGrid`` rule)."""
        return int(np.round(col * self.tile_size_l0)), int(np.round(row * self.tile_size_l0))

    def cell_at(self, x: float, y: float) -> tuple[int, int]:
        """The lattice cell (col, row) covering level-0 point (x, y)."""
        return int(math.floor(x / self.tile_size_l0)), int(math.floor(y / self.tile_size_l0))

    def lattice_shape(self, width: int, height: int) -> tuple[int, int]:
        """(n_rows, n_cols) of whole tiles on a slide of that level-0 size."""
        return int(math.floor(height / self.tile_size_l0)), int(math.floor(width / self.tile_size_l0))

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    # ---- edits ----------------------------------------------------------------------------
    def set(
        self, cells: Iterable[tuple[int, int]], cls: str | None, by: str | None = None, at: str | None = None
    ) -> int:
        """Label ``cells`` as ``cls`` (``None`` erases): one undo step; returns how many tiles changed."""
        by = _user() if by is None else by
        at = now_iso() if at is None else at
        step: dict[tuple[int, int], TileLabel | None] = {}
        for c, r in cells:
            key = (int(c), int(r))
            if key[0] < 0 or key[1] < 0:
                continue
            old = self._labels.get(key)
            if cls is None:
                if old is None:
                    continue
                step.setdefault(key, old)
                del self._labels[key]
            else:
                if old is not None and old.cls == cls:
                    continue
                step.setdefault(key, old)
                self._labels[key] = TileLabel(key[0], key[1], str(cls), by, at)
        if step:
            self._undo.append(step)
        return len(step)

    def merge_steps(self, n: int) -> None:
        """Join the last ``n`` undo steps into one (a brush stroke is one Ctrl+Z)."""
        if n < 2 or len(self._undo) < n:
            return
        merged: dict[tuple[int, int], TileLabel | None] = {}
        for step in self._undo[-n:]:
            for k, v in step.items():
                merged.setdefault(k, v)
        del self._undo[-n:]
        self._undo.append(merged)

    def undo(self) -> list[tuple[int, int]]:
        """Revert the last edit; the cells it touched (empty when there is nothing to undo)."""
        if not self._undo:
            return []
        step = self._undo.pop()
        for key, old in step.items():
            if old is None:
                self._labels.pop(key, None)
            else:
                self._labels[key] = old
        return list(step)

    def clear(self) -> int:
        return self.set(list(self._labels), None)

    # ---- lattices, bounds ---------------------------------------------------------------------
    def on_lattice(self, tile_size_l0: float) -> TileLabels:
        """The labels on another lattice: each new tile whose centre lies in a labelled square."""
        if math.isclose(tile_size_l0, self.tile_size_l0, rel_tol=1e-9):
            return self
        out = TileLabels(tile_size_l0, self.slide, self.mapping, self.tile_um, self.mpp)
        for t in self:
            x0, y0 = self.origin(t.col, t.row)
            x1, y1 = self.origin(t.col + 1, t.row + 1)
            for cell in _cells_with_centre_in(box(x0, y0, x1, y1), tile_size_l0):
                out._labels[cell] = TileLabel(cell[0], cell[1], t.cls, t.by, t.at)
        return out

    def off_slide(self, width: int, height: int) -> list[tuple[int, int]]:
        """Labelled cells that are not whole tiles of a slide of that level-0 size."""
        n_rows, n_cols = self.lattice_shape(width, height)
        return [k for k in self._labels if not (0 <= k[0] < n_cols and 0 <= k[1] < n_rows)]

    # ---- QuPath GeoJSON ---------------------------------------------------------------------
    def feature(self, t: TileLabel, color: str | None = None) -> dict[str, Any]:
        x0, y0 = self.origin(t.col, t.row)
        x1, y1 = self.origin(t.col + 1, t.row + 1)
        props: dict[str, Any] = {
            "objectType": "annotation",
            "classification": {"name": t.cls},
            "isLocked": False,
            LABEL_PROP: {"col": t.col, "row": t.row, "by": t.by, "at": t.at},
        }
        if color:
            props["classification"]["color"] = list(hex_to_rgb(color))
        ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
        return {
            "type": "Feature",
            "id": f"tile-{t.col}-{t.row}",
            "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": props,
        }

    def header(self) -> dict[str, Any]:
        return {
            "format": LABELS_FORMAT,
            "tile_size_l0": self.tile_size_l0,
            "tile_um": self.tile_um,
            "mpp": self.mpp,
            "slide": self.slide.to_json() if self.slide else None,
            "mapping": dict(self.mapping),
            "counts": self.counts(),
        }

    def to_geojson(self, colors: Mapping[str, str] | None = None) -> dict[str, Any]:
        """QuPath GeoJSON: one classified tile square per label (``colors``: class → '#rrggbb')."""
        colors = colors or {}
        return {
            "type": "FeatureCollection",
            LABELS_KEY: self.header(),
            "features": [self.feature(t, colors.get(t.cls)) for t in self],
        }

    def save(self, path: str | Path, colors: Mapping[str, str] | None = None) -> Path:
        """Write the labels atomically (an interrupted save keeps the previous file)."""
        text = json.dumps(strict_json(self.to_geojson(colors)), indent=1, allow_nan=False)
        return atomic_write_text(path, text)

    def sha256(self) -> str:
        """Content hash of the labels (cells and classes; not who/when): what a bundle records."""
        h = hashlib.sha256(f"{self.tile_size_l0:.6f}".encode())
        for t in self:
            h.update(f"|{t.col},{t.row},{t.cls}".encode())
        return h.hexdigest()

    def import_objects(
        self,
        objects: Iterable[Annotation | QuPathObject],
        classes: Sequence[str],
        bounds: tuple[int, int] | None = None,
        mapping: Mapping[str, str] | None = None,
        by: str | None = None,
    ) -> ImportReport:
        """Label the tiles under QuPath objects (polygons: centre inside; points: the tile under them).

        One undo step. Unknown class names refuse the whole import (LabelsError listing them and
        the mapping); nothing is labelled then. Unclassified objects and lines are skipped.
        """
        mapping = self.mapping if mapping is None else dict(mapping)
        report = ImportReport()
        plan: list[tuple[tuple[int, int], str, TileLabel | None]] = []
        unknown: dict[str, int] = {}
        for i, obj in enumerate(objects):
            geom = obj.geometry
            label = f"object {i + 1}"
            if geom is None or geom.is_empty:
                report.skipped.append(f"{label}: no geometry")
                continue
            name = obj.classification if isinstance(obj, QuPathObject) else obj.classification
            if isinstance(obj, Annotation) and obj.source is not None:
                raw_props = obj.source.get("properties")
                props = raw_props if isinstance(raw_props, dict) else {}
                if "classification" not in props and LABEL_PROP not in props:
                    name = None  # an unclassified QuPath annotation (the reader defaults it to Tumor)
            if not name:
                report.skipped.append(f"{label}: unclassified")
                continue
            cls = resolve_class(name, classes, mapping)
            if cls is None:
                unknown[name] = unknown.get(name, 0) + 1
                continue
            if cls == IGNORE:
                report.skipped.append(f"{label}: {name} is mapped to no class")
                continue
            own = _own_cell(obj, self.tile_size_l0)
            if own is not None:
                cells = [own]
                meta = _label_meta(obj) or {}
                prev = TileLabel(own[0], own[1], cls, str(meta.get("by", "")), str(meta.get("at", "")))
            elif geom.geom_type in ("Point", "MultiPoint"):
                pts = shapely.get_coordinates(geom)
                cells = [self.cell_at(float(x), float(y)) for x, y in pts]
                prev = None
            elif geom.geom_type in ("Polygon", "MultiPolygon", "GeometryCollection"):
                cells = _cells_with_centre_in(geom, self.tile_size_l0)
                prev = None
                if not cells:
                    report.skipped.append(f"{label}: {name} covers no tile centre")
                    continue
            else:
                report.skipped.append(f"{label}: a {geom.geom_type} labels no tile")
                continue
            for cell in cells:
                plan.append((cell, cls, prev))
        if unknown:
            raise LabelsError(
                f"classes the bundle does not know: {', '.join(f'{k!r} ({v})' for k, v in sorted(unknown.items()))} "
                "(map each to a bundle class, or to nothing to ignore it: --map 'Name=CLS' / 'Name=', or the "
                f"Correct panel's mapping box); bundle classes: {', '.join(classes)}; "
                f"mapping: {_mapping_text(mapping, classes)}"
            )
        n_rows, n_cols = self.lattice_shape(*bounds) if bounds is not None else (None, None)
        seen: dict[tuple[int, int], str] = {}
        by = _user() if by is None else by
        at = now_iso()
        step: dict[tuple[int, int], TileLabel | None] = {}
        for cell, cls, prev in plan:
            if cell[0] < 0 or cell[1] < 0 or (n_rows is not None and not (cell[0] < n_cols and cell[1] < n_rows)):  # type: ignore[operator]
                report.off_slide += 1
                continue
            if cell in seen and seen[cell] != cls:
                report.conflicts += 1
            seen[cell] = cls
            step.setdefault(cell, self._labels.get(cell))
            self._labels[cell] = prev if prev is not None and prev.by else TileLabel(cell[0], cell[1], cls, by, at)
        for cls in seen.values():
            report.added[cls] = report.added.get(cls, 0) + 1
        if step:
            self._undo.append(step)
        return report

    def check_slide(self, here: SlideIdentity, force: bool = False) -> str | None:
        """LabelsError if the labels were made on another slide (a warning instead with ``force``)."""
        if self.slide is None or self.slide.same_slide(here):
            return None
        refuse = (
            "; refusing them (use --force on the command line, or tick 'Accept labels made on another "
            "slide' in the Correct panel, to apply them anyway)"
        )
        msg = f"labels were made on {self.slide.describe()}, not on {here.describe()}" + (
            "; used anyway (forced)" if force else refuse
        )
        if not force:
            raise LabelsError(msg)
        return msg


def _mapping_text(mapping: Mapping[str, str], classes: Sequence[str]) -> str:
    """The mapping in a line: entries of the user's first, then the default names (one per class)."""
    usable = {k: v for k, v in mapping.items() if v == IGNORE or v in classes}
    own = [f"{k}→{v or '(ignored)'}" for k, v in usable.items() if DEFAULT_MAPPING.get(k) != v]
    defaults = [k for k, v in usable.items() if DEFAULT_MAPPING.get(k) == v]
    parts = own[:]
    if defaults:
        first: dict[str, str] = {}
        for k in defaults:
            first.setdefault(usable[k], k)
        shown = [f"{k}→{v}" for v, k in first.items() if v != IGNORE]
        more = len(defaults) - len(shown)
        parts.append("defaults " + ", ".join(shown) + (f" (+{more} more names)" if more > 0 else ""))
    return "; ".join(parts) if parts else "(empty)"


def _label_meta(obj: Annotation | QuPathObject) -> dict[str, Any] | None:
    """The label block this module wrote into an annotation's properties, if it has one."""
    if not isinstance(obj, Annotation) or obj.source is None:
        return None
    props = obj.source.get("properties")
    meta = props.get(LABEL_PROP) if isinstance(props, dict) else None
    return meta if isinstance(meta, dict) else None


def _own_cell(obj: Annotation | QuPathObject, tile_size_l0: float) -> tuple[int, int] | None:
    """The lattice cell of a tile square this module wrote, when it is on the same lattice."""
    meta = _label_meta(obj)
    if meta is None or obj.geometry is None:
        return None
    try:
        col, row = int(meta["col"]), int(meta["row"])
    except (KeyError, TypeError, ValueError):
        return None
    x0, y0 = np.round(col * tile_size_l0), np.round(row * tile_size_l0)
    x1, y1 = np.round((col + 1) * tile_size_l0), np.round((row + 1) * tile_size_l0)
    b = obj.geometry.bounds
    if np.allclose(b, (x0, y0, x1, y1), atol=1.0):
        return col, row
    return None


def _cells_with_centre_in(geom: Any, tile_size_l0: float) -> list[tuple[int, int]]:
    """Lattice cells (col, row) whose tile centre lies inside ``geom`` (boundary included)."""
    minx, miny, maxx, maxy = geom.bounds
    s = tile_size_l0
    c0, c1 = max(0, int(math.floor(minx / s - 0.5))), int(math.ceil(maxx / s))
    r0, r1 = max(0, int(math.floor(miny / s - 0.5))), int(math.ceil(maxy / s))
    if c1 < c0 or r1 < r0 or (c1 - c0 + 1) * (r1 - r0 + 1) > 25_000_000:
        return []
    col_grid, row_grid = np.meshgrid(np.arange(c0, c1 + 1), np.arange(r0, r1 + 1))
    cols, rows = col_grid.ravel(), row_grid.ravel()
    # centre of tile (c, r) as the TileGrid places it: origin + side / 2 (origins are rounded)
    cx = np.round(cols * s) + s / 2
    cy = np.round(rows * s) + s / 2
    inside = shapely.intersects_xy(geom, cx, cy)
    return [(int(c), int(r)) for c, r in zip(cols[inside], rows[inside])]


# ---------------------------------------------------------------------------------------------
# files
def labels_path(slide_path: str | Path) -> Path:
    """Where a slide's labels autosave: beside the slide when the ROIs would be, else the user data folder."""
    p = Path(slide_path).resolve()
    if autosave_path(p) == sidecar_path(p):
        return p.with_name(p.name + LABELS_SUFFIX)
    digest = hashlib.sha256(str(p).encode()).hexdigest()[:12]
    return user_store_dir() / "labels" / f"{p.name}-{digest}{LABELS_SUFFIX}"


def saved_labels_path(slide_path: str | Path) -> Path | None:
    """The newest saved labels file of this slide (beside it or in the user data folder)."""
    p = Path(slide_path).resolve()
    digest = hashlib.sha256(str(p).encode()).hexdigest()[:12]
    found = [
        q
        for q in (
            p.with_name(p.name + LABELS_SUFFIX),
            user_store_dir() / "labels" / f"{p.name}-{digest}{LABELS_SUFFIX}",
        )
        if q.is_file()
    ]
    return max(found, key=lambda q: q.stat().st_mtime) if found else None


def read_labels(
    path: str | Path,
    tile_size_l0: float,
    classes: Sequence[str],
    *,
    slide: SlideIdentity | None = None,
    bounds: tuple[int, int] | None = None,
    mapping: Mapping[str, str] | None = None,
    force: bool = False,
    allow_empty: bool = False,
) -> tuple[TileLabels, list[str]]:
    """A labels file (ours, or any QuPath GeoJSON of classified polygons/points) on this lattice.

    Returns the labels and notes. A file saved for another slide is refused (LabelsError) unless
    ``force``; a mapping saved in the file is used (the given ``mapping`` entries win); labels
    off the slide are dropped with a note; a file that labels no tile is a LabelsError.
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise LabelsError(f"labels file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LabelsError(f"cannot read labels file {path.name}: {exc}") from None
    except (json.JSONDecodeError, RecursionError) as exc:
        raise LabelsError(f"{path.name} is not valid JSON ({exc})") from None
    head = doc.get(LABELS_KEY) if isinstance(doc, dict) else None
    head = head if isinstance(head, dict) else {}
    saved_map = head.get("mapping") if isinstance(head.get("mapping"), dict) else None
    merged = dict(DEFAULT_MAPPING if saved_map is None else {str(k): str(v) for k, v in saved_map.items()})
    merged.update(mapping or {})
    saved_slide = SlideIdentity.from_json(head.get("slide"))
    notes: list[str] = []
    labels = TileLabels(tile_size_l0, slide or saved_slide, merged)
    if saved_slide is not None and slide is not None:
        note = TileLabels(tile_size_l0, saved_slide).check_slide(slide, force)
        if note:
            notes.append(f"{path.name}: {note}")
    try:
        parsed = parse_geojson(doc, bounds=None, source=path.name, allow_empty=True)
    except AnnotationError as exc:
        raise LabelsError(f"{path.name}: {exc}") from None
    notes.extend(f"{path.name}: {w}" for w in parsed.warnings if "no area" not in w)
    report = labels.import_objects(parsed.objects, classes, bounds=bounds, mapping=merged)
    labels._undo.clear()  # a file read is where editing starts, not an edit
    if report.off_slide:
        notes.append(f"{path.name}: {report.off_slide} labelled tiles lie off the slide and were dropped")
    if report.conflicts:
        notes.append(f"{path.name}: {report.conflicts} tiles fall in objects of two classes (the later one wins)")
    if len(labels) == 0 and not (allow_empty and not report.off_slide and not report.skipped):
        why = (
            f"all {report.off_slide} labelled tiles lie off the slide"
            if report.off_slide
            else "; ".join(report.skipped[:3]) or "it has no classified polygon or point"
        )
        raise LabelsError(f"{path.name} labels no tile ({why})")
    return labels, notes


def _set_aside(path: Path, why: str) -> Path:
    """Keep a saved labels file that cannot be this slide's out of the autosave's way (never deleted)."""
    dest = path.with_name(f"{path.name}.{why}-{time.strftime('%Y%m%d-%H%M%S')}")
    path.rename(dest)
    return dest


def load_saved_labels(slide: Any, tile_size_l0: float, classes: Sequence[str]) -> tuple[TileLabels | None, list[str]]:
    """A slide's autosaved labels (None if there are none) and notes.

    Labels saved for another file of the same name (another sha256), or unreadable ones, are
    moved aside (``.other-slide-<time>`` / ``.unreadable-<time>``) with a note, so the next
    autosave cannot overwrite them.
    """
    path = saved_labels_path(slide.path)
    if path is None:
        return None, []
    ident = SlideIdentity.of(slide)
    try:
        labels, notes = read_labels(
            path, tile_size_l0, classes, slide=ident, bounds=(slide.width, slide.height), allow_empty=True
        )
    except LabelsError as exc:
        kind = "other-slide" if "were made on" in str(exc) else "unreadable"
        try:
            kept = _set_aside(path, kind)
        except OSError:
            return None, [f"saved labels of {ident.name} not used: {exc}"]
        return None, [f"saved labels of {ident.name} not used ({exc}); kept as {kept.name}"]
    labels.slide = ident
    return labels, notes


def outline_image(
    labels: TileLabels,
    n_rows: int,
    n_cols: int,
    classes: Sequence[str],
    k: int = 8,
    cells: Iterable[tuple[int, int]] | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """(n_rows·k, n_cols·k) uint8: each labelled tile's border ring = class index + 1, else 0.

    Drawn on a lattice of ``k`` px per tile (``layers.grid_transform(slide, tile_size_l0 / k)``
    places it); ``cells`` with ``out`` redraws only those tiles (an edit or an undo).
    """
    img = np.zeros((n_rows * k, n_cols * k), dtype=np.uint8) if out is None else out
    index = {c: i + 1 for i, c in enumerate(classes)}
    todo = [(t.col, t.row) for t in labels] if cells is None else list(cells)
    w = max(1, k // 8)
    for c, r in todo:
        if not (0 <= c < n_cols and 0 <= r < n_rows):
            continue
        y0, x0 = r * k, c * k
        img[y0 : y0 + k, x0 : x0 + k] = 0
        t = labels.get(c, r)
        if t is None:
            continue
        v = index.get(t.cls, 0)
        img[y0 : y0 + w, x0 : x0 + k] = v
        img[y0 + k - w : y0 + k, x0 : x0 + k] = v
        img[y0 : y0 + k, x0 : x0 + w] = v
        img[y0 : y0 + k, x0 + k - w : x0 + k] = v
    return img
