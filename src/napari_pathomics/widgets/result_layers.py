"""TileResults → napari layers, updated in place: the class map, risk heatmap and CAM mosaics.

Shared by the Analyze and Score docks. Layers are found by slide path and role in their
metadata (``layers.ROLE``), so a rerun refreshes them and a second slide keeps its own.
"""

from __future__ import annotations

from typing import Any

import napari

from ..layers import ROLE, result_layers
from ..results import TileResults
from ..wsi.slide import Slide
from .session import find_layer


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
