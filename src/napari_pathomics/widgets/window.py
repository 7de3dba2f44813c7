"""The window a case opens in: sized to the screen, the slide canvas wide, a µm scale bar on.

Docks sit in scroll areas of a bounded width, so tall panels (the Score plots) scroll instead of
widening the dock and squeezing the slide canvas.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import napari
from qtpy.QtCore import QPoint, Qt, QTimer
from qtpy.QtWidgets import QApplication, QDockWidget, QScrollArea, QWidget

#: Right-hand docks take this share of the screen's width, within these bounds (px).
DOCK_SHARE, DOCK_MIN_PX, DOCK_MAX_PX = 0.2, 330, 400
#: Share of the right-hand column's height given to the docks stacked under the tabs (the Score).
BELOW_SHARE = 0.45
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


def add_right_docks(
    viewer: napari.Viewer, widgets: dict[str, QWidget], front: str, below: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Tabify ``widgets`` on the right, each scrollable and of bounded width; ``front`` shown first.

    The docks named in ``below`` get their own group under the tabs, so what they show (the
    score) stays on screen beside whichever tab is in front (the map's legend).
    """
    width = dock_width(screen_size()[0])
    docks: dict[str, Any] = {}
    tabs = [name for name in widgets if name not in below]
    for name in tabs + [name for name in widgets if name in below]:
        tabify = name in tabs[1:] or name in below[1:]
        docks[name] = viewer.window.add_dock_widget(
            scrollable(widgets[name], width), name=name, area="right", tabify=tabify
        )
        docks[name].setMaximumWidth(width + 8)
    if front in docks:
        docks[front].show()
        docks[front].raise_()
        main = docks[front].window()
        main.resizeDocks([docks[front]], [width], Qt.Orientation.Horizontal)
        if below and below[0] in docks:
            height = screen_size()[1]
            main.resizeDocks(
                [docks[front], docks[below[0]]],
                [int(height * (1 - BELOW_SHARE)), int(height * BELOW_SHARE)],
                Qt.Orientation.Vertical,
            )
    return docks


def bring_into_view(widget: QWidget) -> None:
    """Raise the dock holding ``widget`` to the front of its tabs and scroll ``widget`` into sight."""
    parent = widget.parentWidget()
    area = None
    while parent is not None:
        if area is None and isinstance(parent, QScrollArea):
            area = parent
        if isinstance(parent, QDockWidget):
            parent.show()
            parent.raise_()
            break
        parent = parent.parentWidget()
    if area is not None:  # once the layout has taken in what just changed
        QTimer.singleShot(0, lambda: _scroll_to(area, widget))


def _scroll_to(area: QScrollArea, widget: QWidget, margin: int = 8) -> None:
    """All of ``widget`` in ``area``'s view, or its top when it is taller than the view."""
    try:
        content = area.widget()
    except RuntimeError:  # the dock was closed before the layout settled
        return
    if content is None:
        return
    top = widget.mapTo(content, QPoint(0, 0)).y()
    if widget.height() + 2 * margin > area.viewport().height():
        area.verticalScrollBar().setValue(max(0, top - margin))
    else:
        area.ensureWidgetVisible(widget, 0, margin)


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
