"""Per-tile inference results of one slide × bundle × grid: the arrays and their npz file.

``TileResults`` is what the engine fills progressively and what layers, reports and the CLI
read. It is plain numpy (no torch, no Qt) so a cached result opens instantly without loading a
model. Geometry is level-0 px (x, y), as QuPath GeoJSON; tiles sit on the ``TileGrid`` lattice.

On disk a result is one ``.npz`` (``allow_pickle=False``; metadata embedded as a JSON string so
the file is self-contained) written atomically, plus a human-readable ``.json`` sidecar.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write_set, atomic_write_text
from ..errors import ResultsError
from ..provenance import json_default, strict_json
from ..units import DEFAULT_MPP
from ..wsi.slide import Slide
from ..wsi.tiling import TileGrid, scatter, stitch_tiles
from .export import tiles_csv, tiles_geojson
from .status import BACKGROUND, DONE, FAILED, PENDING, STATUS_NAMES

__all__ = ["PENDING", "DONE", "FAILED", "BACKGROUND", "STATUS_NAMES", "TileResults"]

#: Bumped when the on-disk layout changes; older cache files are ignored, never misread.
RESULTS_FORMAT = 1


def _emb_array(arr: np.ndarray) -> np.ndarray:
    """Stored embeddings as read: float16 stays float16 (the results cache), anything else float32."""
    return arr if arr.dtype == np.float16 else arr.astype(np.float32)


# ---------------------------------------------------------------------------------------------
@dataclass
class TileResults:
    """Per-tile results; arrays are indexed like the ``TileGrid`` they were computed on."""

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
            cols=np.asarray(grid.cols, dtype=np.int64).copy(),
            rows=np.asarray(grid.rows, dtype=np.int64).copy(),
            origins=grid.origins,
            tile_size_l0=float(grid.tile_size_l0),
            n_cols=grid.n_cols,
            n_rows=grid.n_rows,
            class_names=names,
            class_colors=colors,
            probs=np.full((n, c), np.nan, dtype=np.float32),
            risk=np.full(n, np.nan, dtype=np.float32),
            status=np.zeros(n, dtype=np.int8),
            stain_fallback=np.zeros(n, dtype=bool),
            meta=dict(meta or {}),
        )

    def __len__(self) -> int:
        return int(self.cols.size)

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

    @property
    def n_done(self) -> int:
        return int(np.count_nonzero(self.status != PENDING))

    @property
    def complete(self) -> bool:
        return bool(np.all(self.status != PENDING))

    def counts(self) -> dict[str, int]:
        """Tiles per status name (for progress and run records)."""
        return {name: int(np.count_nonzero(self.status == code)) for code, name in STATUS_NAMES.items()}

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

    def tile_at(self, x: float, y: float) -> int | None:
        """Index of the tile covering level-0 point (x, y), or None (for hover read-outs)."""
        c, r = int(math.floor(x / self.tile_size_l0)), int(math.floor(y / self.tile_size_l0))
        hit = np.flatnonzero((self.cols == c) & (self.rows == r))
        return int(hit[0]) if hit.size else None

    def describe_tile(self, i: int) -> dict[str, Any]:
        """One tile's read-out: status, class, risk and probabilities by class name."""
        st = int(self.status[i])
        out: dict[str, Any] = {
            "index": int(i),
            "x": int(self.origins[i, 0]),
            "y": int(self.origins[i, 1]),
            "status": STATUS_NAMES[st],
        }
        if st == DONE:
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
            "format": RESULTS_FORMAT,
            "tile_size_l0": self.tile_size_l0,
            "n_cols": self.n_cols,
            "n_rows": self.n_rows,
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
            "meta_json": np.array(json.dumps(strict_json(self._meta_doc()), allow_nan=False, default=json_default)),
        }
        for name, arr in self.cams.items():
            arrays[f"cam__{name}"] = arr
        if self.emb is not None:
            arrays["emb"] = self.emb
        buf = io.BytesIO()
        np.savez(buf, **arrays)  # type: ignore[arg-type]  # (numpy's stub reads ** as maybe allow_pickle)
        return buf.getvalue()

    def files(self, name: str = "results.npz") -> dict[str, bytes]:
        """The ``.npz`` and its human-readable ``.json`` sidecar, as bytes (for writing as one set)."""
        sidecar = json.dumps(strict_json(self._meta_doc()), indent=2, allow_nan=False) + "\n"
        return {name: self.to_npz_bytes(), str(Path(name).with_suffix(".json")): sidecar.encode("utf-8")}

    def save(self, path: str | Path) -> Path:
        """Write ``path`` (.npz) and its ``.json`` sidecar as one set (see ``atomic_write_set``)."""
        path = Path(path)
        atomic_write_set(path.parent, self.files(path.name))
        return path

    @classmethod
    def load(cls, path: str | Path) -> TileResults:
        """Read a saved result; ResultsError if the file is not one (or of another format)."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                doc = json.loads(str(z["meta_json"]))
                if doc.get("format") != RESULTS_FORMAT:
                    raise ResultsError(f"{path.name}: results format {doc.get('format')!r}, expected {RESULTS_FORMAT}")
                cams = {k[5:]: z[k].astype(np.float32) for k in z.files if k.startswith("cam__")}
                res = cls(
                    cols=z["cols"].astype(np.int64),
                    rows=z["rows"].astype(np.int64),
                    origins=z["origins"].astype(np.int64),
                    tile_size_l0=float(doc["tile_size_l0"]),
                    n_cols=int(doc["n_cols"]),
                    n_rows=int(doc["n_rows"]),
                    class_names=list(doc["class_names"]),
                    class_colors=list(doc["class_colors"]),
                    probs=z["probs"].astype(np.float32),
                    risk=z["risk"].astype(np.float32),
                    status=z["status"].astype(np.int8),
                    stain_fallback=z["stain_fallback"].astype(bool),
                    cams=cams,
                    meta=dict(doc.get("meta", {})),
                    emb=_emb_array(z["emb"]) if "emb" in z.files else None,
                )
        except ResultsError:
            raise
        except (
            OSError,
            KeyError,
            ValueError,
            TypeError,
            AttributeError,
            EOFError,
            RecursionError,
            zipfile.BadZipFile,
        ) as exc:  # torn/empty files (BadZipFile, EOFError) and odd metadata
            raise ResultsError(f"{path.name}: not a readable results file ({exc})") from None
        n = len(res)
        if (
            res.probs.shape != (n, len(res.class_names))
            or res.status.shape != (n,)
            or res.origins.shape != (n, 2)
            or (res.emb is not None and (res.emb.ndim != 2 or res.emb.shape[0] != n))
        ):
            raise ResultsError(f"{path.name}: inconsistent array shapes")
        return res

    # ---- export (see ``results.export``)
    def csv_text(self) -> str:
        return tiles_csv(self)

    def to_csv(self, path: str | Path) -> Path:
        return atomic_write_text(path, tiles_csv(self))

    def geojson(self, include: str = "done") -> dict[str, Any]:
        return tiles_geojson(self, include)

    def to_geojson(self, path: str | Path, include: str = "done") -> Path:
        return atomic_write_text(path, json.dumps(tiles_geojson(self, include), allow_nan=False) + "\n")
