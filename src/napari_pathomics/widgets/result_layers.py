"""TileResults → napari layers, updated in place: one map shown at a time, with its colour bar.

Shared by the Analyze, Score and correction panels. Layers are found by slide path and role in
their metadata (``layers.ROLE``), so a rerun refreshes them and a second slide keeps its own.
How results are drawn (``layers.Display``) and what each slide showed last belong to the viewer's
case (``layer_registry.case_of``): the Analyze dock edits the display and every panel that shows results
draws with it. The status bar reads the tile under the cursor (top-3 classes) whichever layer is
active.
"""

from __future__ import annotations

import weakref
from typing import Any

import napari
from napari.layers import Layer

from ..layers import (
    COLORBAR_KEY,
    ROLE,
    SCALE_KEY,
    SLIDE_PATH,
    VIEW_CLASSES,
    VIEW_KEY,
    Display,
    result_layers,
    tile_readout,
    views,
)
from ..results import TileResults
from ..wsi.slide import Slide
from .layer_registry import add_layer, case_of, find_layer, slide_layers, slide_of

__all__ = ["show_results", "find_layer", "display_of", "redraw", "readout"]

_UPDATABLE = ("colormap", "contrast_limits", "opacity", "interpolation2d", "name", "blending")


def display_of(viewer: napari.Viewer) -> Display:
    """The viewer's display settings (its case's)."""
    return case_of(viewer).display


def _update(ly: Layer, data: Any, kwargs: dict[str, Any]) -> None:
    ly.data = data
    for key in _UPDATABLE:
        if key in kwargs and hasattr(ly, key):
            setattr(ly, key, kwargs[key])
    ly.metadata.update(kwargs["metadata"])
    ly.visible = bool(kwargs.get("visible", True))


def show_results(
    viewer: napari.Viewer, slide: Slide, results: TileResults, descriptions: dict[str, str] | None = None
) -> dict[str, Any]:
    """Create or refresh every result layer of ``results``; only the selected map is visible."""
    display = display_of(viewer)
    keys = [k for k, _ in views(results)]
    if display.shown not in keys:
        display.shown = VIEW_CLASSES
    shown = case_of(viewer).shown
    previous = shown.get(str(slide.path))
    shown[str(slide.path)] = (results, descriptions if descriptions is not None else (previous[1] if previous else {}))
    out: dict[str, Any] = {}
    active, created = viewer.layers.selection.active, False
    for data, kwargs, kind in result_layers(slide, results, display):
        role = kwargs["metadata"][ROLE]
        ly = find_layer(viewer, slide, role)
        if ly is None:
            ly, created = add_layer(viewer, (data, kwargs, kind)), True
        else:
            _update(ly, data, kwargs)
        _attach_readout(viewer, ly)
        out[role] = ly
    if created:  # the layer controls follow the map shown, not the last layer added
        select_shown(viewer, slide)
    elif active is not None and active in viewer.layers:
        viewer.layers.selection.active = active
    _attach_readout(viewer, *slide_layers(viewer))
    _sync_overlays(viewer)
    return out


def select_shown(viewer: napari.Viewer, slide: Slide) -> None:
    """Make the shown map's layer the active one (its controls show), else the slide's image."""
    key = display_of(viewer).shown
    for ly in viewer.layers:
        if ly.metadata.get(VIEW_KEY) == key and ly.metadata.get(SLIDE_PATH) == str(slide.path) and ly.visible:
            viewer.layers.selection.active = ly
            return


def redraw(viewer: napari.Viewer) -> None:
    """Draw every slide's last results again with the viewer's current display settings."""
    by_path = {str(slide_of(ly).path): slide_of(ly) for ly in slide_layers(viewer)}
    for path, (results, descriptions) in list(case_of(viewer).shown.items()):
        if path in by_path:
            show_results(viewer, by_path[path], results, descriptions)


def _sync_overlays(viewer: napari.Viewer) -> None:
    """The colour bar of the visible continuous map, and a line naming it with its units."""
    title = ""
    for ly in viewer.layers:
        meta = ly.metadata
        if VIEW_KEY not in meta:
            continue
        has_bar = bool(meta.get(COLORBAR_KEY)) and ly.visible
        if hasattr(ly, "colorbar"):
            ly.colorbar.visible = has_bar
        if has_bar:
            scale = meta.get(SCALE_KEY) or {}
            lines = [ly.name, scale.get("scale", ""), scale.get("units", "")]  # short lines: clear of the colour bar
            lines.append(f"transparent below {scale.get('threshold', 0):.3g}")
            title = "\n".join(line for line in lines if line)
        elif ly.visible and meta.get(VIEW_KEY) == VIEW_CLASSES and "classes" in ly.name.lower():
            title = "Tissue classes (hatched: low confidence)"
    viewer.text_overlay.text = title
    viewer.text_overlay.position = "top_left"
    viewer.text_overlay.visible = bool(title)


def readout(viewer: napari.Viewer, slide: Slide, world_yx: tuple[float, float]) -> str:
    """The read-out of the tile under ``world_yx`` in the results last shown for ``slide``."""
    entry = case_of(viewer).shown.get(str(slide.path))
    if entry is None or not slide.has_mpp:
        return ""
    results, descriptions = entry
    return tile_readout(results, slide, world_yx, descriptions, display_of(viewer).low_confidence)


def _attach_readout(viewer: napari.Viewer, *layers: Layer) -> None:
    """Put the tile read-out into the status napari computes for ``layers``.

    napari (0.9) has no public hook into its status bar: a thread asks the active layer's public
    ``get_status`` and overwrites ``viewer.status`` with the answer. A Layer subclass could override
    it, but the slide's image layer is napari's own (File ▸ Open), so each layer's ``get_status`` is
    wrapped instead.
    """
    ref = weakref.ref(viewer)
    for ly in layers:
        if getattr(ly.get_status, "pathomics_readout", False):
            continue
        original = ly.get_status

        def get_status(
            position: Any = None, *args: Any, _original: Any = original, _ly: Layer = ly, **kwargs: Any
        ) -> Any:
            status = _original(position, *args, **kwargs)
            v = ref()
            if v is None or position is None or not kwargs.get("world", False) or not isinstance(status, dict):
                return status
            slide = case_of(v).slide(_ly.metadata.get(SLIDE_PATH))
            text = readout(v, slide, tuple(position[-2:])) if slide is not None else ""
            if text:
                status["coordinates"] = text
            return status

        get_status.pathomics_readout = True  # type: ignore[attr-defined]
        ly.get_status = get_status  # type: ignore[method-assign]
