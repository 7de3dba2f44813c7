"""Writing results and printing JSON never trips on a non-finite number: it becomes null.

Values a bundle could overflow (a 1e308 patch-risk weight cast to float32, a head's logits) are
refused when the bundle is checked (``tests/bundle/test_hostile_bundles.py``); whatever still
reaches a writer is strict JSON, never the "Out of range float values are not JSON compliant"
traceback.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_pathomics.cli.common import print_json
from napari_pathomics.results import TileResults
from napari_pathomics.wsi.tiling import TileGrid


def _results(meta: dict) -> TileResults:
    grid = TileGrid(
        cols=np.arange(6) % 3,
        rows=np.arange(6) // 3,
        tile_size_l0=448.0,
        tile_um=112.0,
        mpp=0.5,
        slide_width=3 * 448,
        slide_height=2 * 448,
        coverage=np.ones(6, np.float32),
    )
    return TileResults.empty(grid, ["A", "B"], ["#ff0000", "#00ff00"], meta)


def test_results_with_non_finite_meta_save_and_load(tmp_path) -> None:
    res = _results({"risk_weights": np.array([np.inf, -np.inf, np.nan], dtype=np.float32), "offset": float("inf")})
    path = res.save(tmp_path / "r.npz")
    back = TileResults.load(path)
    assert back.meta["risk_weights"] == [None, None, None] and back.meta["offset"] is None
    assert json.loads((tmp_path / "r.json").read_text())["meta"]["offset"] is None


def test_print_json_prints_null_for_non_finite(capsys: pytest.CaptureFixture) -> None:
    print_json({"risk": float("nan"), "w": np.float32(np.inf), "ok": np.float64(0.5), "n": np.int64(3)})
    assert json.loads(capsys.readouterr().out) == {"n": 3, "ok": 0.5, "risk": None, "w": None}
