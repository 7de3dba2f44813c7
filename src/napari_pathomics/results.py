"""Per-tile inference results of one slide × bundle × grid: arrays, patch risk, cache, export.

``TileResults`` is what the engine fills progressively and what layers, reports and the CLI
read. It is plain numpy (no torch, no Qt) so a cached result opens instantly without loading a
model. Geometry is level-0 px (x, y), as QuPath GeoJSON; tiles sit on the ``TileGrid`` lattice.

On disk a result is one ``.npz`` (``allow_pickle=False``; metadata embedded as a JSON string so
the file is self-contained) written atomically, plus a human-readable ``.json`` sidecar.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np

from .atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from .errors import BundleError, ResultsError
from .provenance import json_default, strict_json

if TYPE_CHECKING:  # pragma: no cover
    from .model.bundle import Bundle
    from .tiling import TileGrid

__all__ = [
    "PENDING", "DONE", "FAILED", "BACKGROUND", "STATUS_NAMES",
    "TileResults", "patch_risk_weights", "patch_risk", "cache_root", "cache_path",
    "mosaic_scale_translate", "read_csv",
]

PENDING, DONE, FAILED, BACKGROUND = 0, 1, 2, 3
STATUS_NAMES = {PENDING: "pending", DONE: "done", FAILED: "failed", BACKGROUND: "background"}
#: Bumped when the on-disk layout changes; older cache files are ignored, never misread.
RESULTS_FORMAT = 1


# ---------------------------------------------------------------------------------------------
# patch risk
def patch_risk_weights(bundle: "Bundle") -> np.ndarray:
    """Per-class patch-risk weights (C,): the signature's if the bundle has one, else the model's.

    The signature (``bundle.signature_path``, JSON) may carry ``patch_risk_weights:
    {class_name: weight}``; classes it does not name weigh 0. Without it the bundle's own
    ``risk_weights()`` (1 for its high-risk classes) define the risk.
    """
    names = list(bundle.class_names)
    sig_path = getattr(bundle, "signature_path", None)
    if sig_path is not None and Path(sig_path).is_file():
        try:
            sig = json.loads(Path(sig_path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BundleError(f"{Path(sig_path).name}: unreadable signature JSON ({exc})") from None
        spec = sig.get("patch_risk_weights") if isinstance(sig, dict) else None
        if isinstance(spec, dict) and spec:
            unknown = sorted(set(spec) - set(names))
            if unknown:
                raise BundleError(f"{Path(sig_path).name}: patch_risk_weights names unknown classes {unknown}")
            w = np.array([float(spec.get(n, 0.0)) for n in names], dtype=np.float64)
            if not np.all(np.isfinite(w)):
                raise BundleError(f"{Path(sig_path).name}: patch_risk_weights must be finite numbers")
            return w.astype(np.float32)
    return np.asarray(bundle.risk_weights(), dtype=np.float32).reshape(len(names))


def patch_risk(probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Risk in [0, 1] per tile: (Σ_c w_c p_c − min w) / (max w − min w).

    Exact min-max normalisation because the probabilities of a tile sum to 1; all-equal weights
    give 0 (no class is riskier than another). NaN rows (tiles not done) stay NaN.
    """
    p = np.asarray(probs, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    lo, hi = float(w.min()), float(w.max())
    if hi - lo <= 0:
        out = np.zeros(p.shape[:-1])
        out[np.isnan(p).any(axis=-1)] = np.nan
        return out.astype(np.float32)
    r = (p @ w - lo) / (hi - lo)
    return np.clip(r, 0.0, 1.0).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# cache locations
def cache_root() -> Path:
    """Results cache folder: ``$PATHOMICS_CACHE_DIR`` or the user cache dir."""
    env = os.environ.get("PATHOMICS_CACHE_DIR")
    if env:
        return Path(env).expanduser() / "results"
    from platformdirs import user_cache_path

    return user_cache_path("napari-pathomics") / "results"


def cache_path(slide_hash: str, bundle_id: str, grid_key: str, root: str | Path | None = None) -> Path:
    """The ``.npz`` path of one slide × bundle × grid result."""
    base = Path(root) if root is not None else cache_root()
    return base / f"{slide_hash[:16]}-{bundle_id[:16]}-{grid_key[:16]}.npz"


def mosaic_scale_translate(tile_size_l0: float, k: int, mpp: tuple[float, float]) -> tuple[tuple[float, float], tuple[float, float]]:
    """napari (scale, translate) in µm, (y, x) order, for a mosaic with ``k`` px per tile side.

    A mosaic pixel covers ``s = tile_size_l0 / k`` level-0 px from lattice origin 0, so with
    napari's pixel-centre convention ``scale = s·mpp`` and ``translate = (s − 1)/2·mpp``
    (DESIGN.md decision 1). ``k = 1`` is the one-cell-per-tile class/risk map.
    """
    s = tile_size_l0 / k
    my, mx = mpp[1], mpp[0]
    return (s * my, s * mx), ((s - 1) / 2 * my, (s - 1) / 2 * mx)


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

    # ---- construction ---------------------------------------------------------------------
    @classmethod
    def empty(cls, grid: "TileGrid", class_names: Iterable[str], class_colors: Iterable[str],
              meta: dict[str, Any] | None = None) -> TileResults:
        """All tiles pending (what a fresh run starts from)."""
        names, colors = list(class_names), list(class_colors)
        n, c = len(grid), len(names)
        return cls(
            cols=np.asarray(grid.cols, dtype=np.int64).copy(), rows=np.asarray(grid.rows, dtype=np.int64).copy(),
            origins=grid.origins, tile_size_l0=float(grid.tile_size_l0), n_cols=grid.n_cols, n_rows=grid.n_rows,
            class_names=names, class_colors=colors,
            probs=np.full((n, c), np.nan, dtype=np.float32), risk=np.full(n, np.nan, dtype=np.float32),
            status=np.zeros(n, dtype=np.int8), stain_fallback=np.zeros(n, dtype=bool), meta=dict(meta or {}),
        )

    def __len__(self) -> int:
        return int(self.cols.size)

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
        """Scatter one value per tile into an (n_rows, n_cols) image (same as TileGrid.lattice_image)."""
        values = np.asarray(values)
        img = np.full((self.n_rows, self.n_cols) + values.shape[1:], fill,
                      dtype=np.result_type(values, np.float32))
        img[self.rows, self.cols] = values
        return img

    def class_map(self) -> np.ndarray:
        """(n_rows, n_cols) int32 predicted class per lattice cell; -1 = no result there."""
        img = np.full((self.n_rows, self.n_cols), -1, dtype=np.int32)
        img[self.rows, self.cols] = self.pred
        return img

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
        NaN where there is no tile or no map. See :func:`mosaic_scale_translate`.
        """
        from .model.cam import stitch_tiles  # numpy-only module level; no torch import here

        return stitch_tiles(self.cams[name], self.rows, self.cols, self.n_rows, self.n_cols)

    def tile_at(self, x: float, y: float) -> int | None:
        """Index of the tile covering level-0 point (x, y), or None (for hover read-outs)."""
        c, r = int(math.floor(x / self.tile_size_l0)), int(math.floor(y / self.tile_size_l0))
        hit = np.flatnonzero((self.cols == c) & (self.rows == r))
        return int(hit[0]) if hit.size else None

    def describe_tile(self, i: int) -> dict[str, Any]:
        """One tile's read-out: status, class, risk and probabilities by class name."""
        st = int(self.status[i])
        out: dict[str, Any] = {"index": int(i), "x": int(self.origins[i, 0]), "y": int(self.origins[i, 1]),
                               "status": STATUS_NAMES[st]}
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

    # ---- persistence ----------------------------------------------------------------------
    def _meta_doc(self) -> dict[str, Any]:
        return {
            "format": RESULTS_FORMAT, "tile_size_l0": self.tile_size_l0, "n_cols": self.n_cols,
            "n_rows": self.n_rows, "class_names": self.class_names, "class_colors": self.class_colors,
            "cams": sorted(self.cams), "counts": self.counts(), **{"meta": self.meta},
        }

    def to_npz_bytes(self) -> bytes:
        arrays: dict[str, np.ndarray] = {
            "cols": self.cols, "rows": self.rows, "origins": self.origins, "probs": self.probs,
            "risk": self.risk, "status": self.status, "stain_fallback": self.stain_fallback,
            "meta_json": np.array(json.dumps(self._meta_doc(), allow_nan=False, default=json_default)),
        }
        for name, arr in self.cams.items():
            arrays[f"cam__{name}"] = arr
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return buf.getvalue()

    def save(self, path: str | Path) -> Path:
        """Write ``path`` (.npz) atomically, then a ``.json`` sidecar with the metadata."""
        path = Path(path)
        atomic_write_bytes(path, self.to_npz_bytes())
        atomic_write_json(path.with_suffix(".json"), strict_json(self._meta_doc()))
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
                    cols=z["cols"].astype(np.int64), rows=z["rows"].astype(np.int64),
                    origins=z["origins"].astype(np.int64), tile_size_l0=float(doc["tile_size_l0"]),
                    n_cols=int(doc["n_cols"]), n_rows=int(doc["n_rows"]),
                    class_names=list(doc["class_names"]), class_colors=list(doc["class_colors"]),
                    probs=z["probs"].astype(np.float32), risk=z["risk"].astype(np.float32),
                    status=z["status"].astype(np.int8), stain_fallback=z["stain_fallback"].astype(bool),
                    cams=cams, meta=dict(doc.get("meta", {})),
                )
        except ResultsError:
            raise
        except (OSError, KeyError, ValueError, TypeError, AttributeError, EOFError, RecursionError,
                zipfile.BadZipFile) as exc:  # torn/empty files (BadZipFile, EOFError) and odd metadata
            raise ResultsError(f"{path.name}: not a readable results file ({exc})") from None
        n = len(res)
        if res.probs.shape != (n, len(res.class_names)) or res.status.shape != (n,) or res.origins.shape != (n, 2):
            raise ResultsError(f"{path.name}: inconsistent array shapes")
        return res

    # ---- export ---------------------------------------------------------------------------
    def csv_text(self) -> str:
        """One row per tile: x, y, size (level-0 px), status, class, risk, prob_<CLASS>…"""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["x", "y", "size", "col", "row", "status", "class", "risk",
                    *[f"prob_{n}" for n in self.class_names]])
        pred = self.pred
        size = _fmt(self.tile_size_l0)
        for i in range(len(self)):
            done = self.status[i] == DONE
            w.writerow([
                int(self.origins[i, 0]), int(self.origins[i, 1]), size, int(self.cols[i]), int(self.rows[i]),
                STATUS_NAMES[int(self.status[i])], self.class_names[pred[i]] if done else "",
                _fmt(self.risk[i]) if done else "",
                *([_fmt(p) for p in self.probs[i]] if done else [""] * len(self.class_names)),
            ])
        return buf.getvalue()

    def to_csv(self, path: str | Path) -> Path:
        return atomic_write_text(path, self.csv_text())

    def geojson(self, include: str = "done") -> dict[str, Any]:
        """QuPath tile detections: square polygons in level-0 px with class and measurements.

        ``include``: "done" (classified tiles) or "all" (failed/background tiles too, with a
        classification named after their status).
        """
        feats = []
        s = self.tile_size_l0
        for i in range(len(self)):
            st = int(self.status[i])
            if include == "done" and st != DONE:
                continue
            x0, y0 = float(self.cols[i] * s), float(self.rows[i] * s)
            ring = [[x0, y0], [x0 + s, y0], [x0 + s, y0 + s], [x0, y0 + s], [x0, y0]]
            props: dict[str, Any] = {"objectType": "tile", "isLocked": True}
            if st == DONE:
                c = int(np.argmax(self.probs[i]))
                props["classification"] = {"name": self.class_names[c], "color": _hex_to_rgb(self.class_colors[c])}
                m = {f"prob_{n}": float(p) for n, p in zip(self.class_names, self.probs[i])}
                m["risk"] = float(self.risk[i])
                props["measurements"] = m
            else:
                props["classification"] = {"name": STATUS_NAMES[st], "color": [128, 128, 128]}
                props["measurements"] = {}
            props["name"] = f"tile {int(self.cols[i])},{int(self.rows[i])}"
            feats.append({"type": "Feature", "id": f"tile-{int(self.cols[i])}-{int(self.rows[i])}",
                          "geometry": {"type": "Polygon", "coordinates": [ring]}, "properties": props})
        return {"type": "FeatureCollection", "features": feats}

    def to_geojson(self, path: str | Path, include: str = "done") -> Path:
        return atomic_write_text(path, json.dumps(self.geojson(include), allow_nan=False) + "\n")


