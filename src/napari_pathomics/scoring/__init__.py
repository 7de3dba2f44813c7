"""One patient: score_patient and its PatientScore, the one TileResults → features adapter, the
process's engine cache, and (in ``scoring.report``) the case report and its plots."""

from ..lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "shared_engine": "engines",
        "DISCLAIMER": "patient",
        "PatientScore": "patient",
        "SlideSummary": "patient",
        "load_signature": "patient",
        "nuclear_tile_values": "patient",
        "ordinal": "patient",
        "score_patient": "patient",
        "score_tiles": "patient",
        "slide_tiles": "patient",
    },
)
