"""Hardening: every broken slide gets its typed error and one CLI line; odd-but-valid ones work."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tiffslide

from napari_pathomics.errors import MissingMppError, SlideError
from napari_pathomics.wsi.slide import open_slide

from _badfiles import make_corpus

REFUSED = {  # file -> words the one-line message must contain
    "zero.svs": "empty",
    "random.svs": "cannot open",
    "trunc-header.svs": "cannot open",
    "trunc-10pct.svs": "cannot be decoded",
    "trunc-50pct.svs": "cannot be decoded",
    "trunc-90pct.svs": "cannot be decoded",
    "lying-level-size.svs": "inconsistent",
    "huge-declared.svs": "inconsistent",
    "unknown-compression.svs": "COMPRESSION",
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_broken_slide_is_refused_with_its_reason(corpus, name):
    with pytest.raises(SlideError, match=REFUSED[name]):
        open_slide(corpus[name])
    r = subprocess.run([sys.executable, "-m", "napari_pathomics.cli", "info", str(corpus[name])],
                       capture_output=True, text=True, timeout=120)
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
    r = subprocess.run([sys.executable, "-m", "napari_pathomics.cli", "tiles", str(corpus["no-mpp.tif"])],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 4 and "--slide-mpp" in r.stderr and r.stderr.count("\n") == 1


def test_path_with_spaces_and_accents(corpus):
    p = corpus["odd path"]
    with open_slide(p) as s:
        assert s.info()["path"] == str(p)
    r = subprocess.run([sys.executable, "-m", "napari_pathomics.cli", "tiles", str(p), "--json"],
                       capture_output=True, text=True, timeout=120)
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
    import tifffile

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
