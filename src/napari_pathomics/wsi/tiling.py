"""Tiles of a physical size at a physical resolution, restricted to ROI ∩ tissue.

Tiles sit on a regular lattice anchored at level-0 (0, 0) with a side of ``tile_um / mpp_x``
level-0 px (not necessarily an integer), so tile (col, row) of any run on the same slide is the
same tile: results cache and compare across runs, and a grid layer of one cell per tile lines up
exactly. A tile is kept when it lies wholly inside the slide and the fraction of it covered by
ROI ∩ tissue is at least ``min_tissue``.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon

from ..errors import TilingError
from ..units import DEFAULT_MPP, DEFAULT_TILE_UM
from .annotations import Annotation, union_area
from .slide import Slide
from .tissue import TissueMask, detect_tissue, mask_downsample

__all__ = [
    "TileGrid",
    "TileGeometry",
    "plan_tiles",
    "plan_for_bundle",
    "rasterize",
    "scatter",
    "stitch_tiles",
    "DEFAULT_TILE_UM",
    "DEFAULT_MPP",
    "DEFAULT_MIN_TISSUE",
]

DEFAULT_MIN_TISSUE = 0.5


class TileGeometry(Protocol):
    """What a model needs its tiles to be (a ``Bundle`` has both)."""

    @property
    def tile_um(self) -> float: ...

    @property
    def mpp(self) -> float: ...


def scatter(
    rows: np.ndarray,
    cols: np.ndarray,
    n_rows: int,
    n_cols: int,
    values: np.ndarray,
    fill: float = np.nan,
    dtype: Any = None,
) -> np.ndarray:
    """One value per tile into an (n_rows, n_cols, ...) lattice image (a heatmap layer's data).

    By default the image is floating point (at least float32) so that ``fill`` (NaN) marks cells
    without a tile; give ``dtype`` (and an integer ``fill``) for label images.
    """
    values = np.asarray(values)
    dtype = np.result_type(values, np.float32) if dtype is None else dtype
    img = np.full((n_rows, n_cols) + values.shape[1:], fill, dtype=dtype)
    img[np.asarray(rows), np.asarray(cols)] = values
    return img


def stitch_tiles(maps: np.ndarray, rows: np.ndarray, cols: np.ndarray, n_rows: int, n_cols: int) -> np.ndarray:
    """Per-tile (N, k, k) maps at their lattice cells: a (n_rows·k, n_cols·k) float32 mosaic.

    Cell (r, c) occupies mosaic rows r·k…r·k+k−1 and columns c·k…c·k+k−1; NaN where no tile.
    """
    maps = np.asarray(maps, dtype=np.float32)
    k = int(maps.shape[1]) if maps.ndim == 3 else 1
    mosaic = np.full((n_rows * k, n_cols * k), np.nan, dtype=np.float32)
    view = mosaic.reshape(n_rows, k, n_cols, k).transpose(0, 2, 1, 3)  # a view: (n_rows, n_cols, k, k)
    view[np.asarray(rows), np.asarray(cols)] = maps.reshape(-1, k, k)
    return mosaic


@dataclass
class TileGrid:
    """Kept tiles of one slide: lattice indices, level-0 origins and what they cover."""

    cols: np.ndarray  # (N,) lattice column of each tile
    rows: np.ndarray  # (N,) lattice row
    tile_size_l0: float  # tile side in level-0 px
    tile_um: float
    mpp: float  # µm/px at which tiles are read
    slide_width: int
    slide_height: int
    coverage: np.ndarray  # (N,) fraction of the tile inside ROI ∩ tissue
    params: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.cols.size)

    @property
    def tile_px(self) -> int:
        """Side of a tile in px at the read resolution (what the model sees)."""
        return int(round(self.tile_um / self.mpp))

    @property
    def n_cols(self) -> int:
        return int(math.floor(self.slide_width / self.tile_size_l0))

    @property
    def n_rows(self) -> int:
        return int(math.floor(self.slide_height / self.tile_size_l0))

    @property
    def origins(self) -> np.ndarray:
        """(N, 2) int64 level-0 (x, y) of each tile's top-left corner."""
        return np.column_stack(
            [np.round(self.cols * self.tile_size_l0), np.round(self.rows * self.tile_size_l0)]
        ).astype(np.int64)

    def lattice_image(self, values: np.ndarray, fill: float = np.nan) -> np.ndarray:
        """One value per tile into a (n_rows, n_cols) image (see :func:`scatter`)."""
        return scatter(self.rows, self.cols, self.n_rows, self.n_cols, values, fill)

    def key(self) -> str:
        """Identity of this grid for caches: same lattice + same tiles → same key."""
        h = hashlib.sha256()
        h.update(f"{self.tile_size_l0:.6f}|{self.tile_um}|{self.mpp}|{self.slide_width}x{self.slide_height}".encode())
        h.update(np.ascontiguousarray(self.rows, dtype=np.int64).tobytes())
        h.update(np.ascontiguousarray(self.cols, dtype=np.int64).tobytes())
        return h.hexdigest()[:16]

    def to_json(self) -> dict[str, Any]:
        return {
            "tile_count": len(self),
            "tile_um": self.tile_um,
            "mpp": self.mpp,
            "tile_px": self.tile_px,
            "tile_size_l0": self.tile_size_l0,
            "slide_width": self.slide_width,
            "slide_height": self.slide_height,
            "params": self.params,
            "origins": self.origins.tolist(),
        }


def rasterize(
    area: Polygon | MultiPolygon, shape: tuple[int, int], downsample: float, origin: tuple[int, int] = (0, 0)
) -> np.ndarray:
    """Mask px (r, c) is set when its centre lies inside ``area``.

    Pixel (r, c) of the returned (window) mask is global mask px (origin[0] + r, origin[1] + c),
    centred on level-0 ((C + ½)·d, (R + ½)·d). Exact centre sampling (holes cut out) so tile
    coverage does not depend on how a polygon edge is drawn; only the ROI's bounding box is tested.
    """
    mask = np.zeros(shape, dtype=bool)
    r_off, c_off = origin
    minx, miny, maxx, maxy = area.bounds
    c0 = max(0, int(np.floor(minx / downsample - 0.5)) - c_off)
    c1 = min(shape[1], int(np.ceil(maxx / downsample)) - c_off)
    r0 = max(0, int(np.floor(miny / downsample - 0.5)) - r_off)
    r1 = min(shape[0], int(np.ceil(maxy / downsample)) - r_off)
    if c1 <= c0 or r1 <= r0:
        return mask
    xs = (np.arange(c0, c1) + c_off + 0.5) * downsample
    ys = (np.arange(r0, r1) + r_off + 0.5) * downsample
    gx, gy = np.meshgrid(xs, ys)
    shapely.prepare(area)
    mask[r0:r1, c0:c1] = shapely.contains_xy(area, gx, gy)
    return mask


def _mask_px(edge_l0: np.ndarray, d: float) -> np.ndarray:
    """First mask px whose centre ((m + ½)·d) lies at or after each level-0 edge."""
    return np.ceil(edge_l0 / d - 0.5).astype(np.int64)


def _cell_fractions(
    mask: np.ndarray, d: float, s: float, rows: range, cols: range, origin: tuple[int, int] = (0, 0)
) -> np.ndarray:
    """Fraction of each lattice cell (rows × cols) covered by ``mask`` (mask px counted by their centres).

    ``mask`` is the window of global mask px starting at ``origin``; it must hold every mask px
    whose centre falls in those cells (see :func:`_window`).
    """
    h, w = mask.shape
    integral = np.zeros((h + 1, w + 1), dtype=np.int32 if h * w < 2**31 else np.int64)
    integral[1:, 1:] = np.cumsum(np.cumsum(mask, axis=0, dtype=integral.dtype), axis=1)
    ry = np.clip(_mask_px(np.arange(rows.start, rows.stop + 1) * s, d) - origin[0], 0, h)
    rx = np.clip(_mask_px(np.arange(cols.start, cols.stop + 1) * s, d) - origin[1], 0, w)
    y0, y1 = ry[:-1, None], ry[1:, None]
    x0, x1 = rx[None, :-1], rx[None, 1:]
    inside = (integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]).astype(np.float64)
    total = (y1 - y0) * (x1 - x0)
    frac = inside / np.maximum(total, 1)
    if (total == 0).any():  # cells smaller than a mask px take the value under their centre
        cy = np.clip(((np.arange(rows.start, rows.stop) + 0.5) * s / d).astype(np.int64) - origin[0], 0, h - 1)
        cx = np.clip(((np.arange(cols.start, cols.stop) + 0.5) * s / d).astype(np.int64) - origin[1], 0, w - 1)
        frac = np.where(total > 0, frac, mask[cy[:, None], cx[None, :]])
    return frac


