"""Layer tuples' shared ground: metadata keys and roles, the slide image, and the transforms that align
every layer with the slide (docs/architecture.md, "Coordinates")."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..wsi.slide import Slide

UNITS = ("um", "um")
LayerTuple = tuple[Any, dict[str, Any], str]

#: Layer metadata keys: what a layer shows, and of which slide.
ROLE = "pathomics_role"
SLIDE_PATH = "pathomics_slide_path"
CELL_L0 = "pathomics_cell_l0"
#: Roles of the layers the plugin makes.
ROLE_SLIDE, ROLE_ROIS, ROLE_ROIS_IMPORT, ROLE_TISSUE, ROLE_TILE_GRID = (
    "slide",
    "rois",
    "rois_import",
    "tissue",
    "tile_grid",
)
ROLE_CLASS_MAP, ROLE_RISK_MAP = "class_map", "risk_map"
ROLE_ROI_HOLES, ROLE_QUPATH_POINTS, ROLE_QUPATH_CELLS = "roi_holes", "qupath_points", "qupath_cells"
ROLE_QUPATH_OUTLINES = "qupath_outlines"
#: Outlines (nuclei, QuPath cells) are drawn only when zoomed in to at least this many screen px per
#: µm (a 10 µm nucleus is then 15 px across), for the visible area only, and at most this many at once.
OUTLINE_MIN_ZOOM = 1.5
OUTLINE_MAX_SHAPES = 4000


def cam_role(name: str) -> str:
    """Role of the layer of CAM ``name`` ('risk' is the risk activation map)."""
    return f"cam:{name}"


def slide_scale(slide: Slide) -> tuple[float, float]:
    """(y, x) µm per level-0 px; 1.0 when the pixel size is unknown (then the axes are px)."""
    if slide.has_mpp:
        mx, my = slide.mpp
        return my, mx
    return 1.0, 1.0


def slide_units(slide: Slide) -> tuple[str, str]:
    return UNITS if slide.has_mpp else ("pixel", "pixel")


def slide_layer(slide: Slide, name: str | None = None) -> LayerTuple:
    """The multiscale RGB image of a slide, lazy (dask) at every level."""
    return (
        slide.levels,
        {
            "name": name or slide.path.name,
            "rgb": True,
            "multiscale": True,
            "scale": slide_scale(slide),
            "units": slide_units(slide),
            "contrast_limits": (0, 255),
            "metadata": {SLIDE_PATH: str(slide.path), ROLE: ROLE_SLIDE},
        },
        "image",
    )


def grid_transform(slide: Slide, cell_l0: float, origin_l0: float = 0.0) -> dict[str, Any]:
    """scale/translate of a grid layer whose cell covers ``cell_l0`` level-0 px from ``origin_l0``."""
    sy, sx = slide_scale(slide)
    return {
        "scale": (cell_l0 * sy, cell_l0 * sx),
        "translate": ((origin_l0 + (cell_l0 - 1) / 2) * sy, (origin_l0 + (cell_l0 - 1) / 2) * sx),
        "units": slide_units(slide),
    }


def geometry_transform(slide: Slide) -> dict[str, Any]:
    """scale/translate under which layer data are level-0 corner (GeoJSON) coordinates."""
    sy, sx = slide_scale(slide)
    return {"scale": (sy, sx), "translate": (-sy / 2, -sx / 2), "units": slide_units(slide)}


def world_to_level0(slide: Slide, yx_um: np.ndarray) -> np.ndarray:
    """World (y, x) µm → level-0 corner coordinates (x, y)."""
    sy, sx = slide_scale(slide)
    yx = np.asarray(yx_um, dtype=np.float64)
    return np.column_stack([yx[:, 1] / sx + 0.5, yx[:, 0] / sy + 0.5])


def tissue_layer(slide: Slide, mask: np.ndarray, downsample: float) -> LayerTuple:
    kwargs = grid_transform(slide, downsample)
    kwargs.update(
        name="Tissue",
        opacity=0.35,
        metadata={ROLE: ROLE_TISSUE, SLIDE_PATH: str(slide.path), "pathomics_downsample": downsample},
    )
    return mask.astype(np.uint8), kwargs, "labels"


def tile_grid_overlay(slide: Slide, grid: Any, max_side: int = 4096) -> LayerTuple:
    """One RGBA image showing every kept tile's outline: 20 000 tiles stay one cheap layer.

    Each lattice cell becomes ``k`` × ``k`` image px (``k`` ≤ 16, bounded by ``max_side``), with
    a 1-px border; the layer uses the grid transform for a cell of ``tile_size_l0/k`` px.
    """
    n_rows, n_cols = grid.n_rows, grid.n_cols
    k = int(max(2, min(16, max_side // max(1, n_rows, n_cols))))
    kept = np.zeros((n_rows, n_cols), dtype=bool)
    kept[grid.rows, grid.cols] = True
    cell = np.zeros((k, k), dtype=np.uint8)
    cell[0, :] = cell[-1, :] = cell[:, 0] = cell[:, -1] = 2  # border
    cell[1:-1, 1:-1] = 1  # fill
    pattern = np.kron(kept.astype(np.uint8), np.ones((k, k), dtype=np.uint8)) * np.tile(cell, (n_rows, n_cols))
    rgba = np.zeros(pattern.shape + (4,), dtype=np.uint8)
    rgba[pattern == 2] = (0, 200, 255, 255)
    rgba[pattern == 1] = (0, 200, 255, 40)
    kwargs = grid_transform(slide, grid.tile_size_l0 / k)
    kwargs.update(
        name="Tile grid",
        rgb=True,
        metadata={
            ROLE: ROLE_TILE_GRID,
            SLIDE_PATH: str(slide.path),
            "tile_count": len(grid),
            CELL_L0: grid.tile_size_l0 / k,
        },
    )
    return rgba, kwargs, "image"


def result_meta(slide: Slide, role: str, cell_l0: float) -> dict[str, Any]:
    return {ROLE: role, SLIDE_PATH: str(slide.path), CELL_L0: cell_l0}
