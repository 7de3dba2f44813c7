"""Per-tile results: TileResults and its file, their lattice base and run, the one patch-risk definition, cache, exports."""

from ..lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "cache_path": "cache",
        "cache_root": "cache",
        "nuclei_cache_path": "cache",
        "LatticeResults": "lattice",
        "LatticeRun": "run",
        "read_csv": "_export",
        "tiles_csv": "_export",
        "tiles_geojson": "_export",
        "patch_risk": "risk",
        "patch_risk_weights": "risk",
        "BACKGROUND": "status",
        "DONE": "status",
        "FAILED": "status",
        "PENDING": "status",
        "STATUS_NAMES": "status",
        "TileResults": "tiles",
    },
)
