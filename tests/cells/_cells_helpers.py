"""What the cells tests share: planted-nuclei slides, real H&E images, hand-made tile results."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_pathomics.cells.synthetic import plant_nuclei
from napari_pathomics.resources import NUCLEI_IMAGES
from napari_pathomics.results import DONE, TileResults
from napari_pathomics.wsi.images import read_rgb
from napari_pathomics.wsi.synthetic import write_slide
from napari_pathomics.wsi.tiling import TileGrid

CLASSES = ["ADI", "BACK", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM"]
COLORS = ["#F2E394", "#D3D3D3", "#6B4226", "#5B2C9F", "#8EC9E8", "#E88FB4", "#2E9E44", "#F08A24", "#C8102E"]


def real_image(name: str) -> tuple[np.ndarray, float]:
    """A vendored real H&E image and its µm/px."""
    path, mpp = NUCLEI_IMAGES[name]
    return read_rgb(path), mpp


def nuclei_slide(path: Path, side: int = 896, mpp: float = 0.5, seed: int = 0, **kw: object) -> tuple[Path, object]:
    """An SVS of planted nuclei (and the scene with its truth), glass around a tissue square."""
    scene = plant_nuclei(side, side, mpp, seed=seed, **kw)
    return write_slide(path, scene.rgb, mpp=mpp, fmt="svs", min_size=256), scene


def tile_results(
    mask_tum: np.ndarray,
    tile_px: float = 224.0,
    mpp: float = 0.5,
    p_tum: float = 0.9,
    p_other: float = 0.05,
    done: np.ndarray | None = None,
) -> TileResults:
    """Results on a full lattice whose TUM probability is ``p_tum`` where ``mask_tum`` is set."""
    n_rows, n_cols = mask_tum.shape
    rows, cols = np.nonzero(np.ones_like(mask_tum, dtype=bool) if done is None else done)
    grid = TileGrid(
        cols=cols.astype(np.int64),
        rows=rows.astype(np.int64),
        tile_size_l0=tile_px,
        tile_um=tile_px * mpp,
        mpp=mpp,
        slide_width=int(n_cols * tile_px),
        slide_height=int(n_rows * tile_px),
        coverage=np.ones(rows.size, dtype=np.float32),
    )
    res = TileResults.empty(grid, CLASSES, COLORS, {"slide_mpp": [mpp, mpp], "tile_um": tile_px * mpp, "mpp": mpp})
    t = CLASSES.index("TUM")
    s = CLASSES.index("STR")
    probs = np.zeros((rows.size, len(CLASSES)), dtype=np.float32)
    is_tum = mask_tum[rows, cols]
    probs[:, t] = np.where(is_tum, p_tum, p_other)
    probs[:, s] = 1.0 - probs[:, t]
    res.probs[:] = probs
    res.risk[:] = probs[:, t]
    res.status[:] = DONE
    return res
