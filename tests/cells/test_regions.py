"""Tumour-region proposal: smoothed lattice probability → thresholded cells → polygons with holes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import shapely
from _cells_helpers import tile_results

from napari_pathomics.errors import ResultsError
from napari_pathomics.results import FAILED
from napari_pathomics.results.regions import (
    PROPOSED_CLASS,
    probability_surface,
    propose_tumour,
    tumour_classes,
    tumour_probability,
)
from napari_pathomics.wsi.annotations import read_geojson, write_geojson

S = 224.0  # tile side in level-0 px (112 µm at 0.5 µm/px)
CELL_MM2 = (S * 0.5 / 1000) ** 2


def _ring_with_hole(n: int = 16) -> np.ndarray:
    m = np.zeros((n, n), bool)
    m[3:13, 3:13] = True
    m[6:10, 6:10] = False  # a 4 x 4 hole of stroma inside the tumour
    m[3, 3] = m[12, 12] = False  # an irregular outline
    return m


def test_tumour_classes_from_names_and_descriptions() -> None:
    assert tumour_classes(["ADI", "TUM", "STR"]) == ["TUM"]
    assert tumour_classes(["a", "b"], ["stroma", "Tumor epithelium"]) == ["b"]
    assert tumour_classes(["ADI", "STR"]) == []
    res = tile_results(np.zeros((2, 2), bool))
    with pytest.raises(ResultsError, match="not classes"):
        tumour_probability(res, ["XYZ"])
    res.class_names = [c if c != "TUM" else "EPI" for c in res.class_names]
    with pytest.raises(ResultsError, match="no tumour class"):
        tumour_probability(res)


def test_proposal_recovers_a_block_with_its_hole_exactly_without_smoothing() -> None:
    truth = _ring_with_hole()
    res = tile_results(truth)
    prop = propose_tumour(res, threshold=0.5, min_area_mm2=0.0, sigma_tiles=0.0)
    assert np.array_equal(prop.mask, truth)
    assert len(prop.annotations) == 1
    geom = prop.annotations[0].geometry
    assert len(geom.interiors) == 1  # the hole is a hole
    assert geom.area == pytest.approx(truth.sum() * S * S)
    assert prop.annotations[0].classification == PROPOSED_CLASS
    assert prop.area_mm2 == pytest.approx(truth.sum() * CELL_MM2, rel=1e-6)
    # every proposed cell centre is inside the polygon, every other centre outside
    rr, cc = np.mgrid[0:16, 0:16]
    inside = shapely.contains_xy(geom, (cc + 0.5) * S, (rr + 0.5) * S)
    assert np.array_equal(inside, truth)


def test_smoothing_removes_a_stray_tile_and_keeps_the_nest() -> None:
    truth = np.zeros((20, 20), bool)
    truth[4:14, 4:14] = True
    noisy = truth.copy()
    noisy[17, 2] = True  # one tumour-looking tile alone in stroma
    res = tile_results(noisy, p_tum=0.8, p_other=0.1)
    prop = propose_tumour(res, threshold=0.5, min_area_mm2=0.0, sigma_tiles=1.0)
    assert not prop.mask[17, 2]
    inter = (prop.mask & truth).sum()
    dice = 2 * inter / (prop.mask.sum() + truth.sum())
    assert dice > 0.9
    # a smoothed surface stays a probability, NaN off the classified tiles
    surf = probability_surface(res, sigma_tiles=1.0)
    assert np.nanmax(surf) <= 0.8 + 1e-6 and np.nanmin(surf) >= 0.1 - 1e-6  # float32 probabilities


def test_min_area_drops_small_regions_and_fills_small_holes() -> None:
    m = np.zeros((20, 20), bool)
    m[2:12, 2:12] = True
    m[6, 6] = False  # a one-tile hole
    m[16:18, 16:18] = True  # a 4-tile island
    res = tile_results(m)
    prop = propose_tumour(res, threshold=0.5, min_area_mm2=5 * CELL_MM2, sigma_tiles=0.0)
    assert not prop.mask[16:18, 16:18].any()
    assert prop.mask[6, 6]
    assert len(prop.annotations) == 1 and len(prop.annotations[0].geometry.interiors) == 0
    none = propose_tumour(res, threshold=0.95, min_area_mm2=0.0, sigma_tiles=0.0)
    assert none.annotations == [] and not none.mask.any()


def test_glass_and_failed_tiles_are_never_proposed() -> None:
    truth = np.zeros((10, 10), bool)
    truth[2:8, 2:8] = True
    done = np.ones_like(truth)
    done[4, 4] = False  # glass inside the tumour: no tile there
    res = tile_results(truth, done=done)
    res.status[0] = FAILED
    prop = propose_tumour(res, threshold=0.5, min_area_mm2=0.0, sigma_tiles=1.0)
    assert not prop.mask[4, 4]
    assert not prop.mask[res.rows[0], res.cols[0]]


def test_several_parts_and_the_geojson_round_trip(tmp_path: Path) -> None:
    m = np.zeros((12, 24), bool)
    m[2:8, 2:8] = True
    m[3:10, 14:21] = True
    res = tile_results(m)
    prop = propose_tumour(res, threshold=0.5, min_area_mm2=0.0, sigma_tiles=0.0)
    assert len(prop.annotations) == 2
    assert prop.annotations[0].geometry.area >= prop.annotations[1].geometry.area  # largest first
    write_geojson(prop.annotations, tmp_path / "p.geojson")
    back = read_geojson(tmp_path / "p.geojson", bounds=(24 * S, 12 * S)).annotations
    assert [a.classification for a in back] == [PROPOSED_CLASS] * 2
    assert sum(a.geometry.area for a in back) == pytest.approx(m.sum() * S * S)
    assert back[0].properties["tumour_probability_mean"] == pytest.approx(0.9, abs=1e-3)
    # the squares' union has no collinear vertices left: a 6 x 6 block is a 4-corner polygon
    assert len(prop.annotations[1].geometry.exterior.coords) == 5


def test_bad_parameters() -> None:
    res = tile_results(np.ones((3, 3), bool))
    for bad in (0.0, 1.0, -0.2, 1.5):
        with pytest.raises(ResultsError, match="threshold"):
            propose_tumour(res, threshold=bad)
    with pytest.raises(ResultsError, match="minimum area"):
        propose_tumour(res, min_area_mm2=-1.0)
    res.meta.pop("slide_mpp")
    with pytest.raises(ResultsError, match="µm/px"):
        propose_tumour(res)
