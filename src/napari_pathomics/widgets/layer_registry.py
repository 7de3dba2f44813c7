"""A viewer's layer registry, bound to its case: which slide a layer shows, its ROI layer, autosave.

Slides travel in layer metadata (``pathomics_slide``) so every widget finds the open ``Slide``
behind an image layer without reopening the file. ``case_of(viewer)`` is the viewer's Qt-free
``layers.case.Case``; the first call binds the viewer's layer events to it: ROI layers autosave on
each change whether or not a dock is open, the case knows the open slides, and QuPath outlines
follow the camera.
"""

from __future__ import annotations

import os
import time
import uuid
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import napari
import numpy as np
from napari.layers import Image, Layer, Shapes
from napari.utils import resize_dask_cache
from psygnal import SignalInstance
from qtpy.QtCore import QObject, QTimer

from ..errors import PathomicsError
from ..layers import (
    OUTLINE_MIN_ZOOM,
    ROLE,
    ROLE_QUPATH_CELLS,
    ROLE_QUPATH_OUTLINES,
    ROLE_QUPATH_POINTS,
    ROLE_ROI_HOLES,
    ROLE_ROIS,
    SLIDE_PATH,
    annotations_to_shapes,
    geometry_transform,
    qupath_cell_layer,
    qupath_outline_layer,
    qupath_outlines,
    qupath_point_layers,
    roi_holes_layer,
    shapes_to_annotations,
    slide_layer,
    world_to_level0,
)
from ..layers.case import Case
from ..layers.case import case_of as _case_of
from ..units import DEFAULT_MPP
from ..wsi.annotations import Annotation, GeoObject, QuPathObject
from ..wsi.roi_store import load_saved_rois, save_rois, saved_rois_path
from ..wsi.slide import Slide, open_slide
from . import notices
from .notices import report, show_warning
from .window import after_first_frame

ROI_LAYER_SUFFIX = " ROIs"


def case_of(viewer: napari.Viewer) -> Case:
    """The viewer's case; the first call binds the viewer's layer and camera events to it."""
    case, new = _case_of(viewer)
    if new:
        _bind(viewer, case)
    return case


def listen(widget: QObject, signal: SignalInstance, slot: Callable[..., Any]) -> None:
    """Connect a dock's ``slot`` to a case signal until the dock's Qt object is deleted.

    psygnal drops a bound method once its Python object is collected; a closed dock's Python
    object can outlive its Qt object, whose methods then raise.
    """
    signal.connect(slot)
    widget.destroyed.connect(lambda *_: signal.disconnect(slot, missing_ok=True))


def add_layer(viewer: napari.Viewer, layer_tuple: tuple[Any, dict, str]) -> Layer:
    """Add a ``layers`` tuple ``(data, kwargs, type)`` to the viewer; the new layer."""
    return viewer.add_layer(Layer.create(*layer_tuple))


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
    flush_deferred(viewer)
    return find_layer(viewer, slide, ROLE_ROIS, Shapes)


def defer_layers(viewer: napari.Viewer | None, layers: list[tuple[Any, dict, str]]) -> list[tuple[Any, dict, str]]:
    """Hold ``layers`` back until the viewer's next frame, so the slide shows before the ROI machinery.

    Returns the layers the caller must add itself: all of them when there is no viewer to wait on.
    Anything that needs a slide's ROI layer calls ``roi_layer_of``, which adds held-back layers first.
    """
    if viewer is None or not layers:
        return layers
    pending = case_of(viewer).pending_layers
    first = not pending
    pending.extend(layers)
    if first:
        ref = weakref.ref(viewer)

        def flush() -> None:
            v = ref()
            if v is not None:
                flush_deferred(v)

        after_first_frame(viewer, flush, fallback_ms=250)
    return []


def flush_deferred(viewer: napari.Viewer) -> None:
    """Add the layers ``defer_layers`` held back for this viewer (idempotent)."""
    pending = case_of(viewer).pending_layers
    while pending:
        add_layer(viewer, pending.pop(0))


def _quarantine(path: Path) -> Path:
    """Keep an unreadable ROI file aside instead of overwriting it on the next autosave."""
    dest = path.with_name(f"{path.name}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}")
    path.rename(dest)
    return dest


