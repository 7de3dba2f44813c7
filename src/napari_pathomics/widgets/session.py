"""Glue between a viewer's layers and the core: which slide a layer shows, its ROI layer, autosave.

Slides travel in layer metadata (``pathomics_slide``) so every widget finds the open ``Slide``
behind an image layer without reopening the file. ROI layers autosave through one listener per
viewer, installed by the reader and by every widget, so a pathologist's drawing is saved on
each change whether or not a dock is open.
"""

from __future__ import annotations

import os
import time
import weakref
from pathlib import Path
from typing import Any

import napari
from napari.layers import Image, Layer, Shapes
from napari.utils import resize_dask_cache
from napari.utils.notifications import show_error, show_warning

from ..errors import PathomicsError
from ..layers import (
    ROLE,
    ROLE_ROIS,
    SLIDE_PATH,
    annotations_to_shapes,
    geometry_transform,
    shapes_to_annotations,
    slide_layer,
)
from ..wsi.annotations import Annotation
from ..wsi.roi_store import load_saved_rois, save_rois, saved_rois_path
from ..wsi.slide import Slide, open_slide

ROI_LAYER_SUFFIX = " ROIs"


def report(exc: BaseException, what: str = "") -> None:
    """Show a user error as a notification (never raise into Qt's event loop)."""
    prefix = f"{what}: " if what else ""
    if isinstance(exc, PathomicsError):
        show_error(f"{prefix}{exc}")
    else:
        show_error(f"{prefix}unexpected {type(exc).__name__}: {exc}")


def slide_of(layer: Layer | None) -> Slide | None:
    if layer is None:
        return None
    slide = layer.metadata.get("pathomics_slide")
    return slide if isinstance(slide, Slide) else None


def slide_layers(viewer: napari.Viewer) -> list[Image]:
    return [ly for ly in viewer.layers if isinstance(ly, Image) and slide_of(ly) is not None]


def active_slide_layer(viewer: napari.Viewer) -> Image | None:
    """The selected slide layer, else the slide behind the selected layer, else the top slide."""
    active = viewer.layers.selection.active
    if active is not None:
        if slide_of(active) is not None and isinstance(active, Image):
            return active
        path = active.metadata.get(SLIDE_PATH)
        for ly in slide_layers(viewer):
            if path and str(slide_of(ly).path) == path:  # type: ignore[union-attr]
                return ly
    layers = slide_layers(viewer)
    return layers[-1] if layers else None


def find_layer(viewer: napari.Viewer, slide: Slide, role: str, kind: type[Layer] = Layer) -> Any:
    """The layer of ``slide`` with ``role`` (``layers.ROLE`` metadata), or None."""
    for ly in viewer.layers:
        if isinstance(ly, kind) and ly.metadata.get(ROLE) == role and ly.metadata.get(SLIDE_PATH) == str(slide.path):
            return ly
    return None


def roi_layer_of(viewer: napari.Viewer, slide: Slide) -> Shapes | None:
    return find_layer(viewer, slide, ROLE_ROIS, Shapes)


def _quarantine(path: Path) -> Path:
    """Keep an unreadable ROI file aside instead of overwriting it on the next autosave."""
    dest = path.with_name(f"{path.name}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}")
    path.rename(dest)
    return dest


def roi_layer_data(slide: Slide, annotations: list[Annotation] | None = None) -> tuple[Any, dict, str]:
    """A Shapes layer tuple for a slide's ROIs, filled from its autosave unless given."""
    notes: list[str] = []
    if annotations is None:
        annotations = []
        try:
            res = load_saved_rois(slide.path, bounds=slide.dimensions)
            if res is not None:
                annotations = res.annotations
                notes = res.warnings
        except PathomicsError as exc:
            bad = saved_rois_path(slide.path)
            if bad is not None:
                kept = _quarantine(bad)
                show_warning(f"saved ROIs of {slide.path.name} were unreadable ({exc}); kept as {kept.name}")
    for note in notes:
        show_warning(f"saved ROIs of {slide.path.name}: {note}")
    data, kwargs = annotations_to_shapes(annotations)
    kwargs.update(geometry_transform(slide))
    kwargs["name"] = slide.path.name + ROI_LAYER_SUFFIX
    kwargs["face_color"] = "transparent"
    kwargs["edge_width"] = 3
    kwargs["metadata"].update({ROLE: ROLE_ROIS, SLIDE_PATH: str(slide.path)})
    if not data:
        kwargs.pop("shape_type")
        kwargs["properties"] = {"roi_id": [], "classification": []}
        kwargs["edge_color"] = "#c80000"
    return data, kwargs, "shapes"


