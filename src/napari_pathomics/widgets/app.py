"""Build the viewer for ``pathomics view`` and ``pathomics demo`` (docks, sample, default ROI).

``pathomics view`` draws the window and the slide first (``viewer.open_window``) and builds the
docks (which load the model, signature and plotting code) once the slide is on screen.
"""

from __future__ import annotations

from typing import Any

import napari
import numpy as np
from shapely.geometry import box

from ..resources import SAMPLE_CASE_TYPE, SAMPLE_SLIDE
from ..wsi.annotations import Annotation
from ..wsi.tissue import detect_tissue
from . import layer_registry
from .analyze_widget import AnalyzeWidget
from .roi_widget import RoiTilesWidget, current_rois
from .score_widget import ScoreWidget
from .slide_widget import SlideWidget
from .viewer import open_window
from .window import add_right_docks, bring_into_view

DOCK_NAMES = ("Slide", "ROIs, tissue and tiles", "Analyze", "Score")


def add_docks(viewer: napari.Viewer) -> dict[str, Any]:
    """The four docks on the right, the Slide tab in front and the Score under the tabs; returns the widgets by name."""
    widgets = {
        "Slide": SlideWidget(viewer),
        "ROIs, tissue and tiles": RoiTilesWidget(viewer),
        "Analyze": AnalyzeWidget(viewer),
        "Score": ScoreWidget(viewer),
    }
    add_right_docks(viewer, widgets, front="Slide", below=("Score",))
    return widgets


def default_roi(slide: Any) -> Annotation:
    """A tumour ROI over the central part of the detected tissue (the demo's starting point)."""
    tissue = detect_tissue(slide)
    ys, xs = np.nonzero(tissue.mask)
    if xs.size == 0:
        x0, y0, x1, y1 = 0, 0, slide.width, slide.height
    else:
        d = tissue.downsample
        x0, x1 = np.percentile(xs, [10, 90]) * d
        y0, y1 = np.percentile(ys, [10, 90]) * d
    return Annotation(box(float(x0), float(y0), float(x1), float(y1)), name="demo ROI")


def finish_viewer(viewer: napari.Viewer, demo: bool = False, run: bool = False) -> dict[str, Any]:
    """Add the docks; for the demo, a default ROI and (``run``) the analysis, then the score."""
    docks = add_docks(viewer)
    if demo:
        slide = layer_registry.slide_of(layer_registry.active_slide_layer(viewer))
        if slide is not None and not current_rois(viewer, slide):
            docks["ROIs, tissue and tiles"].add_annotations(slide, [default_roi(slide)])
        docks["Score"].prefill_case_type(SAMPLE_CASE_TYPE, "the demo")  # the sample is skin; the signature is not
        if run:
            worker = docks["Analyze"].run()
            if worker is not None:
                worker.finished.connect(lambda: _score_in_view(docks))
    return docks


def _score_in_view(docks: dict[str, Any]) -> None:
    """The demo's last step: the map's legend in front on the Analyze tab, the score beneath it."""
    bring_into_view(docks["Analyze"].legend)
    docks["Score"].score()  # which shows its result when done


def build_viewer(slides: list[str], demo: bool = False, run: bool = False) -> napari.Viewer:
    """The whole viewer at once (tests, scripts); ``pathomics view`` builds the docks after the first frame."""
    viewer = open_window([str(SAMPLE_SLIDE)] if demo else slides)
    finish_viewer(viewer, demo=demo, run=run)
    return viewer
