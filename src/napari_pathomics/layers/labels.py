"""The Correct panel's layers: the pathologist's tile labels as class-coloured outlines, and the
tiles suggested for labelling next."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..colors import hex_to_rgba
from ..results.labels import TileLabels, outline_image
from ..wsi.slide import Slide
from .base import ROLE, SLIDE_PATH, LayerTuple, geometry_transform, grid_transform

if TYPE_CHECKING:  # pragma: no cover
    from ..results.tiles import TileResults

ROLE_TILE_LABELS, ROLE_SUGGESTIONS = "tile_labels", "label_suggestions"
#: Outline image px per tile side (the ring is one px: an eighth of a tile).
OUTLINE_K = 8


def labels_layer(slide: Slide, labels: TileLabels, classes: list[str], colors: list[str]) -> LayerTuple:
    """The labelled tiles as class-coloured outlines: a Labels layer of ``OUTLINE_K`` px per tile."""
    n_rows, n_cols = labels.lattice_shape(slide.width, slide.height)
    data = outline_image(labels, n_rows, n_cols, classes, OUTLINE_K)
    kwargs = grid_transform(slide, labels.tile_size_l0 / OUTLINE_K)
    cmap: dict[Any, Any] = {None: (0.0, 0.0, 0.0, 0.0), 0: (0.0, 0.0, 0.0, 0.0)}
    cmap.update({i + 1: hex_to_rgba(c, 1.0) for i, c in enumerate(colors)})
    kwargs.update(
        name=f"{slide.path.name} tile labels",
        colormap=cmap,
        opacity=1.0,
        blending="translucent",
        metadata={ROLE: ROLE_TILE_LABELS, SLIDE_PATH: str(slide.path)},
    )
    return data, kwargs, "labels"


def suggestions_layer(slide: Slide, results: TileResults, indices: np.ndarray) -> LayerTuple:
    """Suggested tiles as points at their centres (level-0 corner coordinates, like the ROIs)."""
    s = results.tile_size_l0
    pts = np.column_stack([results.origins[indices, 1] + s / 2, results.origins[indices, 0] + s / 2]).astype(float)
    kwargs = geometry_transform(slide)
    kwargs.update(
        name=f"{slide.path.name} suggested tiles",
        size=s / 3,
        face_color="transparent",
        border_color="#00e5ff",
        border_width=0.15,
        symbol="ring",
        features={"tile": np.asarray(indices, dtype=np.int64)},
        metadata={ROLE: ROLE_SUGGESTIONS, SLIDE_PATH: str(slide.path)},
    )
    return pts.reshape(-1, 2), kwargs, "points"
