"""One patient: score_patient and its PatientScore, the one TileResults → features adapter, the
process's engine cache, and (in ``scoring.report``) the case report and its plots."""

from .engines import shared_engine
from .patient import (
           DISCLAIMER,
           PatientScore,
           SlideSummary,
           load_signature,
           nuclear_tile_values,
           ordinal,
           score_patient,
           score_tiles,
           slide_tiles,
)

__all__ = ["DISCLAIMER", "PatientScore", "SlideSummary", "load_signature", "ordinal", "score_patient", "score_tiles",
           "shared_engine", "slide_tiles", "nuclear_tile_values"]
