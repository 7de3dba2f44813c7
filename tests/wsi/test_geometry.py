"""Bounded ROI repair: scribbles with many self-crossings are repaired or refused, never a hang."""

from __future__ import annotations

import json
import resource

import numpy as np
import pytest
from shapely.geometry import Polygon

from _cli import run_cli
from _slides import small_slide
from napari_pathomics.errors import AnnotationError
from napari_pathomics.wsi.geometry import (
    EXACT_MAX_CROSSINGS,
    RASTER_MAX_VERTICES,
    count_crossings,
    even_odd_mask,
    repair_area,
)


def _scribble(n: int, seed: int = 0) -> Polygon:
    return Polygon(np.random.default_rng(seed).uniform(0, 1000, (n, 2)))


def test_a_figure_eight_is_repaired_exactly() -> None:
    t = np.linspace(0, 2 * np.pi, 5000, endpoint=False)
    eight = Polygon(np.c_[500 + 300 * np.cos(t), 500 + 200 * np.sin(2 * t)])
    assert count_crossings(eight) == 1
    fixed, note = repair_area(eight)
    assert fixed.is_valid and fixed.geom_type == "MultiPolygon" and "repaired" in note
    ring = np.asarray(eight.exterior.coords)
    raster = even_odd_mask([ring], (1000, 1000), 1.0, (0.0, 0.0))  # an independent even-odd area, 1 px cells
    assert abs(fixed.area - raster.sum()) / fixed.area < 0.01


@pytest.mark.parametrize("n", [300, 1000, 10_000])
def test_scribbles_are_repaired_in_bounded_memory(n: int) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    poly = _scribble(n)
    assert count_crossings(poly) > EXACT_MAX_CROSSINGS
    fixed, note = repair_area(poly)
    assert fixed is not None and fixed.is_valid and fixed.area > 0 and "even-odd" in note
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024 < 1024  # MiB


@pytest.mark.parametrize("n", [RASTER_MAX_VERTICES + 1, 100_000])
def test_a_huge_scribble_is_refused_in_one_line(n: int) -> None:
    """100 000 random vertices once took 12.7 GB and ended in ``GEOSException: std::bad_alloc``."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(AnnotationError) as info:
        repair_area(_scribble(n))
    assert "cannot be repaired reliably" in str(info.value) and "\n" not in str(info.value)
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024 < 1024  # MiB


def test_a_long_freehand_outline_with_one_crossing_is_repaired_exactly() -> None:
    """Freehand ROIs of 10⁵ vertices and a crossing are ordinary: repaired by GEOS, not refused."""
    t = np.linspace(0, 2 * np.pi, 100_000, endpoint=False)
    eight = Polygon(np.c_[5000 + 3000 * np.cos(t), 5000 + 2000 * np.sin(2 * t)])
    fixed, note = repair_area(eight)
    assert fixed is not None and fixed.is_valid and fixed.geom_type == "MultiPolygon" and "repaired" in note


def test_even_odd_mask_cuts_holes() -> None:
    outer = np.array([[1, 1], [9, 1], [9, 9], [1, 9], [1, 1]], float)
    hole = np.array([[3, 3], [6, 3], [6, 6], [3, 6], [3, 3]], float)
    m = even_odd_mask([outer, hole], (10, 10), 1.0, (0.0, 0.0))
    assert m.sum() == 64 - 9 and not m[4, 4] and m[2, 2]


def test_cli_tiles_with_a_scribbled_roi_answers(tmp_path) -> None:
    slide = small_slide(tmp_path / "s.svs")
    pts = np.random.default_rng(1).uniform(0, 1000, (5000, 2)).tolist()
    roi = tmp_path / "scribble.geojson"
    roi.write_text(
        json.dumps(
            {
                "type": "Feature",
                "properties": {"objectType": "annotation"},
                "geometry": {"type": "Polygon", "coordinates": [pts + [pts[0]]]},
            }
        )
    )
    r = run_cli("tiles", str(slide), "--roi", str(roi), "--no-tissue")
    assert r.returncode == 0 and "tiles of" in r.stdout, r.stderr
