"""TileResults: patch risk and its weights, npz/json round trip, CSV and QuPath GeoJSON export, and
a torn or hostile results file (truncated, mutated bytes, a crafted npz) is only ever a ResultsError.

A crash (or a full disk, or a copy by another tool such as an interrupted rsync) can leave a torn /
empty results file; ``TileResults.load`` raised bare ``BadZipFile`` / ``EOFError`` / ``TypeError``
on these, so the engine's "unreadable cache -> recompute" path never ran. The corpus below pins it.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from _bundles import CLASSES, COLORS, make_bundle
from _fuzz import SLOW
from napari_pathomics.errors import BundleError, ResultsError
from napari_pathomics.results import (
    BACKGROUND,
    DONE,
    FAILED,
    TileResults,
    cache_path,
    cache_root,
    patch_risk,
    patch_risk_weights,
    read_csv,
)
from napari_pathomics.wsi.tiling import TileGrid


def _results(n_rows: int = 3, n_cols: int = 4, s: float = 106.5) -> TileResults:
    rows, cols = np.divmod(np.arange(n_rows * n_cols), n_cols)
    keep = np.arange(rows.size) != 5
    grid = TileGrid(
        cols=cols[keep],
        rows=rows[keep],
        tile_size_l0=s,
        tile_um=32.0,
        mpp=0.5,
        slide_width=int(n_cols * s) + 3,
        slide_height=int(n_rows * s) + 1,
        coverage=np.ones(keep.sum(), np.float32),
    )
    res = TileResults.empty(grid, CLASSES, COLORS, {"slide_hash": "abc", "note": "x"})
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(len(CLASSES)), size=len(res)).astype(np.float32)
    res.probs[:] = p
    res.status[:] = DONE
    res.status[1], res.status[2] = FAILED, BACKGROUND
    res.probs[[1, 2]] = np.nan
    w = np.zeros(len(CLASSES), np.float32)
    w[-2:] = 1
    res.risk[:] = patch_risk(res.probs, w)
    cam = res.ensure_cam("risk", 4)
    cam[res.status == DONE] = rng.random(((res.status == DONE).sum(), 4, 4))
    return res


def test_patch_risk_is_normalised_weighted_sum():
    p = np.array([[0.5, 0.25, 0.25], [0, 0, 1], [1, 0, 0], [np.nan] * 3], np.float32)
    w = np.array([-1.0, 0.0, 3.0])
    r = patch_risk(p, w)
    np.testing.assert_allclose(r[:3], [(0.5 * -1 + 0.75 + 1) / 4, 1.0, 0.0], atol=1e-6)
    assert np.isnan(r[3])
    assert np.all(patch_risk(p[:3], np.ones(3)) == 0)


def test_patch_risk_weights_bundle_and_signature(tmp_path):
    plain = make_bundle(tmp_path / "plain", arch="test_resnet")
    np.testing.assert_array_equal(patch_risk_weights(plain), [0, 0, 0, 0, 0, 0, 0, 1, 1])
    sig = make_bundle(
        tmp_path / "sig", arch="test_resnet", signature={"patch_risk_weights": {"DEB": 0.5, "TUM": 2.0, "LYM": -1.0}}
    )
    w = patch_risk_weights(sig)
    assert w[CLASSES.index("TUM")] == 2.0 and w[CLASSES.index("LYM")] == -1.0 and w[CLASSES.index("ADI")] == 0.0
    bad = make_bundle(tmp_path / "bad", arch="test_resnet", signature={"patch_risk_weights": {"CANCER": 1.0}})
    with pytest.raises(BundleError, match="unknown classes"):
        patch_risk_weights(bad)
    # a signature without patch weights falls back to the model's high-risk classes
    other = make_bundle(tmp_path / "other", arch="test_resnet", signature={"cox": {}})
    np.testing.assert_array_equal(patch_risk_weights(other), patch_risk_weights(plain))


def test_npz_round_trip_is_exact_and_pickle_free(tmp_path):
    res = _results()
    path = res.save(tmp_path / "r.npz")
    with np.load(path, allow_pickle=False) as z:
        assert "probs" in z.files
    back = TileResults.load(path)
    for name in ("cols", "rows", "origins", "status", "stain_fallback"):
        np.testing.assert_array_equal(getattr(back, name), getattr(res, name))
    np.testing.assert_array_equal(back.probs, res.probs)  # NaNs in the same places
    np.testing.assert_array_equal(back.risk, res.risk)
    np.testing.assert_array_equal(back.cams["risk"], res.cams["risk"])
    assert back.class_names == CLASSES and back.class_colors == COLORS and back.meta["slide_hash"] == "abc"
    assert back.tile_size_l0 == res.tile_size_l0 and (back.n_rows, back.n_cols) == (3, 4)
    side = json.loads(path.with_suffix(".json").read_text())
    assert side["counts"] == {"pending": 0, "done": len(res) - 2, "failed": 1, "background": 1}
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ResultsError):
        TileResults.load(tmp_path / "junk.npz")


def test_csv_round_trip(tmp_path):
    res = _results()
    t = read_csv(res.to_csv(tmp_path / "tiles.csv"))
    np.testing.assert_array_equal(t["x"], res.origins[:, 0])
    np.testing.assert_array_equal(t["y"], res.origins[:, 1])
    np.testing.assert_allclose(t["size"], res.tile_size_l0)
    assert list(t["class_names"]) == CLASSES
    done = res.status == DONE
    np.testing.assert_allclose(t["probs"][done], res.probs[done], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(t["risk"][done], res.risk[done], rtol=1e-5, atol=1e-6)
    assert list(t["status"][:3]) == ["done", "failed", "background"]
    assert [CLASSES.index(c) for c in t["class"][done]] == res.pred[done].tolist()
    assert np.all(np.isnan(t["probs"][~done]))


def test_geojson_tiles_for_qupath(tmp_path):
    res = _results()
    doc = json.loads(res.to_geojson(tmp_path / "tiles.geojson").read_text())
    feats = doc["features"]
    assert doc["type"] == "FeatureCollection" and len(feats) == (res.status == DONE).sum()
    s = res.tile_size_l0
    done = np.flatnonzero(res.status == DONE)
    for f, i in zip(feats, done):
        props = f["properties"]
        assert props["objectType"] == "tile"
        ring = np.array(f["geometry"]["coordinates"][0])
        x0, y0 = res.cols[i] * s, res.rows[i] * s
        np.testing.assert_allclose(ring.min(axis=0), [x0, y0])
        np.testing.assert_allclose(ring.max(axis=0) - ring.min(axis=0), [s, s])
        c = int(res.pred[i])
        assert props["classification"]["name"] == CLASSES[c]
        assert props["classification"]["color"] == [int(COLORS[c][j : j + 2], 16) for j in (1, 3, 5)]
        m = props["measurements"]
        assert m["risk"] == pytest.approx(float(res.risk[i]))
        assert [m[f"prob_{n}"] for n in CLASSES] == pytest.approx(res.probs[i].tolist())
    everything = res.geojson(include="all")["features"]
    assert len(everything) == len(res)
    assert {f["properties"]["classification"]["name"] for f in everything[1:3]} == {"failed", "background"}


def test_maps_and_hover(tmp_path):
    res = _results()
    cm, rm = res.class_map(), res.risk_map()
    assert cm.shape == rm.shape == (3, 4)
    assert cm[1, 1] == -1 and np.isnan(rm[1, 1])  # the lattice cell without a tile
    assert cm[0, 1] == -1 and cm[0, 0] == res.pred[0]
    i = res.tile_at(res.origins[7, 0] + 5, res.origins[7, 1] + 5)
    assert i == 7 and res.describe_tile(7)["class"] == CLASSES[res.pred[7]]
    assert res.tile_at(1 * res.tile_size_l0 + 1, 1 * res.tile_size_l0 + 1) is None
    assert res.cam_mosaic("risk").shape == (12, 16)


def test_cache_location_follows_env(tmp_path, monkeypatch):
    monkeypatch.setenv("PATHOMICS_CACHE_DIR", str(tmp_path))
    assert cache_root() == tmp_path / "results"
    p = cache_path("a" * 64, "b" * 16, "c" * 16)
    assert p.parent == tmp_path / "results" and p.suffix == ".npz"


# ---- torn and hostile files ----------------------------------------------------------------------
def _empty_results(n: int, n_cols: int, n_rows: int) -> TileResults:
    """Empty two-class results of ``n`` tiles of 112 µm on an ``n_cols`` x ``n_rows`` lattice."""
    grid = TileGrid(
        cols=np.arange(n) % n_cols,
        rows=np.arange(n) // n_cols,
        tile_size_l0=448.0,
        tile_um=112.0,
        mpp=0.5,
        slide_width=n_cols * 448,
        slide_height=n_rows * 448,
        coverage=np.ones(n, np.float32),
    )
    return TileResults.empty(grid, ["A", "B"], ["#ff0000", "#00ff00"], {"v": 0})


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _corpus() -> dict[str, bytes]:
    good = _empty_results(500, 30, 20).to_npz_bytes()
    z = dict(np.load(io.BytesIO(good)))
    doc = json.loads(str(z["meta_json"]))
    out = {"empty": b"", "random": os.urandom(5000)}
    for f in (0.01, 0.1, 0.5, 0.9, 0.99):
        out[f"truncated-{f}"] = good[: int(len(good) * f)]
    out["deep-meta"] = _npz(**{**z, "meta_json": np.array("[" * 100_000)})
    out["meta-is-a-list"] = _npz(**{**z, "meta_json": np.array("[1]")})
    for name, (key, value) in {
        "n_cols-null": ("n_cols", None),
        "class_names-int": ("class_names", 5),
        "meta-list": ("meta", [1]),
        "format-other": ("format", "other/9"),
    }.items():
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


@pytest.fixture(scope="module")
def results_bytes() -> bytes:
    return _empty_results(40, 8, 5).to_npz_bytes()


@SLOW
@given(st.data())
def test_results_byte_mutations_only_results_error(results_bytes: bytes, tmp_path_factory, data) -> None:
    raw = bytearray(results_bytes)
    for _ in range(data.draw(st.integers(1, 6))):
        i = data.draw(st.integers(0, len(raw) - 1))
        if data.draw(st.booleans()):
            raw[i] = data.draw(st.integers(0, 255))
        else:
            del raw[i:]
            break
    p = tmp_path_factory.mktemp("r") / "r.npz"
    p.write_bytes(bytes(raw))
    try:
        TileResults.load(p)
    except ResultsError as exc:
        assert "\n" not in str(exc)
