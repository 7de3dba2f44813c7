"""Per-tile inference results of one slide × bundle × grid: the arrays and their npz file.

``TileResults`` is what the engine fills progressively and what layers, reports and the CLI
read. It is plain numpy (no torch, no Qt) so a cached result opens instantly without loading a
model. Geometry is level-0 px (x, y), as QuPath GeoJSON; tiles sit on the ``TileGrid`` lattice.

On disk a result is one ``.npz`` (``allow_pickle=False``; metadata embedded as a JSON string so
the file is self-contained) written atomically, plus a human-readable ``.json`` sidecar.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write_text
from ..errors import ResultsError
from ..provenance import strict_json
from ..units import DEFAULT_MPP
from ..wsi.slide import Slide
from ..wsi.tiling import TileGrid, scatter, stitch_tiles
from ._export import tiles_csv, tiles_geojson
from .lattice import LatticeResults
from .status import BACKGROUND, DONE, FAILED, PENDING, STATUS_NAMES

__all__ = ["PENDING", "DONE", "FAILED", "BACKGROUND", "STATUS_NAMES", "TileResults"]

#: Bumped when the on-disk layout changes; older cache files are ignored, never misread.
RESULTS_FORMAT = 1


def _emb_array(arr: np.ndarray) -> np.ndarray:
    """Stored embeddings as read: float16 stays float16 (the results cache), anything else float32."""
    return arr if arr.dtype == np.float16 else arr.astype(np.float32)


# ---------------------------------------------------------------------------------------------
@dataclass
class TileResults(LatticeResults):
    """Per-tile results; arrays are indexed like the ``TileGrid`` they were computed on."""

    KIND = "results"
    FORMAT = RESULTS_FORMAT

    cols: np.ndarray  # (N,) int64 lattice column
    rows: np.ndarray  # (N,) int64 lattice row
    origins: np.ndarray  # (N, 2) int64 level-0 (x, y)
    tile_size_l0: float
    n_cols: int
    n_rows: int
    class_names: list[str]
    class_colors: list[str]
    probs: np.ndarray  # (N, C) float32, NaN where not done
    risk: np.ndarray  # (N,) float32 in [0, 1], NaN where not done
    status: np.ndarray  # (N,) int8, see PENDING/DONE/FAILED/BACKGROUND
    stain_fallback: np.ndarray  # (N,) bool: Macenko could not estimate the stain (tile left as is)
    cams: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (N, k, k) float32, NaN = none
    meta: dict[str, Any] = field(default_factory=dict)  # slide hash, bundle id, grid key, mpp...
    emb: np.ndarray | None = None  # (N, D) float16/float32 backbone embeddings, NaN where none; None = not kept

    # ---- construction ---------------------------------------------------------------------
    @classmethod
    def empty(
        cls, grid: TileGrid, class_names: Iterable[str], class_colors: Iterable[str], meta: dict[str, Any] | None = None
    ) -> TileResults:
        """All tiles pending (what a fresh run starts from)."""
        names, colors = list(class_names), list(class_colors)
        n, c = len(grid), len(names)
        return cls(
            **cls.lattice_fields(grid),
            class_names=names,
            class_colors=colors,
            probs=np.full((n, c), np.nan, dtype=np.float32),
            risk=np.full(n, np.nan, dtype=np.float32),
            stain_fallback=np.zeros(n, dtype=bool),
            meta=dict(meta or {}),
        )

    def grid(self, slide: Slide) -> TileGrid:
        """The TileGrid these results were computed on, rebuilt on ``slide``.

        Same lattice, same tiles, same key: a run on it (the engine, nuclei) reads and writes the
        same cache entries. ResultsError when the results carry another grid's key (another slide).
        """
        m = self.meta
        grid = TileGrid(
            cols=self.cols.copy(),
            rows=self.rows.copy(),
            tile_size_l0=self.tile_size_l0,
            tile_um=float(m.get("tile_um") or self.tile_size_l0 * slide.mpp[0]),
            mpp=float(m.get("mpp") or DEFAULT_MPP),
            slide_width=slide.width,
            slide_height=slide.height,
            coverage=np.ones(len(self), dtype=np.float32),
            params={"from": "results"},
        )
        if m.get("grid_key") and grid.key() != m["grid_key"]:
            raise ResultsError(
                f"these results were computed on another tile grid than {slide.path.name}'s; run the analysis again"
            )
        return grid

    # ---- views ----------------------------------------------------------------------------
    @property
    def pred(self) -> np.ndarray:
        """(N,) int64 argmax class, -1 where the tile is not done."""
        out = np.full(len(self), -1, dtype=np.int64)
        ok = self.status == DONE
        if ok.any():
            out[ok] = np.argmax(self.probs[ok], axis=1)
        return out

    def lattice(self, values: np.ndarray, fill: float = np.nan) -> np.ndarray:
        """One value per tile into an (n_rows, n_cols) image (see ``wsi.tiling.scatter``)."""
        return scatter(self.rows, self.cols, self.n_rows, self.n_cols, values, fill)

    def class_map(self) -> np.ndarray:
        """(n_rows, n_cols) int32 predicted class per lattice cell; -1 = no result there."""
        return scatter(self.rows, self.cols, self.n_rows, self.n_cols, self.pred, fill=-1, dtype=np.int32)

    def risk_map(self) -> np.ndarray:
        """(n_rows, n_cols) float32 patch risk per lattice cell; NaN where no result."""
        r = np.where(self.status == DONE, self.risk, np.nan).astype(np.float32)
        return self.lattice(r).astype(np.float32)

    def cam_size(self, name: str) -> int:
        return int(self.cams[name].shape[1])

    def cam_mosaic(self, name: str) -> np.ndarray:
        """Stitch the per-tile maps of CAM ``name`` into one (n_rows·k, n_cols·k) float32 image.

        Mosaic pixel (r·k + i, c·k + j) covers level-0 px from ``(c·s + j·s/k, r·s + i·s/k)``
        with ``s = tile_size_l0``: one mosaic px = ``s/k`` level-0 px from lattice origin 0.
        NaN where there is no tile or no map. ``layers.grid_transform`` places it.
        """
        return stitch_tiles(self.cams[name], self.rows, self.cols, self.n_rows, self.n_cols)

    def describe_tile(self, i: int) -> dict[str, Any]:
        """One tile's read-out: status, class, risk and probabilities by class name."""
        out = self.tile_readout(i)
        if self.status[i] == DONE:
            out["class"] = self.class_names[int(np.argmax(self.probs[i]))]
            out["risk"] = float(self.risk[i])
            out["probs"] = {n: float(p) for n, p in zip(self.class_names, self.probs[i])}
        return out

    # ---- updates --------------------------------------------------------------------------
    def ensure_cam(self, name: str, k: int) -> np.ndarray:
        """The (N, k, k) array of CAM ``name``, created NaN-filled if absent."""
        arr = self.cams.get(name)
        if arr is None or arr.shape[1] != k:
            arr = np.full((len(self), k, k), np.nan, dtype=np.float32)
            self.cams[name] = arr
        return arr

    def missing_cam(self, name: str) -> np.ndarray:
        """Bool (N,): done tiles that lack a map for CAM ``name``."""
        arr = self.cams.get(name)
        done = self.status == DONE
        if arr is None:
            return done
        return done & np.isnan(arr[:, 0, 0])

    def ensure_emb(self, dim: int, dtype: Any = np.float32) -> np.ndarray:
        """The (N, dim) embedding array, created NaN-filled (as ``dtype``) if absent or of another width.

        An existing array of the right width keeps its dtype: the results cache keeps embeddings
        as float16 (half the size; a head applied to them moves probabilities by ~1e-3).
        """
        if self.emb is None or self.emb.shape != (len(self), dim):
            self.emb = np.full((len(self), dim), np.nan, dtype=dtype)
        return self.emb

    def embeddings_of(self, indices: np.ndarray) -> np.ndarray:
        """(K, D) float32 embeddings of tiles ``indices`` (NaN rows where a tile has none)."""
        idx = np.asarray(indices, dtype=np.int64)
        if self.emb is None:
            return np.full((idx.size, 0), np.nan, dtype=np.float32)
        return self.emb[idx].astype(np.float32)

    def missing_emb(self) -> np.ndarray:
        """Bool (N,): done tiles without an embedding."""
        done = self.status == DONE
        if self.emb is None or self.emb.shape[0] != len(self):
            return done
        return done & np.isnan(self.emb[:, 0]) if self.emb.shape[1] else done

    # ---- persistence ----------------------------------------------------------------------
    def _meta_doc(self) -> dict[str, Any]:
        return {
            **self.lattice_doc(),
            "class_names": self.class_names,
            "class_colors": self.class_colors,
            "cams": sorted(self.cams),
            "counts": self.counts(),
            **{"meta": self.meta},
        }

    def to_npz_bytes(self) -> bytes:
        arrays: dict[str, np.ndarray] = {
            "cols": self.cols,
            "rows": self.rows,
            "origins": self.origins,
            "probs": self.probs,
            "risk": self.risk,
            "status": self.status,
            "stain_fallback": self.stain_fallback,
            "meta_json": self.meta_json(self._meta_doc()),
        }
        for name, arr in self.cams.items():
            arrays[f"cam__{name}"] = arr
        if self.emb is not None:
            arrays["emb"] = self.emb
        return self.npz_bytes(arrays)

    def files(self, name: str = "results.npz") -> dict[str, bytes]:
        """The ``.npz`` and its human-readable ``.json`` sidecar, as bytes (for writing as one set)."""
        sidecar = json.dumps(strict_json(self._meta_doc()), indent=2, allow_nan=False) + "\n"
        return {name: self.to_npz_bytes(), str(Path(name).with_suffix(".json")): sidecar.encode("utf-8")}

    @classmethod
    def load(cls, path: str | Path) -> TileResults:
        """Read a saved result; ResultsError if the file is not one (or of another format)."""
        return cls.read_npz(path, cls._from_npz)

    @classmethod
    def _from_npz(cls, doc: dict[str, Any], z: Any) -> TileResults:
        return cls(
            **cls.lattice_kwargs(doc, z),
            class_names=list(doc["class_names"]),
            class_colors=list(doc["class_colors"]),
            probs=z["probs"].astype(np.float32),
            risk=z["risk"].astype(np.float32),
            stain_fallback=z["stain_fallback"].astype(bool),
            cams={k[5:]: z[k].astype(np.float32) for k in z.files if k.startswith("cam__")},
            emb=_emb_array(z["emb"]) if "emb" in z.files else None,
        )

    def shapes_ok(self) -> bool:
        n = len(self)
        return self.probs.shape == (n, len(self.class_names)) and (
            self.emb is None or (self.emb.ndim == 2 and self.emb.shape[0] == n)
        )

    # ---- export (see ``results._export``)
    def csv_text(self) -> str:
        return tiles_csv(self)

    def to_csv(self, path: str | Path) -> Path:
        return atomic_write_text(path, tiles_csv(self))

    def geojson(self, include: str = "done") -> dict[str, Any]:
        return tiles_geojson(self, include)

    def to_geojson(self, path: str | Path, include: str = "done") -> Path:
        return atomic_write_text(path, json.dumps(tiles_geojson(self, include), allow_nan=False) + "\n")
