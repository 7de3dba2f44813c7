"""The viewer a case opens in, before any dock: light enough that the slide is the first thing drawn."""

from __future__ import annotations

import napari

from ..errors import PathomicsError
from . import layer_registry, notices
from .window import fit_to_screen, show_scale_bar


def open_window(slides: list[str]) -> napari.Viewer:
    """A screen-sized viewer with a scale bar showing ``slides`` (open errors reported together)."""
    viewer = napari.Viewer(title="napari-pathomics")
    layer_registry.install(viewer)
    fit_to_screen(viewer)
    show_scale_bar(viewer)
    for p in slides:
        try:
            layer_registry.add_slide(viewer, p, defer=True)
        except PathomicsError as exc:
            notices.report(exc, f"cannot open {p}")
    return viewer
