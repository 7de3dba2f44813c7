"""The one owner of the lattice caches: where an entry lives, what it is keyed on, when it is valid.

Every per-tile cache is one ``.npz`` per slide fingerprint × what computed it × grid key, in a
folder of its own kind:

* ``results``: a bundle's ``TileResults`` (the key: the bundle id, or a digest of it with TTA
  or an in-memory head),
* ``embeddings``: the training embedding pass, keyed by the backbone, same format,
* ``nuclei``: ``NucleiResults``, keyed by a digest of the segmentation parameters.

An entry is used only when its own metadata names the same slide fingerprint, key and grid key
and it holds the grid's tiles; anything else (another format, a torn file, another slide) is
recomputed and overwritten. Writing is ``CacheWriter``'s: a full or read-only cache folder
never stops a run.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ..errors import ResultsError
from ..resources import cache_dir
from ..wsi.tiling import TileGrid
from .lattice import LatticeResults

__all__ = [
    "cache_root",
    "cache_path",
    "entry_path",
    "nuclei_cache_path",
    "digest_key",
    "tagged_key",
    "CacheKey",
    "load_entry",
    "CacheWriter",
]

L = TypeVar("L", bound=LatticeResults)


def cache_root(kind: str = "results") -> Path:
    """A cache folder: ``$PATHOMICS_CACHE_DIR/<kind>`` or the user cache dir's."""
    return cache_dir(kind)


def entry_path(kind: str, slide_hash: str, key: str, grid_key: str, root: str | Path | None = None) -> Path:
    """The ``.npz`` of one slide × key × grid entry of cache ``kind`` (in ``root`` if given)."""
    base = Path(root) if root is not None else cache_root(kind)
    return base / f"{slide_hash[:16]}-{key[:16]}-{grid_key[:16]}.npz"


def cache_path(slide_hash: str, bundle_id: str, grid_key: str, root: str | Path | None = None) -> Path:
    """The ``.npz`` path of one slide × bundle × grid result."""
    return entry_path("results", slide_hash, bundle_id, grid_key, root)


def nuclei_cache_path(slide_hash: str, key: str, grid_key: str, root: str | Path | None = None) -> Path:
    """The ``.npz`` path of one slide × nuclei parameters × grid segmentation."""
    return entry_path("nuclei", slide_hash, key, grid_key, root)


def digest_key(doc: Any) -> str:
    """A cache key for what ``doc`` (plain JSON) describes: the sha256 of its sorted JSON."""
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def tagged_key(key: str, tags: Sequence[str]) -> str:
    """``key`` itself, or with ``tags`` (TTA, an in-memory head) a digest of both.

    A digest, not a suffix: cache file names keep only the first 16 characters of a key.
    """
    if not tags:
        return key
    return hashlib.sha256(f"{key}+{'+'.join(tags)}".encode()).hexdigest()[:32]


@dataclass(frozen=True)
class CacheKey:
    """What an entry must have been computed for: slide fingerprint × key × grid.

    ``fields`` are the metadata fields that may hold the key, the first one present wins (older
    results name only their ``bundle_id``).
    """

    slide_hash: str
    key: str
    grid_key: str
    fields: tuple[str, ...]

    def matches(self, meta: Mapping[str, Any]) -> bool:
        """Whether an entry's metadata names this slide, key and grid."""
        key = next((meta[f] for f in self.fields if f in meta), None)
        return (meta.get("slide_hash"), key, meta.get("grid_key")) == (self.slide_hash, self.key, self.grid_key)


def load_entry(path: Path | None, load: Callable[[Path], L], key: CacheKey, grid: TileGrid) -> L | None:
    """The entry at ``path`` if it is readable and was computed for ``key`` on ``grid``'s tiles, else None."""
    if path is None or not path.is_file():
        return None
    try:
        res = load(path)
    except ResultsError:
        return None  # unreadable cache: recompute (it will be overwritten)
    if (
        key.matches(res.meta)
        and len(res) == len(grid)
        and np.array_equal(res.cols, grid.cols)
        and np.array_equal(res.rows, grid.rows)
    ):
        return res
    return None


class CacheWriter:
    """Writes a run's results to its cache entry; a cache that cannot be written warns once and is dropped.

    A cache folder that is full or read-only does not stop the run: it goes on uncached, and
    ``warning`` (also a RuntimeWarning) says so.
    """

    def __init__(self, path: Path | None, kind: str) -> None:
        self.path = path
        self.kind = kind
        self.warning: str | None = None

    def write(self, results: LatticeResults) -> None:
        if self.path is None:
            return
        try:
            results.save(self.path)
        except OSError as exc:
            self.warning = (
                f"{self.kind} cache {self.path.parent} is not writable ({exc.strerror or exc}); "
                "this run is not cached and will not resume"
            )
            warnings.warn(self.warning, RuntimeWarning, stacklevel=3)
            self.path = None