# ---------------------------------------------------------------------------------------------
def read_csv(path: str | Path) -> dict[str, np.ndarray]:
    """Read a ``tiles.csv`` back into columns (x, y, status names, class names, risk, probs (N, C))."""
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    if not rows or rows[0][:3] != ["x", "y", "size"]:
        raise ResultsError(f"{Path(path).name}: not a tiles CSV")
    head, body = rows[0], rows[1:]
    pcols = [i for i, h in enumerate(head) if h.startswith("prob_")]

    def num(v: str) -> float:
        return float(v) if v != "" else np.nan

    return {
        "x": np.array([int(r[0]) for r in body], dtype=np.int64),
        "y": np.array([int(r[1]) for r in body], dtype=np.int64),
        "size": np.array([float(r[2]) for r in body]),
        "status": np.array([r[head.index("status")] for r in body], dtype=object),
        "class": np.array([r[head.index("class")] for r in body], dtype=object),
        "risk": np.array([num(r[head.index("risk")]) for r in body], dtype=np.float64),
        "probs": np.array([[num(r[i]) for i in pcols] for r in body], dtype=np.float64).reshape(len(body), len(pcols)),
        "class_names": np.array([head[i][5:] for i in pcols], dtype=object),
    }


def _fmt(v: float) -> str:
    return f"{float(v):.6g}"


def _hex_to_rgb(color: str) -> list[int]:
    c = color.lstrip("#")
    try:
        return [int(c[i:i + 2], 16) for i in (0, 2, 4)]
    except (ValueError, IndexError):
        return [128, 128, 128]


