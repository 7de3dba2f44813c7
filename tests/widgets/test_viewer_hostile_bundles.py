"""Hostile bundles in the Analyze and Score docks (real viewer): one error notification each, never an exception.

The whole generated corpus (``_hostile_bundles``): bundles the format check refuses when the dock
loads them, encrypted and expanding zips, a corrupt risk head (refused when the engine is built),
NaN weights (refused when the model is built for the run), and in the Score dock signatures whose
values cannot score (NaN Cox coefficients, an empty reference cohort...). Each one must give at least one
one-line error notification naming what is wrong, no "unexpected" crash, and leave the dock
ready; a good bundle still works afterwards. The base carries a signature, so the Score dock gets
as far as the model too.
"""

from __future__ import annotations

import pytest
from napari.utils.notifications import NotificationSeverity, notification_manager

from _hostile_bundles import FOLDER_CASES, SIGNATURE_CASES, ZIP_CASES, make_hostile_corpus
from _slides import small_slide
from napari_pathomics.widgets import layer_registry
from napari_pathomics.widgets.analyze_widget import AnalyzeWidget
from napari_pathomics.widgets.score_widget import ScoreWidget

pytestmark = [pytest.mark.viewer, pytest.mark.slow]

CASES = [*FOLDER_CASES, *ZIP_CASES]


def _errors_since(start: int) -> list[str]:
    return [str(r.message) for r in notification_manager.records[start:] if r.severity == NotificationSeverity.ERROR]


def _assert_one_notification(name: str, words: str, start: int) -> None:
    errors = _errors_since(start)
    assert errors and all("\n" not in e for e in errors), (name, errors)
    assert any(words in e for e in errors), (name, errors)
    assert not any("unexpected" in e for e in errors), (name, errors)  # a BundleError, not a crash


def _wait(qtbot, worker, dock) -> None:
    if worker is not None:  # refused only once the run builds the model: the worker reports it
        with qtbot.waitSignal(worker.finished, timeout=60_000):
            pass
        qtbot.waitUntil(lambda: dock.worker is None, timeout=10_000)


@pytest.fixture
def corpus(tmp_path):
    return make_hostile_corpus(tmp_path / "hostile")


def test_each_hostile_bundle_is_one_notification_in_the_analyze_dock(
    make_napari_viewer, qtbot, tmp_path, corpus
) -> None:
    slide = small_slide(tmp_path / "case.svs", h=512, w=512, mpp=0.5)
    viewer = make_napari_viewer()
    layer_registry.add_slide(viewer, slide)
    w = AnalyzeWidget(viewer)
    for name in CASES:
        path, words = corpus[name]
        start = len(notification_manager.records)
        w.bundle_path.setText(str(path))
        w._refresh_bundle()  # what editing the bundle field does
        _wait(qtbot, w.run(), w)  # run() must not raise
        _assert_one_notification(name, words, start)
        assert w.worker is None and w.run_btn.isEnabled()
    # the dock still works with a good bundle afterwards
    start = len(notification_manager.records)
    w.bundle_path.setText(str(tmp_path / "hostile" / "base"))
    w._refresh_bundle()
    assert "test_resnet" in w.bundle_info.text()
    worker = w.run()
    assert worker is not None
    _wait(qtbot, worker, w)
    assert not _errors_since(start)


def test_each_hostile_bundle_is_one_notification_in_the_score_dock(make_napari_viewer, qtbot, tmp_path, corpus) -> None:
    slide = small_slide(tmp_path / "case.svs", h=512, w=512, mpp=0.5)
    viewer = make_napari_viewer()
    layer_registry.add_slide(viewer, slide)
    w = ScoreWidget(viewer)
    for name in [*CASES, *SIGNATURE_CASES]:  # signatures whose values cannot score too
        path, words = corpus[name]
        start = len(notification_manager.records)
        w.bundle_path.setText(str(path))
        _wait(qtbot, w.score(), w)  # score() must not raise
        _assert_one_notification(name, words, start)
        assert w.worker is None and w.score_btn.isEnabled() and w.patient_score is None
    start = len(notification_manager.records)
    w.bundle_path.setText(str(tmp_path / "hostile" / "base"))
    _wait(qtbot, w.score(), w)
    assert w.patient_score is not None and not _errors_since(start)  # the good base scores after all of them
