"""Mouse and keys of the tile-labels layer, as napari keeps ``_labels_mouse_bindings.py`` beside
its Labels layer: a click labels the tiles under the brush, a drag every tile it passes (one undo
step per stroke), keys 1–9 pick a class, 0 the eraser, Ctrl+Z undoes."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Labels

from ..layers import SLIDE_PATH, world_to_level0

if TYPE_CHECKING:  # pragma: no cover
    from .label_tool import LabelTool


def bind(layer: Labels, tool: LabelTool) -> None:
    """Keys 1–9 / 0 and Ctrl+Z on the labels layer itself (they beat the layer type's own keys), and the brush."""
    for i in range(10):
        layer.bind_key(str(i), lambda _ly, i=i: tool.key(i), overwrite=True)
    layer.bind_key("Control-Z", lambda _ly: tool.undo(), overwrite=True)
    layer.mouse_drag_callbacks.append(partial(drag, tool))
    layer.editable = False  # napari's own painting would scribble on the outlines


def drag(tool: LabelTool, layer: Labels, event: Any) -> Iterator[None]:
    """Label the tiles under the brush from press to release, every tile on the way however fast the drag."""
    if not tool.mode.isChecked() or getattr(event, "button", 1) != 1 or event.modifiers:
        return
    slide = tool.slide(warn=False)
    if slide is None or layer.metadata.get(SLIDE_PATH) != str(slide.path):
        return
    layer.mouse_pan = False
    lab = tool.labels_of(slide)
    steps = 0
    last = world_to_level0(slide, np.asarray([event.position[-2:]], dtype=np.float64))[0]
    if tool.label_cells(slide, tool.cells_under(slide, tuple(event.position[-2:]))):
        steps += 1
    yield
    while event.type == "mouse_move":
        here = world_to_level0(slide, np.asarray([event.position[-2:]], dtype=np.float64))[0]
        n = max(1, int(np.ceil(np.hypot(*(here - last)) / (lab.tile_size_l0 / 2))))
        cells: list[tuple[int, int]] = []
        for t in np.linspace(1.0 / n, 1.0, n):
            x, y = last + t * (here - last)
            sy, sx = slide.mpp[1], slide.mpp[0]
            cells.extend(tool.cells_under(slide, ((y - 0.5) * sy, (x - 0.5) * sx)))
        if lab.set(list(dict.fromkeys(cells)), tool.picked()):
            steps += 1
            tool.draw(slide, cells)
        last = here
        yield
    lab.merge_steps(steps)  # one stroke, one Ctrl+Z
    tool.save(slide)
