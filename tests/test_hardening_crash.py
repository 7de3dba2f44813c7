"""Hardening (after a crash): what a killed process leaves behind is recovered from, never fatal.

The SIGKILL-at-random-points tests of the three writers (ROI autosave, result cache, report) are in
``tests/test_robustness_crash.py``: they show the target file is always the old or the new
complete version. What a crash (or a full disk, or a copy by another tool) CAN leave is:

* a torn / empty file written by something other than our atomic writer, e.g. a results cache
  copied by rsync that was interrupted: ``TileResults.load`` raised bare ``BadZipFile`` /
  ``EOFError`` / ``TypeError`` on these, so the engine's "unreadable cache -> recompute" path never
  ran and inference crashed. Fixed in ``results.py``; the corpus below pins it.
* orphan temp files ``.<name>.<random>.tmp`` of writers killed between ``mkstemp`` and
  ``os.replace``. Documented behaviour: they are dot-files beside the target, never read by us,
  one per killed write (they do not grow without bound for a live writer: every successful write
  removes its own), and the target is never touched by them. ``test_orphan_temp_files_are_bounded``
  counts them over 20 kills.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from napari_pathomics.errors import ResultsError
from napari_pathomics.results import TileResults
from napari_pathomics.wsi.tiling import TileGrid


def _results(n: int = 500) -> TileResults:
    grid = TileGrid(cols=np.arange(n) % 30, rows=np.arange(n) // 30, tile_size_l0=448.0, tile_um=112.0, mpp=0.5,
                    slide_width=30 * 448, slide_height=20 * 448, coverage=np.ones(n, np.float32))
    return TileResults.empty(grid, ["A", "B"], ["#ff0000", "#00ff00"], {"v": 0})


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _corpus() -> dict[str, bytes]:
    good = _results().to_npz_bytes()
    z = dict(np.load(io.BytesIO(good)))
    doc = json.loads(str(z["meta_json"]))
    out = {"empty": b"", "random": os.urandom(5000)}
    for f in (0.01, 0.1, 0.5, 0.9, 0.99):
        out[f"truncated-{f}"] = good[: int(len(good) * f)]
    out["deep-meta"] = _npz(**{**z, "meta_json": np.array("[" * 100_000)})
    out["meta-is-a-list"] = _npz(**{**z, "meta_json": np.array("[1]")})
    for name, (key, value) in {"n_cols-null": ("n_cols", None), "class_names-int": ("class_names", 5),
                               "meta-list": ("meta", [1]), "format-other": ("format", "other/9")}.items():
        out[name] = _npz(**{**z, "meta_json": np.array(json.dumps({**doc, key: value}))})
    out["probs-wrong-shape"] = _npz(**{**z, "probs": np.zeros(3)})
    out["object-array"] = _npz(**{**z, "cols": np.array([{"x": 1}] * 3, dtype=object)})
    return out


@pytest.mark.parametrize("name", sorted(_corpus()))
def test_torn_or_hostile_results_file_is_a_results_error(tmp_path: Path, name: str) -> None:
    p = tmp_path / f"{name}.npz"
    p.write_bytes(_corpus()[name])
    with pytest.raises(ResultsError) as info:
        TileResults.load(p)
    assert str(info.value).startswith(f"{name}.npz: ") and "\n" not in str(info.value)


def test_engine_recomputes_over_a_torn_cache_file(tmp_path: Path) -> None:
    from napari_pathomics.inference.engine import Engine
    from napari_pathomics.wsi.tiling import plan_for_bundle
    from napari_pathomics.wsi.slide import open_slide

    from _cohort_helpers import tiny_bundle
    from _engine_helpers import small_slide

    bundle = tiny_bundle(tmp_path / "b")
    slide_path = small_slide(tmp_path / "s.svs")
    cache = tmp_path / "cache"
    engine = Engine(bundle, device="cpu", amp="fp32", num_threads=1, workers=1)
    with open_slide(slide_path) as slide:
        grid = plan_for_bundle(slide, bundle, tissue=False)
        run = engine.run(slide, grid, cache_dir=cache)
        first = run.results
        for _ in run:
            pass
        cache_file = run.cache_file
        assert cache_file is not None and cache_file.is_file()
        for torn in (b"", cache_file.read_bytes()[:200]):  # as a crash of a non-atomic copy leaves it
            cache_file.write_bytes(torn)
            again = engine.run_all(slide, grid, cache_dir=cache)
            assert again.complete and np.array_equal(again.probs, first.probs, equal_nan=True)
            assert TileResults.load(cache_file).complete  # and the cache was rewritten whole


WRITER = """
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
        child = subprocess.Popen([sys.executable, "-c", WRITER, str(target)])
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


def test_train_signature_recomputes_over_a_torn_embedding_cache(tmp_path: Path) -> None:
    """A torn embedding cache is recomputed by ``extract_slide``, never a traceback out of train-signature."""
    from napari_pathomics.inference.embed import extract_slide
    from napari_pathomics.inference.engine import Engine

    from _cohort_helpers import tiny_bundle
    from _engine_helpers import small_slide

    engine = Engine(tiny_bundle(tmp_path / "b"), device="cpu", amp="fp32", num_threads=1)
    slide = small_slide(tmp_path / "s.svs")
    cache = tmp_path / "emb"
    first = extract_slide(engine, slide, None, cache, no_tissue=True)
    (cache_file,) = cache.glob("*.npz")
    for torn in (b"", cache_file.read_bytes()[:300]):
        cache_file.write_bytes(torn)
        again = extract_slide(engine, slide, None, cache, no_tissue=True)
        assert np.array_equal(again.emb, first.emb) and np.array_equal(again.probs, first.probs)
