"""Per-tile results: TileResults and its file, the one patch-risk definition, cache, exports."""

from .cache import cache_path, cache_root
from .export import read_csv, tiles_csv, tiles_geojson
from .risk import patch_risk, patch_risk_weights
from .status import BACKGROUND, DONE, FAILED, PENDING, STATUS_NAMES
from .tiles import TileResults

__all__ = [
    "BACKGROUND", "DONE", "FAILED", "PENDING", "STATUS_NAMES", "TileResults", "cache_path", "cache_root",
    "patch_risk", "patch_risk_weights", "read_csv", "tiles_csv", "tiles_geojson",
]
