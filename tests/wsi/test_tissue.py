"""Tissue detection: glass vs tissue per tile, and a slide full of tissue with a saturated pen mark."""

import numpy as np

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
