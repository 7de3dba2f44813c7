"""What a pathologist sees at 1920 × 1080 and 1366 × 768, read off the real window and canvas.

The demo must end with the tissue map's legend and the score on screen beside a wide canvas; the
map's title and its colour bar must not overlap on the canvas; no dock label may be cut off; the
result layers' names must fit the layer list; File ▸ Open turns the scale bar on; a µm/px set by
the user is marked where the score is shown. Screens are set through the window's own
``screen_size`` (the dock widths follow the screen); everything else is the real viewer.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import tiffslide
from qtpy.QtCore import QRect
from qtpy.QtWidgets import QLabel, QWidget

from napari_pathomics.layers import COLORBAR_KEY
from napari_pathomics.layers.base import cam_role
from napari_pathomics.resources import SAMPLE_SLIDE
from napari_pathomics.results.status import RISK_CAM
from napari_pathomics.widgets import layer_registry, window
from napari_pathomics.widgets.app import finish_viewer
from napari_pathomics.widgets.viewer import open_window
from napari_pathomics.wsi.synthetic import write_slide

pytestmark = [pytest.mark.viewer, pytest.mark.slow]

SCREENS = [(1920, 1080), (1366, 768)]
#: The canvas's share of the window at 1920 × 1080 (the issue's floor), and the least still usable at 1366 × 768.
CANVAS_SHARE = {(1920, 1080): 0.55, (1366, 768): 0.45}


@pytest.fixture
def screen(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, make_napari_viewer: Any):
    """A window of the parametrised screen's size, made through napari's fixture (so it is torn down)."""
    import napari

    size = request.param
    monkeypatch.setattr(window, "screen_size", lambda: size)
    monkeypatch.setattr(napari, "Viewer", lambda **kw: make_napari_viewer(show=True, **kw))
    return size


def _sized(viewer: Any, qtbot: Any, size: tuple[int, int]) -> Any:
    win = viewer.window._qt_window  # no public QMainWindow in napari (the window's size needs it)
    win.showNormal()
    win.resize(*size)
    qtbot.wait(200)
    return win


def _shown_fraction(widget: QWidget) -> float:
    """How much of ``widget`` is on screen (not scrolled away, not behind another tab)."""
    if not widget.isVisible() or widget.width() == 0 or widget.height() == 0:
        return 0.0
    seen = widget.visibleRegion().boundingRect()
    return (seen.width() * seen.height()) / float(widget.width() * widget.height())


def _cut_off_labels(root: QWidget) -> list[str]:
    """Visible one-line plain labels under ``root`` whose text is wider than the label."""
    cut = []
    for label in root.findChildren(QLabel):
        text = label.text()
        if not label.isVisible() or label.wordWrap() or not text or "<" in text or "\n" in text:
            continue
        if label.fontMetrics().horizontalAdvance(text) > label.contentsRect().width() + 1:
            cut.append(text)
    return cut


def _box(diff: np.ndarray) -> QRect | None:
    ys, xs = np.nonzero(diff)
    if ys.size == 0:
        return None
    return QRect(int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1))


def _canvas(viewer: Any) -> np.ndarray:
    return viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)


@pytest.mark.parametrize("screen", SCREENS, indirect=True, ids=["1920x1080", "1366x768"])
def test_the_demo_ends_with_legend_and_score_in_view_and_nothing_overlaps(screen, qtbot) -> None:
    viewer = open_window([str(SAMPLE_SLIDE)])
    win = _sized(viewer, qtbot, screen)
    docks = finish_viewer(viewer, demo=True, run=True)
    analyze, score = docks["Analyze"], docks["Score"]
    qtbot.waitUntil(
        lambda: analyze.worker is None and score.worker is None and score.patient_score is not None, timeout=300_000
    )
    qtbot.wait(300)  # the deferred scroll to the legend and the score

    canvas = viewer.window._qt_viewer.canvas.native  # no public canvas widget in napari
    share = canvas.width() * canvas.height() / float(win.width() * win.height())
    assert share >= CANVAS_SHARE[screen], (share, canvas.size(), win.size())

    assert _shown_fraction(analyze.legend) > 0.9, analyze.legend.visibleRegion().boundingRect()
    assert "%" in analyze.legend.text()  # the class legend with each class's share
    for key in ("risk score", "percentile", "risk group"):
        label = score.out[key]
        assert label.text() != "—" and _shown_fraction(label) > 0.9, (key, label.visibleRegion().boundingRect())

    for name, dock in docks.items():
        assert not _cut_off_labels(dock), (name, _cut_off_labels(dock))
    layer_list = viewer.window._qt_viewer.layers  # no public layer-list widget in napari
    room = layer_list.viewport().width() - 110  # the eye, the thumbnail and the type icon
    for ly in viewer.layers:
        if "pathomics_view" in ly.metadata:
            assert layer_list.fontMetrics().horizontalAdvance(ly.name) <= room, (ly.name, room)

    # the risk activation map: its title (top left) and colour bar (top right) must not overlap
    analyze.case.update_display(shown=cam_role(RISK_CAM))
    qtbot.wait(200)
    ram = next(ly for ly in viewer.layers if ly.visible and ly.metadata.get(COLORBAR_KEY))
    assert ram.colorbar.visible and viewer.text_overlay.visible
    both = _canvas(viewer)
    viewer.text_overlay.visible = False
    no_title = _canvas(viewer)
    viewer.text_overlay.visible = True
    ram.colorbar.visible = False
    no_bar = _canvas(viewer)
    ram.colorbar.visible = True
    title = _box(np.abs(both - no_title).sum(-1) > 60)
    bar = _box(np.abs(both - no_bar).sum(-1) > 60)
    assert title is not None and bar is not None, (title, bar)
    assert not title.adjusted(-4, -4, 4, 4).intersects(bar), (title, bar)
    assert bar.right() < both.shape[1] and title.left() >= 0


@pytest.mark.parametrize("screen", SCREENS, indirect=True, ids=["1920x1080", "1366x768"])
def test_file_open_draws_the_scale_bar(screen, qtbot, tmp_path) -> None:
    viewer = open_window([])
    _sized(viewer, qtbot, screen)
    viewer.scale_bar.visible = False
    slide = tmp_path / "case.svs"
    slide.write_bytes(SAMPLE_SLIDE.read_bytes())
    viewer.open(str(slide), plugin="napari-pathomics")  # what File ▸ Open does with a slide
    qtbot.wait(200)
    assert viewer.scale_bar.visible
    shot = _canvas(viewer)
    h, w = shot.shape[:2]
    corner = shot[int(h * 0.85) :, int(w * 0.7) :]
    assert (corner.sum(-1) > 700).sum() > 50  # the scale bar's white line and its µm label


@pytest.mark.parametrize("screen", SCREENS, indirect=True, ids=["1920x1080", "1366x768"])
def test_a_pixel_size_set_by_the_user_is_marked_where_the_score_shows(screen, qtbot, tmp_path) -> None:
    with tiffslide.TiffSlide(SAMPLE_SLIDE) as ts:
        rgb = np.asarray(ts.read_region((0, 0), 0, ts.dimensions).convert("RGB"))
    path = write_slide(tmp_path / "no-mpp.tif", rgb, mpp=None, fmt="tiff", min_size=256)
    viewer = open_window([str(path)])
    _sized(viewer, qtbot, screen)
    docks = finish_viewer(viewer)
    slide_dock, score = docks["Slide"], docks["Score"]
    slide_dock.mpp_spin.setValue(0.499)
    slide_dock._apply_mpp()
    assert layer_registry.slide_of(layer_registry.active_slide_layer(viewer)).mpp_source == "user"
    worker = score.score()
    assert worker is not None
    qtbot.waitUntil(lambda: score.worker is None and score.patient_score is not None, timeout=300_000)
    qtbot.wait(300)
    assert "µm/px 0.499, set by the user" in score.out["area scored"].text()
    percentile = score.out["percentile"]  # the mark stands beside the figure it moves, on screen
    assert "µm/px 0.499, set by the user" in percentile.text(), percentile.text()
    assert _shown_fraction(score.out["risk score"]) > 0.9  # the result scrolled into view
    assert _shown_fraction(percentile) > 0.9, percentile.visibleRegion().boundingRect()
