"""Slides: metadata, lazy pyramids and reads equal to tiffslide; every broken or odd file gets its
typed one-line error (API and ``pathomics info``), odd-but-valid TIFFs open, no file handle leaks.

The broken-slide corpus (``_slides.make_corpus``) is generated from a valid synthetic SVS. Cases
found by probing: a greyscale tiled TIFF opened but then broke the viewer (``IndexError`` building
the dask levels) -> now a one-line SlideError at open; 16-bit, float, RGBA, 1 x 1 px and OME /
generic tiled pyramids open and read uint8 RGB; a JPEG with a ``.svs`` name, a folder with a
``.svs`` name, a missing file and a z-stack are refused.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

import cv2
import dask.array as da
import numpy as np
import pytest
import tifffile
import tiffslide

from _cli import CLI
from _slides import make_corpus, open_fds
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
        for key in (
            "path",
            "vendor",
            "width",
            "height",
            "level_count",
            "level_dimensions",
            "level_downsamples",
            "mpp_x",
            "mpp_y",
            "objective_power",
            "associated_images",
        ):
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
            np.testing.assert_array_equal(np.asarray(s.levels[level][y0 : y0 + 200, x0 : x0 + 300]), ref)


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


# ---- the broken-slide corpus -------------------------------------------------------------------
BROKEN = {  # file -> words the one-line message must contain
    "zero.svs": "empty",
    "random.svs": "cannot open",
    "trunc-header.svs": "cannot open",
    "trunc-10pct.svs": "cannot be decoded",
    "trunc-50pct.svs": "cannot be decoded",
    "trunc-90pct.svs": "cannot be decoded",
    "lying-level-size.svs": "inconsistent",
    "huge-declared.svs": "beyond any scanned slide",
    "unknown-compression.svs": "COMPRESSION",
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_slide_is_refused_with_its_reason(corpus, name):
    with pytest.raises(SlideError, match=BROKEN[name]):
        open_slide(corpus[name])
    r = subprocess.run([*CLI, "info", str(corpus[name])], capture_output=True, text=True, timeout=120)
    assert r.returncode == 3, r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr and name in r.stderr


def test_striped_tiff_reads_like_tiffslide(corpus):
    with open_slide(corpus["striped.tif"]) as s:
        ref = tiffslide.TiffSlide(corpus["striped.tif"]).read_region((100, 200), 0, (300, 200), as_array=True)
        np.testing.assert_array_equal(s.read_region((100, 200), 0, (300, 200)), ref)
        assert not s.has_mpp and s.level_count >= 2  # no pyramid stored: one is built lazily


def test_no_mpp_asks_for_one(corpus):
    with open_slide(corpus["no-mpp.tif"]) as s, pytest.raises(MissingMppError):
        _ = s.mpp
    r = subprocess.run([*CLI, "tiles", str(corpus["no-mpp.tif"])], capture_output=True, text=True, timeout=120)
    assert r.returncode == 4 and "--slide-mpp" in r.stderr and r.stderr.count("\n") == 1


def test_path_with_spaces_and_accents(corpus):
    p = corpus["odd path"]
    with open_slide(p) as s:
        assert s.info()["path"] == str(p)
    r = subprocess.run([*CLI, "tiles", str(p), "--json"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and '"tile_count"' in r.stdout


def test_file_deleted_while_open(corpus, tmp_path):
    p = tmp_path / "soon-gone.svs"
    shutil.copy(corpus["good.svs"], p)
    s = open_slide(p)
    os.unlink(p)
    # the open handle still reads (POSIX keeps the inode); identifying the file again fails cleanly
    assert s.read_region((0, 0), 0, (64, 64)).shape == (64, 64, 3)
    with pytest.raises(SlideError, match="no longer be read"):
        s.file_hash()
    s.close()


def test_corrupt_tile_in_the_middle_shows_grey_not_a_crash(corpus, tmp_path):
    p = tmp_path / "midcorrupt.svs"
    shutil.copy(corpus["good.svs"], p)
    with tifffile.TiffFile(p) as t:
        page = t.pages[0]
        offsets, counts = page.dataoffsets, page.databytecounts
    k = len(offsets) // 2 + 1  # a tile in the middle: the open-time probe does not touch it
    with open(p, "r+b") as fh:
        fh.seek(offsets[k])
        fh.write(b"\x00" * counts[k])
    with open_slide(p) as s:
        with pytest.warns(RuntimeWarning, match="undecodable"):
            level0 = np.asarray(s.levels[0])
        assert (level0 == 128).all(axis=-1).any()


# ---- odd-but-TIFF inputs, file handles ---------------------------------------------------------
@pytest.fixture(scope="module")
def odd(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("odd")
    img = synthetic_he(600, 700, seed=2)
    out: dict[str, Path] = {}

    def tif(name: str, data: np.ndarray, **kw) -> None:
        tifffile.imwrite(d / name, data, tile=(256, 256), **kw)
        out[name] = d / name

    tif("grey.tif", img[..., 0])
    tif("u16.tif", img.astype(np.uint16) * 257, photometric="rgb")
    tif("float.tif", img.astype(np.float32) / 255, photometric="rgb")
    tif("rgba.tif", np.dstack([img, np.full(img.shape[:2], 255, np.uint8)]), photometric="rgb", extrasamples=[2])
    tif("zstack.tif", np.stack([img] * 3), photometric="rgb")
    tifffile.imwrite(d / "one-pixel.tif", img[:1, :1], photometric="rgb")
    out["one-pixel.tif"] = d / "one-pixel.tif"
    (d / "photo.svs").write_bytes(cv2.imencode(".jpg", img)[1].tobytes())
    out["photo.svs"] = d / "photo.svs"
    (d / "folder.svs").mkdir()
    out["folder.svs"] = d / "folder.svs"
    out["missing.svs"] = d / "missing.svs"
    out["pyramid.ome.tif"] = write_slide(d / "pyramid.ome.tif", img, mpp=0.5, fmt="ome", min_size=128)
    out["pyramid-generic.tif"] = write_slide(d / "pyramid-generic.tif", img, mpp=0.5, fmt="tiff", min_size=128)
    return out


ODD_REFUSED = {
    "grey.tif": "1 channel(s) per pixel; only RGB brightfield slides are supported",
    "zstack.tif": "cannot read the levels of zstack.tif",
    "photo.svs": "cannot open photo.svs as a whole-slide image",
    "folder.svs": "is a folder, not a slide file",
    "missing.svs": "missing.svs",
}
ODD_OPENS = ["u16.tif", "float.tif", "rgba.tif", "one-pixel.tif", "pyramid.ome.tif", "pyramid-generic.tif"]


@pytest.mark.parametrize("name", sorted(ODD_REFUSED))
def test_odd_file_refused_in_one_line(odd: dict[str, Path], name: str) -> None:
    with pytest.raises(SlideError) as info:
        open_slide(odd[name])
    assert ODD_REFUSED[name] in str(info.value) and "\n" not in str(info.value)
    r = subprocess.run([*CLI, "info", str(odd[name])], capture_output=True, text=True, timeout=120)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == SlideError.exit_code and "Traceback" not in r.stderr and len(lines) == 1, r.stderr


@pytest.mark.parametrize("name", ODD_OPENS)
def test_odd_but_valid_tiff_opens_reads_and_views(odd: dict[str, Path], name: str) -> None:
    with open_slide(odd[name]) as s:
        region = s.read_region((0, 0), 0, (64, 48))
        assert region.shape == (48, 64, 3) and region.dtype == np.uint8
        top = np.asarray(s.levels[-1])  # what napari renders first
        assert top.ndim == 3 and top.shape[2] == 3


def test_no_file_handle_leaks_on_error_paths(corpus: dict[str, Path], odd: dict[str, Path]) -> None:
    logging.getLogger("tifffile").setLevel(logging.CRITICAL)
    files = list(corpus.values()) + list(odd.values())

    def cycle() -> int:
        failures = 0
        for p in files:
            try:
                with open_slide(p) as s:
                    s.read_region((0, 0), 0, (32, 32))
            except SlideError:
                failures += 1
        return failures

    assert cycle() >= 12  # warm-up (imports, codecs); most of the corpus is refused
    start = open_fds()
    for _ in range(4):
        cycle()
    assert open_fds() <= start, f"{open_fds() - start} file handles leaked over {4 * len(files)} opens"


def test_closed_slide_releases_its_file(tmp_path: Path) -> None:
    p = write_slide(tmp_path / "s.svs", synthetic_he(512, 512, seed=1), mpp=0.5, min_size=128)
    start = open_fds()
    slides = [open_slide(p) for _ in range(10)]
    for s in slides:
        np.asarray(s.levels[-1])
    assert open_fds() > start  # each open slide holds its file
    for s in slides:
        s.close()
    assert open_fds() <= start
