"""A ``train-nuclei`` data folder → checked training samples, or one clear line saying what is wrong.

Layouts (the one of ``shared/data/nuclei``):

* ``DATA/images/<name>.png`` + ``DATA/labels/<name>.png``: 16-bit instance labels (0 background,
  1..N nuclei), same stems, same size;
* ``DATA/images/<name>.png`` + ``DATA/images/<name>.geojson`` (or ``DATA/<name>.geojson``): QuPath
  GeoJSON nucleus detections (detections, cells' nucleus outlines, or annotations), in image px,
  rasterised into instance labels.

Every image must be brightfield H&E (``cells.nuclei.check_he``).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..cells.nuclei import check_he
from ..errors import AnnotationError, NucleiError, TrainingError
from ..wsi.annotations import Annotation, read_geojson
from ..wsi.images import read_rgb
from .nuclei import Sample

__all__ = ["read_training_folder", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


def _labels_png(path: Path, shape: tuple[int, int]) -> np.ndarray:
    lab = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if lab is None:
        raise TrainingError(f"{path}: unreadable label image")
    if lab.ndim != 2:
        raise TrainingError(
            f"{path}: labels must be one 16-bit channel (0 = background, 1..N nuclei), not {lab.shape[2]} channels"
        )
    if lab.dtype != np.uint16:
        raise TrainingError(f"{path}: labels must be a 16-bit PNG of nucleus ids, not {lab.dtype}")
    if lab.shape != shape:
        raise TrainingError(f"{path}: labels are {lab.shape[1]}x{lab.shape[0]} px, the image is {shape[1]}x{shape[0]}")
    return lab.astype(np.int32)


def _labels_geojson(path: Path, shape: tuple[int, int]) -> np.ndarray:
    try:
        res = read_geojson(path, allow_empty=True)
    except AnnotationError as exc:
        raise TrainingError(str(exc)) from None
    lab = np.zeros(shape, np.int32)
    n = 0
    for obj in res.objects:
        geom = getattr(obj, "nucleus", None) or getattr(obj, "geometry", None)
        if isinstance(obj, Annotation):
            geom = obj.geometry
        if geom is None or geom.is_empty:
            continue
        polys = getattr(geom, "geoms", [geom])
        for poly in polys:
            ext = getattr(poly, "exterior", None)
            if ext is None:
                continue
            n += 1
            pts = np.round(np.asarray(ext.coords)[:, :2]).astype(np.int32)
            cv2.fillPoly(lab, [pts], n)
    if n == 0:
        raise TrainingError(f"{path}: no nucleus polygons")
    return lab


def read_training_folder(folder: str | Path, mpp: float) -> list[Sample]:
    """All labelled images of ``folder`` at ``mpp`` µm/px (module docstring for the layouts)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise TrainingError(f"training data folder not found: {folder}")
    img_dir = folder / "images"
    if not img_dir.is_dir():
        raise TrainingError(f"{folder}: no images/ folder (expected images/<name>.png with labels/<name>.png)")
    images = sorted(p for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if not images:
        raise TrainingError(f"{img_dir}: no images (PNG, JPEG or TIFF)")
    lab_dir = folder / "labels"
    samples = []
    missing = []
    for p in images:
        label_png = lab_dir / f"{p.stem}.png"
        geo = [q for q in (img_dir / f"{p.stem}.geojson", folder / f"{p.stem}.geojson") if q.is_file()]
        if not label_png.is_file() and not geo:
            missing.append(p.name)
            continue
        rgb = read_rgb(p)
        try:
            check_he(rgb, p.name)
        except NucleiError as exc:
            raise TrainingError(str(exc)) from None
        shape = rgb.shape[:2]
        lab = _labels_png(label_png, shape) if label_png.is_file() else _labels_geojson(geo[0], shape)
        if lab.max() == 0:
            raise TrainingError(f"{label_png if label_png.is_file() else geo[0]}: no nucleus labelled")
        samples.append(Sample(p.stem, rgb, lab, float(mpp)))
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise TrainingError(
            f"no labels for {', '.join(missing[:3])}{more} (expected labels/<name>.png or <name>.geojson)"
        )
    if lab_dir.is_dir():
        stems = {p.stem for p in images}
        extra = sorted(q.name for q in lab_dir.glob("*.png") if q.stem not in stems)
        if extra:
            raise TrainingError(f"labels without an image: {', '.join(extra[:3])} (stems must match images/)")
    return samples
