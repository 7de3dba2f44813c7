"""The viewer's case model without Qt or napari: what each change says, and whom it tells."""

from __future__ import annotations

import gc
import subprocess
import sys
import weakref
from pathlib import Path

import numpy as np
import pytest

from napari_pathomics.layers.case import Adaptation, Case, case_of
from napari_pathomics.wsi.slide import open_slide
from napari_pathomics.wsi.synthetic import write_slide


class Listener:
    def __init__(self) -> None:
        self.heard: list[tuple[str, tuple]] = []

    def results(self, path: str) -> None:
        self.heard.append(("results", (path,)))

    def display(self) -> None:
        self.heard.append(("display", ()))

    def bundle(self) -> None:
        self.heard.append(("bundle", ()))

    def head(self, bundle_id: str) -> None:
        self.heard.append(("head", (bundle_id,)))


def _results() -> object:
    """Stands for a TileResults: the case only keeps and hands them on."""
    return object()


def test_changes_are_told_once_and_only_when_something_changed() -> None:
    case, heard = Case(), Listener()
    case.results_changed.connect(heard.results)
    case.display_changed.connect(heard.display)
    case.bundle_changed.connect(heard.bundle)
    case.adapted_changed.connect(heard.head)
    res = _results()
    case.set_results("/s.svs", res, notify=False)  # a run filling in: drawn at intervals
    case.set_results("/s.svs", res)
    case.update_display(shown="risk", smooth=True)
    case.set_bundle("/b", "cpu", 8)
    case.set_bundle("/b", "cpu", 8)  # the same: nothing to tell
    case.set_adapted_head("id1", object())
    case.set_adapted_head("id1", None)
    assert heard.heard == [
        ("results", ("/s.svs",)),
        ("display", ()),
        ("bundle", ()),
        ("head", ("id1",)),
        ("head", ("id1",)),
    ]
    assert case.results["/s.svs"] is res and case.display.shown == "risk" and case.display.smooth
    assert (case.bundle_path, case.device, case.batch_size) == ("/b", "cpu", 8)
    assert case.adapted_head("id1") is None
    with pytest.raises(AttributeError, match="no setting"):
        case.update_display(colour="red")


def test_a_listener_that_went_away_is_not_called() -> None:
    case, heard = Case(), Listener()
    case.results_changed.connect(heard.results)
    del heard
    gc.collect()
    case.set_results("/s.svs", _results())  # would raise if a dead listener were called
    assert len(case.results_changed) == 0


def test_slides_by_path(tmp_path: Path) -> None:
    path = write_slide(tmp_path / "s.tif", np.full((64, 64, 3), 200, np.uint8), mpp=0.5, fmt="tiff")
    case, told = Case(), []
    case.slides_changed.connect(lambda: told.append(1))
    with open_slide(path) as slide:
        case.add_slide(slide)
        case.add_slide(slide)  # already there
        assert case.slide(str(slide.path)) is slide and case.slide(None) is None
        case.remove_slide(str(slide.path))
    assert case.slide(str(path)) is None and told == [1, 1]


def test_an_adaptation_knows_the_base_of_what_it_replaced() -> None:
    base, adapted, rerun = _results(), _results(), _results()
    a = Adaptation("id", result=None, base={"p": base}, adapted={"p": adapted})
    assert a.base_of("p", adapted) is base  # the adapted results: their base
    assert a.base_of("p", rerun) is rerun  # a new analysis is the base now
    assert a.base_of("p", None) is None


def test_one_case_per_owner_held_weakly() -> None:
    class Owner:
        pass

    a, b = Owner(), Owner()
    ca, new = case_of(a)
    assert new and case_of(a) == (ca, False) and case_of(b)[0] is not ca
    gone = weakref.ref(ca)
    del a, ca
    gc.collect()
    assert gone() is None  # the viewer closed: its case goes with it


def test_the_case_imports_without_napari_or_qt() -> None:
    code = (
        "import sys, napari_pathomics.layers.case; "
        "print([m for m in ('napari', 'qtpy', 'PyQt6', 'vispy', 'torch') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
