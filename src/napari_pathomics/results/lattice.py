"""What every per-tile result on the slide's tile lattice shares: status bookkeeping and the npz file.

``results.TileResults`` (the patch model) and ``cells.NucleiResults`` (nuclei) are both filled
tile by tile on the same ``TileGrid`` lattice and cached as one ``.npz``. This base holds what
they have in common, so both count, describe and store tiles alike: the lattice arrays (``cols``,
``rows``, ``origins``, ``status``), the status counts, and reading and writing the file (arrays
plus the metadata as one JSON string, ``allow_pickle=False``, written atomically). A subclass
is a dataclass that declares these fields and adds its own arrays.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from ..atomic import atomic_write_set
from ..errors import ResultsError
from ..provenance import json_default, strict_json
from ..wsi.tiling import TileGrid
from .status import DONE, FAILED, PENDING, STATUS_NAMES

__all__ = ["LatticeResults"]

L = TypeVar("L", bound="LatticeResults")

#: What a torn, empty or odd file raises while it is read (all become a ResultsError).
_UNREADABLE = (
    OSError,
    KeyError,
    ValueError,
    TypeError,
    AttributeError,
    EOFError,
    RecursionError,
    zipfile.BadZipFile,
)


class LatticeResults:
    """Per-tile results on a tile lattice: indexed like the ``TileGrid`` they were computed on."""

    #: The word for these results in messages ("results", "nuclei"), and their on-disk format.
    KIND: ClassVar[str] = "results"
    FORMAT: ClassVar[int] = 1
    #: What a file whose arrays do not fit together is called in its error.
    INCONSISTENT: ClassVar[str] = "inconsistent array shapes"

    cols: np.ndarray  # (N,) int64 lattice column
    rows: np.ndarray  # (N,) int64 lattice row
    origins: np.ndarray  # (N, 2) int64 level-0 (x, y)
    tile_size_l0: float
    n_cols: int
    n_rows: int
    status: np.ndarray  # (N,) int8, see PENDING/DONE/FAILED/BACKGROUND
    meta: dict[str, Any]

    @staticmethod
    def lattice_fields(grid: TileGrid) -> dict[str, Any]:
        """The lattice fields of results on ``grid`` with every tile pending (for ``empty``)."""
        return {
            "cols": np.asarray(grid.cols, dtype=np.int64).copy(),
            "rows": np.asarray(grid.rows, dtype=np.int64).copy(),
            "origins": grid.origins,
            "tile_size_l0": float(grid.tile_size_l0),
            "n_cols": grid.n_cols,
            "n_rows": grid.n_rows,
            "status": np.zeros(len(grid), dtype=np.int8),
        }

    def __len__(self) -> int:
        return int(self.cols.size)

    # ---- status ---------------------------------------------------------------------------
    @property
    def n_done(self) -> int:
        """Tiles with a final status (done, failed or background)."""
        return int(np.count_nonzero(self.status != PENDING))

    @property
    def complete(self) -> bool:
        return bool(np.all(self.status != PENDING))

    @property
    def done_mask(self) -> np.ndarray:
        """Bool (N,): tiles with a result."""
        return self.status == DONE

    @property
    def failed_mask(self) -> np.ndarray:
        """Bool (N,): tiles whose region failed to decode."""
        return self.status == FAILED

    def counts(self) -> dict[str, int]:
        """Tiles per status name (for progress and run records)."""
        return {name: int(np.count_nonzero(self.status == code)) for code, name in STATUS_NAMES.items()}

    def mark(self, i: int | np.ndarray, status: int) -> None:
        """Give tile(s) ``i`` a status."""
        self.status[i] = status

    def settled(self) -> np.ndarray:
        """Grid indices with a final status: what a resumed run replays from the cache."""
        return np.flatnonzero(self.status != PENDING)

    def pending(self) -> np.ndarray:
        """Grid indices still to run."""
        return np.flatnonzero(self.status == PENDING)

    # ---- tiles ----------------------------------------------------------------------------
    def tile_at(self, x: float, y: float) -> int | None:
        """Index of the tile covering level-0 point (x, y), or None (for hover read-outs)."""
        c, r = int(math.floor(x / self.tile_size_l0)), int(math.floor(y / self.tile_size_l0))
        hit = np.flatnonzero((self.cols == c) & (self.rows == r))
        return int(hit[0]) if hit.size else None

    def tile_readout(self, i: int) -> dict[str, Any]:
        """Where tile ``i`` is and its status (the start of every hover read-out)."""
        return {
            "index": int(i),
            "x": int(self.origins[i, 0]),
            "y": int(self.origins[i, 1]),
            "status": STATUS_NAMES[int(self.status[i])],
        }

    # ---- the npz file ---------------------------------------------------------------------
    def lattice_doc(self) -> dict[str, Any]:
        """The metadata every file starts with: format and lattice."""
        return {"format": self.FORMAT, "tile_size_l0": self.tile_size_l0, "n_cols": self.n_cols, "n_rows": self.n_rows}

    def lattice_arrays(self) -> dict[str, np.ndarray]:
        return {"cols": self.cols, "rows": self.rows, "origins": self.origins, "status": self.status}

    @staticmethod
    def meta_json(doc: Mapping[str, Any]) -> np.ndarray:
        """``doc`` as the file's ``meta_json`` string (NaN written as null), so the file is self-contained."""
        return np.array(json.dumps(strict_json(dict(doc)), allow_nan=False, default=json_default))

    @staticmethod
    def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, **arrays)  # type: ignore[arg-type]  # (numpy's stub reads ** as maybe allow_pickle)
        return buf.getvalue()

    def to_npz_bytes(self) -> bytes:
        raise NotImplementedError

    def files(self, name: str) -> dict[str, bytes]:
        """The files of a saved result, by name, as bytes (for writing as one set)."""
        return {name: self.to_npz_bytes()}

    def save(self, path: str | Path) -> Path:
        """Write ``path`` (.npz), and any sidecar, as one set (see ``atomic_write_set``)."""
        path = Path(path)
        atomic_write_set(path.parent, self.files(path.name))
        return path

    @classmethod
    def lattice_kwargs(cls, doc: Mapping[str, Any], z: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """The lattice fields read back from a file's arrays and metadata."""
        return {
            "cols": z["cols"].astype(np.int64),
            "rows": z["rows"].astype(np.int64),
            "origins": z["origins"].astype(np.int64),
            "tile_size_l0": float(doc["tile_size_l0"]),
            "n_cols": int(doc["n_cols"]),
            "n_rows": int(doc["n_rows"]),
            "status": z["status"].astype(np.int8),
            "meta": dict(doc.get("meta", {})),
        }

    @classmethod
    def read_npz(cls: type[L], path: str | Path, build: Callable[[dict[str, Any], Any], L]) -> L:
        """Read a saved result with ``build(doc, npz)``; ResultsError if it is not one of this format.

        A torn or empty file (a crash mid-write elsewhere, a full disk) is a ResultsError too, so
        a cache reader recomputes instead of failing.
        """
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                doc = json.loads(str(z["meta_json"]))
                if doc.get("format") != cls.FORMAT:
                    raise ResultsError(f"{path.name}: {cls.KIND} format {doc.get('format')!r}, expected {cls.FORMAT}")
                res = build(doc, z)
        except ResultsError:
            raise
        except _UNREADABLE as exc:
            raise ResultsError(f"{path.name}: not a readable {cls.KIND} file ({exc})") from None
        n = len(res)
        if res.status.shape != (n,) or res.origins.shape != (n, 2) or not res.shapes_ok():
            raise ResultsError(f"{path.name}: {res.INCONSISTENT}")
        return res

    def shapes_ok(self) -> bool:
        """Whether a subclass's own arrays fit the lattice (after loading)."""
        return True
