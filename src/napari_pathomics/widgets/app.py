"""Build the viewer for ``pathomics view`` and ``pathomics demo`` (docks, sample, default ROI)."""

from __future__ import annotations

from typing import Any

import napari
import numpy as np
from shapely.geometry import box

from ..errors import PathomicsError
from ..resources import SAMPLE_SLIDE
from ..wsi.annotations import Annotation
from ..wsi.tissue import detect_tissue
from . import session
from .analyze_widget import AnalyzeWidget
from .roi_widget import RoiTilesWidget, current_rois
from .score_widget import ScoreWidget
from .slide_widget import SlideWidget


def add_docks(viewer: napari.Viewer) -> dict[str, Any]:
    docks = {"Slide": SlideWidget(viewer), "ROIs, tissue and tiles": RoiTilesWidget(viewer),
             "Analyze": AnalyzeWidget(viewer), "Score": ScoreWidget(viewer)}
    for name, widget in docks.items():
        viewer.window.add_dock_widget(widget, name=name, area="right", tabify=name != "Slide")
    return docks


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


def build_viewer(slides: list[str], demo: bool = False, run: bool = False) -> napari.Viewer | None:
    viewer = napari.Viewer(title="napari-pathomics")
    session.install(viewer)
    docks = add_docks(viewer)
    paths = [str(SAMPLE_SLIDE)] if demo else slides
    for p in paths:
        try:
            session.add_slide(viewer, p)
        except PathomicsError as exc:
            session.report(exc, f"cannot open {p}")
    if demo:
        slide = session.slide_of(session.active_slide_layer(viewer))
        if slide is not None and not current_rois(viewer, slide):
            docks["ROIs, tissue and tiles"].add_annotations(slide, [default_roi(slide)])
        if run:
            worker = docks["Analyze"].run()
            if worker is not None:
                worker.finished.connect(docks["Score"].score)
    return viewer
