"""Hostile bundles in the Analyze dock (real viewer): one error notification each, never an exception.

A few representative bundles of the generated corpus (``_hostile_bundles``): one the format
check refuses when the dock loads it, an encrypted zip, a corrupt risk head (refused when the
engine is built) and NaN weights (refused when the model is built for the run).
"""

from __future__ import annotations

import pytest
from napari.utils.notifications import NotificationSeverity, notification_manager

from _hostile_bundles import make_hostile_corpus
from _slides import small_slide
from napari_pathomics.widgets import session
from napari_pathomics.widgets.analyze_widget import AnalyzeWidget

pytestmark = [pytest.mark.viewer, pytest.mark.slow]

CASES = ["offsets-int", "encrypted-zip", "risk-head-corrupt", "nan-weights", "gradcam-dunder"]


def _errors_since(start: int) -> list[str]:
    return [str(r.message) for r in notification_manager.records[start:] if r.severity == NotificationSeverity.ERROR]


def test_each_hostile_bundle_is_one_notification(make_napari_viewer, qtbot, tmp_path) -> None:
    corpus = make_hostile_corpus(tmp_path / "hostile", only=CASES)
    slide = small_slide(tmp_path / "case.svs", h=512, w=512, mpp=0.5)
    viewer = make_napari_viewer()
    session.add_slide(viewer, slide)
    w = AnalyzeWidget(viewer)
    for name in CASES:
        path, words = corpus[name]
        start = len(notification_manager.records)
        w.bundle_path.setText(str(path))
        w._refresh_bundle()  # what editing the bundle field does
        worker = w.run()  # must not raise
        if worker is not None:  # refused only once the run builds the model: the worker reports it
            with qtbot.waitSignal(worker.finished, timeout=60_000):
                pass
            qtbot.waitUntil(lambda: w.worker is None, timeout=10_000)
        errors = _errors_since(start)
        assert errors and all("\n" not in e for e in errors), (name, errors)
        assert any(words in e for e in errors), (name, errors)
        assert not any("unexpected" in e for e in errors), (name, errors)  # a BundleError, not a crash
        assert w.worker is None and w.run_btn.isEnabled()
    # the dock still works with a good bundle afterwards
    w.bundle_path.setText(str(tmp_path / "hostile" / "base"))
    w._refresh_bundle()
    assert "test_resnet" in w.bundle_info.text()