def saved_objects(slide: Slide) -> list[GeoObject]:
    """Everything autosaved for this slide (ROIs and other QuPath objects), with its notes shown once.

    An unreadable autosave is moved aside (``.unreadable-<time>``) instead of being overwritten.
    """
    try:
        res = load_saved_rois(slide.path, bounds=slide.dimensions)
    except PathomicsError as exc:
        bad = saved_rois_path(slide.path)
        if bad is not None:
            kept = _quarantine(bad)
            show_warning(f"saved ROIs of {slide.path.name} were unreadable ({exc}); kept as {kept.name}")
        return []
    if res is None:
        return []
    for note in res.warnings:
        show_warning(f"saved ROIs of {slide.path.name}: {note}")
    return list(res.objects)


def roi_layer_data(
    slide: Slide, annotations: list[Annotation] | None = None, objects: list[GeoObject] | None = None
) -> tuple[Any, dict, str]:
    """A Shapes layer tuple for a slide's ROIs, filled from its autosave unless given.

    The layer's metadata keeps every object of the slide (``pathomics_objects``), so what the
    Shapes layer cannot show (points, cells, off-slide annotations) is saved back untouched.
    """
    if annotations is None:
        objects = saved_objects(slide) if objects is None else objects
        annotations = [o for o in objects if isinstance(o, Annotation)]
    elif objects is None:
        objects = list(annotations)
    data, kwargs = annotations_to_shapes(annotations)
    kwargs.update(geometry_transform(slide))
    kwargs["name"] = slide.path.name + ROI_LAYER_SUFFIX
    kwargs["face_color"] = "transparent"
    kwargs["edge_width"] = 3
    kwargs["text"] = {"string": "{classification}", "size": 10, "color": "white", "visible": False}
    kwargs["metadata"].update({ROLE: ROLE_ROIS, SLIDE_PATH: str(slide.path), "pathomics_objects": list(objects)})
    if not data:
        kwargs.pop("shape_type")
        kwargs["properties"] = {"roi_id": np.array([], dtype=object), "classification": np.array([], dtype=object)}
        kwargs["edge_color"] = "#c80000"
    return data, kwargs, "shapes"


def object_layers(slide: Slide, objects: list[GeoObject]) -> list[tuple[Any, dict, str]]:
    """The layers that show what the ROI layer cannot: hole rings, QuPath points and cells."""
    others = [o for o in objects if isinstance(o, QuPathObject)]
    holes = roi_holes_layer(slide, [o for o in objects if isinstance(o, Annotation)])
    out = ([holes] if len(holes[0]) else []) + qupath_point_layers(slide, others)
    cells = qupath_cell_layer(slide, others)
    if cells is not None:
        out.append(cells)
    return out


def show_object_layers(viewer: napari.Viewer, slide: Slide, objects: list[GeoObject]) -> None:
    """Replace the slide's hole, QuPath point, cell and outline layers by ones showing ``objects``."""
    roles = (ROLE_ROI_HOLES, ROLE_QUPATH_POINTS, ROLE_QUPATH_CELLS, ROLE_QUPATH_OUTLINES)
    for ly in [
        ly for ly in viewer.layers if ly.metadata.get(ROLE) in roles and ly.metadata.get(SLIDE_PATH) == str(slide.path)
    ]:
        viewer.layers.remove(ly)
    for t in object_layers(slide, objects):
        add_layer(viewer, t)
    refresh_qupath_outlines(viewer)


# ---------------------------------------------------------------------------------------------
def canvas_size(viewer: napari.Viewer) -> tuple[float, float]:
    """(height, width) of the viewer's canvas in screen px (1024² if unknown)."""
    try:
        h, w = viewer.canvas.size
        return float(h), float(w)
    except (AttributeError, TypeError, ValueError):
        return 1024.0, 1024.0


def visible_box(viewer: napari.Viewer, slide: Slide) -> tuple[float, float, float, float] | None:
    """The level-0 box (x0, y0, x1, y1) of ``slide`` the canvas shows, or None.

    From the camera (centre, zoom) and the canvas size; napari's ``corner_pixels`` cannot say it,
    since a small level is loaded (and reported) whole whatever the zoom.
    """
    h_px, w_px = canvas_size(viewer)
    zoom = float(viewer.camera.zoom)
    if not zoom > 0:
        return None
    cy, cx = (float(v) for v in viewer.camera.center[-2:])
    half_h, half_w = h_px / zoom / 2, w_px / zoom / 2
    corners = world_to_level0(slide, np.array([[cy - half_h, cx - half_w], [cy + half_h, cx + half_w]]))
    x0, y0 = np.clip(corners[0], 0, [slide.width, slide.height])
    x1, y1 = np.clip(corners[1], 0, [slide.width, slide.height])
    return (float(x0), float(y0), float(x1), float(y1)) if x1 > x0 and y1 > y0 else None


