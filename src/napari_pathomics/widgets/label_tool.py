"""The Correct panel's labelling tool: the pathologist labels the tiles the model got wrong.

Correct mode makes the slide's labels layer active: a click labels the tiles under the brush
with the picked class, a drag every tile it passes (``label_bindings``); keys 1–9 pick a class, 0
the eraser, Ctrl+Z undoes. Labelled tiles are drawn as outlines in their class colour. The labels
(the case's ``labels``, Qt-free ``results.labels.TileLabels``) autosave atomically beside the
slide on every edit and come back when the slide is reopened. Import reads the viewer's own labels
file or any QuPath GeoJSON of classified polygons or points through the editable class-name
mapping; a file made on another slide is refused unless the box says otherwise; any refusal
leaves the labels as they were. Export writes QuPath GeoJSON tile squares.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import napari
import numpy as np
from qtpy.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..bundle import Bundle
from ..errors import LabelsError, PathomicsError
from ..layers import world_to_level0
from ..layers.labels import OUTLINE_K, ROLE_TILE_LABELS, labels_layer
from ..results.labels import (
    DEFAULT_MAPPING,
    SlideIdentity,
    TileLabels,
    labels_path,
    load_saved_labels,
    outline_image,
    read_labels,
)
from ..scoring.engine_cache import load_bundle
from ..training.adapt import describe_counts
from ..units import DEFAULT_TILE_UM
from ..wsi.slide import Slide
from . import label_bindings, layer_registry, notices

ERASE = "erase"


def parse_mapping(text: str) -> dict[str, str]:
    """'QuPath name = CLASS' lines (also → or ->; # starts a comment) as a mapping."""
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


def mapping_text(mapping: dict[str, str]) -> str:
    return "\n".join(f"{k} = {v}" for k, v in mapping.items())


def case_bundle(case: Any) -> Bundle | None:
    """The bundle the case's docks run (a refusal is a notification)."""
    if not case.bundle_path:
        return None
    try:
        return load_bundle(case.bundle_path)
    except PathomicsError as exc:
        notices.report(exc, "bundle refused")
        return None


class LabelTool(QWidget):
    """Mode, brush, class palette, undo, import/export: the tile labels of the viewer's case."""

    def __init__(self, napari_viewer: napari.Viewer, say: Callable[[str], None]) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.case = layer_registry.case_of(napari_viewer)
        self.say = say  # the panel's status line
        self.extra_sets: list[tuple[Path, Path]] = []  # (slide, labels file) added by the user
        self.current = ""  # picked class, or ERASE
        self._classes: list[str] = []
        self._colors: list[str] = []

        bl = QVBoxLayout(self)
        bl.setContentsMargins(0, 0, 0, 0)
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
        self.mapping = QPlainTextEdit(mapping_text(DEFAULT_MAPPING))
        self.mapping.setToolTip(
            "QuPath class name = bundle class (empty class: ignore the name); saved with the labels"
        )
        self.mapping.setMaximumHeight(70)
        mapping = QLabel("class mapping for imports (QuPath name = class):")
        mapping.setWordWrap(True)  # the dock is narrow on small screens
        bl.addWidget(mapping)
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
        self.refresh_classes()
        layer_registry.listen(self, self.case.bundle_changed, self.refresh_classes)

    # ------------------------------------------------------------------ classes and palette
    def bundle(self) -> Bundle | None:
        return case_bundle(self.case)

    def fail(self, msg: str) -> None:
        self.say(f"⚠ {msg}")
        notices.show_warning(msg)

    def refresh_classes(self) -> None:
        """Palette buttons from the case's bundle: key, colour swatch, code and full name."""
        b = self.bundle()
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

    def picked(self) -> str | None:
        """The class a click gives a tile (None: the eraser)."""
        return None if self.current == ERASE else self.current

    def key(self, i: int) -> None:
        if i == 0:
            self.select_class(ERASE)
        elif i <= len(self._classes):
            self.select_class(self._classes[i - 1])

    # ------------------------------------------------------------------ labels
    def slide(self, warn: bool = True) -> Slide | None:
        slide = layer_registry.slide_of(layer_registry.active_slide_layer(self.viewer))
        if slide is None and warn:
            notices.show_warning("open a slide first")
        return slide

    def _tile_size(self, slide: Slide) -> float:
        res = self.case.results.get(str(slide.path))
        if res is not None:
            return float(res.tile_size_l0)
        b = self.bundle()
        return (b.tile_um if b is not None else DEFAULT_TILE_UM) / slide.mpp[0]

    def labels_of(self, slide: Slide) -> TileLabels:
        """The slide's labels: from its autosave the first time (notes shown), else new and empty."""
        key = str(slide.path)
        lab = self.case.labels.get(key)
        if lab is None and not self._classes:
            self.refresh_classes()
        if lab is None and not self._classes:
            # without a bundle's classes the saved labels cannot be read: leave the file alone (an empty set
            # kept here would autosave over it) and label nothing until a bundle is usable
            self.fail("no usable bundle: its classes are needed to read and make labels")
            return TileLabels(self._tile_size(slide), SlideIdentity.of(slide))
        if lab is None:
            try:
                lab, notes = load_saved_labels(slide, self._tile_size(slide), self._classes)
            except PathomicsError as exc:
                lab, notes = None, [str(exc)]
            for note in notes:
                notices.show_warning(note)
            if lab is None:
                b = self.bundle()
                lab = TileLabels(
                    self._tile_size(slide),
                    SlideIdentity.of(slide),
                    dict(DEFAULT_MAPPING),
                    tile_um=b.tile_um if b else None,
                    mpp=slide.mpp[0],
                )
            else:
                self.mapping.setPlainText(mapping_text(lab.mapping))
            self.case.labels[key] = lab
            self.draw(slide)
        return lab

    def save(self, slide: Slide) -> Path | None:
        lab = self.case.labels.get(str(slide.path))
        if lab is None:
            return None
        try:
            lab.mapping = parse_mapping(self.mapping.toPlainText())
        except LabelsError as exc:
            notices.report(exc, "class mapping not saved")
        try:
            return lab.save(labels_path(slide.path), dict(zip(self._classes, self._colors)))
        except OSError as exc:
            notices.show_warning(f"labels of {slide.path.name} could not be saved: {exc}")
            return None

    def draw(self, slide: Slide, cells: list[tuple[int, int]] | None = None) -> Any:
        """Create or update the outline layer (only ``cells`` when given)."""
        lab = self.case.labels.get(str(slide.path))
        if lab is None:
            return None
        ly = layer_registry.find_layer(self.viewer, slide, ROLE_TILE_LABELS)
        n_rows, n_cols = lab.lattice_shape(slide.width, slide.height)
        if ly is None:
            ly = layer_registry.add_layer(self.viewer, labels_layer(slide, lab, self._classes, self._colors))
            label_bindings.bind(ly, self)
        elif cells is None or ly.data.shape != (n_rows * OUTLINE_K, n_cols * OUTLINE_K):
            ly.data = labels_layer(slide, lab, self._classes, self._colors)[0]
        else:
            outline_image(lab, n_rows, n_cols, self._classes, OUTLINE_K, cells=cells, out=ly.data)
            ly.refresh()
        self.count.setText(f"{slide.path.name}: {len(lab)} labelled tiles ({describe_counts(lab.counts())})")
        return ly

    def set_mode(self, on: bool) -> None:
        """Correct mode: the labels layer active, clicks and drags label tiles (the camera does not pan)."""
        if self.mode.isChecked() != bool(on):
            self.mode.setChecked(bool(on))  # re-enters through the signal
            return
        slide = self.slide(warn=on)
        if slide is None:
            return
        self.labels_of(slide)
        ly = self.draw(slide)
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
        if str(slide.path) not in self.case.labels:  # no usable bundle (labels_of said so): label nothing
            return 0
        n = lab.set(cells, self.picked())
        if n:
            self.draw(slide, cells)
            self.save(slide)
        return n

    def label_world(self, world_yx: tuple[float, float]) -> int:
        """One click at a world position (what the mouse does in Correct mode)."""
        slide = self.slide()
        return 0 if slide is None else self.label_cells(slide, self.cells_under(slide, world_yx))

    def undo(self) -> None:
        slide = self.slide()
        if slide is None:
            return
        cells = self.labels_of(slide).undo()
        if cells:
            self.draw(slide, cells)
            self.save(slide)

    # ------------------------------------------------------------------ import / export
    def import_labels(self, path: str | Path, force: bool | None = None) -> str:
        """Label tiles from a labels file or QuPath GeoJSON (one undo step); the summary line.

        A file made on another slide is refused unless ``force`` (default: the box);
        any refusal leaves the labels as they were.
        """
        slide = self.slide()
        if slide is None:
            return ""
        lab = self.labels_of(slide)
        if str(slide.path) not in self.case.labels:
            return ""
        force = self.force_other.isChecked() if force is None else bool(force)
        try:
            new, notes = read_labels(
                path,
                lab.tile_size_l0,
                self._classes,
                slide=SlideIdentity.of(slide),
                bounds=(slide.width, slide.height),
                mapping=parse_mapping(self.mapping.toPlainText()),
                force=force,
            )
        except PathomicsError as exc:
            notices.report(exc, "labels not imported")
            self.say(f"⚠ labels not imported: {exc}")
            return ""
        for note in notes:
            notices.show_warning(note)
        cells = [(t.col, t.row) for t in new]
        before = len(lab)
        for cls in sorted({t.cls for t in new}):
            lab.set([(t.col, t.row) for t in new if t.cls == cls], cls)
        lab.merge_steps(len({t.cls for t in new}))
        lab.mapping = {**lab.mapping, **new.mapping}
        self.draw(slide, cells)
        self.save(slide)
        text = (
            f"imported {len(new)} labelled tiles from {Path(path).name} ({describe_counts(new.counts())}); "
            f"{len(lab) - before:+d} labels"
        )
        self.say(text)
        return text

    def export_labels(self, path: str | Path) -> Path | None:
        slide = self.slide()
        if slide is None:
            return None
        return self.labels_of(slide).save(path, dict(zip(self._classes, self._colors)))

    def add_label_set(self, slide_path: str | Path, labels_file: str | Path) -> None:
        """Another slide's labels joined to the next Adapt (its labelled tiles are embedded then)."""
        self.extra_sets.append((Path(slide_path), Path(labels_file)))
        self.say(
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
