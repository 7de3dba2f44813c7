"""The window a case opens in: sized to the screen, the slide canvas wide, a µm scale bar on.

Docks sit in scroll areas of a bounded width, so tall panels (the Score plots) scroll instead of
widening the dock and squeezing the slide canvas.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import napari
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import QApplication, QScrollArea, QWidget

#: Right-hand docks take this share of the screen's width, within these bounds (px).
DOCK_SHARE, DOCK_MIN_PX, DOCK_MAX_PX = 0.2, 330, 400
#: napari's layer controls and list (left) are kept to this width (px).
LEFT_DOCK_PX = 300
#: When the window manager cannot maximise (e.g. a bare X server), the window takes this share of the screen.
SCREEN_SHARE = 0.95


def screen_size() -> tuple[int, int]:
    screen = QApplication.primaryScreen()
    if screen is None:
        return 1920, 1080
    geo = screen.availableGeometry()
    return geo.width(), geo.height()


def dock_width(screen_width: int) -> int:
    return int(min(DOCK_MAX_PX, max(DOCK_MIN_PX, DOCK_SHARE * screen_width)))


def fit_to_screen(viewer: napari.Viewer) -> None:
    """Open the window maximised; sized to most of the screen where maximising is not possible."""
    win = viewer.window._qt_window  # no public QMainWindow in napari (maximising needs it)
    w, h = screen_size()
    win.resize(int(w * SCREEN_SHARE), int(h * SCREEN_SHARE))
    win.move(int(w * (1 - SCREEN_SHARE) / 2), int(h * (1 - SCREEN_SHARE) / 2))
    win.showMaximized()
    qt_viewer = viewer.window._qt_viewer  # no public access to napari's own layer docks
    for dock in (getattr(qt_viewer, "dockLayerControls", None), getattr(qt_viewer, "dockLayerList", None)):
        if dock is not None:
            dock.setMaximumWidth(LEFT_DOCK_PX)


def show_scale_bar(viewer: napari.Viewer) -> None:
    """napari's scale bar, reading the layers' µm units."""
    viewer.scale_bar.visible = True
    viewer.scale_bar.box = True
    viewer.scale_bar.colored = False


def scrollable(widget: QWidget, width: int) -> QScrollArea:
    """``widget`` in a vertical scroll area at most ``width`` px wide."""
    area = QScrollArea()
    area.setWidget(widget)
    area.setWidgetResizable(True)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    area.setFrameShape(QScrollArea.Shape.NoFrame)
    area.setMaximumWidth(width)
    widget.setMaximumWidth(width - 14)  # room for the vertical scroll bar
    return area


def add_right_docks(viewer: napari.Viewer, widgets: dict[str, QWidget], front: str) -> dict[str, Any]:
    """Tabify ``widgets`` on the right, each scrollable and of bounded width; ``front`` shown first."""
    width = dock_width(screen_size()[0])
    docks = {}
    for i, (name, widget) in enumerate(widgets.items()):
        docks[name] = viewer.window.add_dock_widget(scrollable(widget, width), name=name, area="right", tabify=i > 0)
        docks[name].setMaximumWidth(width + 8)
    if front in docks:
        docks[front].show()
        docks[front].raise_()
        docks[front].window().resizeDocks([docks[front]], [width], Qt.Orientation.Horizontal)
    return docks


def after_first_frame(viewer: napari.Viewer, callback: Callable[[], None], fallback_ms: int = 500) -> None:
    """Run ``callback`` once the canvas has drawn (the slide is on screen), at the latest after ``fallback_ms``."""
    done = []

    def run() -> None:
        if not done:
            done.append(True)
            callback()

    canvas = getattr(getattr(viewer.window, "_qt_viewer", None), "canvas", None)  # no public draw event in napari
    events = getattr(getattr(canvas, "_scene_canvas", None), "events", None)  # no public draw event in napari
    if events is not None:

        def on_draw(event: Any = None) -> None:
            events.draw.disconnect(on_draw)
            QTimer.singleShot(0, run)  # after this frame has reached the screen

        events.draw.connect(on_draw)
    QTimer.singleShot(fallback_ms, run)
