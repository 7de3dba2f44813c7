"""Nuclei over a slide: the engine's lattice, border nuclei once, cache and resume, cancel, exports."""

from __future__ import annotations

import csv
import json
import threading
from pathlib import Path

import numpy as np
import pytest
import shapely
from _cells_helpers import nuclei_slide, tile_results

from napari_pathomics.cells.export import write_nuclei_csv, write_nuclei_geojson, write_tiles_csv
from napari_pathomics.cells.metrics import score_instances
from napari_pathomics.cells.results import TILE_FEATURES, NucleiResults
from napari_pathomics.cells.run import NucleiRun
from napari_pathomics.errors import MissingMppError, NucleiError, ResultsError
from napari_pathomics.resources import SAMPLE_SLIDE
from napari_pathomics.results import BACKGROUND, DONE
from napari_pathomics.wsi.annotations import Annotation, read_geojson
from napari_pathomics.wsi.slide import open_slide
from napari_pathomics.wsi.synthetic import write_slide
from napari_pathomics.wsi.tiling import TileGrid, plan_tiles


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    return nuclei_slide(tmp_path_factory.mktemp("planted") / "planted.svs", side=896, seed=4)


def test_slide_run_finds_the_planted_nuclei_once(planted: tuple[Path, object]) -> None:
    path, scene = planted
    with open_slide(path) as slide:
        grid = plan_tiles(slide, tissue=False)  # 4 x 4 tiles of 112 µm (224 px at 0.5 µm/px)
        assert len(grid) == 16
        res = NucleiRun(slide, grid, use_cache=False).run_all()
    assert res.complete and res.counts()["done"] == 16
    t = res.nuclei
    # rasterise the level-0 centroids back onto the truth: every planted nucleus at most once
    hit = scene.labels[np.clip(t.y.astype(int), 0, 895), np.clip(t.x.astype(int), 0, 895)]
    found = hit[hit > 0]
    assert np.unique(found).size / scene.count > 0.75  # recall of centres
    dup = np.bincount(found)[1:]
    assert (dup > 1).sum() < 0.08 * scene.count  # tile borders do not double nuclei
    assert (hit == 0).sum() < 0.12 * len(t)  # few centroids on background
    # per-tile values add up to the table
    v = res.tile_values()
    assert v["count"].sum() == len(t)
    np.testing.assert_allclose(np.nansum(v["count"]) / res.tissue_mm2.sum(), len(t) / res.tissue_mm2.sum())
    assert np.all(np.isfinite(v["density_mm2"])) and np.all(v["density_mm2"] > 500)
    assert set(v) == set(TILE_FEATURES)
    assert res.meta["stain"]["source"] in ("macenko", "ruifrok") and res.meta["reference_threshold"] > 0


def test_cache_resume_and_cancel(planted: tuple[Path, object], tmp_path: Path) -> None:
    path, _ = planted
    with open_slide(path) as slide:
        grid = plan_tiles(slide, tissue=False)
        cancel = threading.Event()
        run = NucleiRun(slide, grid, cancel=cancel, cache_dir=tmp_path)
        for upd in run:
            if upd.done >= 5:
                cancel.set()
        assert 5 <= run.results.n_done < 16 and not run.results.complete
        assert run.cache_file is not None and run.cache_file.is_file()
        again = NucleiRun(slide, grid, cache_dir=tmp_path)
        first = next(again)
        assert first.from_cache and first.done == run.results.n_done
        res = again.run_all()
        assert res.complete
        full = NucleiRun(slide, grid, use_cache=False).run_all()
        assert len(res.nuclei) == len(full.nuclei)  # a resumed run equals an uninterrupted one
        np.testing.assert_allclose(np.sort(res.nuclei.area_um2), np.sort(full.nuclei.area_um2))
        third = NucleiRun(slide, grid, cache_dir=tmp_path)
        ups = list(third)
        assert len(ups) == 1 and ups[0].from_cache and ups[0].done == 16  # all from the cache


def test_background_tiles_and_lattice_join(tmp_path: Path) -> None:
    img = np.full((448, 672, 3), 243, np.uint8)
    from napari_pathomics.cells.synthetic import plant_nuclei

    img[:, :448] = plant_nuclei(448, 448, 0.5, seed=1).rgb  # tissue left, glass right
    path = write_slide(tmp_path / "half.svs", img, mpp=0.5, fmt="svs", min_size=128)
    with open_slide(path) as slide:
        grid = plan_tiles(slide, tissue=False)
        res = NucleiRun(slide, grid, use_cache=False).run_all()
    assert (res.status[res.cols >= 2] == BACKGROUND).all() and (res.status[res.cols < 2] == DONE).all()
    # joined to the patch model's results on the same lattice: same tile, same values; others NaN
    tr = tile_results(np.zeros((2, 3), bool))
    vals = res.aligned_to(tr.cols, tr.rows, tr.tile_size_l0)
    own = res.tile_values()
    for k in ("count", "density_mm2"):
        for j in range(len(tr)):
            i = res.tile_at((tr.cols[j] + 0.5) * 224, (tr.rows[j] + 0.5) * 224)
            a, b = vals[k][j], own[k][i]
            assert (np.isnan(a) and np.isnan(b)) or a == b
    with pytest.raises(ResultsError, match="lattice"):
        res.aligned_to(tr.cols, tr.rows, 200.0)


