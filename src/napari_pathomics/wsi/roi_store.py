"""Where a slide's ROIs autosave: beside the slide, or in the user data folder when that is read-only.

The file is QuPath GeoJSON named ``<slide stem>.rois.geojson`` so a pathologist can find and
import it in QuPath too. Writes are atomic (see ``atomic.py``).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from platformdirs import user_data_path

from ..resources import DATA_DIR
from .annotations import Annotation, ReadResult, read_geojson, write_geojson

SUFFIX = ".rois.geojson"


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
    p = Path(slide_path).resolve()
    return p.with_name(_stem(p) + SUFFIX)


def fallback_path(slide_path: str | Path) -> Path:
    p = Path(slide_path).resolve()
    digest = hashlib.sha256(str(p).encode()).hexdigest()[:12]
    return user_store_dir() / "rois" / f"{_stem(p)}-{digest}{SUFFIX}"


def _writable(folder: Path) -> bool:
    return os.access(folder, os.W_OK | os.X_OK)


def _is_packaged(path: Path) -> bool:
    """The bundled sample slide: never write into the installed package."""
    return DATA_DIR.resolve() in path.resolve().parents


def autosave_path(slide_path: str | Path) -> Path:
    """The sidecar beside the slide when its folder is writable, else the user-data fallback."""
    side = sidecar_path(slide_path)
    return side if _writable(side.parent) and not _is_packaged(side) else fallback_path(slide_path)


def saved_rois_path(slide_path: str | Path) -> Path | None:
    """The newest saved ROI file for this slide, wherever it was written."""
    found = [p for p in (sidecar_path(slide_path), fallback_path(slide_path)) if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def save_rois(slide_path: str | Path, annotations: list[Annotation]) -> Path:
    return write_geojson(annotations, autosave_path(slide_path))


def load_saved_rois(slide_path: str | Path, bounds: tuple[float, float] | None = None) -> ReadResult | None:
    path = saved_rois_path(slide_path)
    return read_geojson(path, bounds=bounds, allow_empty=True) if path else None
