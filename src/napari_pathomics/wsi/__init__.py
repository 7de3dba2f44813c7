"""Whole-slide images and what lies on them: slides, QuPath ROIs, their autosave, tissue, tiles.

The lowest stage above the shared ground floor: it imports no model, bundle or GUI code.
"""

from ..lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "Annotation": "annotations",
        "ReadResult": "annotations",
        "clip_annotations": "annotations",
        "parse_geojson": "annotations",
        "read_geojson": "annotations",
        "write_geojson": "annotations",
        "SLIDE_EXTENSIONS": "slide",
        "Slide": "slide",
        "SlideReader": "slide",
        "is_slide_path": "slide",
        "open_slide": "slide",
        "TileGrid": "tiling",
        "plan_for_bundle": "tiling",
        "plan_tiles": "tiling",
        "TissueMask": "tissue",
        "detect_tissue": "tissue",
    },
)
