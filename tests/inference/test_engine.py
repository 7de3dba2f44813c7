"""Engine: batch-size invariance, bf16 vs fp32, cancel/resume with a consistent cache, a torn cache
file recomputed, corrupt regions, grid checks and ``pathomics infer`` — on real SVS files and real models."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import tifffile

from _bundles import CLASSES, tiny_bundle
from _slides import small_slide
from napari_pathomics.cli import main as cli_main
from napari_pathomics.errors import InferenceError
from napari_pathomics.inference._device import AMP_PROB_TOL, choose_amp
from napari_pathomics.inference._reader import read_tiles
from napari_pathomics.inference.engine import Engine
from napari_pathomics.results import BACKGROUND, DONE, FAILED, PENDING, TileResults, read_csv
from napari_pathomics.wsi.slide import open_slide
from napari_pathomics.wsi.tiling import plan_for_bundle, plan_tiles


@pytest.fixture
def bundle(resnet18_bundle):
    return resnet18_bundle


@pytest.fixture(scope="module")
def slide_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_slide(tmp_path_factory.mktemp("slide") / "s.svs")


def _grid(slide, bundle):
    return plan_for_bundle(slide, bundle, tissue=False)


def test_batch_size_does_not_change_results(bundle, slide_path):
    with open_slide(slide_path) as slide:
        grid = _grid(slide, bundle)
        a = Engine(bundle, batch_size=7, amp="fp32").run_all(slide, grid, use_cache=False)
        b = Engine(bundle, batch_size=32, amp="fp32", prefetch=0, workers=2).run_all(slide, grid, use_cache=False)
        c = Engine(bundle, batch_size=5, amp="fp32", prefetch=0).run_all(slide, grid, use_cache=False)
    assert a.complete and b.complete
    np.testing.assert_array_equal(a.status, b.status)
    assert (a.status == DONE).sum() > 30 and (a.status == BACKGROUND).sum() > 0
    done = a.status == DONE
    np.testing.assert_allclose(a.probs[done], b.probs[done], atol=1e-4)
    np.testing.assert_allclose(c.probs[done], b.probs[done], atol=1e-4)
    np.testing.assert_array_equal(c.status, b.status)
    np.testing.assert_array_equal(a.pred, b.pred)
    np.testing.assert_allclose(a.probs[done].sum(axis=1), 1.0, atol=1e-5)
    assert np.all(np.isnan(a.probs[~done]))
    assert np.all((a.risk[done] >= 0) & (a.risk[done] <= 1))


def test_bf16_agrees_with_fp32(bundle, slide_path):
    with open_slide(slide_path) as slide:
        grid = _grid(slide, bundle)
        e32 = Engine(bundle, amp="fp32")
        r32 = e32.run_all(slide, grid, use_cache=False)
        r16 = Engine(bundle, amp="bf16").run_all(slide, grid, use_cache=False)
    done = r32.status == DONE
    diff = np.abs(r32.probs[done] - r16.probs[done]).max()
    assert diff < AMP_PROB_TOL
    # argmax identical wherever fp32's top-2 margin exceeds the precision noise
    top2 = np.sort(r32.probs[done], axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 2 * diff
    assert clear.mean() > 0.8
    np.testing.assert_array_equal(r32.pred[done][clear], r16.pred[done][clear])
    auto = choose_amp(e32.model, e32.device, bundle.input_size, "auto", arch="test-bf16")
    assert auto.max_prob_diff is None or auto.max_prob_diff < AMP_PROB_TOL


def test_cancel_stops_within_one_batch_cache_consistent_and_resumes(bundle, slide_path, tmp_path):
    cache = tmp_path / "cache"
    with open_slide(slide_path) as slide:
        grid = _grid(slide, bundle)
        ref = Engine(bundle, batch_size=10, amp="fp32").run_all(slide, grid, use_cache=False)

        cancel = threading.Event()
        eng = Engine(bundle, batch_size=10, amp="fp32", flush_seconds=1e9)
        updates = []
        run = eng.run(slide, grid, cache_dir=cache, cancel=cancel)
        for upd in run:
            updates.append(upd)
            cancel.set()  # the user presses Cancel while the first batch is shown
        assert len(updates) == 1 and not updates[0].from_cache
        assert updates[0].done == 10 and updates[0].total == len(grid)

        on_disk = TileResults.load(run.cache_file)
        assert np.count_nonzero(on_disk.status != PENDING) == 10
        finished = on_disk.status != PENDING
        assert np.all(np.isfinite(on_disk.probs[on_disk.status == DONE]))
        assert np.all(np.isnan(on_disk.probs[~finished]))
        assert on_disk.meta["grid_key"] == grid.key()

        eng2 = Engine(bundle, batch_size=10, amp="fp32")
        seen = []
        run2 = eng2.run(slide, grid, cache_dir=cache)
        ups = list(run2)
        assert ups[0].from_cache and set(ups[0].indices) == set(np.flatnonzero(finished))
        for u in ups[1:]:
            seen.extend(u.indices.tolist())
        assert len(seen) == len(set(seen)) == len(grid) - 10
        assert not set(seen) & set(np.flatnonzero(finished))
        res = run2.results
        assert res.complete
        np.testing.assert_array_equal(res.status, ref.status)
        np.testing.assert_allclose(res.probs[res.status == DONE], ref.probs[ref.status == DONE], atol=1e-5)

        # reopening shows everything from the cache, nothing recomputed
        eng3 = Engine(bundle, amp="fp32")
        run3 = eng3.run(slide, grid, cache_dir=cache)
        ups3 = list(run3)
        assert len(ups3) == 1 and ups3[0].from_cache and ups3[0].done == len(grid)
        assert run3.stats["tiles"] == 0


def test_consumer_stopping_early_flushes_cache(bundle, slide_path, tmp_path):
    with open_slide(slide_path) as slide:
        grid = _grid(slide, bundle)
        eng = Engine(bundle, batch_size=16, amp="fp32", flush_seconds=1e9)
        gen = eng.run(slide, grid, cache_dir=tmp_path)
        next(gen)
        next(gen)
        gen.close()  # e.g. the napari worker quit
    on_disk = TileResults.load(gen.cache_file)
    assert np.count_nonzero(on_disk.status != PENDING) == 32


def _corrupt_tile(path: Path, page_index: int, tile_index: int) -> None:
    with tifffile.TiffFile(path) as tf:
        page = tf.pages[page_index]
        off, n = page.dataoffsets[tile_index], page.databytecounts[tile_index]
    with open(path, "r+b") as fh:
        fh.seek(off)
        fh.write(b"\x00" * n)


def test_corrupt_region_marks_tiles_failed_and_run_goes_on(bundle, tmp_path):
    path = small_slide(tmp_path / "bad.svs")
    # 0.5 µm/px tiles of a 0.25 µm/px slide are read from level 1 (page 2, after the thumbnail);
    # its 256 px file tile (row 0, col 1) covers level-0 x 512..1023, y 0..511.
    with tifffile.TiffFile(path) as tf:
        assert tf.pages[2].shape[:2] == (512, 768)
        ntx = -(-tf.pages[2].shape[1] // 256)
    _corrupt_tile(path, 2, 0 * ntx + 1)
    with open_slide(path) as slide:
        grid = plan_tiles(slide, tissue=False, tile_um=bundle.tile_um, mpp=bundle.mpp)
        res = Engine(bundle, batch_size=16, amp="fp32").run_all(slide, grid, use_cache=False)
    o = res.origins
    inside = (o[:, 0] >= 512) & (o[:, 0] < 1024) & (o[:, 1] < 512)
    assert inside.sum() == 16
    assert np.all(res.status[inside] == FAILED)
    assert np.all(res.status[~inside] != FAILED)
    assert (res.status == DONE).sum() > 20
    assert res.complete
    assert res.meta.get("errors")


def test_grid_for_other_params_is_refused(bundle, slide_path):
    with open_slide(slide_path) as slide:
        grid = plan_tiles(slide, tissue=False, tile_um=112, mpp=0.5)
        with pytest.raises(InferenceError, match="re-plan"):
            list(Engine(bundle).run(slide, grid))
        with pytest.raises(InferenceError, match="unknown CAM"):
            list(Engine(bundle).run(slide, _grid(slide, bundle), cams=("NOPE",)))


def test_engine_recomputes_over_a_torn_cache_file(tmp_path: Path) -> None:
    """A torn / empty cache (e.g. an interrupted non-atomic copy) is recomputed, never a crash."""
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


def test_cli_infer_writes_outputs(bundle, slide_path, tmp_path, capsys):
    out = tmp_path / "out"
    rc = cli_main(
        [
            "infer",
            str(slide_path),
            "--bundle",
            str(bundle.path),
            "--out",
            str(out),
            "--no-tissue",
            "--batch-size",
            "16",
            "--cam",
            "risk",
            "--quiet",
            "--json",
        ]
    )
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["tiles"] == 96 and summary["done"] > 30
    for name in ("tiles.csv", "tiles.geojson", "results.npz", "results.json", "run.json"):
        assert (out / name).is_file(), name
    run = json.loads((out / "run.json").read_text())
    assert run["bundle"]["id"] == bundle.bundle_id and run["slide"]["hash"]
    assert run["tiles_per_s"] > 0 and run["counts"]["done"] == summary["done"]
    table = read_csv(out / "tiles.csv")
    assert list(table["class_names"]) == CLASSES and len(table["x"]) == 96
    res = TileResults.load(out / "results.npz")
    assert "risk" in res.cams
    # errors are one line with a non-zero exit code
    rc = cli_main(["infer", str(tmp_path / "missing.svs"), "--bundle", str(bundle.path)])
    assert rc != 0
    assert capsys.readouterr().err.count("\n") == 1


@pytest.mark.parametrize("slide_mpp", [0.25, 0.3])
def test_strip_reads_equal_read_tile(bundle, tmp_path, slide_mpp):
    """The batched strip reader returns exactly what Slide.read_tile returns (level 1 at 0.25 µm/px,
    level 0 + resize at 0.3 µm/px with a non-integer tile size)."""
    path = small_slide(tmp_path / "s.svs", h=700, w=1300, mpp=slide_mpp)
    with open_slide(path) as slide:
        grid = plan_tiles(slide, tissue=False, tile_um=bundle.tile_um, mpp=bundle.mpp)
        idx = np.r_[0 : len(grid) : 1][np.arange(len(grid)) % 7 != 3]  # gaps split the runs
        o = grid.origins[idx]
        out = np.zeros((len(idx), grid.tile_px, grid.tile_px, 3), np.uint8)
        failed = np.zeros(len(idx), bool)
        read_tiles(slide, grid.tile_size_l0, grid.tile_px, o, out, failed, [])
        ref = np.stack([slide.read_tile(tuple(map(int, xy)), grid.tile_size_l0, grid.tile_px) for xy in o])
    assert not failed.any()
    np.testing.assert_array_equal(out, ref)
