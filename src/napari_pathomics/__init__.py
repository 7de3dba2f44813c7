"""napari-pathomics: whole-slide H&E pathomics, a Qt-free core plus napari widgets.

One import line is enough for a script::

    import napari_pathomics as pm

    slide = pm.open_slide("case.svs")
    rois = pm.read_geojson("case.geojson", bounds=slide.dimensions).annotations
    bundle = pm.Bundle.load(pm.DEFAULT_BUNDLE)
    grid = pm.plan_for_bundle(slide, bundle, rois)
    results = pm.Engine(bundle).run_all(slide, grid)
    score = pm.score_patient([slide], bundle, rois=[rois])

The names below load on first use, so ``import napari_pathomics`` stays cheap (no torch, no
napari). Stages: ``wsi``, ``bundle``, ``inference``, ``results``, ``signature``, ``scoring``,
``cohort``, ``training``; see docs/architecture.md.
"""

import importlib
from typing import Any

__version__ = "0.1.0"

#: Public name -> module that defines it.
_API: dict[str, str] = {
    "Slide": "wsi.slide", "open_slide": "wsi.slide",
    "Annotation": "wsi.annotations", "read_geojson": "wsi.annotations", "write_geojson": "wsi.annotations",
    "TileGrid": "wsi.tiling", "plan_tiles": "wsi.tiling", "plan_for_bundle": "wsi.tiling",
    "TissueMask": "wsi.tissue", "detect_tissue": "wsi.tissue",
    "Bundle": "bundle.manifest", "validate_bundle": "bundle.manifest", "write_bundle": "bundle.write",
    "Engine": "inference.engine", "TileResults": "results.tiles",
    "Signature": "signature.model", "SignatureFitter": "signature.fit", "FeatureSpec": "signature.features",
    "score_patient": "scoring.patient", "PatientScore": "scoring.patient", "load_signature": "scoring.patient",
    "DEFAULT_BUNDLE": "resources", "SAMPLE_SLIDE": "resources",
}
#: Modules of the first build's flat layout, kept importable under their old names.
_MOVED: dict[str, str] = {
    "annotations": "wsi.annotations", "slide": "wsi.slide", "tiling": "wsi.tiling", "tissue": "wsi.tissue",
    "roi_store": "wsi.roi_store", "synthetic": "wsi.synthetic", "stain": "inference.stain",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    elif name in _MOVED:
        value = importlib.import_module(f".{_MOVED[name]}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_API, *_MOVED])
