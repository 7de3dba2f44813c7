"""Where results are cached: one ``.npz`` per slide fingerprint × bundle id × grid key."""

from __future__ import annotations

from pathlib import Path

from ..resources import cache_dir

__all__ = ["cache_root", "cache_path"]


def cache_root() -> Path:
    """Results cache folder: ``$PATHOMICS_CACHE_DIR/results`` or the user cache dir."""
    return cache_dir("results")


def cache_path(slide_hash: str, bundle_id: str, grid_key: str, root: str | Path | None = None) -> Path:
    """The ``.npz`` path of one slide × bundle × grid result."""
    base = Path(root) if root is not None else cache_root()
    return base / f"{slide_hash[:16]}-{bundle_id[:16]}-{grid_key[:16]}.npz"
