"""``pathomics demo`` and ``pathomics view`` draw the slide before anything loads the model (issue 10).

A case must be on screen before the bundle is read, the engine built or the docks made: the
handlers open the window with the slide, and build the docks (which load the model, the
signature and the plots) only after the canvas has drawn a frame. Every bundle load, engine
construction and the docks' construction is recorded with the number of frames drawn so far with
the slide's image layer present; each must come after at least one. ``napari.run`` is replaced by
a loop that waits for the demo's analysis and score to finish, so the real command runs end to end.
"""

from __future__ import annotations

from typing import Any

import napari
import pytest
from napari.layers import Image

pytestmark = [pytest.mark.viewer, pytest.mark.slow]


def _watch(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Record, at every model or bundle load, how many frames had shown the slide, and the viewer's images."""
    from napari_pathomics.bundle import Bundle
    from napari_pathomics.inference.engine import Engine
    from napari_pathomics.widgets import viewer as viewer_mod
    from napari_pathomics.widgets.app import finish_viewer

    state: dict[str, Any] = {"draws": 0, "loads": [], "viewer": None, "docks": None}

    def snapshot(what: str) -> None:
        v = state["viewer"]
        images = [ly for ly in v.layers if isinstance(ly, Image)] if v is not None else []
        state["loads"].append((what, state["draws"], len(images)))

    real_open = viewer_mod.open_window

    def open_window(slides: list[str]) -> napari.Viewer:
        # napari.Viewer() exists before open_window adds the slide: count frames from the start
        real_viewer = napari.Viewer

        def counted(*a: Any, **kw: Any) -> napari.Viewer:
            v = real_viewer(*a, **kw)
            state["viewer"] = v

            def drawn(event: Any = None) -> None:  # frames drawn with the slide on the canvas
                if any(isinstance(ly, Image) for ly in v.layers):
                    state["draws"] += 1

            v.window._qt_viewer.canvas._scene_canvas.events.draw.connect(drawn)
            return v

        monkeypatch.setattr(napari, "Viewer", counted)
        try:
            return real_open(slides)
        finally:
            monkeypatch.setattr(napari, "Viewer", real_viewer)

    real_load = Bundle.load.__func__
    monkeypatch.setattr(
        Bundle, "load", classmethod(lambda cls, *a, **kw: (snapshot("bundle"), real_load(cls, *a, **kw))[1])
    )
    real_init = Engine.__init__

    def init(self: Engine, *a: Any, **kw: Any) -> None:
        snapshot("engine")
        real_init(self, *a, **kw)

    monkeypatch.setattr(Engine, "__init__", init)

    def finish(viewer: napari.Viewer, **kw: Any) -> dict[str, Any]:
        snapshot("docks")
        state["docks"] = finish_viewer(viewer, **kw)
        return state["docks"]

    monkeypatch.setattr(viewer_mod, "open_window", open_window)
    monkeypatch.setattr("napari_pathomics.widgets.app.finish_viewer", finish)
    return state


def test_demo_shows_the_slide_before_it_loads_the_model(qtbot, monkeypatch: pytest.MonkeyPatch) -> None:
    from napari_pathomics.cli import main

    state = _watch(monkeypatch)

    def run_until_scored() -> None:
        qtbot.waitUntil(lambda: state["docks"] is not None, timeout=30_000)
        score = state["docks"]["Score"]
        qtbot.waitUntil(
            lambda: (
                state["docks"]["Analyze"].worker is None and score.worker is None and score.patient_score is not None
            ),
            timeout=300_000,
        )

    monkeypatch.setattr(napari, "run", run_until_scored)
    try:
        assert main(["demo"]) == 0
        loads = state["loads"]
        assert loads[0][0] == "docks", loads  # nothing reads the bundle before the docks are built...
        assert any(w == "engine" for w, _, _ in loads), loads  # ...and the demo did build the model
        for what, draws, images in loads:
            assert draws >= 1 and images == 1, (what, draws, images)  # the slide was drawn first, every time
        assert state["docks"]["Score"].patient_score.score.group in ("high", "low")
        score = state["docks"]["Score"]  # the sample is skin, the bundled signature colorectal: say so
        assert not score.mismatch.isHidden() and "colorectal" in score.mismatch.text(), score.mismatch.text()
    finally:
        if state["viewer"] is not None:
            state["viewer"].close()


def test_view_draws_the_slide_before_building_the_docks(qtbot, monkeypatch, tmp_path) -> None:
    from _slides import small_slide
    from napari_pathomics.cli import main

    state = _watch(monkeypatch)
    slide = small_slide(tmp_path / "case.svs")
    monkeypatch.setattr(napari, "run", lambda: qtbot.waitUntil(lambda: state["docks"] is not None, timeout=30_000))
    try:
        assert main(["view", str(slide)]) == 0
        what, draws, images = state["loads"][0]
        assert what == "docks" and draws >= 1 and images == 1, state["loads"]
    finally:
        if state["viewer"] is not None:
            state["viewer"].close()
