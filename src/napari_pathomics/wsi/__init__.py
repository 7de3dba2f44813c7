"""Whole-slide images and what lies on them: slides, QuPath ROIs, their autosave, tissue, tiles.

The lowest stage above the shared ground floor: it imports no model, bundle or GUI code.
"""

from .annotations import Annotation, ReadResult, clip_annotations, parse_geojson, read_geojson, write_geojson
from .slide import SLIDE_EXTENSIONS, Slide, SlideReader, is_slide_path, open_slide
from .tiling import TileGrid, plan_for_bundle, plan_tiles
from .tissue import TissueMask, detect_tissue

__all__ = [
    "SLIDE_EXTENSIONS", "Annotation", "ReadResult", "Slide", "SlideReader", "TileGrid", "TissueMask",
    "clip_annotations", "detect_tissue", "is_slide_path", "open_slide", "parse_geojson", "plan_for_bundle",
    "plan_tiles", "read_geojson", "write_geojson",
]
