"""Hardening (slides), beyond the corpus of ``tests/test_robustness_slides.py``:

* no file handle is leaked on any error path (50+ failed opens of every broken file),
* odd-but-TIFF inputs found by probing: a greyscale tiled TIFF opened but then broke the viewer
  (``IndexError`` building the dask levels) -> now a one-line SlideError at open; 16-bit, float,
  RGBA, 1 x 1 px and OME / generic tiled pyramids open and read uint8 RGB,
* a JPEG with a ``.svs`` name, a folder with a ``.svs`` name, a missing file, a z-stack,
* the same through ``pathomics info`` (exit 3, one stderr line, no traceback).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from napari_pathomics.errors import SlideError
from napari_pathomics.wsi.slide import open_slide
from napari_pathomics.wsi.synthetic import synthetic_he, write_slide

from _badfiles import make_corpus

CLI = [sys.executable, "-m", "napari_pathomics.cli"]


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


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


REFUSED = {
    "grey.tif": "1 channel(s) per pixel; only RGB brightfield slides are supported",
    "zstack.tif": "cannot read the levels of zstack.tif",
    "photo.svs": "cannot open photo.svs as a whole-slide image",
    "folder.svs": "is a folder, not a slide file",
    "missing.svs": "missing.svs",
}
OPENS = ["u16.tif", "float.tif", "rgba.tif", "one-pixel.tif", "pyramid.ome.tif", "pyramid-generic.tif"]


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_odd_file_refused_in_one_line(odd: dict[str, Path], name: str) -> None:
    with pytest.raises(SlideError) as info:
        open_slide(odd[name])
    assert REFUSED[name] in str(info.value) and "\n" not in str(info.value)
    r = subprocess.run([*CLI, "info", str(odd[name])], capture_output=True, text=True, timeout=120)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == SlideError.exit_code and "Traceback" not in r.stderr and len(lines) == 1, r.stderr


@pytest.mark.parametrize("name", OPENS)
def test_odd_but_valid_tiff_opens_reads_and_views(odd: dict[str, Path], name: str) -> None:
    with open_slide(odd[name]) as s:
        region = s.read_region((0, 0), 0, (64, 48))
        assert region.shape == (48, 64, 3) and region.dtype == np.uint8
        top = np.asarray(s.levels[-1])  # what napari renders first
        assert top.ndim == 3 and top.shape[2] == 3


def test_no_file_handle_leaks_on_error_paths(tmp_path: Path, odd: dict[str, Path]) -> None:
    logging.getLogger("tifffile").setLevel(logging.CRITICAL)
    files = list(make_corpus(tmp_path / "corpus").values()) + list(odd.values())

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
    start = _fds()
    for _ in range(4):
        cycle()
    assert _fds() <= start, f"{_fds() - start} file handles leaked over {4 * len(files)} opens"


def test_closed_slide_releases_its_file(tmp_path: Path) -> None:
    p = write_slide(tmp_path / "s.svs", synthetic_he(512, 512, seed=1), mpp=0.5, min_size=128)
    start = _fds()
    slides = [open_slide(p) for _ in range(10)]
    for s in slides:
        np.asarray(s.levels[-1])
    assert _fds() > start  # each open slide holds its file
    for s in slides:
        s.close()
    assert _fds() <= start
