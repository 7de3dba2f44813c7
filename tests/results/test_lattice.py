"""The shared lattice base: TileResults and NucleiResults count, describe and store tiles alike.

Their npz files keep the names and metadata they had before the base existed (caches written
by earlier versions still load), and ``results.cache`` decides for both when an entry is valid.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from napari_pathomics.cells.features import NucleusTable
from napari_pathomics.cells.results import NucleiResults
from napari_pathomics.errors import ResultsError
from napari_pathomics.results import BACKGROUND, DONE, FAILED, LatticeResults, TileResults
from napari_pathomics.results.cache import (
    CacheKey,
    CacheWriter,
    cache_path,
    digest_key,
    load_entry,
    nuclei_cache_path,
    tagged_key,
)
from napari_pathomics.wsi.tiling import TileGrid


def _grid(n: int = 6, n_cols: int = 3) -> TileGrid:
    return TileGrid(
        cols=np.arange(n) % n_cols,
        rows=np.arange(n) // n_cols,
        tile_size_l0=100.0,
        tile_um=50.0,
        mpp=0.5,
        slide_width=n_cols * 100,
        slide_height=(n // n_cols) * 100,
        coverage=np.ones(n, np.float32),
    )


def _both(grid: TileGrid) -> tuple[TileResults, NucleiResults]:
    tiles = TileResults.empty(grid, ["A", "B"], ["#ff0000", "#00ff00"], {"slide_hash": "s" * 64})
    nuclei = NucleiResults.empty(grid, {"slide_hash": "s" * 64})
    for res in (tiles, nuclei):
        res.mark(np.array([0, 1]), DONE)
        res.mark(2, FAILED)
        res.mark(3, BACKGROUND)
    tiles.probs[[0, 1]] = [[0.25, 0.75], [0.5, 0.5]]
    for i in (0, 1):
        nuclei.add_tile(i, NucleusTable.empty(), 0.01)
    return tiles, nuclei


def test_both_results_keep_status_alike() -> None:
    tiles, nuclei = _both(_grid())
    for res in (tiles, nuclei):
        assert isinstance(res, LatticeResults) and len(res) == 6
        assert res.counts() == {"pending": 2, "done": 2, "failed": 1, "background": 1}
        assert res.n_done == 4 and not res.complete
        np.testing.assert_array_equal(res.settled(), [0, 1, 2, 3])
        np.testing.assert_array_equal(res.pending(), [4, 5])
        np.testing.assert_array_equal(res.done_mask, [True, True, False, False, False, False])
        np.testing.assert_array_equal(res.failed_mask, [False, False, True, False, False, False])
        assert res.tile_at(150, 120) == 4 and res.tile_at(350, 0) is None
    assert tiles.describe_tile(1)["class"] == "A" and nuclei.describe_tile(1)["count"] == 0
    assert tiles.describe_tile(2) == nuclei.describe_tile(2) == {"index": 2, "x": 200, "y": 0, "status": "failed"}


def _npz_names(data: bytes) -> tuple[set[str], list[str]]:
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        return set(z.files), list(json.loads(str(z["meta_json"])))


def test_npz_files_keep_their_names(tmp_path: Path) -> None:
    tiles, nuclei = _both(_grid())
    tiles.ensure_cam("risk", 4)
    names, doc = _npz_names(tiles.to_npz_bytes())
    assert names == {"cols", "rows", "origins", "probs", "risk", "status", "stain_fallback", "meta_json", "cam__risk"}
    assert doc == [
        "format",
        "tile_size_l0",
        "n_cols",
        "n_rows",
        "class_names",
        "class_colors",
        "cams",
        "counts",
        "meta",
    ]
    names, doc = _npz_names(nuclei.to_npz_bytes())
    assert {"cols", "rows", "origins", "status", "tissue_mm2", "meta_json"} <= names
    assert all(n.startswith("nuc_") for n in names - {"cols", "rows", "origins", "status", "tissue_mm2", "meta_json"})
    assert doc == ["format", "tile_size_l0", "n_cols", "n_rows", "meta", "counts"]
    # saved: the results with their JSON sidecar, the nuclei alone
    tiles.save(tmp_path / "t.npz")
    nuclei.save(tmp_path / "n.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["n.npz", "t.json", "t.npz"]
    back = TileResults.load(tmp_path / "t.npz")
    np.testing.assert_array_equal(back.status, tiles.status)
    np.testing.assert_array_equal(back.probs, tiles.probs)
    nback = NucleiResults.load(tmp_path / "n.npz")
    np.testing.assert_array_equal(nback.status, nuclei.status)
    np.testing.assert_array_equal(nback.tissue_mm2, nuclei.tissue_mm2)


def test_a_file_written_by_hand_in_the_old_layout_loads(tmp_path: Path) -> None:
    """A nuclei file as the code before the shared base wrote it (np.savez, plain json.dumps)."""
    g = _grid()
    doc = {"format": 1, "tile_size_l0": 100.0, "n_cols": 3, "n_rows": 2, "meta": {"k": 1}, "counts": {}}
    arrays = {
        "cols": g.cols,
        "rows": g.rows,
        "origins": g.origins,
        "status": np.full(6, DONE, np.int8),
        "tissue_mm2": np.full(6, 0.01),
        **NucleusTable.empty().to_arrays(),
        "meta_json": np.array(json.dumps(doc)),
    }
    np.savez(tmp_path / "old.npz", **arrays)
    res = NucleiResults.load(tmp_path / "old.npz")
    assert res.complete and res.meta == {"k": 1} and len(res) == 6


@pytest.mark.parametrize("cls", [TileResults, NucleiResults])
def test_another_format_or_a_torn_file_is_a_results_error(cls: type[LatticeResults], tmp_path: Path) -> None:
    tiles, nuclei = _both(_grid())
    good = (tiles if cls is TileResults else nuclei).to_npz_bytes()
    (tmp_path / "torn.npz").write_bytes(good[: len(good) // 2])
    with pytest.raises(ResultsError, match=f"not a readable {cls.KIND} file"):
        cls.load(tmp_path / "torn.npz")  # type: ignore[attr-defined]
    z = dict(np.load(io.BytesIO(good)))
    doc = json.loads(str(z["meta_json"]))
    np.savez(tmp_path / "v2.npz", **{**z, "meta_json": np.array(json.dumps({**doc, "format": 2}))})
    with pytest.raises(ResultsError, match=f"{cls.KIND} format 2, expected 1"):
        cls.load(tmp_path / "v2.npz")  # type: ignore[attr-defined]


def test_cache_keys_are_the_ones_files_were_written_under(tmp_path: Path) -> None:
    assert cache_path("a" * 64, "b" * 40, "c" * 16, tmp_path).name == f"{'a' * 16}-{'b' * 16}-{'c' * 16}.npz"
    assert nuclei_cache_path("a" * 64, "d" * 64, "c" * 16, tmp_path).parent == tmp_path
    doc = {"params": {"x": 1}, "work_mpp": 0.5, "v": 1}
    assert digest_key(doc) == hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
    assert tagged_key("bundle", []) == "bundle"
    assert tagged_key("bundle", ["tta-d4"]) == hashlib.sha256(b"bundle+tta-d4").hexdigest()[:32]


def test_an_entry_is_used_only_for_its_slide_key_and_grid(tmp_path: Path) -> None:
    grid = _grid()
    tiles, _ = _both(grid)
    tiles.meta.update({"bundle_id": "b1", "grid_key": grid.key()})  # results cached before cache_id existed
    path = tmp_path / "entry.npz"
    tiles.save(path)
    key = CacheKey("s" * 64, "b1", grid.key(), ("cache_id", "bundle_id"))
    assert load_entry(path, TileResults.load, key, grid) is not None
    assert load_entry(None, TileResults.load, key, grid) is None
    assert load_entry(tmp_path / "absent.npz", TileResults.load, key, grid) is None
    for other in (
        CacheKey("t" * 64, "b1", grid.key(), key.fields),
        CacheKey("s" * 64, "b2", grid.key(), key.fields),
        CacheKey("s" * 64, "b1", "g" * 16, key.fields),
    ):
        assert load_entry(path, TileResults.load, other, grid) is None
    assert load_entry(path, TileResults.load, key, _grid(9)) is None  # other tiles
    path.write_bytes(b"torn")
    assert load_entry(path, TileResults.load, key, grid) is None  # recomputed, never an error


def test_a_cache_that_cannot_be_written_warns_once(tmp_path: Path) -> None:
    tiles, _ = _both(_grid())
    (tmp_path / "file").write_text("not a folder")
    writer = CacheWriter(tmp_path / "file" / "entry.npz", "results")
    with pytest.warns(RuntimeWarning, match=r"results cache .* is not writable .*not cached"):
        writer.write(tiles)
    assert writer.path is None and writer.warning
    writer.write(tiles)  # no second warning, nothing written
