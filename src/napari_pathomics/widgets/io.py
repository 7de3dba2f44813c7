"""napari reader, writer and sample data for slides and QuPath GeoJSON ROIs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import napari
import numpy as np

from ..errors import PathomicsError
from ..layers import (
    ROLE,
    ROLE_ROIS,
    ROLE_ROIS_IMPORT,
    SLIDE_PATH,
    annotations_to_shapes,
    shapes_to_annotations,
    world_to_level0,
)
from ..outputs import check_output
from ..resources import SAMPLE_SLIDE
from ..wsi.annotations import Annotation, read_geojson, write_geojson
from ..wsi.slide import is_slide_path
from . import layer_registry, notices
from .window import show_scale_bar


def _current_viewer() -> Any:
    return napari.current_viewer()


def _read_slide(path: str | list[str]) -> list[tuple[Any, dict, str]]:
    """Each slide's image now; its ROI and object layers once the image has drawn (a faster first frame)."""
    paths = [path] if isinstance(path, str) else list(path)
    viewer = _current_viewer()
    layer_registry.install(viewer)
    if viewer is not None:
        show_scale_bar(viewer)  # as `pathomics view` does: the layers are in µm
    out: list[tuple[Any, dict, str]] = []
    for p in paths:
        try:
            image, *rest = layer_registry.open_slide_layers(p)
        except PathomicsError as exc:
            notices.report(exc, f"cannot open {Path(p).name}")
            raise
        out.append(image)
        out.extend(layer_registry.defer_layers(viewer, rest))
    return out


def _read_geojson(path: str | list[str]) -> list[tuple[Any, dict, str]]:
    """ROIs onto the current slide when one is open (µm), else in level-0 px."""
    paths = [path] if isinstance(path, str) else list(path)
    viewer = _current_viewer()
    slide_layer = layer_registry.active_slide_layer(viewer) if viewer is not None else None
    slide = layer_registry.slide_of(slide_layer)
    out = []
    for p in paths:
        try:
            res = read_geojson(p, bounds=slide.dimensions if slide else None)
        except PathomicsError as exc:
            notices.report(exc, f"cannot import {Path(p).name}")
            raise
        for w in res.warnings:
            notices.show_warning(f"{Path(p).name}: {w}")
        if slide is not None:
            data, kwargs, kind = layer_registry.roi_layer_data(slide, res.annotations, res.objects)
            kwargs["name"] = Path(p).stem
            kwargs["metadata"][ROLE] = ROLE_ROIS_IMPORT
            out.append((data, kwargs, kind))
            out.extend(t for t in layer_registry.object_layers(slide, res.objects) if t[0] is not None and len(t[0]))
        else:
            data, kwargs = annotations_to_shapes(res.annotations)
            kwargs.update(name=Path(p).stem, face_color="transparent", edge_width=3)
            kwargs["metadata"]["pathomics_objects"] = list(res.objects)
            out.append((data, kwargs, "shapes"))
    return out


def get_reader(path: str | list[str]) -> Callable[..., list] | None:
    first = path if isinstance(path, str) else (path[0] if path else "")
    if str(first).lower().endswith(".geojson"):
        return _read_geojson
    if is_slide_path(first):
        return _read_slide
    return None


def write_rois(path: str, data: list[np.ndarray], attributes: dict[str, Any]) -> list[str]:
    """Write a Shapes layer as QuPath GeoJSON in level-0 px.

    Our ROI layers hold level-0 corner coordinates already; any other Shapes layer drawn over
    an open slide is converted from its data coordinates through world µm.
    """
    meta = attributes.get("metadata") or {}
    shape_types = list(attributes.get("shape_type") or ["polygon"] * len(data))
    verts = [np.asarray(d, dtype=float)[:, -2:] for d in data]
    if meta.get(ROLE) not in (ROLE_ROIS, ROLE_ROIS_IMPORT):
        viewer = _current_viewer()
        slide = layer_registry.slide_of(layer_registry.active_slide_layer(viewer)) if viewer is not None else None
        if slide is not None and slide.has_mpp:
            scale = np.asarray(attributes.get("scale", (1.0, 1.0)), dtype=float)[-2:]
            translate = np.asarray(attributes.get("translate", (0.0, 0.0)), dtype=float)[-2:]
            world = [v * scale + translate for v in verts]
            verts = [world_to_level0(slide, w)[:, ::-1] for w in world]  # back to (y, x) order
    notes: list[str] = []
    anns = shapes_to_annotations(
        verts,
        shape_types,
        attributes.get("properties"),
        edge_colors=attributes.get("edge_color"),
        originals=meta.get("pathomics_annotations"),
        notes=notes,
    )
    now = {a.id: a for a in anns}
    objects = [o for o in meta.get("pathomics_objects") or [] if not isinstance(o, Annotation) or o.id in now]
    objects = [now.pop(o.id) if isinstance(o, Annotation) else o for o in objects] + list(now.values())
    inputs = [ly.metadata.get(SLIDE_PATH) for ly in (_current_viewer().layers if _current_viewer() else [])]
    write_geojson(objects, check_output(path, "GeoJSON", inputs=[i for i in inputs if i]))
    for note in notes:
        notices.show_warning(note)
    return [path]


def sample_slide() -> list[tuple[Any, dict, str]]:
    """The bundled real H&E slide (CMU-1-Small-Region, CC0), with its saved ROIs."""
    viewer = _current_viewer()
    layer_registry.install(viewer)
    if viewer is not None:
        show_scale_bar(viewer)
    return layer_registry.open_slide_layers(SAMPLE_SLIDE)
