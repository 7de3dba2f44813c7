"""The Correct panel's Adapt, Revert and Save: ``training.adapt``'s workflow off the UI thread, its
result put into the viewer's case.

Adapt refits the bundle's head on the frozen embeddings of every labelled tile of the open slides
and of the label sets added (``training.adapt.adapt_slides``, as ``pathomics adapt`` does; tiles
whose results lack an embedding are recomputed once), applies it to the cached embeddings so the
class map, uncertainty, patch risk and this slide's score refresh at once, and says the
cross-validated accuracy on the labels before and after and how many tiles changed class. The
adapted head goes into the case (``Case.set_adapted_head``): the Score dock rescores with it until
it is saved or reverted, and a new analysis of the same bundle is adapted again.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import napari
from napari.qt.threading import thread_worker
from qtpy.QtCore import QObject, Signal

from ..bundle import Bundle
from ..errors import PathomicsError
from ..layers.case import Adaptation
from ..results import TileResults
from ..scoring.engine_cache import shared_engine
from ..scoring.tiles import load_signature, score_tiles, slide_tiles
from ..training.adapt import Adapted, OpenSlide, adapt_slides, changed_tiles, describe_counts, write_adapted_bundle
from . import layer_registry, notices
from .adapted_maps import AdaptedMaps
from .label_tool import LabelTool


class AdaptController(QObject):
    """Adapt / Revert / Save of the case's head; the panel shows what it says."""

    #: (fraction done, what is being done)
    progress = Signal(float, str)
    #: a line for the panel's status
    message = Signal(str)
    #: an adaptation started, ended, was reverted or saved (the panel updates its buttons)
    changed = Signal()

    def __init__(self, napari_viewer: napari.Viewer, tool: LabelTool, maps: AdaptedMaps) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.case = layer_registry.case_of(napari_viewer)
        self.tool = tool
        self.maps = maps
        self.worker: Any = None
        self.cancel_event = threading.Event()

    def fail(self, msg: str, exc: BaseException | None = None) -> None:
        self.message.emit(f"⚠ {msg}")
        if exc is not None:
            notices.report(exc, "adapt failed")
        else:
            notices.show_warning(msg)

    def _open_slides(self) -> list[Any]:
        return [s for s in map(layer_registry.slide_of, layer_registry.slide_layers(self.viewer)) if s is not None]

    def _base_of(self, path: str) -> TileResults | None:
        """The bundle's own results of a slide (not an earlier adaptation's)."""
        current = self.case.results.get(path)
        a = self.case.adaptation
        return a.base_of(path, current) if a is not None else current

    # ------------------------------------------------------------------ adapt
    def adapt(self) -> Any:
        """Refit the head to every label of the open slides (+ added sets); returns the worker."""
        if self.worker is not None:
            notices.show_warning("an adaptation is already running")
            return None
        bundle = self.tool.bundle()
        slide = self.tool.slide()
        if bundle is None or slide is None:
            return None
        items: list[OpenSlide] = []
        for s in self._open_slides():
            p = str(s.path)
            lab = self.tool.labels_of(s) if p in self.case.labels or p == str(slide.path) else None
            base = self._base_of(p)
            if base is not None or (lab is not None and len(lab)):
                items.append(OpenSlide(s, lab, base))
        if self._base_of(str(slide.path)) is None:
            self.fail("run the analysis of this slide first (the class map to correct comes from it)")
            return None
        extra = list(self.tool.extra_sets)
        if not any(it.labels is not None and len(it.labels) for it in items) and not extra:
            self.fail("no labelled tiles: pick a class and click tiles the model got wrong (or import labels)")
            return None
        try:
            engine, _ = shared_engine(bundle, device=self.case.device, batch_size=self.case.batch_size)
        except PathomicsError as exc:
            self.fail(str(exc))
            return None
        cancel = self.cancel_event = threading.Event()
        self.message.emit("adapting…")

        @thread_worker(ignore_errors=True)  # errored is reported below
        def work() -> Iterator[Any]:
            adapted = yield from adapt_slides(engine, items, extra, cancel=cancel)
            return adapted, engine.with_class_head(adapted.result.head)

        worker = work()
        worker.yielded.connect(lambda step: self.progress.emit(*step))
        worker.returned.connect(lambda out: self._adapted(bundle, *out))
        worker.errored.connect(lambda exc: self.fail(str(exc), exc))
        worker.finished.connect(self._finished)
        self.worker = worker
        self.changed.emit()
        worker.start()
        return worker

    def _finished(self) -> None:
        self.worker = None
        self.changed.emit()

    def _adapted(self, bundle: Bundle, out: Adapted, engine: Any) -> None:
        """Put the adapted results in the case (the maps redraw), say what changed, follow with the maps."""
        result, data = out.result, out.data
        slide = self.tool.slide(warn=False)
        shown = self.case.display.shown  # an activation map shown comes back once recomputed
        a = Adaptation(bundle.bundle_id, result, data.sets, engine=engine)
        changed, score = 0, ""
        for s in self._open_slides():
            p = str(s.path)
            if p not in out.refreshed:
                continue
            a.base[p], a.adapted[p] = out.bases[p], out.refreshed[p]
            if slide is not None and p == str(slide.path):
                changed = changed_tiles(a.base[p], a.adapted[p])
                score = self._score_change(bundle, a.base[p], a.adapted[p])
        self.case.adaptation = a
        for s in self._open_slides():
            if str(s.path) in a.adapted:
                self.case.set_results(str(s.path), a.adapted[str(s.path)])
                self.tool.draw(s)
        for note in data.notes:
            notices.show_warning(note)
        a.summary = (
            f"adapted on {result.n} labels ({describe_counts(result.counts)}): accuracy on the labels "
            f"{result.accuracy_before:.2f} (model) → {result.accuracy_after:.2f} (adapted, {result.cv_method}); "
            f"{changed} tiles of this slide changed class{score}; fitted in {result.fit_s:.2f} s"
        )
        self.progress.emit(1.0, a.summary)
        self.case.set_adapted_head(bundle.bundle_id, result.head)  # the Score dock rescores
        self.changed.emit()
        self.maps.adapted(slide)
        self.maps.refresh(whole=False, show=shown)

    def on_analysis_finished(self, path: str) -> None:
        """A new analysis of a slide: a head adapted on this bundle is applied again (the labels are all kept)."""
        bundle = self.tool.bundle()
        a = self.case.adaptation
        if a is not None and bundle is not None and a.bundle_id == bundle.bundle_id:
            self.adapt()

    @staticmethod
    def _score_change(bundle: Bundle, before: TileResults, after: TileResults) -> str:
        if bundle.signature_path is None:
            return ""
        try:
            sig = load_signature(bundle)
            if sig.feature_spec is None or getattr(sig.feature_spec, "nuclear", None):
                return ""
            r0 = score_tiles(sig, [slide_tiles(before)])[1]
            r1 = score_tiles(sig, [slide_tiles(after)])[1]
        except (PathomicsError, ValueError, KeyError):
            return ""
        return f"; this slide's risk {r0.risk:+.3f} ({r0.group}) → {r1.risk:+.3f} ({r1.group})"

    # ------------------------------------------------------------------ revert, save
    def revert(self) -> None:
        """Back to the model's own results on every slide Adapt changed; the labels stay."""
        self.maps.stop()
        a, self.case.adaptation = self.case.adaptation, None
        if a is not None:
            for s in self._open_slides():
                p = str(s.path)
                if p in a.adapted and self.case.results.get(p) is a.adapted[p] and p in a.base:
                    self.case.set_results(p, a.base[p])
                    self.tool.draw(s)
            self.case.set_adapted_head(a.bundle_id, None)
        self.changed.emit()
        self.message.emit("reverted to the model's own class map; the labels are kept")

    def save_model(self, out: str | Path) -> Bundle | None:
        """Write the adapted head as a new bundle and make it the case's bundle (the Analyze dock follows)."""
        bundle = self.tool.bundle()
        a = self.case.adaptation
        if a is None or bundle is None:
            self.fail("adapt first: there is no adapted head to save")
            return None
        out = Path(out)
        if out.resolve() == bundle.path.resolve() or bundle.path.resolve() in out.resolve().parents:
            self.fail(f"{out} is the bundle being adapted; choose another folder")
            return None
        try:
            new = write_adapted_bundle(bundle, a.result, a.label_sets, out, command="napari Correct panel")
        except PathomicsError as exc:
            self.fail(str(exc), exc)
            return None
        self.case.set_bundle(str(new.path))
        self.message.emit(f"saved adapted model {new.name} (id {new.bundle_id}) to {out}; it is now the dock's bundle")
        return new
