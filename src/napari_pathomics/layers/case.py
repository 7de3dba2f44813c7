"""The case on screen, without Qt: its slides, their results, how results are drawn, the tile
labels and a head adapted to them.

The napari docks keep nothing another dock needs: they call the case and listen to its signals,
as napari-animation's Qt widget hands every action to a Qt-free ``Animation``. The signals are
psygnal's (napari's own event library, pure Python): a bound method is held weakly, so a dock that
goes away stops listening. One case per viewer (``case_of``); the case never refers to the viewer.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from psygnal import Signal

from ..wsi.slide import Slide
from .base import LayerTuple
from .results import Display

if TYPE_CHECKING:  # pragma: no cover
    from ..results.labels import TileLabels
    from ..results.tiles import TileResults


@dataclass
class Adaptation:
    """A head adapted to the labels and not saved yet: what it was fitted on, the results it replaced."""

    bundle_id: str
    result: Any  # training.adapt.AdaptResult (its ``head`` is the adapted ClassHead)
    label_sets: list[dict[str, Any]] = field(default_factory=list)
    base: dict[str, TileResults] = field(default_factory=dict)  # slide path -> the bundle's own results
    adapted: dict[str, TileResults] = field(default_factory=dict)  # slide path -> what replaced them
    engine: Any = None  # the docks' inference.Engine carrying the adapted head (its activation maps)
    summary: str = ""  # what the adaptation said

    @property
    def head(self) -> Any:
        return self.result.head

    def base_of(self, path: str, current: TileResults | None) -> TileResults | None:
        """The bundle's own results of a slide whose results are now ``current``."""
        return self.base.get(path) if current is not None and current is self.adapted.get(path) else current


class Case:
    """One viewer's case. Change it through its methods: each says what changed with a signal."""

    #: The slides open in the viewer changed.
    slides_changed = Signal()
    #: A slide's analysis results were replaced (slide path).
    results_changed = Signal(str)
    #: An analysis run of a slide ended with complete results (slide path).
    analysis_finished = Signal(str)
    #: How results are drawn changed (``display``).
    display_changed = Signal()
    #: A slide's tile labels changed (slide path).
    labels_changed = Signal(str)
    #: The docks' bundle, device or batch size changed.
    bundle_changed = Signal()
    #: The unsaved head adapted for a bundle was set or dropped (bundle id).
    adapted_changed = Signal(str)

    def __init__(self) -> None:
        self.slides: dict[str, Slide] = {}
        self.results: dict[str, TileResults] = {}  # slide path -> the analysis the docks work on
        self.shown: dict[str, tuple[TileResults, dict[str, str]]] = {}  # slide path -> drawn last, descriptions
        self.display = Display()
        self.labels: dict[str, TileLabels] = {}
        self.heads: dict[str, Any] = {}  # bundle id -> adapted ClassHead, until saved or reverted
        self.adaptation: Adaptation | None = None
        self.bundle_path = ""
        self.device = "auto"
        self.batch_size = 32
        self.cam_names: tuple[str, ...] = ()  # the activation maps an analysis computes
        self.nuclei_model: str | None = None  # the Nuclei panel's choice (None: the default), also the Score's
        self.pending_layers: list[LayerTuple] = []  # held back until the slide has drawn

    # ------------------------------------------------------------------ slides
    def add_slide(self, slide: Slide) -> None:
        if self.slides.get(str(slide.path)) is not slide:
            self.slides[str(slide.path)] = slide
            self.slides_changed.emit()

    def remove_slide(self, path: str) -> None:
        if self.slides.pop(str(path), None) is not None:
            self.slides_changed.emit()

    def slide(self, path: str | None) -> Slide | None:
        return self.slides.get(str(path)) if path else None

    # ------------------------------------------------------------------ results and display
    def set_results(self, path: str, results: TileResults, notify: bool = True) -> None:
        """The analysis of a slide; ``notify=False`` while a run fills it in (it is drawn at intervals)."""
        self.results[str(path)] = results
        if notify:
            self.results_changed.emit(str(path))

    def update_display(self, **changes: Any) -> None:
        """Change how results are drawn (``Display`` fields); listeners redraw once."""
        for key, value in changes.items():
            if not hasattr(self.display, key):
                raise AttributeError(f"Display has no setting {key!r}")
            setattr(self.display, key, value)
        self.display_changed.emit()

    # ------------------------------------------------------------------ bundle
    def set_bundle(self, path: str, device: str | None = None, batch_size: int | None = None) -> None:
        """The bundle the docks run (and the device and batch size they run it with)."""
        new = (str(path), device or self.device, int(batch_size or self.batch_size))
        if new != (self.bundle_path, self.device, self.batch_size):
            self.bundle_path, self.device, self.batch_size = new
            self.bundle_changed.emit()

    def set_nuclei_model(self, name: str | None) -> None:
        """The nuclei method every dock segments with (the panel's chooser; the CLI's ``--nuclei-model``)."""
        self.nuclei_model = name or None

    # ------------------------------------------------------------------ adapted head
    def set_adapted_head(self, bundle_id: str, head: Any | None) -> None:
        """The head adapted for ``bundle_id`` (None: back to the bundle's own); listeners rescore."""
        if head is None:
            self.heads.pop(bundle_id, None)
        else:
            self.heads[bundle_id] = head
        self.adapted_changed.emit(bundle_id)

    def adapted_head(self, bundle_id: str) -> Any | None:
        return self.heads.get(bundle_id)


#: napari has no per-viewer store for a plugin's state: the case hangs off the viewer here, held weakly.
_CASES: weakref.WeakKeyDictionary[Any, Case] = weakref.WeakKeyDictionary()


def case_of(owner: Any) -> tuple[Case, bool]:
    """The case of ``owner`` (a napari viewer) and whether it was made just now."""
    case = _CASES.get(owner)
    if case is not None:
        return case, False
    case = _CASES[owner] = Case()
    return case, True
