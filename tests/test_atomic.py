"""Atomic writes under SIGKILL: a writer killed at a random point never leaves a torn file.

The three writers (ROI autosave, result cache, report) are killed mid-save over and over; the
target is always the old or the new complete version. What a killed writer CAN leave behind are
orphan temp files ``.<name>.<random>.tmp`` (killed between ``mkstemp`` and ``os.replace``):
documented behaviour is that they are dot-files beside the target, never read by us, at most one
per killed write (every successful write removes its own), and the target is never touched by them.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

WRITERS = {
    # what the child writes, alternating two versions forever
    "rois": """
from shapely.geometry import box
from napari_pathomics.wsi.annotations import Annotation
from napari_pathomics.wsi.roi_store import save_rois
slide = Path(sys.argv[1])
versions = [[Annotation(box(i, i, i + 50 + v, i + 50), id=f"{v}-{i}") for i in range(4000)] for v in (0, 1)]
k = 0
while True:
    save_rois(slide, versions[k % 2]); k += 1
""",
    "results": """
import numpy as np
from napari_pathomics.results import TileResults
from napari_pathomics.wsi.tiling import TileGrid
n = 60000
grid = TileGrid(cols=np.arange(n) % 300, rows=np.arange(n) // 300, tile_size_l0=448.0, tile_um=112.0, mpp=0.5,
                slide_width=300 * 448, slide_height=200 * 448, coverage=np.ones(n, np.float32))
res = TileResults.empty(grid, ["A", "B"], ["#ff0000", "#00ff00"], {"v": 0})
k = 0
while True:
    res.probs[:] = k % 2; res.meta["v"] = k % 2
    res.save(Path(sys.argv[1])); k += 1
""",
    "report": """
from napari_pathomics.atomic import atomic_write_text
texts = ["<html>" + ("A" * 3_000_000) + "</html>", "<html>" + ("B" * 2_000_000) + "</html>"]
k = 0
while True:
    atomic_write_text(Path(sys.argv[1]), texts[k % 2]); k += 1
""",
}


def _check(kind: str, path: Path) -> None:
    if kind == "rois":
        doc = json.loads(path.read_text())
        ids = {f["id"].split("-")[0] for f in doc["features"]}
        assert len(doc["features"]) == 4000 and len(ids) == 1
    elif kind == "results":
        from napari_pathomics.results import TileResults

        res = TileResults.load(path)
        v = res.meta["v"]
        assert len(res) == 60000 and np.all(res.probs == v)
    else:
        text = path.read_text()
        assert text in ("<html>" + "A" * 3_000_000 + "</html>", "<html>" + "B" * 2_000_000 + "</html>")


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_sigkill_mid_save_leaves_old_or_new_file(tmp_path, kind):
    rng = random.Random(kind)
    target = {"rois": tmp_path / "case.svs", "results": tmp_path / "r.npz", "report": tmp_path / "report.html"}[kind]
    saved = tmp_path / "case.svs.rois.geojson" if kind == "rois" else target  # roi_store.sidecar_path
    code = "import sys\nfrom pathlib import Path\n" + WRITERS[kind]
    for _ in range(8):
        child = subprocess.Popen([sys.executable, "-c", code, str(target)])
        deadline = time.monotonic() + 60
        while not saved.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.4))
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        _check(kind, saved)
    # temp files of killed writers may stay behind (named .<file>.*.tmp), never the file itself
    leftovers = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert all(p.name.startswith(".") for p in leftovers)


TWO_BLOBS_WRITER = """
import sys
from pathlib import Path
from napari_pathomics.atomic import atomic_write_bytes
target = Path(sys.argv[1])
blobs = [b"A" * 4_000_000, b"B" * 3_000_000]
k = 0
while True:
    atomic_write_bytes(target, blobs[k % 2]); k += 1
"""


def test_orphan_temp_files_are_bounded(tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    kills = 20
    rng = np.random.default_rng(0)
    for _ in range(kills):
        child = subprocess.Popen([sys.executable, "-c", TWO_BLOBS_WRITER, str(target)])
        deadline = time.monotonic() + 60
        while not target.exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(float(rng.uniform(0.0, 0.15)))
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        data = target.read_bytes()
        assert data in (b"A" * 4_000_000, b"B" * 3_000_000)
    orphans = [p for p in tmp_path.iterdir() if p != target]
    # at most one orphan per killed process, all hidden temp files of this target
    assert len(orphans) <= kills
    assert all(p.name.startswith(".report.html.") and p.name.endswith(".tmp") for p in orphans)
