"""One patient: score_patient and its PatientScore, the one TileResults → features adapter, the
process's engine cache, and (in ``scoring.report``) the case report and its plots."""

from ..lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "shared_engine": "engine_cache",
        "DISCLAIMER": "patient",
        "PatientScore": "patient",
        "SlideSummary": "patient",
        "load_signature": "tiles",
        "nuclear_tile_values": "tiles",
        "nuclei_method": "tiles",
        "nuclei_model_warning": "tiles",
        "ordinal": "patient",
        "score_patient": "patient",
        "score_slide": "patient",
        "score_tiles": "tiles",
        "slide_tiles": "tiles",
        "tile_features": "tiles",
    },
)
