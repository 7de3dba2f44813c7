"""What a slide's header declares never sets what planning reads (issue 18).

``pathomics tiles`` and ``info`` on 30–450 KB TIFFs declaring 200 000² or 1 000 000 × 250 000 px,
a 100 000² two-level pyramid, ran past 120 s at 2–3 GB RSS (a whole-level overview through the
synthesized pyramid); a 32 768 px declared tile decoded 3 GB on open; a level larger than level 0
was accepted. Each runs here on a generated file; memory is the child process's own peak
(``VmHWM`` of its address space after exec: ``ru_maxrss`` would count the forked test process too),
time is left to ``benchmarks/bench_giant_slides.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from _slides import _patch_tag, declared_giant_tiff, sparse_huge_slide
from napari_pathomics.cli import main
from napari_pathomics.errors import SlideError
from napari_pathomics.wsi import slide as slide_mod
from napari_pathomics.wsi.slide import open_slide
from napari_pathomics.wsi.synthetic import synthetic_he, write_slide
from napari_pathomics.wsi.tiling import plan_tiles

SRC = Path(__file__).resolve().parents[2] / "src"


# Runs the CLI and writes the process's own peak RSS (kB) to argv[1] at exit.
_PEAK_RUNNER = """
import atexit, runpy, sys
out = sys.argv.pop(1)
def _peak():
    with open("/proc/self/status") as fh:
        kb = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
    with open(out, "w") as fh:
        fh.write(str(kb))
atexit.register(_peak)
runpy.run_module("napari_pathomics.cli", run_name="__main__", alter_sys=True)
"""


def _run_measured(args: list[str], tmp: Path) -> tuple[int, str, int]:
    """Run the CLI in a child process: (exit code, its output, its peak RSS in bytes)."""
    if not Path("/proc/self/status").exists():
        pytest.skip("peak RSS is read from /proc/self/status (Linux only)")
    out, peak = tmp / "child.out", tmp / "child.peak"
    peak.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    with open(out, "wb") as fh:
        proc = subprocess.run(
            [sys.executable, "-c", _PEAK_RUNNER, str(peak), *args], stdout=fh, stderr=subprocess.STDOUT, env=env
        )
    assert peak.exists(), f"the child wrote no peak RSS: {out.read_text()}"
    return proc.returncode, out.read_text(), int(peak.read_text()) * 1024


GIANTS = {
    "1e6 x 2.5e5, one level": dict(width=1_000_000, height=250_000, tile=4096),
    "200 000², one level": dict(width=200_000, height=200_000, tile=512),
    "100 000², two levels": dict(width=100_000, height=100_000, tile=512, levels=2),
}


@pytest.mark.parametrize("name", list(GIANTS))
def test_tiles_on_a_giant_declared_slide_answer_in_bounded_memory(name, tmp_path) -> None:
    path = declared_giant_tiff(tmp_path / "giant.svs", **GIANTS[name])
    assert path.stat().st_size < 2_000_000
    rc, text, rss = _run_measured(["tiles", str(path), "--json"], tmp_path)
    assert rc == 0, text
    doc = json.loads(text[text.index("{") :])
    assert doc["tile_count"] == 0  # one glass tile and empty ones: no tissue
    assert rss < 1 << 30, f"{rss / 2**20:.0f} MiB"
    if name.startswith("1e6"):
        rc, text, rss = _run_measured(["info", str(path), "--json"], tmp_path)
        assert rc == 0 and json.loads(text)["width"] == 1_000_000, text
        assert rss < 1 << 30, f"{rss / 2**20:.0f} MiB"


def test_tissue_on_a_huge_single_level_slide_is_found_without_a_roi(tmp_path, capsys) -> None:
    """A 200 000² slide whose only stored tiles are a 1 mm H&E patch: tiles land on the patch."""
    path = sparse_huge_slide(tmp_path / "huge.svs")
    assert main(["tiles", str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    origins = np.asarray(doc["origins"])
    assert doc["tile_count"] >= 40, doc["tile_count"]  # (2048 / 224)² ≈ 83 tiles fit in the patch
    assert (origins >= 100_352 - 224).all() and (origins < 100_352 + 2048).all()


def test_a_sampled_overview_keeps_every_tile_it_did_not_decode(tmp_path, monkeypatch) -> None:
    """Past the decode budget a spread subset of file tiles is read and the rest is kept as tissue:
    the plan only grows, never loses tissue, and says so."""
    img = synthetic_he(2048, 2048, seed=5, tissue_fraction=0.5)
    path = write_slide(tmp_path / "one-level.svs", img, mpp=0.5, min_size=4096)
    with open_slide(path) as s:
        direct = plan_tiles(s)
    monkeypatch.setattr(slide_mod, "OVERVIEW_DIRECT_PX", 0)  # tile by tile, every tile decoded
    with open_slide(path) as s:
        tilewise = plan_tiles(s)
    monkeypatch.setattr(slide_mod, "OVERVIEW_DECODE_PX", 16 * 256 * 256)  # 16 of the 64 file tiles
    with open_slide(path) as s, pytest.warns(RuntimeWarning, match="1 in 4"):
        sampled = plan_tiles(s)
    key = lambda g: set(zip(g.rows.tolist(), g.cols.tolist()))  # noqa: E731
    assert 0 < len(direct) < 81  # some glass
    assert len(key(tilewise) ^ key(direct)) <= 0.05 * len(direct)
    assert key(sampled) >= key(tilewise) and len(sampled) > len(tilewise)


def test_an_absurd_declared_tile_is_refused_in_one_line(tmp_path, capsys) -> None:
    good = write_slide(tmp_path / "good.svs", synthetic_he(1024, 1024, seed=1), mpp=0.5, min_size=4096)
    data = _patch_tag(good.read_bytes(), good, "TileWidth", 32768)
    bad = tmp_path / "tile32k.svs"
    bad.write_bytes(data)
    bad.write_bytes(_patch_tag(bad.read_bytes(), bad, "TileLength", 32768))
    with pytest.raises(SlideError, match="tiles of 32768 x 32768 px"):
        open_slide(bad)
    for cmd in ("info", "tiles"):
        assert main([cmd, str(bad)]) == 3
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "beyond any scanner" in err, err


def test_a_level_larger_than_level_0_is_refused(tmp_path, capsys) -> None:
    good = write_slide(tmp_path / "good.svs", synthetic_he(1024, 1024, seed=1), mpp=0.5, min_size=256)
    data = _patch_tag(good.read_bytes(), good, "ImageWidth", 2048, page=2)  # page 1 is the thumbnail
    lie = tmp_path / "lie.svs"
    lie.write_bytes(data)
    lie.write_bytes(_patch_tag(lie.read_bytes(), lie, "ImageLength", 2048, page=2))
    assert main(["info", str(lie)]) == 3
    err = capsys.readouterr().err
    assert "level 1 is 2048x2048 px, not smaller than level 0" in err and err.count("\n") == 1, err