def layer_annotations(layer: Shapes) -> list[Annotation]:
    """The ROIs a Shapes layer holds now, in level-0 px, holes of unedited imports kept."""
    return shapes_to_annotations(
        list(layer.data), list(layer.shape_type), dict(layer.properties),
        edge_colors=layer.edge_color, originals=layer.metadata.get("pathomics_annotations"),
    )


def autosave_now(layer: Shapes) -> Path | None:
    path = layer.metadata.get(SLIDE_PATH)
    if not path:
        return None
    try:
        return save_rois(path, layer_annotations(layer))
    except (PathomicsError, OSError) as exc:
        report(exc, "ROI autosave failed")
        return None


def _attach_autosave(layer: Shapes) -> None:
    if layer.metadata.get("_pathomics_autosave"):
        return
    layer.metadata["_pathomics_autosave"] = True

    def on_data(event: Any = None) -> None:
        action = getattr(event, "action", None)
        if action is None or str(getattr(action, "value", action)) in ("added", "changed", "removed"):
            autosave_now(layer)

    layer.events.data.connect(on_data)


def _on_removed(event: Any) -> None:
    """Close a slide's file when its last image layer leaves the viewer (no leaked handles)."""
    slide = slide_of(event.value)
    if slide is None:
        return
    source = getattr(event, "source", None)
    remaining = list(source) if source is not None else []
    if not any(slide_of(ly) is slide for ly in remaining):
        slide.close()


def _on_inserted(event: Any) -> None:
    layer = event.value
    if isinstance(layer, Shapes) and layer.metadata.get(ROLE) == ROLE_ROIS:
        _attach_autosave(layer)


_INSTALLED: dict[int, weakref.ref] = {}


def install(viewer: napari.Viewer | None) -> None:
    """Attach ROI autosave to this viewer's current and future ROI layers (idempotent)."""
    if viewer is None:
        return
    ref = _INSTALLED.get(id(viewer))
    if ref is None or ref() is not viewer:
        viewer.layers.events.inserted.connect(_on_inserted)
        viewer.layers.events.removed.connect(_on_removed)
        _INSTALLED[id(viewer)] = weakref.ref(viewer)
    for ly in viewer.layers:
        if isinstance(ly, Shapes) and ly.metadata.get(ROLE) == ROLE_ROIS:
            _attach_autosave(ly)


#: napari's dask chunk cache defaults to a quarter of RAM; panning a slide must not grow without bound.
VIEW_CACHE_MB = int(os.environ.get("PATHOMICS_VIEW_CACHE_MB", "768"))


def bound_view_cache() -> None:
    resize_dask_cache(nbytes=VIEW_CACHE_MB * 2**20)


def open_slide_layers(path: str | Path, mpp: float | None = None) -> list[tuple[Any, dict, str]]:
    """The layers a slide opens as: the multiscale image and its (autosaved) ROI layer."""
    bound_view_cache()
    slide = open_slide(path, mpp=mpp)
    img = slide_layer(slide)
    img[1]["metadata"]["pathomics_slide"] = slide
    if not slide.has_mpp:
        show_warning(f"{slide.path.name} does not record its pixel size: axes are in pixels. "
                     "Set µm/px in the Slide widget.")
    return [img, roi_layer_data(slide)]


def add_slide(viewer: napari.Viewer, path: str | Path, mpp: float | None = None) -> Image:
    install(viewer)
    added = [viewer._add_layer_from_data(*t)[0] for t in open_slide_layers(path, mpp)]
    return added[0]