def test_save_load_round_trip_and_exports(planted: tuple[Path, object], tmp_path: Path) -> None:
    path, _ = planted
    with open_slide(path) as slide:
        grid = plan_tiles(slide, tissue=False)
        res = NucleiRun(slide, grid, use_cache=False).run_all()
    res.save(tmp_path / "n.npz")
    back = NucleiResults.load(tmp_path / "n.npz")
    assert len(back.nuclei) == len(res.nuclei)
    np.testing.assert_array_equal(back.nuclei.outline_xy, res.nuclei.outline_xy)
    np.testing.assert_array_equal(back.nuclei.lymphocyte, res.nuclei.lymphocyte)
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 torn")
    with pytest.raises(ResultsError):
        NucleiResults.load(tmp_path / "bad.npz")

    n = write_nuclei_geojson(res.nuclei, tmp_path / "n.geojson")
    doc = json.loads((tmp_path / "n.geojson").read_text(encoding="utf-8"))
    assert doc["type"] == "FeatureCollection" and len(doc["features"]) == n == len(res.nuclei)
    f0 = doc["features"][0]
    assert f0["properties"]["objectType"] == "detection"
    assert f0["properties"]["classification"]["name"] in ("Nucleus", "Lymphocyte-like")
    m = f0["properties"]["measurements"]
    assert m["Nucleus: Area µm^2"] > 0 and 0 < m["Nucleus/Cell area ratio"] <= 1
    ring = np.asarray(f0["geometry"]["coordinates"][0])
    assert np.array_equal(ring[0], ring[-1])  # closed, as GeoJSON wants
    # detections are results, not ROIs: reading the file as ROIs finds none (QuPath keeps them apart too)
    with pytest.raises(Exception, match="no usable ROI|no features"):
        read_geojson(tmp_path / "n.geojson")

    write_nuclei_csv(res.nuclei, tmp_path / "n.csv", res)
    rows = list(csv.DictReader(open(tmp_path / "n.csv", encoding="utf-8")))
    assert len(rows) == len(res.nuclei) and rows[0]["tile_col"] != ""
    write_tiles_csv(res, tmp_path / "t.csv")
    trows = list(csv.DictReader(open(tmp_path / "t.csv", encoding="utf-8")))
    assert len(trows) == 16 and sum(int(float(r["count"])) for r in trows) == len(res.nuclei)


def test_bad_slides_and_rois(tmp_path: Path) -> None:
    from napari_pathomics.cells.synthetic import plant_nuclei

    nompp = write_slide(
        tmp_path / "nompp.tif", plant_nuclei(448, 448, 0.5, seed=0).rgb, mpp=None, fmt="tiff", min_size=128
    )
    with open_slide(nompp) as slide:
        grid = TileGrid(
            cols=np.array([0]),
            rows=np.array([0]),
            tile_size_l0=224.0,
            tile_um=112.0,
            mpp=0.5,
            slide_width=448,
            slide_height=448,
            coverage=np.ones(1, np.float32),
        )
        with pytest.raises(MissingMppError):
            NucleiRun(slide, grid)
    with open_slide(SAMPLE_SLIDE) as slide:
        glass = Annotation(geometry=shapely.box(0, 0, 300, 300))  # the CMU slide's glass corner
        grid = plan_tiles(slide, [glass])
        assert len(grid) == 0
        with pytest.raises(NucleiError, match="no tile"):
            NucleiRun(slide, grid)


def test_real_slide_tiles_on_the_sample(tmp_path: Path) -> None:
    """The vendored CMU-1 skin slide: every tissue tile gets plausible nuclear values."""
    with open_slide(SAMPLE_SLIDE) as slide:
        grid = plan_tiles(slide)
        res = NucleiRun(slide, grid, cache_dir=tmp_path).run_all()
    v = res.tile_values()
    done = res.status == DONE
    assert done.sum() >= 0.9 * len(res)
    dens = v["density_mm2"][done]
    assert 1000 < np.median(dens) < 10000  # dermis/epidermis: a few thousand nuclei per mm²
    assert 10 < np.median(res.nuclei.area_um2) < 60
    assert 0.05 < np.nanmedian(v["nc_ratio_mean"]) < 0.6


def test_score_instances_of_a_slide_crop_is_consistent(planted: tuple[Path, object]) -> None:
    _, scene = planted
    s = score_instances(scene.labels, scene.labels, scene.touching)
    assert s.aji == 1.0 and s.split_accuracy == 1.0
