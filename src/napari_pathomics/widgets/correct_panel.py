"""The Analyze dock's "Correct" panel: the pathologist labels tiles, the model adapts in seconds.

The panel lays out three parts and shows what they say: the labelling tool (``label_tool``, its
mouse and keys in ``label_bindings``), Adapt / Revert / Save (``adapt_controller``, the workflow
``pathomics adapt`` runs too) and the activation maps that follow the adapted head
(``adapted_maps``). Everything they share is the viewer's case (``layers.case.Case``): the
analysis results, the bundle, the labels and the adapted head.

**Suggest** proposes the next tiles worth labelling (uncertain, spread over the slide and the
classes) as a points layer; Previous/Next pan the view to each.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import napari
import numpy as np
from qtpy.QtWidgets import (
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..bundle import Bundle
from ..layers.labels import ROLE_SUGGESTIONS, ROLE_TILE_LABELS, suggestions_layer
from ..results.labels import TileLabels
from ..training.adapt import suggest_tiles
from ..wsi.slide import Slide
from . import layer_registry
from .adapt_controller import AdaptController
from .adapted_maps import AdaptedMaps
from .label_tool import LabelTool

__all__ = ["CorrectPanel", "ROLE_TILE_LABELS", "ROLE_SUGGESTIONS"]


class CorrectPanel(QWidget):
    """Label tiles, adapt the head, suggest tiles, save the adapted model (embedded in the Analyze dock)."""

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        layer_registry.install(napari_viewer)
        self.case = layer_registry.case_of(napari_viewer)
        self.suggested: np.ndarray = np.zeros(0, dtype=np.int64)
        self.suggest_pos = -1

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        box = QGroupBox("Correct the tissue map")
        bl = QVBoxLayout(box)
        self.status = QLabel("Run the analysis, then label tiles the model got wrong and press Adapt.")
        self.status.setWordWrap(True)
        self.tool = LabelTool(napari_viewer, say=self.status.setText)
        bl.addWidget(self.tool)
        self.maps = AdaptedMaps(napari_viewer, fail=self._fail)
        self.controller = AdaptController(napari_viewer, self.tool, self.maps)
        row = QHBoxLayout()
        self.adapt_btn = QPushButton("Adapt")
        self.adapt_btn.clicked.connect(self.adapt)
        self.save_btn = QPushButton("Save adapted model…")
        self.save_btn.clicked.connect(self._save_dialog)
        self.revert_btn = QPushButton("Revert")
        self.revert_btn.setToolTip("back to the model's own class map (the labels stay)")
        self.revert_btn.clicked.connect(self.revert)
        for b in (self.adapt_btn, self.revert_btn, self.save_btn):
            row.addWidget(b)
        bl.addLayout(row)
        self.maps_btn = self.maps.button
        bl.addWidget(self.maps_btn)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        bl.addWidget(self.progress)
        bl.addWidget(self.status)
        row = QHBoxLayout()
        self.suggest_btn = QPushButton("Suggest")
        self.suggest_btn.clicked.connect(lambda: self.suggest())
        self.n_suggest = QSpinBox()
        self.n_suggest.setRange(1, 500)
        self.n_suggest.setValue(20)
        self.prev_btn = QPushButton("◀ Previous")
        self.prev_btn.clicked.connect(lambda: self.step_suggestion(-1))
        self.next_btn = QPushButton("Next ▶")
        self.next_btn.clicked.connect(lambda: self.step_suggestion(1))
        for w in (self.suggest_btn, self.n_suggest, self.prev_btn, self.next_btn):
            row.addWidget(w)
        bl.addLayout(row)
        self.suggest_info = QLabel("")
        bl.addWidget(self.suggest_info)
        layout.addWidget(box)

        for part in (self.controller, self.maps):
            part.progress.connect(self._progress)
            part.message.connect(self.status.setText)
        self.controller.changed.connect(self._buttons)
        self._buttons()
        layer_registry.listen(self, self.case.analysis_finished, self.controller.on_analysis_finished)

    # ------------------------------------------------------------------ what the parts say
    def _progress(self, fraction: float, text: str) -> None:
        self.progress.setValue(int(100 * fraction))
        self.status.setText(text)

    def _fail(self, msg: str, exc: BaseException | None = None) -> None:
        self.controller.fail(msg, exc)

    def _buttons(self) -> None:
        adapted = self.case.adaptation is not None
        self.adapt_btn.setEnabled(self.controller.worker is None)
        self.save_btn.setEnabled(adapted)
        self.revert_btn.setEnabled(adapted)

    # ------------------------------------------------------------------ the parts' actions, here for scripts and tests
    @property
    def labels(self) -> dict[str, TileLabels]:
        return self.case.labels

    @property
    def brush(self) -> QSpinBox:
        return self.tool.brush

    @property
    def force_other(self) -> Any:
        return self.tool.force_other

    @property
    def current(self) -> str:
        return self.tool.current

    @current.setter
    def current(self, name: str) -> None:
        self.tool.current = name

    @property
    def result(self) -> Any:
        """The last adaptation's ``AdaptResult`` (None before Adapt and after Revert)."""
        return self.case.adaptation.result if self.case.adaptation is not None else None

    @property
    def worker(self) -> Any:
        return self.controller.worker

    @property
    def cam_worker(self) -> Any:
        return self.maps.worker

    def refresh_classes(self) -> None:
        self.tool.refresh_classes()

    def select_class(self, name: str) -> None:
        self.tool.select_class(name)

    def set_mode(self, on: bool) -> None:
        self.tool.set_mode(on)

    def labels_of(self, slide: Slide) -> TileLabels:
        return self.tool.labels_of(slide)

    def label_cells(self, slide: Slide, cells: list[tuple[int, int]]) -> int:
        return self.tool.label_cells(slide, cells)

    def label_world(self, world_yx: tuple[float, float]) -> int:
        return self.tool.label_world(world_yx)

    def undo(self) -> None:
        self.tool.undo()

    def import_labels(self, path: str | Path, force: bool | None = None) -> str:
        return self.tool.import_labels(path, force)

    def export_labels(self, path: str | Path) -> Path | None:
        return self.tool.export_labels(path)

    def add_label_set(self, slide_path: str | Path, labels_file: str | Path) -> None:
        self.tool.add_label_set(slide_path, labels_file)

    def adapt(self) -> Any:
        return self.controller.adapt()

    def revert(self) -> None:
        self.controller.revert()

    def save_model(self, out: str | Path) -> Bundle | None:
        return self.controller.save_model(out)

    def refresh_maps(self, whole: bool = False, show: str | None = None) -> Any:
        return self.maps.refresh(whole, show)

    def _save_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Folder for the adapted bundle (new or empty)")
        if path:
            self.save_model(path)

    # ------------------------------------------------------------------ suggestions
    def suggest(self, n: int | None = None) -> np.ndarray:
        """Suggested tiles of the active slide as a points layer; the view pans to the first."""
        slide = self.tool.slide()
        if slide is None:
            return np.zeros(0, dtype=np.int64)
        res = self.case.results.get(str(slide.path))
        if res is None:
            self._fail("run the analysis first: suggestions come from its probabilities")
            return np.zeros(0, dtype=np.int64)
        idx = suggest_tiles(res, self.labels_of(slide), int(n or self.n_suggest.value()))
        self.suggested, self.suggest_pos = idx, -1
        data, kwargs, kind = suggestions_layer(slide, res, idx)
        ly = layer_registry.find_layer(self.viewer, slide, ROLE_SUGGESTIONS)
        if ly is None:
            layer_registry.add_layer(self.viewer, (data, kwargs, kind))
        else:
            ly.data = data
            ly.features = kwargs["features"]
        self.suggest_info.setText(f"{idx.size} tiles suggested (most uncertain, spread over the slide and classes)")
        if idx.size:
            self.step_suggestion(1)
        return idx

    def step_suggestion(self, step: int) -> int | None:
        """Pan to the next (+1) or previous (−1) suggested tile; its result index."""
        slide = self.tool.slide(warn=False)
        res = self.case.results.get(str(slide.path)) if slide is not None else None
        if slide is None or res is None or self.suggested.size == 0:
            return None
        self.suggest_pos = (self.suggest_pos + step) % self.suggested.size
        i = int(self.suggested[self.suggest_pos])
        s = res.tile_size_l0
        sy, sx = slide.mpp[1], slide.mpp[0]
        x, y = res.origins[i, 0] + s / 2, res.origins[i, 1] + s / 2
        self.viewer.camera.center = ((y - 0.5) * sy, (x - 0.5) * sx)
        width_px = layer_registry.canvas_size(self.viewer)[0]
        self.viewer.camera.zoom = max(float(self.viewer.camera.zoom), width_px / (6 * s * sx))
        ly = layer_registry.find_layer(self.viewer, slide, ROLE_SUGGESTIONS)
        if ly is not None:
            ly.selected_data = {self.suggest_pos}
        d = res.describe_tile(i)
        top = sorted(d.get("probs", {}).items(), key=lambda kv: -kv[1])[:2]
        self.suggest_info.setText(
            f"tile {self.suggest_pos + 1}/{self.suggested.size}: " + ", ".join(f"{k} {v:.2f}" for k, v in top)
        )
        return i
