"""A proposed tumour ROI from a finished run: tumour probability, smoothed, thresholded, as polygons.

1. **Surface**: each classified tile's tumour probability (the sum of the model's tumour
   classes, by default every class whose name or description says tumour, e.g. ``TUM``) on the
   tile lattice.
2. **Smoothing** across neighbouring tiles by a normalised Gaussian (``sigma_tiles``): only
   classified tiles carry weight, so glass and failed tiles neither pull the surface down nor
   are proposed. One stray tumour-looking tile in stroma fades; a tumour nest stays.
3. **Threshold** (the user's ``threshold``), then connected regions and holes smaller than
   ``min_area_mm2`` are dropped and filled.
4. **Polygons**: the union of the kept cells' squares in level-0 px (holes and separate parts
   kept), one :class:`Annotation` classified "Tumor (proposed)" per connected part, with its
   area and mean probability as properties. Nothing the user drew is touched: a proposal is a
   new list that the viewer shows in its own layer until the user accepts it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import shapely
from scipy import ndimage as ndi
from shapely.geometry import MultiPolygon, Polygon

from ..errors import ResultsError
from ..wsi.annotations import Annotation
from .status import DONE
from .tiles import TileResults

__all__ = [
    "PROPOSED_CLASS",
    "PROPOSED_COLOR",
    "Proposal",
    "tumour_classes",
    "tumour_probability",
    "probability_surface",
    "propose_tumour",
]

PROPOSED_CLASS = "Tumor (proposed)"
PROPOSED_COLOR: tuple[int, int, int] = (255, 140, 0)
DEFAULT_THRESHOLD = 0.5
DEFAULT_MIN_AREA_MM2 = 0.05
DEFAULT_SIGMA_TILES = 1.0


def tumour_classes(class_names: Sequence[str], descriptions: Sequence[str] | None = None) -> list[str]:
    """The classes that mean tumour: a name or description with "tum" in it (TUM, tumour, tumor)."""
    desc = list(descriptions or [""] * len(class_names))
    out = [n for n, d in zip(class_names, desc) if "tum" in n.lower() or "tumour" in d.lower() or "tumor" in d.lower()]
    return out


def tumour_probability(res: TileResults, classes: Sequence[str] | None = None) -> np.ndarray:
    """(N,) tumour probability of each tile (sum over ``classes``); NaN where the tile is not classified."""
    names = list(res.class_names)
    cls = list(classes) if classes else tumour_classes(names)
    if not cls:
        raise ResultsError(f"the model has no tumour class among {names}; name the tumour classes explicitly")
    unknown = [c for c in cls if c not in names]
    if unknown:
        raise ResultsError(f"tumour classes {unknown} are not classes of this model ({names})")
    p = res.probs[:, [names.index(c) for c in cls]].astype(np.float64).sum(axis=1)
    p[res.status != DONE] = np.nan
    return p


def probability_surface(
    res: TileResults, classes: Sequence[str] | None = None, sigma_tiles: float = DEFAULT_SIGMA_TILES
) -> np.ndarray:
    """(n_rows, n_cols) smoothed tumour probability; NaN on cells without a classified tile."""
    p = tumour_probability(res, classes)
    img = res.lattice(p).astype(np.float64)
    w = np.isfinite(img)
    if sigma_tiles <= 0 or not w.any():
        return np.where(w, img, np.nan)
    num = ndi.gaussian_filter(np.where(w, img, 0.0), sigma_tiles, mode="constant", truncate=3.0)
    den = ndi.gaussian_filter(w.astype(np.float64), sigma_tiles, mode="constant", truncate=3.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = num / den
    out[~w] = np.nan
    return out


@dataclass
class Proposal:
    """A proposed tumour ROI and what it was made from (for the layer, the CLI and benchmarks)."""

    annotations: list[Annotation]
    mask: np.ndarray  # (n_rows, n_cols) bool lattice cells proposed
    surface: np.ndarray  # (n_rows, n_cols) smoothed probability (NaN off tissue)
    threshold: float
    min_area_mm2: float
    classes: list[str]

    @property
    def area_mm2(self) -> float:
        return float(sum(float(a.properties.get("area_mm2", 0.0)) for a in self.annotations))


def _cells_geometry(mask: np.ndarray, s: float) -> Polygon | MultiPolygon | None:
    """The union of the squares of ``mask``'s cells in level-0 px (row-run boxes, then one union)."""
    if not mask.any():
        return None
    boxes = []
    for r in range(mask.shape[0]):
        row = mask[r]
        if not row.any():
            continue
        d = np.diff(np.r_[0, row.astype(np.int8), 0])
        starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
        boxes.append(shapely.box(starts * s, r * s, ends * s, (r + 1) * s))
    geom = shapely.union_all(np.concatenate([np.atleast_1d(b) for b in boxes])).simplify(0)  # drop collinear vertices
    return geom if isinstance(geom, (Polygon, MultiPolygon)) and not geom.is_empty else None


