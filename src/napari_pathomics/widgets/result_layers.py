"""TileResults → napari layers, updated in place: the class map, risk heatmap and CAM mosaics.

Shared by the Analyze and Score docks. Layers are found by slide path and role in their
metadata (``layers.ROLE``), so a rerun refreshes them and a second slide keeps its own.
"""

from __future__ import annotations

from typing import Any

import napari

from ..layers import ROLE, SLIDE_PATH, result_layers
from ..results import TileResults
from ..wsi.slide import Slide


def find_layer(viewer: napari.Viewer, slide: Slide, role: str) -> Any:
    for ly in viewer.layers:
        if ly.metadata.get(ROLE) == role and ly.metadata.get(SLIDE_PATH) == str(slide.path):
            return ly
    return None


def show_results(viewer: napari.Viewer, slide: Slide, results: TileResults) -> dict[str, Any]:
    """Create or refresh every result layer of ``results``; returns them by role."""
    out: dict[str, Any] = {}
    for data, kwargs, kind in result_layers(slide, results):
        role = kwargs["metadata"][ROLE]
        ly = find_layer(viewer, slide, role)
        if ly is None:
            ly = viewer._add_layer_from_data(data, kwargs, kind)[0]
        else:
            ly.data = data
        out[role] = ly
    return out
