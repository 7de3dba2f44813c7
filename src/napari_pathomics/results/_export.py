"""Tile results as the tables and objects other tools read: CSV and QuPath GeoJSON detections."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..colors import hex_to_rgb
from ..errors import ResultsError
from ..tables import csv_text
from .status import DONE, STATUS_NAMES

__all__ = ["TileTable", "tiles_csv", "tiles_geojson", "read_csv"]


class TileTable(Protocol):
    """What an export reads of per-tile results (``TileResults`` is one; it imports this module, not the reverse)."""

    cols: np.ndarray
    rows: np.ndarray
    origins: np.ndarray
    tile_size_l0: float
    class_names: list[str]
    class_colors: list[str]
    probs: np.ndarray
    risk: np.ndarray
    status: np.ndarray

    def __len__(self) -> int: ...

    @property
    def pred(self) -> np.ndarray: ...


def tiles_csv(res: TileTable) -> str:
    """One row per tile: x, y, size (level-0 px), status, class, risk, prob_<CLASS>…"""
    pred = res.pred
    size = _fmt(res.tile_size_l0)
    nan_row = [""] * len(res.class_names)

    def rows() -> Any:
        for i in range(len(res)):
            done = res.status[i] == DONE
            yield [
                int(res.origins[i, 0]),
                int(res.origins[i, 1]),
                size,
                int(res.cols[i]),
                int(res.rows[i]),
                STATUS_NAMES[int(res.status[i])],
                res.class_names[pred[i]] if done else "",
                _fmt(res.risk[i]) if done else "",
                *([_fmt(p) for p in res.probs[i]] if done else nan_row),
            ]

    return csv_text(
        ["x", "y", "size", "col", "row", "status", "class", "risk", *[f"prob_{n}" for n in res.class_names]], rows()
    )


def tiles_geojson(res: TileTable, include: str = "done") -> dict[str, Any]:
    """QuPath tile detections: square polygons in level-0 px with class and measurements.

    ``include``: "done" (classified tiles) or "all" (failed/background tiles too, with a
    classification named after their status).
    """
    feats = []
    s = res.tile_size_l0
    for i in range(len(res)):
        st = int(res.status[i])
        if include == "done" and st != DONE:
            continue
        x0, y0 = float(res.cols[i] * s), float(res.rows[i] * s)
        ring = [[x0, y0], [x0 + s, y0], [x0 + s, y0 + s], [x0, y0 + s], [x0, y0]]
        props: dict[str, Any] = {"objectType": "tile", "isLocked": True}
        if st == DONE:
            c = int(np.argmax(res.probs[i]))
            props["classification"] = {"name": res.class_names[c], "color": list(hex_to_rgb(res.class_colors[c]))}
            m = {f"prob_{n}": float(p) for n, p in zip(res.class_names, res.probs[i])}
            m["risk"] = float(res.risk[i])
            props["measurements"] = m
        else:
            props["classification"] = {"name": STATUS_NAMES[st], "color": [128, 128, 128]}
            props["measurements"] = {}
        props["name"] = f"tile {int(res.cols[i])},{int(res.rows[i])}"
        feats.append(
            {
                "type": "Feature",
                "id": f"tile-{int(res.cols[i])}-{int(res.rows[i])}",
                "geometry": {"type": "Polygon", "coordinates": [ring]},
                "properties": props,
            }
        )
    return {"type": "FeatureCollection", "features": feats}


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