def propose_tumour(
    res: TileResults,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    min_area_mm2: float = DEFAULT_MIN_AREA_MM2,
    sigma_tiles: float = DEFAULT_SIGMA_TILES,
    classes: Sequence[str] | None = None,
    mpp: float | None = None,
) -> Proposal:
    """The proposal of the module docstring; ``mpp`` (level-0 µm/px) from the results if not given."""
    if not 0.0 < threshold < 1.0:
        raise ResultsError(f"the tumour threshold must lie strictly between 0 and 1, got {threshold}")
    if min_area_mm2 < 0 or not np.isfinite(min_area_mm2):
        raise ResultsError(f"the minimum area must be ≥ 0 mm², got {min_area_mm2}")
    mpp = float(mpp if mpp is not None else (res.meta.get("slide_mpp") or [np.nan])[0])
    if not (np.isfinite(mpp) and mpp > 0):
        raise ResultsError("the results do not record the slide's µm/px; give mpp")
    cls = list(classes) if classes else tumour_classes(res.class_names)
    surface = probability_surface(res, cls, sigma_tiles)
    mask = np.nan_to_num(surface, nan=0.0) >= threshold
    cell_mm2 = (res.tile_size_l0 * mpp / 1000.0) ** 2
    min_cells = int(np.ceil(min_area_mm2 / cell_mm2 - 1e-9)) if min_area_mm2 > 0 else 0
    if min_cells > 1:
        lab, n = ndi.label(mask)
        sizes = np.bincount(lab.ravel(), minlength=n + 1)
        mask = (sizes >= min_cells)[lab] & mask
        holes, nh = ndi.label(~mask)
        hsizes = np.bincount(holes.ravel(), minlength=nh + 1)
        border = np.unique(np.concatenate([holes[0], holes[-1], holes[:, 0], holes[:, -1]]))
        small = hsizes < min_cells
        small[border] = False  # the outside is not a hole
        small[0] = False
        mask = mask | small[holes]
    geom = _cells_geometry(mask, res.tile_size_l0)
    anns: list[Annotation] = []
    if geom is not None:
        parts = list(geom.geoms) if isinstance(geom, MultiPolygon) else [geom]
        p = tumour_probability(res, cls)
        centres_x = (res.cols + 0.5) * res.tile_size_l0
        centres_y = (res.rows + 0.5) * res.tile_size_l0
        for k, part in enumerate(sorted(parts, key=lambda g: -g.area), start=1):
            inside = shapely.contains_xy(part, centres_x, centres_y) & np.isfinite(p)
            area_mm2 = float(part.area) * (mpp / 1000.0) ** 2
            anns.append(
                Annotation(
                    geometry=part,
                    classification=PROPOSED_CLASS,
                    color=PROPOSED_COLOR,
                    name=f"Tumor (proposed) {k}",
                    properties={
                        "area_mm2": round(area_mm2, 6),
                        "tumour_probability_mean": round(float(np.mean(p[inside])), 4) if inside.any() else None,
                        "threshold": threshold,
                        "min_area_mm2": min_area_mm2,
                        "sigma_tiles": sigma_tiles,
                        "classes": ",".join(cls),
                        "source": "napari-pathomics tumour proposal",
                    },
                )
            )
    return Proposal(anns, mask, surface, float(threshold), float(min_area_mm2), cls)