def zoomed_in(viewer: napari.Viewer, slide: Slide) -> bool:
    """Whether the view is close enough for outlines (``OUTLINE_MIN_ZOOM`` screen px per µm)."""
    um_per_world = 1.0 if slide.has_mpp else DEFAULT_MPP  # without µm/px the world is in px: assume a typical one
    return float(viewer.camera.zoom) / um_per_world >= OUTLINE_MIN_ZOOM


def refresh_qupath_outlines(viewer: napari.Viewer) -> int:
    """Outline the QuPath cells/detections in view when zoomed in (none otherwise); returns how many."""
    drawn = 0
    case = case_of(viewer)
    for cells in [ly for ly in viewer.layers if ly.metadata.get(ROLE) == ROLE_QUPATH_CELLS]:
        slide = case.slide(cells.metadata.get(SLIDE_PATH))
        if slide is None:
            continue
        shapes = find_layer(viewer, slide, ROLE_QUPATH_OUTLINES, Shapes)
        data: list[np.ndarray] = []
        colors: list[str] = []
        box = visible_box(viewer, slide) if cells.visible and zoomed_in(viewer, slide) else None
        if box is not None:
            data, colors = qupath_outlines(cells.metadata, box)
        if shapes is None:
            if not data:
                continue
            shapes = add_layer(viewer, qupath_outline_layer(slide))
        with shapes.events.data.blocker():
            shapes.data = []
            if data:
                shapes.add(data, shape_type="polygon", edge_color=colors, face_color="transparent", edge_width=1.5)
        shapes.refresh()
        drawn += len(data)
    return drawn


#: Camera changes are followed after this pause (ms), so a pan redraws the outlines once.
OUTLINE_DELAY_MS = 150


def _follow_camera(viewer: napari.Viewer) -> None:
    """Redraw the QuPath outlines shortly after the camera moves (the timer lives as long as the viewer)."""
    timer = QTimer()
    timer.setSingleShot(True)
    timer.setInterval(OUTLINE_DELAY_MS)
    ref = weakref.ref(viewer)

    def fire() -> None:
        v = ref()
        if v is not None and any(ly.metadata.get(ROLE) == ROLE_QUPATH_CELLS for ly in v.layers):
            refresh_qupath_outlines(v)

    timer.timeout.connect(fire)
    viewer.camera.events.zoom.connect(lambda e=None: timer.start())
    viewer.camera.events.center.connect(lambda e=None: timer.start())


def layer_annotations(layer: Shapes, notes: list[str] | None = None) -> list[Annotation]:
    """The ROIs a Shapes layer holds now, in level-0 px: holes, ids and properties survive edits."""
    return shapes_to_annotations(
        list(layer.data),
        list(layer.shape_type),
        dict(layer.properties),
        edge_colors=layer.edge_color,
        originals=layer.metadata.get("pathomics_annotations"),
        notes=notes,
    )


def layer_objects(layer: Shapes, notes: list[str] | None = None) -> list[GeoObject]:
    """Every object of the layer's slide: the ROIs as the layer holds them now, in file order, and
    the other objects untouched (a deleted ROI goes, a new one comes last)."""
    now = {a.id: a for a in layer_annotations(layer, notes)}
    out: list[GeoObject] = []
    for o in layer.metadata.get("pathomics_objects") or []:
        if isinstance(o, Annotation):
            if o.id in now:
                out.append(now.pop(o.id))
        else:
            out.append(o)
    return out + list(now.values())


def autosave_now(layer: Shapes, viewer: napari.Viewer | None = None) -> Path | None:
    """Save the ROI layer's objects beside its slide; with the ``viewer``, its hole rings follow."""
    path = layer.metadata.get(SLIDE_PATH)
    if not path:
        return None
    notes: list[str] = []
    try:
        objects = layer_objects(layer, notes)
        saved = save_rois(path, objects)
    except (PathomicsError, OSError) as exc:
        report(exc, "ROI autosave failed")
        return None
    layer.metadata["pathomics_objects"] = objects
    layer.metadata["pathomics_annotations"] = {o.id: o for o in objects if isinstance(o, Annotation)}
    for note in notes:
        show_warning(note)
    if viewer is not None:
        _refresh_holes(viewer, layer, [o for o in objects if isinstance(o, Annotation)])
    return saved


