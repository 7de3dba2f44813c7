
import numpy as np
import pytest
from shapely.geometry import Polygon, box

from napari_pathomics.wsi.annotations import Annotation
from napari_pathomics.errors import TilingError
from napari_pathomics.wsi.slide import open_slide
from napari_pathomics.wsi.tiling import plan_tiles, rasterize
from napari_pathomics.wsi.tissue import TissueMask, detect_tissue


def test_tiles_inside_roi_and_slide(pyramid_svs):
    with open_slide(pyramid_svs) as s:
        roi = Annotation(box(500, 400, 2500, 1900))
        g = plan_tiles(s, [roi], tissue=False, tile_um=112, mpp=0.5, min_tissue=1.0)
        assert g.tile_size_l0 == pytest.approx(448.0) and g.tile_px == 224
        o = g.origins
        # with min_tissue 1.0 every kept tile lies wholly inside the ROI
        assert (o[:, 0] >= 500 - 16).all() and (o[:, 0] + 448 <= 2500 + 16).all()
        assert (o[:, 1] >= 400 - 16).all() and (o[:, 1] + 448 <= 1900 + 16).all()
        # the lattice cells fully inside: x cells 2..4 (896..2240), y cells 1..3 (448..1792)
        assert len(g) == 9
        assert len(np.unique(o, axis=0)) == len(o)
        loose = plan_tiles(s, [roi], tissue=False, tile_um=112, mpp=0.5, min_tissue=0.01)
        assert len(loose) > len(g)
        assert (loose.origins[:, 0] + 448 <= s.width).all() and (loose.origins[:, 1] + 448 <= s.height).all()


def test_vertex_order_and_start_do_not_matter(pyramid_svs):
    pts = [(300, 300), (2900, 500), (2600, 2400), (700, 2800), (200, 1500)]
    with open_slide(pyramid_svs) as s:
        counts = set()
        for poly in (pts, pts[::-1], pts[2:] + pts[:2]):
            g = plan_tiles(s, [Annotation(Polygon(poly))], tissue=False, tile_um=56, mpp=0.5)
            counts.add((len(g), g.key()))
        assert len(counts) == 1


def test_tissue_restricts_tiles(pyramid_svs):
    with open_slide(pyramid_svs) as s:
        tissue = detect_tissue(s)
        assert 0.3 < tissue.fraction < 0.9  # the synthetic image has ~60 % tissue
        all_tiles = plan_tiles(s, None, tissue=False, tile_um=112, mpp=0.5)
        tis_tiles = plan_tiles(s, None, tissue=tissue, tile_um=112, mpp=0.5)
        assert 0 < len(tis_tiles) < len(all_tiles)
        empty = TissueMask(np.zeros_like(tissue.mask), tissue.downsample)
        assert len(plan_tiles(s, None, tissue=empty)) == 0


def test_rasterize_holes():
    poly = Polygon([(0, 0), (100, 0), (100, 100), (0, 100)], [[(25, 25), (75, 25), (75, 75), (25, 75)]])
    m = rasterize(poly, (20, 20), 5.0)
    assert m.sum() == 400 - 100


@pytest.mark.parametrize("kw", [dict(tile_um=-1), dict(mpp=0), dict(min_tissue=2), dict(tile_um=1e6)])
def test_bad_tiling_params(pyramid_svs, kw):
    with open_slide(pyramid_svs) as s, pytest.raises(TilingError):
        plan_tiles(s, None, tissue=False, **kw)


def test_tissue_filling_the_slide_survives_a_saturated_mark(tmp_path):
    from napari_pathomics.wsi.synthetic import synthetic_he, write_slide

    img = synthetic_he(1024, 1536, seed=2, tissue_fraction=1.0)
    img[320:384, 448:512] = (0, 0, 255)  # a pen mark
    p = write_slide(tmp_path / "full.svs", img, mpp=0.5, min_size=128)
    with open_slide(p) as s:
        assert detect_tissue(s).fraction > 0.9
