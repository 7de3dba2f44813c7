"""Nuclei as the files other tools read: QuPath GeoJSON detections, per-nucleus and per-tile CSV.

GeoJSON follows QuPath's dialect: one ``Feature`` per nucleus, ``objectType: "detection"``, the
outline as a Polygon in level-0 px (or image px), a classification ("Nucleus", or
"Lymphocyte-like") and ``measurements`` named as QuPath names its own cell measurements
(``Nucleus: Area µm^2``, ``Nucleus/Cell area ratio``…). Large slides have a million nuclei, so
the GeoJSON and CSV writers stream to the file (written atomically) instead of building it in
memory.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from ..atomic import atomic_open
from ..results.status import STATUS_NAMES
from ..tables import safe_cell
from .features import NucleusTable
from .results import TILE_FEATURES, NucleiResults

__all__ = [
    "write_nuclei_geojson",
    "write_nuclei_csv",
    "write_tiles_csv",
    "nucleus_features",
    "MEASUREMENTS",
    "NUCLEUS_CLASS",
    "LYMPHOCYTE_CLASS",
]

NUCLEUS_CLASS = ("Nucleus", (0, 160, 255))
LYMPHOCYTE_CLASS = ("Lymphocyte-like", (255, 200, 0))
#: QuPath-style measurement name of each table column.
MEASUREMENTS: dict[str, str] = {
    "area_um2": "Nucleus: Area µm^2",
    "perimeter_um": "Nucleus: Perimeter µm",
    "eccentricity": "Nucleus: Eccentricity",
    "solidity": "Nucleus: Solidity",
    "mean_haematoxylin": "Nucleus: Hematoxylin OD mean",
    "cell_area_um2": "Cell: Area µm^2",
    "nc_ratio": "Nucleus/Cell area ratio",
}


def _num(v: float) -> float | None:
    f = float(v)
    return round(f, 6) if math.isfinite(f) else None


def nucleus_features(table: NucleusTable, id_prefix: str = "nucleus") -> Iterator[dict[str, Any]]:
    """One QuPath detection feature per nucleus (level-0 or image px, as the table holds)."""
    cols = {k: table.column(k) for k in MEASUREMENTS}
    for i in range(len(table)):
        ring = table.outline(i).astype(np.float64)
        if len(ring) < 3:
            continue
        coords = np.round(np.vstack([ring, ring[:1]]), 2).tolist()
        name, color = LYMPHOCYTE_CLASS if table.lymphocyte[i] else NUCLEUS_CLASS
        meas = {label: _num(cols[k][i]) for k, label in MEASUREMENTS.items()}
        meas["Nucleus: Large (above slide P90)"] = 1.0 if table.large[i] else 0.0
        yield {
            "type": "Feature",
            "id": f"{id_prefix}-{i + 1}",
            "geometry": {"type": "Polygon", "coordinates": [coords]},
            "properties": {
                "objectType": "detection",
                "isLocked": True,
                "classification": {"name": name, "color": list(color)},
                "measurements": meas,
            },
        }


def _stream_collection(fh: TextIO, features: Iterable[dict[str, Any]]) -> int:
    fh.write('{"type": "FeatureCollection", "features": [\n')
    n = 0
    for feat in features:
        if n:
            fh.write(",\n")
        fh.write(json.dumps(feat, allow_nan=False, ensure_ascii=False))
        n += 1
    fh.write("\n]}\n")
    return n


def write_nuclei_geojson(table: NucleusTable, path: str | Path) -> int:
    """Write every nucleus as a QuPath detection; returns how many were written."""
    with atomic_open(path) as fh:
        return _stream_collection(fh, nucleus_features(table))


_NUCLEUS_HEADER = [
    "id",
    "x",
    "y",
    "tile_col",
    "tile_row",
    "area_um2",
    "perimeter_um",
    "eccentricity",
    "solidity",
    "mean_haematoxylin",
    "cell_area_um2",
    "nc_ratio",
    "large",
    "lymphocyte_like",
]


def write_nuclei_csv(table: NucleusTable, path: str | Path, results: NucleiResults | None = None) -> int:
    """One row per nucleus: centroid (level-0 or image px), tile, measurements, flags."""
    cols = results.cols if results is not None else None
    rows_ = results.rows if results is not None else None
    with atomic_open(path) as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(_NUCLEUS_HEADER)
        for i in range(len(table)):
            t = int(table.tile[i])
            tc = int(cols[t]) if cols is not None and t >= 0 else ""
            tr = int(rows_[t]) if rows_ is not None and t >= 0 else ""
            w.writerow(
                [
                    i + 1,
                    f"{table.x[i]:.2f}",
                    f"{table.y[i]:.2f}",
                    tc,
                    tr,
                    *(
                        _fmt(table.column(k)[i])
                        for k in (
                            "area_um2",
                            "perimeter_um",
                            "eccentricity",
                            "solidity",
                            "mean_haematoxylin",
                            "cell_area_um2",
                            "nc_ratio",
                        )
                    ),
                    int(bool(table.large[i])),
                    int(bool(table.lymphocyte[i])),
                ]
            )
    return len(table)


def write_tiles_csv(results: NucleiResults, path: str | Path) -> int:
    """One row per tile: origin, lattice cell, status, tissue area and every per-tile nuclear value."""
    vals = results.tile_values()
    with atomic_open(path) as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["x", "y", "size", "col", "row", "status", "tissue_mm2", *TILE_FEATURES])
        for i in range(len(results)):
            w.writerow(
                [
                    int(results.origins[i, 0]),
                    int(results.origins[i, 1]),
                    _fmt(results.tile_size_l0),
                    int(results.cols[i]),
                    int(results.rows[i]),
                    safe_cell(STATUS_NAMES[int(results.status[i])]),
                    _fmt(results.tissue_mm2[i]),
                    *(_fmt(vals[k][i]) for k in TILE_FEATURES),
                ]
            )
    return len(results)


def _fmt(v: float) -> str:
    f = float(v)
    return f"{f:.6g}" if math.isfinite(f) else ""
