"""Tissue detection: glass vs tissue per tile, and a slide full of tissue with a saturated pen mark."""

import numpy as np
import pytest

from napari_pathomics.wsi.slide import open_slide
from napari_pathomics.wsi.synthetic import synthetic_he, write_slide
from napari_pathomics.wsi.tissue import detect_tissue, tissue_fraction


def test_tissue_fraction_separates_glass_from_tissue():
    glass = np.full((2, 64, 64, 3), 243, np.uint8)
    tissue = np.empty((1, 64, 64, 3), np.uint8)
    tissue[:] = (200, 120, 190)
    assert np.all(tissue_fraction(glass) == 0)
    assert tissue_fraction(tissue)[0] == 1.0


def test_tissue_filling_the_slide_survives_a_saturated_mark(tmp_path):
    img = synthetic_he(1024, 1536, seed=2, tissue_fraction=1.0)
    img[320:384, 448:512] = (0, 0, 255)  # a pen mark
    p = write_slide(tmp_path / "full.svs", img, mpp=0.5, min_size=128)
    with open_slide(p) as s:
        assert detect_tissue(s).fraction > 0.9


def test_a_bad_file_tile_costs_only_its_own_area_and_is_planned_to_fail(tmp_path):
    """One undecodable tile must not grey a whole view chunk out of the tissue, nor vanish silently."""
    import tifffile

    from napari_pathomics.wsi.slide import open_slide
    from napari_pathomics.wsi.synthetic import synthetic_he, write_slide
    from napari_pathomics.wsi.tiling import plan_tiles

    img = synthetic_he(2048, 2048, seed=2, tissue_fraction=1.0)
    good = write_slide(tmp_path / "good.svs", img, mpp=0.5, min_size=4096)  # one level: the overview is level 0
    bad = tmp_path / "bad.svs"
    bad.write_bytes(good.read_bytes())
    with tifffile.TiffFile(bad) as tf:
        page = tf.pages[0]
        off, n = page.dataoffsets[9], page.databytecounts[9]  # file tile (row 1, col 1) of 8 x 8
        assert page.shape[:2] == (2048, 2048) and page.tilelength == 256
    with open(bad, "r+b") as fh:
        fh.seek(off)
        fh.write(b"\x00" * n)
    with open_slide(good) as s:
        ref = plan_tiles(s)
    with open_slide(bad) as s, pytest.warns(RuntimeWarning, match="undecodable"):
        tissue = detect_tissue(s)
    assert tissue.unreadable is not None
    assert 0 < tissue.unreadable_mm2(0.5) <= 4 * (256 * 0.5 / 1000) ** 2  # about one file tile, not a 1024² chunk
    with open_slide(bad) as s:
        grid = plan_tiles(s, tissue=tissue)
    assert set(zip(ref.rows, ref.cols)) <= set(zip(grid.rows, grid.cols))  # nothing lost: the bad area is attempted
    assert grid.params["unreadable_mm2"] > 0
