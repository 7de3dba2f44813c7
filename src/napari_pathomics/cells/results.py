"""Nuclei of a slide on the engine's tile lattice: per-tile values, per-nucleus table, one npz file.

``NucleiResults`` is to nuclei what ``results.TileResults`` is to the patch model: indexed by
the same lattice (tile (col, row) is the same tile in both), filled tile by tile, cached by
slide fingerprint × parameters × grid, and read by layers, exports and the signature features.

Per-tile values (``TILE_FEATURES``) are computed from the nuclei whose centroid lies in the
tile: count, density per mm² of *stained tissue* in the tile, mean and median nuclear area,
mean N:C ratio, the fraction of large/atypical nuclei (area above the slide's 90th
percentile) and of lymphocyte-like ones, and the mean haematoxylin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ResultsError
from ..results.lattice import LatticeResults
from ..results.status import BACKGROUND, DONE, FAILED, PENDING
from ..wsi.tiling import TileGrid, scatter
from .features import NucleusTable, classify
from .nuclei import NucleiParams

__all__ = ["NucleiResults", "TILE_FEATURES", "TILE_UNITS", "NUCLEI_FORMAT", "NUCLEAR_MEASURES"]

NUCLEI_FORMAT = 1
#: Per-tile nuclear values, in table order, and their units.
TILE_UNITS: dict[str, str] = {
    "count": "nuclei",
    "density_mm2": "nuclei/mm²",
    "area_mean_um2": "µm²",
    "area_median_um2": "µm²",
    "nc_ratio_mean": "",
    "large_fraction": "",
    "lymphocyte_fraction": "",
    "haematoxylin_mean": "OD",
}
TILE_FEATURES: tuple[str, ...] = tuple(TILE_UNITS)
#: The per-tile values a signature's nuclear family uses by default (count is density's numerator).
NUCLEAR_MEASURES: tuple[str, ...] = (
    "density_mm2",
    "area_mean_um2",
    "nc_ratio_mean",
    "large_fraction",
    "lymphocyte_fraction",
    "haematoxylin_mean",
)


def _group_median(groups: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """(n,) median of ``values`` per group id (NaN for empty groups), by one sort."""
    out = np.full(n, np.nan)
    if groups.size == 0:
        return out
    order = np.lexsort((values, groups))
    g, v = groups[order], values[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    counts = np.diff(np.r_[starts, g.size])
    lo = v[starts + (counts - 1) // 2]
    hi = v[starts + counts // 2]
    out[g[starts]] = (lo + hi) / 2
    return out


@dataclass
class NucleiResults(LatticeResults):
    """Nuclei of one slide × parameters × grid; per-tile arrays are indexed like the grid."""

    KIND = "nuclei"
    FORMAT = NUCLEI_FORMAT
    INCONSISTENT = "inconsistent nuclei arrays"

    cols: np.ndarray
    rows: np.ndarray
    origins: np.ndarray  # (N, 2) int64 level-0 (x, y)
    tile_size_l0: float
    n_cols: int
    n_rows: int
    status: np.ndarray  # (N,) int8 PENDING/DONE/FAILED/BACKGROUND
    tissue_mm2: np.ndarray  # (N,) stained tissue area of each tile
    nuclei: NucleusTable  # level-0 coordinates; ``tile`` = grid index
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def empty(cls, grid: TileGrid, meta: dict[str, Any] | None = None) -> NucleiResults:
        return cls(
            **cls.lattice_fields(grid),
            tissue_mm2=np.zeros(len(grid)),
            nuclei=NucleusTable.empty(),
            meta=dict(meta or {}),
        )

    @property
    def params(self) -> NucleiParams:
        return NucleiParams.from_json(self.meta.get("params") or {})

    # ---- updates --------------------------------------------------------------------------
    def add_tile(self, i: int, table: NucleusTable, tissue_mm2: float) -> None:
        """Record tile ``i``'s nuclei (level-0 coordinates) and tissue area; the tile is DONE."""
        table.tile = np.full(len(table), int(i), dtype=np.int64)
        self._pending_tables.append(table)
        self._pending_count += len(table)
        self.tissue_mm2[i] = tissue_mm2
        self.status[i] = DONE

    def consolidate(self) -> None:
        """Fold tiles added since the last call into the table and refresh the slide-relative flags."""
        if self._pending_tables:
            self.nuclei = NucleusTable.concat([self.nuclei, *self._pending_tables])
            self._pending_tables.clear()
            self._pending_count = 0
        classify(self.nuclei, self.params)

    def __post_init__(self) -> None:
        self._pending_tables: list[NucleusTable] = []
        self._pending_count = 0

    @property
    def n_nuclei(self) -> int:
        """Nuclei found so far, tiles not yet folded into the table included (cheap: no concatenation)."""
        return len(self.nuclei) + self._pending_count

    # ---- per-tile values -------------------------------------------------------------------
    def tile_values(self) -> dict[str, np.ndarray]:
        """Every ``TILE_FEATURES`` value per tile (NaN where the tile is not DONE or has no nuclei)."""
        self.consolidate()
        n = len(self)
        t = self.nuclei
        idx = t.tile
        cnt = np.bincount(idx, minlength=n).astype(np.float64) if len(t) else np.zeros(n)
        done = self.status == DONE

        def mean(v: np.ndarray) -> np.ndarray:
            s = np.bincount(idx, weights=v, minlength=n) if len(t) else np.zeros(n)
            with np.errstate(invalid="ignore", divide="ignore"):
                return np.where(cnt > 0, s / cnt, np.nan)

        with np.errstate(invalid="ignore", divide="ignore"):
            density = np.where(self.tissue_mm2 > 0, cnt / self.tissue_mm2, np.nan)
        out = {
            "count": cnt,
            "density_mm2": density,
            "area_mean_um2": mean(t.area_um2),
            "area_median_um2": _group_median(idx, t.area_um2, n),
            "nc_ratio_mean": mean(t.nc_ratio),
            "large_fraction": mean(t.large.astype(np.float64)),
            "lymphocyte_fraction": mean(t.lymphocyte.astype(np.float64)),
            "haematoxylin_mean": mean(t.mean_haematoxylin),
        }
        for k, v in out.items():  # a tile not done has no values (a done tile without nuclei has count 0)
            v = v.astype(np.float64)
            v[~done] = np.nan
            out[k] = v
        return out

    def lattice(self, name: str) -> np.ndarray:
        """(n_rows, n_cols) float32 map of per-tile value ``name``; NaN where no tile."""
        return scatter(self.rows, self.cols, self.n_rows, self.n_cols, self.tile_values()[name]).astype(np.float32)

    def describe_tile(self, i: int, values: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
        """One tile's nuclear read-out (status, then every per-tile value)."""
        v = values if values is not None else self.tile_values()
        out = self.tile_readout(i)
        if self.status[i] == DONE:
            out.update({k: float(v[k][i]) for k in TILE_FEATURES})
        return out

    def aligned_to(self, cols: np.ndarray, rows: np.ndarray, tile_size_l0: float) -> dict[str, np.ndarray]:
        """Per-tile values for the tiles (cols, rows) of another result on the same lattice.

        Tiles of the other result that this one lacks (or has not done) get NaN. A different
        lattice (another tile size) is a ResultsError: tiles would not be the same tiles.
        """
        if not math.isclose(tile_size_l0, self.tile_size_l0, rel_tol=1e-6):
            raise ResultsError(
                f"nuclei were computed on {self.tile_size_l0:.3f} px tiles, not {tile_size_l0:.3f} px: "
                "not the same lattice"
            )
        vals = self.tile_values()
        key_self = self.rows.astype(np.int64) * (self.n_cols + 1) + self.cols
        key_other = np.asarray(rows, np.int64) * (self.n_cols + 1) + np.asarray(cols, np.int64)
        order = np.argsort(key_self)
        pos = np.searchsorted(key_self[order], key_other)
        pos = np.clip(pos, 0, max(0, key_self.size - 1))
        found = key_self.size > 0
        hit = (key_self[order][pos] == key_other) if found else np.zeros(key_other.size, dtype=bool)
        src = order[pos] if found else pos
        return {k: np.where(hit, v[src] if found else np.nan, np.nan) for k, v in vals.items()}

    def nuclei_in_box(self, x0: float, y0: float, x1: float, y1: float, limit: int | None = None) -> np.ndarray:
        """Indices of nuclei whose centroid lies in the level-0 box (for drawing what is visible)."""
        self.consolidate()
        t = self.nuclei
        hit = np.flatnonzero((t.x >= x0) & (t.x < x1) & (t.y >= y0) & (t.y < y1))
        return hit if limit is None else hit[:limit]

    # ---- persistence ----------------------------------------------------------------------
    def to_npz_bytes(self) -> bytes:
        self.consolidate()
        doc = {**self.lattice_doc(), "meta": self.meta, "counts": self.counts()}
        arrays = {
            "cols": self.cols,
            "rows": self.rows,
            "origins": self.origins,
            "status": self.status,
            "tissue_mm2": self.tissue_mm2,
            **self.nuclei.to_arrays(),
            "meta_json": self.meta_json(doc),
        }
        return self.npz_bytes(arrays)

    @classmethod
    def load(cls, path: str | Path) -> NucleiResults:
        """Read a saved nuclei file; ResultsError if it is not one (or of another format)."""
        return cls.read_npz(path, cls._from_npz)

    @classmethod
    def _from_npz(cls, doc: dict[str, Any], z: Any) -> NucleiResults:
        arrays = {k: z[k] for k in z.files}
        return cls(
            **cls.lattice_kwargs(doc, arrays),
            tissue_mm2=arrays["tissue_mm2"].astype(np.float64),
            nuclei=NucleusTable.from_arrays(arrays),
        )

    def shapes_ok(self) -> bool:
        t, n = self.nuclei, len(self)
        tiles_ok = not len(t) or (t.tile.max() < n and t.tile.min() >= 0)
        return bool(tiles_ok) and t.outline_offsets.shape == (len(t) + 1,)


__all__ += ["PENDING", "DONE", "FAILED", "BACKGROUND"]
