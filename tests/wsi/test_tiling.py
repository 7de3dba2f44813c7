"""Tile planning: tiles inside the ROI and the slide, vertex order irrelevant, tissue restriction,
holes, bad parameters, and (property-based) TileGrid invariants for random polygons."""

import numpy as np
import pytest
import shapely
from hypothesis import given
from hypothesis import strategies as st
from shapely.geometry import Polygon, box

from _fuzz import SETTINGS, polygons
from napari_pathomics.errors import TilingError
from napari_pathomics.wsi.annotations import Annotation
from napari_pathomics.wsi.slide import open_slide
from napari_pathomics.wsi.synthetic import synthetic_he, write_slide
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


@pytest.fixture(scope="module")
def fuzz_slide(tmp_path_factory):
    p = write_slide(tmp_path_factory.mktemp("fz") / "s.svs", synthetic_he(1536, 2048, seed=5), mpp=0.5, min_size=256)
    s = open_slide(p)
    return s, detect_tissue(s)


@SETTINGS
@given(polygons(), st.integers(0, 11), st.booleans(), st.sampled_from([0.01, 0.5, 1.0]))
def test_tile_grid_invariants(fuzz_slide, poly, shift, reverse, min_tissue):
    slide, tissue = fuzz_slide
    ring = list(poly.exterior.coords)[:-1]
    k = shift % len(ring)
    variants = [ring, ring[k:] + ring[:k]]
    if reverse:
        variants.append(ring[::-1])
    grids = [
        plan_tiles(
            slide,
            [Annotation(Polygon(r, [h.coords for h in poly.interiors]))],
            tissue=tissue,
            tile_um=32,
            mpp=0.5,
            min_tissue=min_tissue,
        )
        for r in variants
    ]
    g = grids[0]
    assert all(len(x) == len(g) and np.array_equal(x.origins, g.origins) for x in grids[1:])
    o = g.origins
    assert len(np.unique(o, axis=0)) == len(o)
    assert (
        (o >= 0) & (o[:, :1] + g.tile_size_l0 <= slide.width + 1) & (o[:, 1:] + g.tile_size_l0 <= slide.height + 1)
    ).all()
    assert (g.coverage >= min_tissue - 1e-9).all()
    if len(g):  # every kept tile touches the ROI
        tiles = shapely.box(o[:, 0], o[:, 1], o[:, 0] + g.tile_size_l0, o[:, 1] + g.tile_size_l0)
        assert shapely.intersects(tiles, poly).all()


def test_planning_an_roi_window_equals_the_whole_lattice(pyramid_svs):
    """Only the ROIs' box is computed; the tiles are exactly those of the whole-slide computation."""
    import math

    from shapely.geometry import Polygon

    from napari_pathomics.wsi.annotations import Annotation
    from napari_pathomics.wsi.slide import open_slide
    from napari_pathomics.wsi.tiling import _cell_fractions, plan_tiles, rasterize
    from napari_pathomics.wsi.tissue import detect_tissue

    rng = np.random.default_rng(4)
    with open_slide(pyramid_svs) as slide:
        tissue = detect_tissue(slide)
        s = 112.0 / slide.mpp[0]
        n_rows, n_cols = int(math.floor(slide.height / s)), int(math.floor(slide.width / s))
        for _ in range(5):
            c = rng.uniform(300, 3500, 2)
            ang = np.sort(rng.uniform(0, 2 * np.pi, 9))
            pts = np.c_[c[0] + rng.uniform(200, 900, 9) * np.cos(ang), c[1] + rng.uniform(200, 900, 9) * np.sin(ang)]
            roi = Annotation(Polygon(pts))
            grid = plan_tiles(slide, [roi], tissue=tissue, min_tissue=0.3)
            full = tissue.mask & rasterize(roi.geometry, tissue.mask.shape, tissue.downsample)
            frac = _cell_fractions(full, tissue.downsample, s, range(n_rows), range(n_cols))
            rows, cols = np.nonzero(frac >= 0.3)
            assert np.array_equal(grid.rows, rows) and np.array_equal(grid.cols, cols)
            np.testing.assert_allclose(grid.coverage, frac[rows, cols], rtol=1e-6)


def test_a_slide_claiming_absurd_dimensions_is_refused_at_open(tmp_path):
    from _slides import _patch_tag, small_slide
    from napari_pathomics.errors import SlideError
    from napari_pathomics.wsi.slide import open_slide

    good = small_slide(tmp_path / "good.svs")
    for w, h in ((1_000_000, 1_000_000), (2_000_000_000, 2_000_000_000), (2_000_000_000, 1), (1, 2_000_000_000)):
        p = tmp_path / f"claims-{w}x{h}.svs"
        p.write_bytes(_patch_tag(_patch_tag(good.read_bytes(), good, "ImageWidth", w), good, "ImageLength", h))
        with pytest.raises(SlideError) as info:
            open_slide(p)
        msg = str(info.value)
        assert "\n" not in msg and "beyond any scanned slide" in msg, msg


def test_planning_a_few_tiles_of_a_huge_slide_costs_a_few_tiles_of_memory(tmp_path, capsys):
    """A 200 000² slide (a 12 500² tissue mask, 470 MB of overview) plans the 4 tiles of a small ROI
    holding a few MB: only the ROIs' box is read, thresholded and rasterised. It once took 2.9 GB."""
    import json
    import tracemalloc

    from _slides import sparse_huge_slide
    from napari_pathomics.cli import main
    from napari_pathomics.wsi.annotations import write_geojson
    from napari_pathomics.wsi.tiling import plan_tiles
    from napari_pathomics.wsi.tissue import tissue_from_rgb

    path = sparse_huge_slide(tmp_path / "huge.svs")
    x0 = y0 = 100_352 + 600  # inside the stored H&E patch, 112 µm tiles of 224 px at 0.5 µm/px
    roi = [Annotation(box(x0, y0, x0 + 448, y0 + 448))]
    tissue_from_rgb(np.full((64, 64, 3), 200, np.uint8), 8.0)  # its lazy imports are not planning's memory
    with open_slide(path) as slide:
        assert slide.dimensions == (200_000, 200_000)
        tracemalloc.start()
        try:
            grid = plan_tiles(slide, roi, min_tissue=0.3)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert len(grid) == 4 and grid.params["unreadable_mm2"] == 0.0
    assert peak < 64 * 2**20, f"{peak / 2**20:.0f} MiB to plan 4 tiles"
    # and through the CLI, with tissue detection, in one answer
    roi_file = tmp_path / "roi.geojson"
    write_geojson(roi, roi_file)
    assert main(["tiles", str(path), "--roi", str(roi_file), "--min-tissue", "0.3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["tile_count"] == 4 and out["slide_width"] == 200_000, out