def _window(rows: range, cols: range, s: float, d: float) -> tuple[slice, slice]:
    """The global mask px that the lattice cells rows × cols cover (by centre)."""
    r0, r1 = _mask_px(np.array([rows.start * s, rows.stop * s]), d)
    c0, c1 = _mask_px(np.array([cols.start * s, cols.stop * s]), d)
    return slice(max(0, int(r0)), max(0, int(r1))), slice(max(0, int(c0)), max(0, int(c1)))


def plan_tiles(
    slide: Slide,
    annotations: list[Annotation] | None = None,
    tissue: TissueMask | Literal[False] | None = None,
    tile_um: float = DEFAULT_TILE_UM,
    mpp: float = DEFAULT_MPP,
    min_tissue: float = DEFAULT_MIN_TISSUE,
) -> TileGrid:
    """The tiles the engine will read; the CLI and the widget both call exactly this.

    ``tissue=None`` detects tissue; ``False`` uses the ROIs alone; a ``TissueMask`` (e.g. the
    user's edited Labels layer) is used as given. Only the lattice cells under the ROIs' bounding
    box are computed, so planning a few tiles of a huge slide costs memory for those tiles.
    """
    if not (tile_um > 0 and math.isfinite(tile_um)):
        raise TilingError(f"tile size must be a positive number of µm, got {tile_um}")
    if not (mpp > 0 and math.isfinite(mpp)):
        raise TilingError(f"target µm/px must be positive, got {mpp}")
    if not 0.0 <= min_tissue <= 1.0:
        raise TilingError(f"minimum tissue fraction must be within 0..1, got {min_tissue}")
    slide_mpp = slide.mpp[0]
    s = tile_um / slide_mpp
    if s < 1:
        raise TilingError(f"a {tile_um} µm tile is smaller than one pixel of this slide")
    n_cols, n_rows = int(math.floor(slide.width / s)), int(math.floor(slide.height / s))
    if n_cols == 0 or n_rows == 0:
        raise TilingError(f"a {tile_um} µm tile is larger than the slide")
    area = None
    rows, cols = range(n_rows), range(n_cols)
    if annotations:
        area = union_area(annotations)
        if area is None:
            raise TilingError("the ROIs have no area")
        minx, miny, maxx, maxy = area.bounds
        rows = range(max(0, int(miny // s)), min(n_rows, int(math.ceil(maxy / s))))
        cols = range(max(0, int(minx // s)), min(n_cols, int(math.ceil(maxx / s))))
    params = {
        "min_tissue": min_tissue,
        "roi_count": len(annotations or []),
        "tissue": "detected" if tissue is None else ("none" if tissue is False else "given"),
    }
    if len(rows) == 0 or len(cols) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return TileGrid(
            cols=empty,
            rows=empty.copy(),
            tile_size_l0=s,
            tile_um=float(tile_um),
            mpp=float(mpp),
            slide_width=slide.width,
            slide_height=slide.height,
            coverage=np.zeros(0, np.float32),
            params=params,
        )
    d = mask_downsample(slide) if not isinstance(tissue, TissueMask) else tissue.downsample
    win_r, win_c = _window(rows, cols, s, d)
    if tissue is None:
        tissue = detect_tissue(slide, within=_l0_box(win_r, win_c, d) if area is not None else None)
        if tissue.downsample != d:  # a huge slide's whole mask is coarser
            d = tissue.downsample
            win_r, win_c = _window(rows, cols, s, d)
    if tissue is False:
        region = np.ones((win_r.stop - win_r.start, win_c.stop - win_c.start), dtype=bool)
    else:
        region = tissue.window(win_r, win_c, with_unreadable=True)
        params["unreadable_mm2"] = round(tissue.unreadable_mm2(slide_mpp), 6)
    if area is not None:
        region &= rasterize(area, region.shape, d, origin=(win_r.start, win_c.start))
    frac = _cell_fractions(region, d, s, rows, cols, origin=(win_r.start, win_c.start))
    rr, cc = np.nonzero(frac >= max(min_tissue, 1e-9))
    return TileGrid(
        cols=(cc + cols.start).astype(np.int64),
        rows=(rr + rows.start).astype(np.int64),
        tile_size_l0=s,
        tile_um=float(tile_um),
        mpp=float(mpp),
        slide_width=slide.width,
        slide_height=slide.height,
        coverage=frac[rr, cc].astype(np.float32),
        params=params,
    )


def _l0_box(win_r: slice, win_c: slice, d: float) -> tuple[float, float, float, float]:
    """The level-0 box (x0, y0, x1, y1) that a window of mask px covers."""
    return win_c.start * d, win_r.start * d, win_c.stop * d, win_r.stop * d


def plan_for_bundle(
    slide: Slide,
    bundle: TileGeometry,
    annotations: list[Annotation] | None = None,
    tissue: TissueMask | Literal[False] | None = None,
    min_tissue: float | None = None,
) -> TileGrid:
    """The TileGrid a model needs on this slide: its tile size in µm at its µm/px.

    What the ROI dock previews, ``pathomics tiles``, Analyze, ``infer``, ``score`` and the cohort
    commands run all come from here.
    """
    return plan_tiles(
        slide,
        annotations,
        tissue=tissue,
        tile_um=bundle.tile_um,
        mpp=bundle.mpp,
        min_tissue=DEFAULT_MIN_TISSUE if min_tissue is None else min_tissue,
    )