def _refresh_holes(viewer: napari.Viewer, layer: Shapes, annotations: list[Annotation]) -> None:
    slide = case_of(viewer).slide(layer.metadata.get(SLIDE_PATH))
    if slide is None:
        return
    data, kwargs, kind = roi_holes_layer(slide, annotations)
    ly = find_layer(viewer, slide, ROLE_ROI_HOLES)
    if ly is not None:
        ly.data = data
        if data:
            ly.shape_type = ["polygon"] * len(data)
    elif data:
        add_layer(viewer, (data, kwargs, kind))


def _fresh_ids(layer: Shapes, indices: Any) -> None:
    """Shapes just drawn are new ROIs: napari copies the selected shape's properties to them."""
    ids = np.asarray(layer.properties.get("roi_id", []), dtype=object).copy()
    for i in indices or ():
        if 0 <= i < len(ids):
            ids[i] = str(uuid.uuid4())
    props = dict(layer.properties)
    props["roi_id"] = ids
    with layer.events.data.blocker():
        layer.properties = props


def _attach_autosave(layer: Shapes, viewer_ref: Callable[[], napari.Viewer | None]) -> None:
    if layer.metadata.get("_pathomics_autosave"):
        return
    layer.metadata["_pathomics_autosave"] = True

    def on_data(event: Any = None) -> None:
        action = str(getattr(getattr(event, "action", None), "value", getattr(event, "action", "")))
        if action == "added":
            _fresh_ids(layer, getattr(event, "data_indices", ()))
        if event is None or action in ("added", "changed", "removed", "None", ""):
            autosave_now(layer, viewer_ref())

    layer.events.data.connect(on_data)


def _bind(viewer: napari.Viewer, case: Case) -> None:
    """Follow the viewer's layers: slides into the case, ROI autosave, file handles, QuPath outlines."""
    ref = weakref.ref(viewer)  # the case and these listeners must not keep the viewer alive

    def take(layer: Layer) -> None:
        slide = slide_of(layer)
        if slide is not None:
            case.add_slide(slide)
        if isinstance(layer, Shapes) and layer.metadata.get(ROLE) == ROLE_ROIS:
            _attach_autosave(layer, ref)

    def on_removed(event: Any) -> None:
        """Close a slide's file when its last image layer leaves the viewer (no leaked handles)."""
        slide = slide_of(event.value)
        v = ref()
        if slide is None or v is None:
            return
        same_file = [s for s in map(slide_of, v.layers) if s is not None and s.path == slide.path]
        if same_file:
            case.add_slide(same_file[-1])
        else:
            case.remove_slide(str(slide.path))
        if not any(s is slide for s in same_file):
            slide.close()

    viewer.layers.events.inserted.connect(lambda event: take(event.value))
    viewer.layers.events.removed.connect(on_removed)
    _follow_camera(viewer)
    for ly in viewer.layers:
        take(ly)


def mpp_notice(slide: Slide) -> str:
    """Key of the notice that a slide lacks its pixel size (withdrawn once it is set)."""
    return f"mpp:{slide.path}"


def install(viewer: napari.Viewer | None) -> None:
    """Bind the viewer to its case (idempotent) and route library warnings to the log."""
    notices.install()
    if viewer is not None:
        case_of(viewer)


#: napari's dask chunk cache defaults to a quarter of RAM; panning a slide must not grow without bound.
VIEW_CACHE_MB = int(os.environ.get("PATHOMICS_VIEW_CACHE_MB", "768"))


def bound_view_cache() -> None:
    resize_dask_cache(nbytes=VIEW_CACHE_MB * 2**20)


def open_slide_layers(path: str | Path, mpp: float | None = None) -> list[tuple[Any, dict, str]]:
    """The layers a slide opens as: the multiscale image, its (autosaved) ROI layer and object layers."""
    bound_view_cache()
    slide = open_slide(path, mpp=mpp)
    img = slide_layer(slide)
    img[1]["metadata"]["pathomics_slide"] = slide
    if not slide.has_mpp:
        show_warning(
            f"{slide.path.name} does not record its pixel size: axes are in pixels. Set µm/px in the Slide widget.",
            key=mpp_notice(slide),
        )
    objects = saved_objects(slide)
    return [img, roi_layer_data(slide, objects=objects), *object_layers(slide, objects)]


def add_slide(viewer: napari.Viewer, path: str | Path, mpp: float | None = None, defer: bool = False) -> Image:
    """Open a slide into the viewer; ``defer``: its ROI and object layers follow the first frame."""
    install(viewer)
    image, *rest = open_slide_layers(path, mpp)
    added = add_layer(viewer, image)
    for t in defer_layers(viewer, rest) if defer else rest:
        add_layer(viewer, t)
    return added
