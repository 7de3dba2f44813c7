"""Where a slide's QuPath objects autosave: beside the slide, or in the user data folder.

The file is QuPath GeoJSON named after the slide's full file name (``A.svs.rois.geojson``), so
``A.svs`` and ``A.tif`` in one folder keep their own ROIs, and a pathologist can import it into
QuPath too. It records the slide's name and size, so ROIs saved for another file of the same
name are said to be so. It holds every object read for the slide, not only the ROIs the layer
shows (points, cells, off-slide annotations), so an edit never drops what it did not touch.
Writes are atomic (see ``atomic.py``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

from platformdirs import user_data_path

from ..resources import DATA_DIR
from .annotations import GeoObject, ReadResult, read_geojson, write_geojson

SUFFIX = ".rois.geojson"
#: Key of the slide identity recorded in the FeatureCollection (QuPath ignores it).
IDENTITY_KEY = "pathomics_slide"


def user_store_dir() -> Path:
    """Fallback folder; ``PATHOMICS_DATA_DIR`` overrides it (tests, shared workstations)."""
    env = os.environ.get("PATHOMICS_DATA_DIR")
    return Path(env) if env else user_data_path("napari-pathomics", appauthor=False)


def _stem(slide_path: Path) -> str:
    name = slide_path.name
    for ext in (".ome.tiff", ".ome.tif"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return slide_path.stem


def sidecar_path(slide_path: str | Path) -> Path:
    """``<folder>/<full slide file name>.rois.geojson``."""
    p = Path(slide_path).resolve()
    return p.with_name(p.name + SUFFIX)


def legacy_sidecar_path(slide_path: str | Path) -> Path:
    """Where the first build saved ROIs (``<stem>.rois.geojson``, shared by A.svs and A.tif)."""
    p = Path(slide_path).resolve()
    return p.with_name(_stem(p) + SUFFIX)


def fallback_path(slide_path: str | Path) -> Path:
    p = Path(slide_path).resolve()
    digest = hashlib.sha256(str(p).encode()).hexdigest()[:12]
    return user_store_dir() / "rois" / f"{p.name}-{digest}{SUFFIX}"


def _writable(folder: Path) -> bool:
    return os.access(folder, os.W_OK | os.X_OK)


def _is_packaged(path: Path) -> bool:
    """The bundled sample slide: never write into the installed package."""
    return DATA_DIR.resolve() in path.resolve().parents


def autosave_path(slide_path: str | Path) -> Path:
    """The sidecar beside the slide when its folder is writable, else the user-data fallback."""
    side = sidecar_path(slide_path)
    return side if _writable(side.parent) and not _is_packaged(side) else fallback_path(slide_path)


def _legacy_applies(slide_path: Path) -> bool:
    """A first-build sidecar is this slide's only if no other slide of that stem shares the folder."""
    legacy = legacy_sidecar_path(slide_path)
    if not legacy.is_file():
        return False
    stem = _stem(slide_path.resolve())
    others = [
        q
        for q in slide_path.resolve().parent.iterdir()
        if q.is_file() and q.name != slide_path.name and _stem(q) == stem and not q.name.endswith(".geojson")
    ]
    return not others


def saved_rois_path(slide_path: str | Path) -> Path | None:
    """The newest saved ROI file of this slide, wherever it was written (a first-build one included)."""
    slide_path = Path(slide_path)
    found = [p for p in (sidecar_path(slide_path), fallback_path(slide_path)) if p.is_file()]
    if not found and _legacy_applies(slide_path):
        found = [legacy_sidecar_path(slide_path)]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def _identity(slide_path: Path) -> dict[str, object]:
    try:
        size = slide_path.stat().st_size
    except OSError:
        size = None
    return {"name": slide_path.name, "size": size}


def save_rois(slide_path: str | Path, objects: Sequence[GeoObject]) -> Path:
    """Autosave every object of the slide (ROIs and what the ROI layer does not show)."""
    slide_path = Path(slide_path)
    return write_geojson(objects, autosave_path(slide_path), extra={IDENTITY_KEY: _identity(slide_path)})


def load_saved_rois(slide_path: str | Path, bounds: tuple[float, float] | None = None) -> ReadResult | None:
    """The saved objects of this slide (None if there are none); a note when they name another file."""
    slide_path = Path(slide_path)
    path = saved_rois_path(slide_path)
    if path is None:
        return None
    res = read_geojson(path, bounds=bounds, allow_empty=True)
    try:
        saved = json.loads(path.read_text(encoding="utf-8-sig")).get(IDENTITY_KEY)
    except (OSError, ValueError, AttributeError):
        saved = None
    here = _identity(slide_path)
    if isinstance(saved, dict) and (saved.get("name"), saved.get("size")) != (here["name"], here["size"]):
        res.warnings.append(
            f"{path.name} was saved for {saved.get('name')} of {saved.get('size')} bytes; "
            f"this file is {here['name']} of {here['size']} bytes: check the ROIs before use"
        )
    if path == legacy_sidecar_path(slide_path) and path != sidecar_path(slide_path):
        res.warnings.append(f"ROIs read from {path.name}; they will be saved as {sidecar_path(slide_path).name}")
    return res
