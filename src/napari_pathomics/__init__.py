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

from .lazy import lazy_exports

__version__ = "0.1.0"

#: Public name -> module that defines it (loaded on first use).
_API: dict[str, str] = {
    "Slide": "wsi.slide",
    "open_slide": "wsi.slide",
    "Annotation": "wsi.annotations",
    "read_geojson": "wsi.annotations",
    "write_geojson": "wsi.annotations",
    "TileGrid": "wsi.tiling",
    "plan_tiles": "wsi.tiling",
    "plan_for_bundle": "wsi.tiling",
    "TissueMask": "wsi.tissue",
    "detect_tissue": "wsi.tissue",
    "Bundle": "bundle.manifest",
    "validate_bundle": "bundle.manifest",
    "write_bundle": "bundle.write",
    "Engine": "inference.engine",
    "TileResults": "results.tiles",
    "Signature": "signature.model",
    "SignatureFitter": "signature.fit",
    "FeatureSpec": "signature.features",
    "score_patient": "scoring.patient",
    "PatientScore": "scoring.patient",
    "load_signature": "scoring.tiles",
    "DEFAULT_BUNDLE": "resources",
    "SAMPLE_SLIDE": "resources",
}
__getattr__, __dir__, _api_all = lazy_exports(__name__, _API)
__all__ = ["__version__", *_api_all]
