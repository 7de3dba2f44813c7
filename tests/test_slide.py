from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import tiffslide

from napari_pathomics.errors import MissingMppError, RegionError, SlideError
from napari_pathomics.wsi.slide import open_slide
from napari_pathomics.wsi.synthetic import synthetic_he, write_slide


def test_real_svs_metadata_and_lazy_pyramid(sample_slide_path):
    with open_slide(sample_slide_path) as s:
        assert (s.width, s.height) == (2220, 2967)
        assert s.mpp == pytest.approx((0.499, 0.499))
        assert s.vendor == "aperio" and s.objective_power == 20
        assert set(s.associated_image_names) == {"label", "macro", "thumbnail"}
        assert s.stored_level_count == 1
        # single-level slide: coarser levels are built lazily, never stored
        assert s.level_count >= 2 and all(isinstance(lv, da.Array) for lv in s.levels)
        assert s.level_downsamples[1] == pytest.approx(2.0, rel=1e-3)
        info = s.info()
        for key in ("path", "vendor", "width", "height", "level_count", "level_dimensions",
                    "level_downsamples", "mpp_x", "mpp_y", "objective_power", "associated_images"):
            assert key in info
        assert info["level_count"] == 1
        lvl1 = np.asarray(s.levels[1][100:164, 200:264])
        full = np.asarray(s.levels[0][200:328, 400:528]).astype(np.float64)
        expect = full.reshape(64, 2, 64, 2, 3).mean(axis=(1, 3))
        assert np.abs(lvl1 - expect).max() <= 1.0


def test_levels_and_reads_match_tiffslide(pyramid_svs):
    ts = tiffslide.TiffSlide(pyramid_svs)
    with open_slide(pyramid_svs) as s:
        assert s.stored_level_count == ts.level_count == 4
        assert s.associated_image_names == ["label", "thumbnail"]
        for level in range(ts.level_count):
            ref = ts.read_region((1000, 600), level, (300, 200), as_array=True)
            np.testing.assert_array_equal(s.read_region((1000, 600), level, (300, 200)), ref)
            d = s.level_downsamples[level]
            y0, x0 = int(600 / d), int(1000 / d)
            np.testing.assert_array_equal(np.asarray(s.levels[level][y0:y0 + 200, x0:x0 + 300]), ref)


def test_read_tile_uses_coarser_level_and_pads_outside(pyramid_svs):
    with open_slide(pyramid_svs) as s:
        # 112 µm at 0.5 µm/px from a 0.25 µm/px slide: read 224 px from level 1
        assert s.best_level(2.0) == 1
        tile = s.read_tile_at_mpp((0, 0), 112.0, 0.5)
        assert tile.shape == (224, 224, 3)
        np.testing.assert_array_equal(tile, s.read_region((0, 0), 1, (224, 224)))
        edge = s.read_region((s.width - 10, 0), 0, (20, 5))
        assert (edge[:, 10:] == 255).all()
        with pytest.raises(RegionError):
            s.read_region((0, 0), 7, (10, 10))


@pytest.mark.parametrize("fmt,suffix", [("ome", ".ome.tif"), ("tiff", ".tif")])
def test_other_formats(tmp_path, fmt, suffix):
    img = synthetic_he(1024, 1536, seed=1)
    p = write_slide(tmp_path / f"s{suffix}", img, mpp=0.5, fmt=fmt, min_size=256)
    with open_slide(p) as s:
        assert s.stored_level_count >= 2
        if fmt == "ome":
            assert s.mpp == pytest.approx((0.5, 0.5))
        else:
            assert not s.has_mpp
            with pytest.raises(MissingMppError, match="pixel size"):
                _ = s.mpp
            s.set_mpp(0.5)
            assert s.mpp == (0.5, 0.5)


@pytest.mark.parametrize("content", [b"", b"not a tiff at all" * 10])
def test_bad_files_give_slide_errors(tmp_path, content):
    p = tmp_path / "bad.svs"
    p.write_bytes(content)
    with pytest.raises(SlideError):
        open_slide(p)


def test_truncated_and_missing(tmp_path, pyramid_svs):
    data = Path(pyramid_svs).read_bytes()
    cut = tmp_path / "cut.svs"
    cut.write_bytes(data[:200])
    with pytest.raises(SlideError):
        open_slide(cut)
    with pytest.raises(SlideError, match="not found"):
        open_slide(tmp_path / "nope.svs")


def test_overview_and_thumbnail_use_lazy_levels(sample_slide_path):
    with open_slide(sample_slide_path) as s:
        th = s.thumbnail(512)
        assert max(th.shape[:2]) == 512 and th.dtype == np.uint8
        ov = s.overview(4.0)
        assert ov.shape == (742, 555, 3)
        assert s.best_level(4.0, stored_only=False) == 2 and s.best_level(4.0) == 0
