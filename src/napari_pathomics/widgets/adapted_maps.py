"""After Adapt, the activation maps follow the adapted head: Grad-CAM / RAM are recomputed with it
for the tiles in view, for those panned to (debounced), and on request for the whole slide."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import napari
from napari.qt.threading import thread_worker
from qtpy.QtCore import QObject, QTimer, Signal
from qtpy.QtWidgets import QPushButton

from ..inference.subset import cams_missing, cams_run, merge_cams, tiles_in_box
from ..layers import views
from ..results.status import RISK_CAM
from ..wsi.slide import Slide
from . import layer_registry

MAPS_TEXT = "Activation maps for the whole slide"
#: After Adapt, the CAMs of the tiles in view are recomputed at once up to this many tiles (else on request).
AUTO_CAM_TILES = 2000
#: The view is followed after this pause (ms), so a pan recomputes once.
FOLLOW_MS = 400


class AdaptedMaps(QObject):
    """Recompute the adapted slide's activation maps with the case's adapted head; owns the button."""

    #: (fraction done, what is being done)
    progress = Signal(float, str)
    #: a line for the panel's status
    message = Signal(str)

    def __init__(self, napari_viewer: napari.Viewer, fail: Callable[[str, BaseException | None], None]) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.case = layer_registry.case_of(napari_viewer)
        self.fail = fail
        self.worker: Any = None
        self.cancel = threading.Event()
        self.button = QPushButton(MAPS_TEXT)
        self.button.setToolTip(
            "after Adapt, Grad-CAM / RAM are recomputed with the adapted head for the tiles "
            "in view; this computes them for every tile"
        )
        self.button.clicked.connect(self._clicked)
        self.button.setEnabled(False)
        self._timer = QTimer(self)  # the maps follow the view: tiles panned to get theirs
        self._timer.setSingleShot(True)
        self._timer.setInterval(FOLLOW_MS)
        self._timer.timeout.connect(lambda: self.refresh(whole=False))
        napari_viewer.camera.events.zoom.connect(self._schedule)
        napari_viewer.camera.events.center.connect(self._schedule)

    def cam_names(self, path: str) -> tuple[str, ...]:
        """The CAMs the model's results of a slide had, and those the Analyze dock asks for."""
        a = self.case.adaptation
        base = a.base.get(path) if a is not None else None
        wanted = list(base.cams) if base is not None else []
        wanted += [n for n in self.case.cam_names if n not in wanted]
        return tuple(wanted)

    def adapted(self, slide: Slide | None) -> None:
        """A new adaptation: the button is offered where the slide has maps."""
        self.button.setEnabled(bool(slide is not None and self.cam_names(str(slide.path))))

    def stop(self) -> None:
        """Reverted: the tiles done so far are dropped with the adapted results."""
        self.cancel.set()
        self._timer.stop()
        self.button.setEnabled(False)

    def refresh(self, whole: bool = False, show: str | None = None) -> Any:
        """Recompute the CAMs with the adapted head: tiles in view (``whole``: every tile); returns the worker."""
        slide = layer_registry.slide_of(layer_registry.active_slide_layer(self.viewer))
        a = self.case.adaptation
        if slide is None or a is None or a.engine is None or self.worker is not None:
            return None
        path = str(slide.path)
        res = a.adapted.get(path)
        names = self.cam_names(path)
        if res is None or not names:
            return None
        box = None if whole else layer_registry.visible_box(self.viewer, slide)
        idx = cams_missing(res, names, None if box is None else tiles_in_box(res, box))
        if idx.size == 0:
            return None
        if not whole and idx.size > AUTO_CAM_TILES:
            self.message.emit(
                f"{a.summary}; the activation maps wait: {idx.size} tiles in view need them "
                "(zoom in, or press the button below)"
            )
            return None
        engine = a.engine
        cancel = self.cancel = threading.Event()

        @thread_worker(ignore_errors=True)  # errored is reported below
        def work() -> Iterator[Any]:
            run = cams_run(engine, slide, res, names, idx, cancel=cancel)
            for upd in run:
                yield ("progress", upd.fraction, f"activation maps with the adapted head: {upd.done}/{upd.total} tiles")
            yield ("done", run.results)

        def on_yield(payload: tuple) -> None:
            if payload[0] == "progress":
                self.progress.emit(payload[1], payload[2])
                return
            n = merge_cams(res, payload[1])
            if self.case.results.get(path) is res:  # not replaced by a new run or a revert meanwhile
                self.case.set_results(path, res)
                if show != self.case.display.shown and show in dict(views(res)):
                    self.case.update_display(shown=show)
            said = ", ".join("RAM" if c == RISK_CAM else f"Grad-CAM {c}" for c in names)
            self.progress.emit(
                1.0,
                f"{said} recomputed with the adapted head for {n} tiles"
                + ("" if whole else " in view (the button below does the whole slide)"),
            )

        def finished() -> None:
            self.worker = None
            self.button.setText(MAPS_TEXT)

        worker = work()
        worker.yielded.connect(on_yield)
        worker.errored.connect(lambda exc: self.fail(str(exc), exc))
        worker.finished.connect(finished)
        self.worker = worker
        self.button.setText("Stop the activation maps")
        worker.start()
        return worker

    def _schedule(self, event: Any = None) -> None:
        a = self.case.adaptation
        if a is not None and a.engine is not None:
            self._timer.start()

    def _clicked(self) -> None:
        if self.worker is not None:
            self.cancel.set()  # the tiles done so far are kept
        else:
            self.refresh(whole=True)
