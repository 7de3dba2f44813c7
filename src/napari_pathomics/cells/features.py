"""Per-nucleus measurements, a cell estimate and the N:C ratio, all vectorised over a label image.

* **Area** (µm²): pixel count × mpp².
* **Perimeter** (µm): scikit-image's ``perimeter`` (4-connected border, weighted neighbourhood
  codes: 1 for straight runs, √2 for diagonals, (1 + √2)/2 for corners), computed for every
  label at once with eight array shifts instead of one call per nucleus.
* **Eccentricity**: of the ellipse with the same second central moments (scikit-image's
  definition), from per-label pixel moments summed with ``bincount``.
* **Solidity**: area / area of the convex hull of the nucleus's pixel squares (the hull of their
  corners: 1.0 for a rectangle).
* **Mean haematoxylin**: mean concentration (``cells.stain``) over the nucleus.
* **Cell**: the nucleus expanded by ``cell_expansion_um`` (QuPath's default 5 µm) without
  crossing a neighbour's expansion (each pixel goes to its nearest nucleus: a Voronoi partition
  clipped at that distance), restricted to stained tissue, so a cell never reaches into glass.
  **N:C ratio** = nuclear area / cell area (the nucleus counts as part of its cell).
* **Outline**: the traced border, simplified (≤ ``simplify_px``) and offset half a pixel so the
  polygon runs along pixel edges (its area matches the pixel count), in the region's px.

The relative flags (large/atypical, lymphocyte-like) need the whole slide's distribution and
are set by :func:`classify`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields

import cv2
import numpy as np
import shapely
from scipy import ndimage as ndi
from skimage.segmentation import expand_labels

from .nuclei import NucleiParams, Segmentation

__all__ = ["NucleusTable", "measure_nuclei", "perimeters", "classify", "cell_areas", "COLUMNS"]

#: Per-nucleus columns, in CSV order, with their units.
COLUMNS: dict[str, str] = {
    "x": "px",
    "y": "px",
    "area_um2": "µm²",
    "perimeter_um": "µm",
    "eccentricity": "",
    "solidity": "",
    "mean_haematoxylin": "OD",
    "cell_area_um2": "µm²",
    "nc_ratio": "",
    "large": "",
    "lymphocyte": "",
}
_FLOAT_COLS = (
    "x",
    "y",
    "area_um2",
    "perimeter_um",
    "eccentricity",
    "solidity",
    "mean_haematoxylin",
    "cell_area_um2",
    "nc_ratio",
)

# scikit-image's perimeter weights by neighbourhood code (centre 1, edge neighbours 2, corners 10)
_PERIM_W = np.zeros(50, dtype=np.float64)
_PERIM_W[[5, 7, 15, 17, 25, 27]] = 1.0
_PERIM_W[[21, 33]] = math.sqrt(2.0)
_PERIM_W[[13, 23]] = (1.0 + math.sqrt(2.0)) / 2.0


@dataclass
class NucleusTable:
    """Column arrays, one row per nucleus, plus outlines as one flat vertex array with offsets.

    ``x``, ``y`` (centroid) and the outlines are in the coordinates of whatever the table was
    measured on (region px) until :meth:`to_level0` maps them onto the slide.
    """

    x: np.ndarray
    y: np.ndarray
    area_um2: np.ndarray
    perimeter_um: np.ndarray
    eccentricity: np.ndarray
    solidity: np.ndarray
    mean_haematoxylin: np.ndarray
    cell_area_um2: np.ndarray
    nc_ratio: np.ndarray
    large: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    lymphocyte: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    tile: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # index into a grid
    outline_offsets: np.ndarray = field(default_factory=lambda: np.zeros(1, dtype=np.int64))  # (n + 1,)
    outline_xy: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), dtype=np.float32))  # (V, 2)

    def __post_init__(self) -> None:
        n = self.x.size
        if self.large.size != n:
            self.large = np.zeros(n, dtype=bool)
        if self.lymphocyte.size != n:
            self.lymphocyte = np.zeros(n, dtype=bool)
        if self.tile.size != n:
            self.tile = np.full(n, -1, dtype=np.int64)

    def __len__(self) -> int:
        return int(self.x.size)

    @classmethod
    def empty(cls) -> NucleusTable:
        z = np.zeros(0, dtype=np.float64)
        return cls(*(z.copy() for _ in _FLOAT_COLS))

    def outline(self, i: int) -> np.ndarray:
        """(k, 2) float32 vertices (x, y) of nucleus ``i``'s outline (closed implicitly)."""
        return self.outline_xy[self.outline_offsets[i] : self.outline_offsets[i + 1]]

    def column(self, name: str) -> np.ndarray:
        return getattr(self, name)

    def take(self, idx: np.ndarray) -> NucleusTable:
        """The rows ``idx`` (bool mask or indices), outlines included."""
        idx = np.flatnonzero(idx) if np.asarray(idx).dtype == bool else np.asarray(idx, dtype=np.int64)
        starts, ends = self.outline_offsets[idx], self.outline_offsets[idx + 1]
        counts = ends - starts
        offs = np.zeros(idx.size + 1, dtype=np.int64)
        np.cumsum(counts, out=offs[1:])
        gather = np.repeat(starts - offs[:-1], counts) + np.arange(int(offs[-1]))
        cols = {
            f.name: getattr(self, f.name)[idx] for f in fields(self) if f.name not in ("outline_offsets", "outline_xy")
        }
        return NucleusTable(**cols, outline_offsets=offs, outline_xy=self.outline_xy[gather])

    @classmethod
    def concat(cls, tables: Sequence[NucleusTable]) -> NucleusTable:
        tables = [t for t in tables if len(t)]
        if not tables:
            return cls.empty()
        cols = {
            f.name: np.concatenate([getattr(t, f.name) for t in tables])
            for f in fields(cls)
            if f.name not in ("outline_offsets", "outline_xy")
        }
        shift = np.cumsum([0] + [int(t.outline_offsets[-1]) for t in tables[:-1]])
        offs = np.concatenate([[0]] + [t.outline_offsets[1:] + s for t, s in zip(tables, shift)])
        return cls(
            **cols,
            outline_offsets=offs.astype(np.int64),
            outline_xy=np.concatenate([t.outline_xy for t in tables]).astype(np.float32),
        )

    def to_level0(self, origin: tuple[float, float], scale: float) -> NucleusTable:
        """A copy with coordinates mapped from region px to level-0 px: ``origin + scale·p``."""
        ox, oy = float(origin[0]), float(origin[1])
        out = self.take(np.arange(len(self)))
        out.x = ox + scale * self.x
        out.y = oy + scale * self.y
        xy = self.outline_xy.astype(np.float64) * scale + np.array([ox, oy])
        out.outline_xy = xy.astype(np.float32)
        return out

    def to_arrays(self, prefix: str = "nuc_") -> dict[str, np.ndarray]:
        """Plain arrays for an npz file."""
        return {prefix + f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], prefix: str = "nuc_") -> NucleusTable:
        return cls(**{f.name: np.asarray(arrays[prefix + f.name]) for f in fields(cls)})


