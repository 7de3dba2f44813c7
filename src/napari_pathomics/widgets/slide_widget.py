"""The "Slide" dock: the facts of the open slide, its associated images, and a µm/px override."""

from __future__ import annotations

from pathlib import Path

import napari
import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import (
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..errors import PathomicsError
from ..layers import (
    CELL_L0,
    ROLE,
    ROLE_ROIS,
    ROLE_ROIS_IMPORT,
    SLIDE_PATH,
    geometry_transform,
    grid_transform,
    slide_scale,
    slide_units,
)
from ..wsi.slide import SLIDE_EXTENSIONS, Slide
from . import layer_registry, notices


def _pixmap(rgb: np.ndarray, side: int = 160) -> QPixmap:
    rgb = np.ascontiguousarray(rgb[..., :3])
    h, w = rgb.shape[:2]
    img = QImage(rgb.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()
    return QPixmap.fromImage(img).scaled(
        side, side, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation
    )


class SlideWidget(QWidget):
    """Shows what a pathologist checks first about a slide; asks for µm/px when it is missing."""

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        layer_registry.install(napari_viewer)
        layout = QVBoxLayout(self)

        open_btn = QPushButton("Open slide…")
        open_btn.clicked.connect(self._open_dialog)
        layout.addWidget(open_btn)

        box = QGroupBox("Slide")
        self.form = QFormLayout(box)
        self.fields: dict[str, QLabel] = {}
        for key in ("file", "vendor", "level 0", "levels", "µm/px", "objective"):
            lab = QLabel("—")
            lab.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            lab.setWordWrap(True)
            self.fields[key] = lab
            self.form.addRow(key, lab)
        layout.addWidget(box)

        mpp_row = QHBoxLayout()
        self.mpp_spin = QDoubleSpinBox()
        self.mpp_spin.setDecimals(4)
        self.mpp_spin.setRange(0.0, 100.0)  # 0 = nothing entered: never a pre-filled guess
        self.mpp_spin.setSpecialValueText("enter µm/px")
        self.mpp_spin.setSingleStep(0.01)
        self.mpp_spin.setValue(0.0)
        self.mpp_spin.setSuffix(" µm/px")
        self.mpp_btn = QPushButton("Set µm/px")
        self.mpp_btn.clicked.connect(self._apply_mpp)
        mpp_row.addWidget(self.mpp_spin)
        mpp_row.addWidget(self.mpp_btn)
        layout.addLayout(mpp_row)
        self.mpp_note = QLabel("")
        self.mpp_note.setWordWrap(True)
        layout.addWidget(self.mpp_note)

        self.images_box = QGroupBox("Associated images")
        self.images_row = QGridLayout(self.images_box)  # two a row: the dock stays narrow
        layout.addWidget(self.images_box)
        layout.addStretch(1)

        napari_viewer.layers.selection.events.active.connect(self.refresh)
        napari_viewer.layers.events.inserted.connect(self.refresh)
        napari_viewer.layers.events.removed.connect(self.refresh)
        self.refresh()

    # ------------------------------------------------------------------ actions
    def _open_dialog(self) -> None:
        pattern = " ".join(f"*{e}" for e in SLIDE_EXTENSIONS)
        path, _ = QFileDialog.getOpenFileName(self, "Open slide", "", f"Slides ({pattern});;All files (*)")
        if path:
            self.open_path(path)

    def open_path(self, path: str | Path) -> None:
        try:
            layer_registry.add_slide(self.viewer, path)
        except PathomicsError as exc:
            notices.report(exc, "cannot open slide")
        self.refresh()

    def _apply_mpp(self) -> None:
        layer = layer_registry.active_slide_layer(self.viewer)
        slide = layer_registry.slide_of(layer)
        if slide is None:
            notices.show_warning("open a slide first")
            return
        if self.mpp_spin.value() < 0.01:
            notices.show_warning("enter the slide's µm/px first (e.g. 0.25 at 40×, 0.5 at 20×)")
            return
        try:
            slide.set_mpp(float(self.mpp_spin.value()))
        except PathomicsError as exc:
            notices.report(exc)
            return
        notices.withdraw(layer_registry.mpp_notice(slide))
        self.apply_slide_units(slide)
        self.refresh()

    def apply_slide_units(self, slide: Slide) -> None:
        """Re-place every layer of this slide in µm after the pixel size changed."""
        path = str(slide.path)
        for ly in self.viewer.layers:
            meta = ly.metadata
            if layer_registry.slide_of(ly) is slide:
                ly.scale = slide_scale(slide)
                ly.units = slide_units(slide)
            elif meta.get(SLIDE_PATH) == path:
                if meta.get(ROLE) in (ROLE_ROIS, ROLE_ROIS_IMPORT):
                    t = geometry_transform(slide)
                else:
                    cell = meta.get(CELL_L0) or meta.get("pathomics_downsample")
                    if not cell:
                        continue
                    t = grid_transform(slide, float(cell))
                ly.scale, ly.translate, ly.units = t["scale"], t["translate"], t["units"]
        self.viewer.reset_view()

    # ------------------------------------------------------------------ display
    def refresh(self, event: object = None) -> None:
        layer = layer_registry.active_slide_layer(self.viewer)
        slide = layer_registry.slide_of(layer)
        while self.images_row.count():
            item = self.images_row.takeAt(0)
            if item.widget():
                item.widget().deleteLater()
        if slide is None:
            for lab in self.fields.values():
                lab.setText("—")
            self.mpp_note.setText("")
            return
        info = slide.info()
        self.fields["file"].setText(slide.path.name)
        self.fields["file"].setToolTip(str(slide.path))
        self.fields["vendor"].setText(info["vendor"] or "unknown")
        self.fields["level 0"].setText(f"{info['width']} × {info['height']} px")
        levels = [f"{w}×{h} (↓{d:g})" for (w, h), d in zip(info["level_dimensions"], info["level_downsamples"])]
        extra = slide.level_count - slide.stored_level_count
        text = "; ".join(levels) + (f" + {extra} built lazily" if extra > 0 else "")
        self.fields["levels"].setText(text)
        if slide.has_mpp:
            source = "set by the user" if slide.mpp_source == "user" else "from the file"
            self.fields["µm/px"].setText(f"{slide.mpp_x:.4f} × {slide.mpp_y:.4f} ({source})")
            self.mpp_note.setText(
                "The score, its report and JSON record this µm/px as set by the user."
                if slide.mpp_source == "user"
                else ""
            )
            self.mpp_spin.setValue(slide.mpp_x or 0.0)
        else:
            self.fields["µm/px"].setText("unknown")
            self.mpp_spin.setValue(0.0)
            self.mpp_note.setText(
                "⚠ This slide does not record its pixel size. Enter µm/px (e.g. 0.25 at 40×, 0.5 at 20×) and press Set."
            )
        self.fields["objective"].setText(f"{info['objective_power']:g}×" if info["objective_power"] else "unknown")
        for name in slide.associated_image_names:
            try:
                pm = _pixmap(slide.associated_image(name), side=130)
            except PathomicsError:
                continue
            col = QVBoxLayout()
            holder = QWidget()
            img = QLabel()
            img.setPixmap(pm)
            col.addWidget(img)
            col.addWidget(QLabel(name))
            holder.setLayout(col)
            n = self.images_row.count()
            self.images_row.addWidget(holder, n // 2, n % 2)
