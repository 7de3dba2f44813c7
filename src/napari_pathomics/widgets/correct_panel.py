"""The Analyze dock's "Correct" panel: the pathologist labels tiles, the model adapts in seconds.

* **Correct mode** makes the slide's labels layer active: a click labels the tile under the
  cursor with the picked class, a drag brushes every tile it passes (brush width in tiles);
  keys 1–9 pick a class, 0 the eraser, Ctrl+Z undoes the last click or stroke. Labelled tiles are
  drawn as an outline in their class colour over the class map. Labels are a Qt-free
  ``results.labels.TileLabels`` that autosaves atomically beside the slide on every edit and
  comes back when the slide is reopened.
* **Import** reads the viewer's own labels file or any QuPath GeoJSON of classified polygons or
  points through the editable class-name mapping (saved with the labels); **Export** writes the
  labels as QuPath GeoJSON tile squares. A file made on another slide (another sha256) is
  refused unless "Accept labels made on another slide" is ticked; unknown class names are
  refused with the names and the mapping; any refusal leaves the labels as they were.
* **Adapt** (off the UI thread) refits the bundle's head on the frozen embeddings of every
  labelled tile of the open slides (``training.adapt``; tiles whose results lack an embedding
  are recomputed once), applies it to the cached embeddings so the class map, uncertainty, patch
  risk and this slide's score refresh at once, and says the cross-validated accuracy on the
  labels before and after and how many tiles changed class. The Grad-CAM / RAM maps are then
  recomputed with the adapted head for the tiles in view and those panned to (a button does the
  whole slide), and a score on show in the Score dock is redone with the adapted head until it is
  saved or reverted; a new Analyze run of the same bundle is adapted again. **Revert** goes back
  to the model's own maps; the labels stay.
* **Suggest** proposes the next tiles worth labelling (uncertain, spread over the slide and the
  classes) as a points layer; Previous/Next pan the view to each.
* **Save adapted model** writes the adapted head as a new bundle and makes it the dock's bundle.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import napari
import numpy as np
from napari.qt.threading import thread_worker
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QFileDialog,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..bundle import Bundle
from ..colors import hex_to_rgba
from ..errors import LabelsError, PathomicsError
from ..inference.engine import Engine
from ..inference.head import apply_head
from ..inference.subset import cams_missing, cams_run, merge_cams, tiles_in_box
from ..layers import ROLE, SLIDE_PATH, geometry_transform, grid_transform, views, world_to_level0
from ..results import TileResults
from ..results.labels import (
    DEFAULT_MAPPING,
    SlideIdentity,
    TileLabels,
    labels_path,
    load_saved_labels,
    outline_image,
    read_labels,
)
from ..results.status import RISK_CAM
from ..scoring.engines import shared_engine
from ..scoring.patient import load_signature, score_tiles, slide_tiles
from ..training.adapt import (
    AdaptResult,
    LabelledTiles,
    adapt_head,
    base_head,
    changed_tiles,
    collect_labelled,
    describe_counts,
    one_blas_thread,
    suggest_tiles,
    write_adapted_bundle,
)
from ..wsi.slide import Slide, open_slide
from . import session
from .result_layers import display_of, show_results

__all__ = ["CorrectPanel", "ROLE_TILE_LABELS", "ROLE_SUGGESTIONS"]

ROLE_TILE_LABELS, ROLE_SUGGESTIONS = "tile_labels", "label_suggestions"
#: Outline image px per tile side (the ring is one px: an eighth of a tile).
OUTLINE_K = 8
ERASE = "erase"
MAPS_TEXT = "Activation maps for the whole slide"
#: After Adapt, the CAMs of the tiles in view are recomputed at once up to this many tiles (else on request).
AUTO_CAM_TILES = 2000


# ---------------------------------------------------------------------------------------------
# Qt-free layer tuples of this panel
def labels_layer(slide: Slide, labels: TileLabels, classes: list[str], colors: list[str]) -> tuple[Any, dict, str]:
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


def suggestions_layer(slide: Slide, results: TileResults, indices: np.ndarray) -> tuple[Any, dict, str]:
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


def _parse_mapping(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for i, line in enumerate(text.splitlines()):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        for sep in ("=", "→", "->"):
            if sep in line:
                name, cls = line.split(sep, 1)
                break
        else:
            raise LabelsError(f"mapping line {i + 1}: want 'QuPath name = CLASS', got {line!r}")
        out[name.strip()] = cls.strip()
    return out


def _mapping_text(mapping: dict[str, str]) -> str:
    return "\n".join(f"{k} = {v}" for k, v in mapping.items())


class CorrectPanel(QWidget):
    """Label tiles, adapt the head, suggest tiles, save the adapted model (embedded in the Analyze dock).

    ``host`` is the Analyze dock: its ``results`` (slide path → TileResults), ``bundle()``,
    ``device`` and ``batch`` are read, and adapted results are stored back into ``results``.
    """

    def __init__(self, napari_viewer: napari.Viewer, host: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.host = host
        session.install(napari_viewer)
        self.labels: dict[str, TileLabels] = {}  # slide path -> labels
        self.base_results: dict[str, TileResults] = {}  # slide path -> the bundle's own results
        self.adapted_results: dict[str, TileResults] = {}  # slide path -> what Adapt put into host.results
        self.result: AdaptResult | None = None
        self.label_sets: list[dict[str, Any]] = []
        self.extra_sets: list[tuple[Path, Path]] = []  # (slide, labels file) added by the user
        self.suggested: np.ndarray = np.zeros(0, dtype=np.int64)
        self.suggest_pos = -1
        self.worker: Any = None
        self.cam_worker: Any = None
        self.cam_cancel = threading.Event()
        self.cancel_event = threading.Event()
        self.head_engine: Engine | None = None  # the dock's engine with the adapted head (for CAMs)
        self.adapted_for: str | None = None  # bundle id the adapted head belongs to
        self.current = ""  # picked class, or ERASE
        self._classes: list[str] = []
        self._colors: list[str] = []
        self._stroke = 0
        self._last_cell: tuple[int, int] | None = None

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        box = QGroupBox("Correct the tissue map")
        bl = QVBoxLayout(box)
        row = QHBoxLayout()
        self.mode = QCheckBox("Correct mode: click / drag over tiles")
        self.mode.toggled.connect(self.set_mode)
        row.addWidget(self.mode)
        row.addWidget(QLabel("brush"))
        self.brush = QSpinBox()
        self.brush.setRange(1, 9)
        self.brush.setSingleStep(2)
        self.brush.setSuffix(" tiles")
        row.addWidget(self.brush)
        bl.addLayout(row)
        self.palette_box = QWidget()
        self.palette = QGridLayout(self.palette_box)
        self.palette.setContentsMargins(0, 0, 0, 0)
        self.group = QButtonGroup(self)
        self.group.setExclusive(True)
        bl.addWidget(self.palette_box)
        row = QHBoxLayout()
        for text, slot in (
            ("Undo (Ctrl+Z)", self.undo),
            ("Import…", self._import_dialog),
            ("Export…", self._export_dialog),
            ("Add label set…", self._add_set_dialog),
        ):
            b = QPushButton(text)
            b.clicked.connect(slot)
            row.addWidget(b)
        bl.addLayout(row)
        self.mapping = QPlainTextEdit(_mapping_text(DEFAULT_MAPPING))
        self.mapping.setToolTip(
            "QuPath class name = bundle class (empty class: ignore the name); saved with the labels"
        )
        self.mapping.setMaximumHeight(70)
        bl.addWidget(QLabel("class mapping for imports (QuPath name = class):"))
        bl.addWidget(self.mapping)
        self.force_other = QCheckBox("Accept labels made on another slide (another file fingerprint)")
        self.force_other.setToolTip(
            "A labels file records the slide it was made on (sha256); one of another slide "
            "is refused unless this is ticked"
        )
        bl.addWidget(self.force_other)
        self.count = QLabel("")
        self.count.setWordWrap(True)
        bl.addWidget(self.count)
        row = QHBoxLayout()
        self.adapt_btn = QPushButton("Adapt")
        self.adapt_btn.clicked.connect(self.adapt)
        self.save_btn = QPushButton("Save adapted model…")
        self.save_btn.clicked.connect(self._save_dialog)
        self.save_btn.setEnabled(False)
        self.revert_btn = QPushButton("Revert")
        self.revert_btn.setToolTip("back to the model's own class map (the labels stay)")
        self.revert_btn.clicked.connect(self.revert)
        self.revert_btn.setEnabled(False)
        row.addWidget(self.adapt_btn)
        row.addWidget(self.revert_btn)
        row.addWidget(self.save_btn)
        bl.addLayout(row)
        self.maps_btn = QPushButton(MAPS_TEXT)
        self.maps_btn.setToolTip(
            "after Adapt, Grad-CAM / RAM are recomputed with the adapted head for the tiles "
            "in view; this computes them for every tile"
        )
        self.maps_btn.clicked.connect(self._maps_clicked)
        self.maps_btn.setEnabled(False)
        bl.addWidget(self.maps_btn)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        bl.addWidget(self.progress)
        self.status = QLabel("Run the analysis, then label tiles the model got wrong and press Adapt.")
        self.status.setWordWrap(True)
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
        self._summary = ""  # what the last Adapt said
        self._view_timer = QTimer(self)  # the maps follow the view: tiles panned to get theirs
        self._view_timer.setSingleShot(True)
        self._view_timer.setInterval(400)
        self._view_timer.timeout.connect(lambda: self.refresh_maps(whole=False))
        napari_viewer.camera.events.zoom.connect(self._schedule_maps)
        napari_viewer.camera.events.center.connect(self._schedule_maps)
        self.refresh_classes()
        if hasattr(host, "bundle_path"):
            host.bundle_path.editingFinished.connect(self.refresh_classes)

    # ------------------------------------------------------------------ classes and palette
    def _bundle(self) -> Bundle | None:
        return self.host.bundle() if hasattr(self.host, "bundle") else None

    def refresh_classes(self) -> None:
        """Palette buttons from the dock's bundle: key, colour swatch, code and full name."""
        b = self._bundle()
        if b is None:
            return
        classes, colors = b.class_names, b.class_colors
        if classes == self._classes:
            return
        self._classes, self._colors = list(classes), list(colors)
        descriptions = [c.get("description", "") for c in b.manifest["model"]["classes"]]
        while self.palette.count():
            w = self.palette.takeAt(0).widget()
            if w is not None:
                self.group.removeButton(w)  # type: ignore[arg-type]
                w.deleteLater()
        entries = [(ERASE, "#000000", "eraser")] + list(zip(classes, colors, descriptions))
        for i, (name, color, desc) in enumerate(entries):
            key = "0" if name == ERASE else (str(i) if i <= 9 else "")
            btn = QPushButton(f"{key} {name}" + (f" · {desc}" if desc and name != ERASE else ""))
            btn.setCheckable(True)
            btn.setToolTip(f"{name}: {desc} (key {key})" if key else name)
            if name != ERASE:
                btn.setStyleSheet(f"text-align: left; border-left: 12px solid {color}; padding-left: 4px")
            btn.clicked.connect(lambda _=False, n=name: self.select_class(n))
            self.group.addButton(btn)
            self.palette.addWidget(btn, (i + 1) // 2 if name != ERASE else 0, (i + 1) % 2 if name != ERASE else 0)
        self.select_class(classes[0] if self.current not in classes else self.current)

    def select_class(self, name: str) -> None:
        if name != ERASE and name not in self._classes:
            return
        self.current = name
        for btn in self.group.buttons():
            btn.setChecked(btn.text().split(" ")[1] == name)

    def _key(self, i: int) -> None:
        if i == 0:
            self.select_class(ERASE)
        elif i <= len(self._classes):
            self.select_class(self._classes[i - 1])

    # ------------------------------------------------------------------ labels
    def _slide(self, warn: bool = True) -> Slide | None:
        slide = session.slide_of(session.active_slide_layer(self.viewer))
        if slide is None and warn:
            session.show_warning("open a slide first")
        return slide

    def _tile_size(self, slide: Slide) -> float:
        res = self.host.results.get(str(slide.path)) if hasattr(self.host, "results") else None
        if res is not None:
            return float(res.tile_size_l0)
        b = self._bundle()
        return (b.tile_um if b is not None else 112.0) / slide.mpp[0]

    def labels_of(self, slide: Slide) -> TileLabels:
        """The slide's labels: from its autosave the first time (notes shown), else new and empty."""
        key = str(slide.path)
        lab = self.labels.get(key)
        if lab is None and not self._classes:
            self.refresh_classes()
        if lab is None and not self._classes:
            # without a bundle's classes the saved labels cannot be read: leave the file alone (an empty set
            # kept here would autosave over it) and label nothing until a bundle is usable
            self._fail("no usable bundle: its classes are needed to read and make labels")
            return TileLabels(self._tile_size(slide), SlideIdentity.of(slide))
        if lab is None:
            try:
                lab, notes = load_saved_labels(slide, self._tile_size(slide), self._classes)
            except PathomicsError as exc:
                lab, notes = None, [str(exc)]
            for note in notes:
                session.show_warning(note)
            if lab is None:
                lab = TileLabels(
                    self._tile_size(slide),
                    SlideIdentity.of(slide),
                    dict(DEFAULT_MAPPING),
                    tile_um=self._bundle().tile_um if self._bundle() else None,
                    mpp=slide.mpp[0],
                )
            else:
                self.mapping.setPlainText(_mapping_text(lab.mapping))
            self.labels[key] = lab
            self._draw(slide)
        return lab

    def _save(self, slide: Slide) -> Path | None:
        lab = self.labels.get(str(slide.path))
        if lab is None:
            return None
        try:
            lab.mapping = _parse_mapping(self.mapping.toPlainText())
        except LabelsError as exc:
            session.report(exc, "class mapping not saved")
        try:
            return lab.save(labels_path(slide.path), dict(zip(self._classes, self._colors)))
        except OSError as exc:
            session.show_warning(f"labels of {slide.path.name} could not be saved: {exc}")
            return None

    def _layer(self, slide: Slide) -> Any:
        return session.find_layer(self.viewer, slide, ROLE_TILE_LABELS)

    def _draw(self, slide: Slide, cells: list[tuple[int, int]] | None = None) -> Any:
        """Create or update the outline layer (only ``cells`` when given)."""
        lab = self.labels.get(str(slide.path))
        if lab is None:
            return None
        ly = self._layer(slide)
        if ly is None:
            data, kwargs, kind = labels_layer(slide, lab, self._classes, self._colors)
            ly = self.viewer._add_layer_from_data(data, kwargs, kind)[0]
            self._bind(ly)
        elif cells is None or ly.data.shape != (
            lab.lattice_shape(slide.width, slide.height)[0] * OUTLINE_K,
            lab.lattice_shape(slide.width, slide.height)[1] * OUTLINE_K,
        ):
            ly.data = labels_layer(slide, lab, self._classes, self._colors)[0]
        else:
            n_rows, n_cols = lab.lattice_shape(slide.width, slide.height)
            outline_image(lab, n_rows, n_cols, self._classes, OUTLINE_K, cells=cells, out=ly.data)
            ly.refresh()
        self._show_count(slide)
        return ly

    def _show_count(self, slide: Slide) -> None:
        lab = self.labels.get(str(slide.path))
        if lab is not None:
            self.count.setText(f"{slide.path.name}: {len(lab)} labelled tiles ({describe_counts(lab.counts())})")

    def _bind(self, ly: Any) -> None:
        """Keys 1–9 / 0 and Ctrl+Z on the labels layer itself (they beat the layer type's own keys)."""
        for i in range(10):
            ly.bind_key(str(i), lambda _ly, i=i: self._key(i), overwrite=True)
        ly.bind_key("Control-Z", lambda _ly: self.undo(), overwrite=True)
        ly.mouse_drag_callbacks.append(self._on_drag)
        ly.editable = False  # napari's own painting would scribble on the outlines

    def set_mode(self, on: bool) -> None:
        """Correct mode: the labels layer active, clicks and drags label tiles (the camera does not pan)."""
        if self.mode.isChecked() != bool(on):
            self.mode.setChecked(bool(on))  # re-enters through the signal
            return
        slide = self._slide(warn=on)
        if slide is None:
            return
        self.labels_of(slide)
        ly = self._draw(slide)
        if ly is None:
            return
        if on:
            self.viewer.layers.selection.active = ly
        ly.mouse_pan = not on

    def cells_under(self, slide: Slide, world_yx: tuple[float, float]) -> list[tuple[int, int]]:
        """The tiles the brush covers at a world (y, x) µm position."""
        lab = self.labels_of(slide)
        x, y = world_to_level0(slide, np.asarray([world_yx], dtype=np.float64))[0]
        c, r = lab.cell_at(float(x), float(y))
        h = (self.brush.value() - 1) // 2
        n_rows, n_cols = lab.lattice_shape(slide.width, slide.height)
        return [
            (c + dc, r + dr)
            for dr in range(-h, h + 1)
            for dc in range(-h, h + 1)
            if 0 <= c + dc < n_cols and 0 <= r + dr < n_rows
        ]

    def label_cells(self, slide: Slide, cells: list[tuple[int, int]]) -> int:
        """Label ``cells`` with the picked class (or erase them): redraw, autosave; tiles changed."""
        lab = self.labels_of(slide)
        if str(slide.path) not in self.labels:  # no usable bundle (labels_of said so): label nothing
            return 0
        n = lab.set(cells, None if self.current == ERASE else self.current)
        if n:
            self._draw(slide, cells)
            self._save(slide)
        return n

    def label_world(self, world_yx: tuple[float, float]) -> int:
        """One click at a world position (what the mouse does in Correct mode)."""
        slide = self._slide()
        return 0 if slide is None else self.label_cells(slide, self.cells_under(slide, world_yx))

    def _on_drag(self, layer: Any, event: Any) -> Iterator[None]:
        if not self.mode.isChecked() or getattr(event, "button", 1) != 1 or event.modifiers:
            return
        slide = self._slide(warn=False)
        if slide is None or layer.metadata.get(SLIDE_PATH) != str(slide.path):
            return
        layer.mouse_pan = False
        lab = self.labels_of(slide)
        steps = 0
        last = world_to_level0(slide, np.asarray([event.position[-2:]], dtype=np.float64))[0]
        if self.label_cells(slide, self.cells_under(slide, tuple(event.position[-2:]))):
            steps += 1
        yield
        while event.type == "mouse_move":
            here = world_to_level0(slide, np.asarray([event.position[-2:]], dtype=np.float64))[0]
            n = max(1, int(np.ceil(np.hypot(*(here - last)) / (lab.tile_size_l0 / 2))))
            cells: list[tuple[int, int]] = []
            for t in np.linspace(1.0 / n, 1.0, n):  # every tile on the way, however fast the drag
                x, y = last + t * (here - last)
                sy, sx = slide.mpp[1], slide.mpp[0]
                cells.extend(self.cells_under(slide, ((y - 0.5) * sy, (x - 0.5) * sx)))
            if lab.set(list(dict.fromkeys(cells)), None if self.current == ERASE else self.current):
                steps += 1
                self._draw(slide, cells)
            last = here
            yield
        lab.merge_steps(steps)  # one stroke, one Ctrl+Z
        self._save(slide)

    def undo(self) -> None:
        slide = self._slide()
        if slide is None:
            return
        cells = self.labels_of(slide).undo()
        if cells:
            self._draw(slide, cells)
            self._save(slide)

    # ------------------------------------------------------------------ import / export
    def import_labels(self, path: str | Path, force: bool | None = None) -> str:
        """Label tiles from a labels file or QuPath GeoJSON (one undo step); the summary line.

        A file made on another slide is refused unless ``force`` (default: the panel's checkbox);
        any refusal leaves the labels as they were.
        """
        slide = self._slide()
        if slide is None:
            return ""
        lab = self.labels_of(slide)
        if str(slide.path) not in self.labels:
            return ""
        force = self.force_other.isChecked() if force is None else bool(force)
        try:
            mapping = _parse_mapping(self.mapping.toPlainText())
            new, notes = read_labels(
                path,
                lab.tile_size_l0,
                self._classes,
                slide=SlideIdentity.of(slide),
                bounds=(slide.width, slide.height),
                mapping=mapping,
                force=force,
            )
        except PathomicsError as exc:
            session.report(exc, "labels not imported")
            self.status.setText(f"⚠ labels not imported: {exc}")
            return ""
        for note in notes:
            session.show_warning(note)
        cells = [(t.col, t.row) for t in new]
        before = len(lab)
        for cls in sorted({t.cls for t in new}):
            lab.set([(t.col, t.row) for t in new if t.cls == cls], cls)
        lab.merge_steps(len({t.cls for t in new}))
        lab.mapping = {**lab.mapping, **new.mapping}
        self._draw(slide, cells)
        self._save(slide)
        text = (
            f"imported {len(new)} labelled tiles from {Path(path).name} ({describe_counts(new.counts())}); "
            f"{len(lab) - before:+d} labels"
        )
        self.status.setText(text)
        return text

    def export_labels(self, path: str | Path) -> Path | None:
        slide = self._slide()
        if slide is None:
            return None
        return self.labels_of(slide).save(path, dict(zip(self._classes, self._colors)))

    def add_label_set(self, slide_path: str | Path, labels_file: str | Path) -> None:
        """Another slide's labels joined to the next Adapt (its labelled tiles are embedded then)."""
        self.extra_sets.append((Path(slide_path), Path(labels_file)))
        self.status.setText(
            f"label set added: {Path(labels_file).name} on {Path(slide_path).name} "
            f"({len(self.extra_sets)} extra set{'s' if len(self.extra_sets) > 1 else ''})"
        )

    def _import_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Labels or QuPath GeoJSON", "", "GeoJSON (*.geojson *.json)")
        if path:
            self.import_labels(path)

    def _export_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export labels (QuPath GeoJSON)", "", "GeoJSON (*.geojson)")
        if path:
            self.export_labels(path)

    def _add_set_dialog(self) -> None:
        slide, _ = QFileDialog.getOpenFileName(self, "Slide of the label set", "")
        if not slide:
            return
        labels, _ = QFileDialog.getOpenFileName(
            self, "Its labels (QuPath GeoJSON)", str(Path(slide).parent), "GeoJSON (*.geojson *.json)"
        )
        if labels:
            self.add_label_set(slide, labels)

    # ------------------------------------------------------------------ adapt
    def _base_of(self, path: str) -> TileResults | None:
        """The bundle's own results of a slide (not an earlier adaptation's)."""
        res = self.host.results.get(path)
        if res is None:
            return None
        if res is not self.adapted_results.get(path):  # a new Analyze run: that is the base now
            self.base_results[path] = res
            self.adapted_results.pop(path, None)
        return self.base_results.get(path)

    def adapt(self) -> Any:
        """Refit the head to every label of the open slides (+ added sets); returns the worker."""
        if self.worker is not None:
            session.show_warning("an adaptation is already running")
            return None
        bundle = self._bundle()
        slide = self._slide()
        if bundle is None or slide is None:
            return None
        work_items: list[tuple[Slide, TileLabels | None, TileResults | None]] = []
        for s in (session.slide_of(ly) for ly in session.slide_layers(self.viewer)):
            if s is None:
                continue
            p = str(s.path)
            lab = self.labels_of(s) if p in self.labels or p == str(slide.path) else None
            base = self._base_of(p)
            if base is not None or (lab is not None and len(lab)):
                work_items.append((s, lab, base))
        if self._base_of(str(slide.path)) is None:
            self._fail("run the analysis of this slide first (the class map to correct comes from it)")
            return None
        if not any(lab is not None and len(lab) for _, lab, _ in work_items) and not self.extra_sets:
            self._fail("no labelled tiles: pick a class and click tiles the model got wrong (or import labels)")
            return None
        try:
            engine, _ = shared_engine(bundle, device=self.host.device.currentText(), batch_size=self.host.batch.value())
        except PathomicsError as exc:
            self._fail(str(exc))
            return None
        cancel = self.cancel_event = threading.Event()
        extra = list(self.extra_sets)
        self.status.setText("adapting…")

        @thread_worker(ignore_errors=True)  # errored is reported below
        def work() -> Iterator[Any]:
            parts: list[LabelledTiles] = []
            bases: dict[str, TileResults] = {}
            for s, lab, base in work_items:
                if base is not None and base.missing_emb().any():  # cached before embeddings were kept
                    run = engine.run(s, base.grid(s), embeddings=True, cancel=cancel)
                    for upd in run:
                        yield ("progress", upd.fraction, f"{s.path.name}: embeddings {upd.done}/{upd.total} tiles")
                    base = run.results
                if base is not None:
                    bases[str(s.path)] = base
                if lab is not None and len(lab):
                    parts.append(collect_labelled(engine, s, lab, base, cancel=cancel, source="viewer"))
            for slide_file, labels_file in extra:
                with open_slide(slide_file) as s2:
                    lab2, notes = read_labels(
                        labels_file,
                        engine.bundle.tile_um / s2.mpp[0],
                        engine.bundle.class_names,
                        slide=SlideIdentity.of(s2),
                        bounds=(s2.width, s2.height),
                    )
                    part = collect_labelled(engine, s2, lab2, cancel=cancel, source=str(labels_file))
                    part.notes[:0] = notes
                    parts.append(part)
            data = LabelledTiles.join(parts)
            yield ("progress", 0.9, f"fitting on {len(data)} labels…")
            result = adapt_head(data.emb, data.y, base_head(engine), engine.bundle.class_names)
            with one_blas_thread():  # small GEMMs: BLAS's thread pool only fights torch's for the cores
                refreshed = {
                    p: apply_head(
                        b,
                        result.head,
                        engine.weights,
                        engine.risk_head,
                        meta={"adapted": True, "adapted_labels": result.n},
                    )
                    for p, b in bases.items()
                }
            yield ("done", result, data, bases, refreshed, engine.with_class_head(result.head))

        worker = work()
        worker.yielded.connect(self._on_yield)
        worker.errored.connect(lambda exc: self._fail(str(exc), exc))
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self.adapt_btn.setEnabled(False)
        worker.start()
        return worker

    def _fail(self, msg: str, exc: BaseException | None = None) -> None:
        self.status.setText(f"⚠ {msg}")
        if exc is not None:
            session.report(exc, "adapt failed")
        else:
            session.show_warning(msg)

    def _on_finished(self) -> None:
        self.worker = None
        self.adapt_btn.setEnabled(True)

    def _on_yield(self, payload: tuple) -> None:
        if payload[0] == "progress":
            self.progress.setValue(int(100 * payload[1]))
            self.status.setText(payload[2])
            return
        _, result, data, bases, refreshed, head_engine = payload
        self.result, self.label_sets, self.head_engine = result, data.sets, head_engine
        slide = self._slide(warn=False)
        bundle = self._bundle()
        shown = display_of(self.viewer).shown  # an activation map shown comes back once recomputed
        changed = 0
        score = ""
        for s in (session.slide_of(ly) for ly in session.slide_layers(self.viewer)):
            if s is None or str(s.path) not in refreshed:
                continue
            p = str(s.path)
            self.base_results[p] = bases[p]
            new = refreshed[p]
            self.adapted_results[p] = new
            self.host.results[p] = new
            self._display(s, new)
            if slide is not None and p == str(slide.path):
                changed = changed_tiles(bases[p], new)
                score = self._score_change(bundle, bases[p], new)
            self._draw(s)
        self.progress.setValue(100)
        self.save_btn.setEnabled(True)
        self.revert_btn.setEnabled(True)
        for note in data.notes:
            session.show_warning(note)
        self._summary = (
            f"adapted on {result.n} labels ({describe_counts(result.counts)}): accuracy on the labels "
            f"{result.accuracy_before:.2f} (model) → {result.accuracy_after:.2f} (adapted, {result.cv_method}); "
            f"{changed} tiles of this slide changed class{score}; fitted in {result.fit_s:.2f} s"
        )
        self.status.setText(self._summary)
        if bundle is not None:
            self.adapted_for = bundle.bundle_id
            session.set_adapted_head(self.viewer, bundle.bundle_id, result.head)  # the Score dock rescores
        self.maps_btn.setEnabled(bool(slide is not None and self._cam_names(str(slide.path))))
        self.refresh_maps(whole=False, show=shown)

    # ------------------------------------------------------------------ activation maps, revert
    def _display(self, slide: Slide, results: TileResults) -> None:
        """Through the Analyze dock when there is one (its map selector and legend follow)."""
        if hasattr(self.host, "show_results"):
            self.host.show_results(slide, results)
        else:
            show_results(self.viewer, slide, results)

    def _cam_names(self, path: str) -> tuple[str, ...]:
        """The CAMs the model's results of a slide had, and those the Analyze dock asks for."""
        base = self.base_results.get(path)
        wanted = list(base.cams) if base is not None else []
        if hasattr(self.host, "cam_names"):
            wanted += [n for n in self.host.cam_names() if n not in wanted]
        return tuple(wanted)

    def refresh_maps(self, whole: bool = False, show: str | None = None) -> Any:
        """Recompute the CAMs with the adapted head: tiles in view (``whole``: every tile); returns the worker."""
        slide = self._slide(warn=False)
        if slide is None or self.head_engine is None or self.cam_worker is not None:
            return None
        path = str(slide.path)
        res = self.adapted_results.get(path)
        names = self._cam_names(path)
        if res is None or not names:
            return None
        box = None if whole else session.visible_box(self.viewer, slide)
        idx = cams_missing(res, names, None if box is None else tiles_in_box(res, box))
        if idx.size == 0:
            return None
        if not whole and idx.size > AUTO_CAM_TILES:
            self.status.setText(
                f"{self._summary}; the activation maps wait: {idx.size} tiles in view need them "
                "(zoom in, or press the button below)"
            )
            return None
        engine = self.head_engine
        cancel = self.cam_cancel = threading.Event()

        @thread_worker(ignore_errors=True)  # errored is reported below
        def work() -> Iterator[Any]:
            run = cams_run(engine, slide, res, names, idx, cancel=cancel)
            for upd in run:
                yield ("progress", upd.fraction, f"activation maps with the adapted head: {upd.done}/{upd.total} tiles")
            yield ("done", run.results)

        def on_yield(payload: tuple) -> None:
            if payload[0] == "progress":
                self.progress.setValue(int(100 * payload[1]))
                self.status.setText(payload[2])
                return
            n = merge_cams(res, payload[1])
            if self.host.results.get(path) is res:  # not replaced by a new run or a revert meanwhile
                self._display(slide, res)
                if (
                    show != display_of(self.viewer).shown
                    and show in dict(views(res))
                    and hasattr(self.host, "show_view")
                ):
                    self.host.show_view(show)
            self.progress.setValue(100)
            said = ", ".join("RAM" if c == RISK_CAM else f"Grad-CAM {c}" for c in names)
            self.status.setText(
                f"{said} recomputed with the adapted head for {n} tiles"
                + ("" if whole else " in view (the button below does the whole slide)")
            )

        def finished() -> None:
            self.cam_worker = None
            self.maps_btn.setText(MAPS_TEXT)

        worker = work()
        worker.yielded.connect(on_yield)
        worker.errored.connect(lambda exc: self._fail(str(exc), exc))
        worker.finished.connect(finished)
        self.cam_worker = worker
        self.maps_btn.setText("Stop the activation maps")
        worker.start()
        return worker

    def _schedule_maps(self, event: Any = None) -> None:
        if self.head_engine is not None:
            self._view_timer.start()

    def _maps_clicked(self) -> None:
        if self.cam_worker is not None:
            self.cam_cancel.set()  # the tiles done so far are kept
        else:
            self.refresh_maps(whole=True)

    def revert(self) -> None:
        """Back to the model's own results on every slide Adapt changed; the labels stay."""
        self.cam_cancel.set()
        self._view_timer.stop()
        for s in (session.slide_of(ly) for ly in session.slide_layers(self.viewer)):
            if s is None:
                continue
            p = str(s.path)
            new = self.adapted_results.pop(p, None)
            if new is not None and self.host.results.get(p) is new and p in self.base_results:
                self.host.results[p] = self.base_results[p]
                self._display(s, self.base_results[p])
                self._draw(s)
        self.result, self.head_engine = None, None
        if self.adapted_for is not None:
            session.set_adapted_head(self.viewer, self.adapted_for, None)
            self.adapted_for = None
        self.save_btn.setEnabled(False)
        self.revert_btn.setEnabled(False)
        self.maps_btn.setEnabled(False)
        self.status.setText("reverted to the model's own class map; the labels are kept")

    @staticmethod
    def _score_change(bundle: Bundle | None, before: TileResults, after: TileResults) -> str:
        if bundle is None or bundle.signature_path is None:
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

    # ------------------------------------------------------------------ save
    def save_model(self, out: str | Path) -> Bundle | None:
        """Write the adapted head as a new bundle and make it the dock's bundle."""
        bundle = self._bundle()
        if self.result is None or bundle is None:
            self._fail("adapt first: there is no adapted head to save")
            return None
        out = Path(out)
        if out.resolve() == bundle.path.resolve() or bundle.path.resolve() in out.resolve().parents:
            self._fail(f"{out} is the bundle being adapted; choose another folder")
            return None
        try:
            new = write_adapted_bundle(bundle, self.result, self.label_sets, out, command="napari Correct panel")
        except PathomicsError as exc:
            self._fail(str(exc), exc)
            return None
        if hasattr(self.host, "bundle_path"):
            self.host.bundle_path.setText(str(new.path))
            if hasattr(self.host, "_refresh_bundle"):
                self.host._refresh_bundle()
        self.status.setText(
            f"saved adapted model {new.name} (id {new.bundle_id}) to {out}; it is now the dock's bundle"
        )
        return new

    def _save_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Folder for the adapted bundle (new or empty)")
        if path:
            self.save_model(path)

    # ------------------------------------------------------------------ suggestions
    def suggest(self, n: int | None = None) -> np.ndarray:
        """Suggested tiles of the active slide as a points layer; the view pans to the first."""
        slide = self._slide()
        if slide is None:
            return np.zeros(0, dtype=np.int64)
        res = self.host.results.get(str(slide.path))
        if res is None:
            self._fail("run the analysis first: suggestions come from its probabilities")
            return np.zeros(0, dtype=np.int64)
        idx = suggest_tiles(res, self.labels_of(slide), int(n or self.n_suggest.value()))
        self.suggested, self.suggest_pos = idx, -1
        data, kwargs, kind = suggestions_layer(slide, res, idx)
        ly = session.find_layer(self.viewer, slide, ROLE_SUGGESTIONS)
        if ly is None:
            self.viewer._add_layer_from_data(data, kwargs, kind)
        else:
            ly.data = data
            ly.features = kwargs["features"]
        self.suggest_info.setText(f"{idx.size} tiles suggested (most uncertain, spread over the slide and classes)")
        if idx.size:
            self.step_suggestion(1)
        return idx

    def step_suggestion(self, step: int) -> int | None:
        """Pan to the next (+1) or previous (−1) suggested tile; its result index."""
        slide = self._slide(warn=False)
        res = self.host.results.get(str(slide.path)) if slide is not None else None
        if slide is None or res is None or self.suggested.size == 0:
            return None
        self.suggest_pos = (self.suggest_pos + step) % self.suggested.size
        i = int(self.suggested[self.suggest_pos])
        s = res.tile_size_l0
        sy, sx = slide.mpp[1], slide.mpp[0]
        x, y = res.origins[i, 0] + s / 2, res.origins[i, 1] + s / 2
        self.viewer.camera.center = ((y - 0.5) * sy, (x - 0.5) * sx)
        tile_um = s * sx
        try:
            width_px = float(self.viewer.window._qt_viewer.canvas.size[0])  # noqa: SLF001 - canvas size in px
        except (AttributeError, TypeError, IndexError):
            width_px = 800.0
        self.viewer.camera.zoom = max(float(self.viewer.camera.zoom), width_px / (6 * tile_um))
        ly = session.find_layer(self.viewer, slide, ROLE_SUGGESTIONS)
        if ly is not None:
            ly.selected_data = {self.suggest_pos}
        d = res.describe_tile(i)
        top = sorted(d.get("probs", {}).items(), key=lambda kv: -kv[1])[:2]
        self.suggest_info.setText(
            f"tile {self.suggest_pos + 1}/{self.suggested.size}: " + ", ".join(f"{k} {v:.2f}" for k, v in top)
        )
        return i