# ---------------------------------------------------------------------------------------------
def perimeters(labels: np.ndarray, n: int | None = None) -> np.ndarray:
    """(n + 1,) perimeter in px of every label (index 0 unused), as ``skimage.measure.perimeter``."""
    n = int(labels.max(initial=0)) if n is None else n
    lab = np.pad(labels, 1)
    c = lab[1:-1, 1:-1]
    fg = c > 0
    # border: a region pixel with a 4-neighbour of another label (or background)
    interior = fg.copy()
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        interior &= lab[1 + dy : lab.shape[0] - 1 + dy, 1 + dx : lab.shape[1] - 1 + dx] == c
    border = fg & ~interior
    bpad = np.pad(border, 1)
    code = border.astype(np.int64)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy == 0 and dx == 0:
                continue
            w = 2 if dy == 0 or dx == 0 else 10
            nb = slice(1 + dy, lab.shape[0] - 1 + dy), slice(1 + dx, lab.shape[1] - 1 + dx)
            code += w * (bpad[nb] & (lab[nb] == c))
    code[~border] = 0
    return np.bincount(c[border], weights=_PERIM_W[code[border]], minlength=n + 1)


def cell_areas(
    labels: np.ndarray, tissue: np.ndarray, expansion_px: float, n: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(n + 1,) cell areas in px and the cell label image: nuclei expanded, clipped by neighbours and tissue."""
    n = int(labels.max(initial=0)) if n is None else n
    cells = expand_labels(labels, distance=float(expansion_px)) if expansion_px > 0 else labels.copy()
    cells[~(np.asarray(tissue, dtype=bool) | (labels > 0))] = 0
    return np.bincount(cells.ravel(), minlength=n + 1).astype(np.float64), cells


def measure_nuclei(
    seg: Segmentation | np.ndarray,
    mpp: float | None = None,
    h: np.ndarray | None = None,
    tissue: np.ndarray | None = None,
    params: NucleiParams | None = None,
    outlines: bool = True,
    simplify_px: float = 0.5,
) -> NucleusTable:
    """Every measurement of the module docstring for the labels of ``seg`` (or a label image).

    With a plain label image give ``mpp`` (µm/px of the labels), and optionally ``h`` (mean
    haematoxylin is NaN without it) and ``tissue`` (all pixels are tissue without it).
    """
    p = params or NucleiParams()
    if isinstance(seg, Segmentation):
        labels, h, tissue = seg.labels, seg.h, seg.stained
        label_mpp = seg.mpp * seg.h.shape[1] / max(1, seg.labels.shape[1])
        if h.shape != labels.shape:  # segmented at a coarser working resolution than the input
            h = cv2.resize(h, (labels.shape[1], labels.shape[0]), interpolation=cv2.INTER_LINEAR)
            tissue = cv2.resize(
                tissue.astype(np.uint8), (labels.shape[1], labels.shape[0]), interpolation=cv2.INTER_NEAREST
            ).astype(bool)
    else:
        if mpp is None:
            raise ValueError("measure_nuclei needs mpp with a plain label image")
        labels, label_mpp = np.asarray(seg), float(mpp)
    labels = np.ascontiguousarray(labels, dtype=np.int32)
    n = int(labels.max(initial=0))
    if n == 0:
        return NucleusTable.empty()
    flat = labels.ravel()
    yy, xx = np.divmod(np.arange(flat.size, dtype=np.int64), labels.shape[1])
    area = np.bincount(flat, minlength=n + 1).astype(np.float64)
    a = np.maximum(area, 1.0)
    sx = np.bincount(flat, weights=xx, minlength=n + 1)
    sy = np.bincount(flat, weights=yy, minlength=n + 1)
    cx, cy = sx / a, sy / a
    # second central moments (population), then the equal-moment ellipse's eccentricity
    mxx = np.bincount(flat, weights=xx * xx, minlength=n + 1) / a - cx * cx
    myy = np.bincount(flat, weights=yy * yy, minlength=n + 1) / a - cy * cy
    mxy = np.bincount(flat, weights=xx * yy, minlength=n + 1) / a - cx * cy
    half_tr = (mxx + myy) / 2
    disc = np.sqrt(np.maximum(half_tr**2 - (mxx * myy - mxy**2), 0.0))
    l1, l2 = half_tr + disc, half_tr - disc
    ecc = np.where(l1 > 0, np.sqrt(np.clip(1.0 - l2 / np.where(l1 > 0, l1, 1.0), 0.0, 1.0)), 0.0)
    perim = perimeters(labels, n)
    mean_h = (
        np.bincount(flat, weights=np.asarray(h, dtype=np.float64).ravel(), minlength=n + 1) / a
        if h is not None
        else np.full(n + 1, np.nan)
    )
    tissue_mask = np.ones(labels.shape, dtype=bool) if tissue is None else np.asarray(tissue, dtype=bool)
    cell_px, _ = cell_areas(labels, tissue_mask, p.cell_expansion_um / label_mpp, n)
    hull_area, offsets, xy = _outlines(labels, n, simplify_px, outlines)
    px = label_mpp * label_mpp
    sl = slice(1, None)
    return NucleusTable(
        x=cx[sl] + 0.5,
        y=cy[sl] + 0.5,  # pixel i spans [i, i+1): its centre is i + 0.5
        area_um2=area[sl] * px,
        perimeter_um=perim[sl] * label_mpp,
        eccentricity=ecc[sl],
        solidity=np.clip(area[sl] / np.maximum(hull_area[sl], 1.0), 0.0, 1.0),
        mean_haematoxylin=mean_h[sl],
        cell_area_um2=cell_px[sl] * px,
        nc_ratio=area[sl] / np.maximum(cell_px[sl], 1.0),
        outline_offsets=offsets,
        outline_xy=xy,
    )


_CORNERS = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], dtype=np.int32)


def _outlines(labels: np.ndarray, n: int, simplify_px: float, want: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Convex-hull areas (n + 1,) of the pixel squares, and outline offsets (n + 1,) and vertices."""
    hull = np.zeros(n + 1, dtype=np.float64)
    polys: list[np.ndarray] = []
    for i, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None:
            polys.append(np.zeros((0, 2), dtype=np.float64))
            continue
        crop = (labels[sl] == i).astype(np.uint8)
        contours, _ = cv2.findContours(crop, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        pts = np.concatenate(contours).reshape(-1, 2) if contours else np.zeros((0, 2), np.int32)
        corners = (pts[:, None, :] + _CORNERS[None]).reshape(-1, 2).astype(np.float32)
        hull[i] = cv2.contourArea(cv2.convexHull(corners)) if len(corners) >= 3 else float(crop.sum())
        if want:
            main = max(contours, key=len).reshape(-1, 2) if contours else pts
            if simplify_px > 0 and len(main) > 4:
                main = cv2.approxPolyDP(main.reshape(-1, 1, 2), simplify_px, True).reshape(-1, 2)
            polys.append(main.astype(np.float64) + 0.5 + np.array([sl[1].start, sl[0].start]))
    if not want:
        return hull, np.zeros(n + 1, dtype=np.int64), np.zeros((0, 2), dtype=np.float32)
    # through pixel centres → along pixel edges: offset half a pixel outwards (mitred corners)
    geoms = np.array(
        [shapely.polygons(q) if len(q) >= 3 else shapely.points(q[0]) if len(q) else shapely.Point() for q in polys],
        dtype=object,
    )
    grown = shapely.buffer(geoms, 0.5, quad_segs=1, join_style="mitre", mitre_limit=2.0)
    rings = [
        np.asarray(g.exterior.coords)[:-1]
        if isinstance(g, shapely.Polygon) and not g.is_empty
        else np.asarray(max(g.geoms, key=lambda q: q.area).exterior.coords)[:-1]
        if isinstance(g, shapely.MultiPolygon)
        else np.zeros((0, 2))
        for g in grown
    ]
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum([len(r) for r in rings], out=offsets[1:])
    xy = np.concatenate(rings).astype(np.float32) if rings else np.zeros((0, 2), dtype=np.float32)
    return hull, offsets, xy


def classify(
    table: NucleusTable, params: NucleiParams | None = None, reference: NucleusTable | None = None
) -> NucleusTable:
    """Set the relative flags in place: large/atypical and lymphocyte-like (module docstring).

    ``reference`` is the distribution they are relative to (the slide's nuclei; default the
    table itself): "large" is an area above its ``large_quantile``; "lymphocyte-like" is small,
    round, smooth and darker than ``lymph_darkness`` × its median haematoxylin.
    """
    p = params or NucleiParams()
    ref = reference if reference is not None else table
    if len(table) == 0 or len(ref) == 0:
        return table
    cut = float(np.quantile(ref.area_um2, p.large_quantile))
    table.large = table.area_um2 > cut
    med_h = float(np.nanmedian(ref.mean_haematoxylin)) if np.isfinite(ref.mean_haematoxylin).any() else np.nan
    dark = table.mean_haematoxylin >= p.lymph_darkness * med_h if np.isfinite(med_h) else np.zeros(len(table), bool)
    table.lymphocyte = (
        (table.area_um2 <= p.lymph_max_area_um2)
        & (table.eccentricity <= p.lymph_max_eccentricity)
        & (table.solidity >= p.lymph_min_solidity)
        & dark
    )
    return table
