"""Hardening (GeoJSON ROIs): every bad file is an AnnotationError in one line, or a repaired ROI
with a warning that says what was done; through ``pathomics tiles --roi`` exit 5, one stderr line.

Basic cases (self-intersection repaired, off-slide clipped, NaN refused, unknown geometries,
100 000 features) also live in ``tests/test_annotations.py``; this file is the full corpus with the
exact outcome of each, plus the cases found by probing: a JSON nested deeper than Python's
recursion limit (was a bare RecursionError), a UTF-8 BOM (was refused as invalid JSON), and a
colour of strings (was a TypeError).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import shapely
from shapely.geometry import Polygon

from napari_pathomics.wsi.annotations import DEFAULT_COLOR, read_geojson, write_geojson
from napari_pathomics.errors import AnnotationError

CLI = [sys.executable, "-m", "napari_pathomics.cli"]
BOUNDS = (1536, 1024)  # the slide below: 1536 x 1024 px


def _feat(coords, gtype="Polygon", **props) -> dict:
    return {"type": "Feature", "geometry": {"type": gtype, "coordinates": coords},
            "properties": {"objectType": "annotation", **props}}


def _fc(*feats) -> dict:
    return {"type": "FeatureCollection", "features": list(feats)}


SQUARE = [[[100, 100], [400, 100], [400, 400], [100, 400], [100, 100]]]

REFUSED = {  # name -> (file content, words of the one-line AnnotationError)
    "not-json": ("{ this is not json", "is not valid JSON (line 1"),
    "binary": (b"\x89PNG\r\n\x1a\n\x00\x00", "cannot read ROI file"),
    "json-not-geojson-number": ("42", "the file is JSON but not GeoJSON"),
    "json-not-geojson-type": (json.dumps({"type": "Topology", "objects": {}}), "not GeoJSON: top-level type is 'Topology'"),
    "features-not-a-list": (json.dumps({"type": "FeatureCollection", "features": {}}), "FeatureCollection without a 'features' list"),
    "empty-collection": (json.dumps(_fc()), "contains no features"),
    "only-unknown-geometry": (json.dumps(_fc(_feat([], "Hexagon"))), "unreadable 'Hexagon'"),
    "only-lines": (json.dumps(_fc(_feat([[0, 0], [5, 5]], "LineString"))), "LineString has no area (ROIs must be polygons)"),
    "null-geometry": (json.dumps(_fc({"type": "Feature", "geometry": None, "properties": {}})), "no geometry, skipped"),
    "nan-coordinates": ('{"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": '
                        '[[[0, 0], [NaN, 0], [5, 5], [0, 0]]]}}', "feature 1 has NaN or infinite coordinates"),
    "infinite-coordinates": ('{"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": '
                             '[[[0, 0], [Infinity, 0], [5, 5], [0, 0]]]}}', "NaN or infinite coordinates"),
    "wholly-off-slide": (json.dumps(_fc(_feat([[[5000, 5000], [6000, 5000], [6000, 6000], [5000, 5000]]]))),
                         "lies entirely off the slide, skipped"),
    "too-few-points": (json.dumps(_fc(_feat([[[0, 0], [1, 1]]]))), "A linearring requires at least 4 coordinates"),
    "deeply-nested": ("[" * 100_000 + "]" * 100_000, "JSON nested too deeply"),
    "only-detections": (json.dumps(_fc(_feat(SQUARE, objectType="cell"))), "contains no usable ROI"),
}


@pytest.fixture(scope="module")
def slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from _engine_helpers import small_slide

    return small_slide(tmp_path_factory.mktemp("geo") / "s.svs")


def _write(folder: Path, name: str, content: str | bytes) -> Path:
    p = folder / f"{name}.geojson"
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    return p


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_bad_geojson_is_refused_in_one_line(tmp_path: Path, name: str) -> None:
    content, words = REFUSED[name]
    p = _write(tmp_path, name, content)
    with pytest.raises(AnnotationError) as info:
        read_geojson(p, bounds=BOUNDS)
    msg = str(info.value)
    assert words.replace("'Hexagon'", "Hexagon") in msg.replace("'Hexagon'", "Hexagon") and "\n" not in msg, msg


@pytest.mark.parametrize("name", ["not-json", "empty-collection", "nan-coordinates", "wholly-off-slide", "deeply-nested"])
def test_cli_tiles_with_bad_roi_is_one_line(slide: Path, tmp_path: Path, name: str) -> None:
    content, words = REFUSED[name]
    p = _write(tmp_path, name, content)
    r = subprocess.run([*CLI, "tiles", str(slide), "--roi", str(p)], capture_output=True, text=True, timeout=120)
    assert r.returncode == AnnotationError.exit_code, r.stderr[-2000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in r.stderr and len(lines) == 1 and words in lines[0], r.stderr


def test_self_intersecting_bowtie_is_repaired_and_said(tmp_path: Path) -> None:
    bowtie = [[[100, 100], [300, 300], [300, 100], [100, 300], [100, 100]]]
    p = _write(tmp_path, "bowtie", json.dumps(_fc(_feat(bowtie))))
    res = read_geojson(p, bounds=BOUNDS)
    assert len(res.annotations) == 1 and res.annotations[0].geometry.is_valid
    assert math.isclose(res.annotations[0].area_px, 20_000, rel_tol=1e-6)  # two triangles of 10 000
    assert res.warnings == ["feature 1: invalid polygon (Self-intersection[200 200]) repaired"]


def test_partly_off_slide_is_clipped_and_said(tmp_path: Path) -> None:
    p = _write(tmp_path, "edge", json.dumps(_fc(_feat([[[-100, -100], [200, -100], [200, 200], [-100, 200], [-100, -100]]]))))
    res = read_geojson(p, bounds=BOUNDS)
    assert res.annotations[0].geometry.equals(shapely.box(0, 0, 200, 200))
    assert res.warnings == ["feature 1: clipped to the slide bounds"]


def test_mixed_file_keeps_the_good_roi_and_says_what_was_skipped(tmp_path: Path) -> None:
    doc = _fc(_feat(SQUARE), _feat([], "Hexagon"), _feat([[0, 0], [5, 5]], "LineString"),
              {"type": "Feature", "geometry": None, "properties": {}}, _feat(SQUARE, objectType="detection"))
    res = read_geojson(_write(tmp_path, "mixed", json.dumps(doc)), bounds=BOUNDS)
    assert len(res.annotations) == 1 and res.annotations[0].area_px == 90_000
    assert len(res.warnings) == 3
    assert "Hexagon" in res.warnings[0] and "LineString" in res.warnings[1] and "no geometry" in res.warnings[2]


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    p = _write(tmp_path, "bom", b"\xef\xbb\xbf" + json.dumps(_fc(_feat(SQUARE))).encode())
    assert len(read_geojson(p).annotations) == 1


def test_odd_classification_values_fall_back(tmp_path: Path) -> None:
    doc = _fc(_feat(SQUARE, classification={"name": "Tumor", "color": ["red", "x", "y"]}),
              _feat(SQUARE, classification=["not", "a", "dict"]),
              _feat(SQUARE, classification={"name": "Stroma", "color": -16744448}))  # QuPath packed int
    res = read_geojson(_write(tmp_path, "cls", json.dumps(doc)))
    assert res.annotations[0].color == DEFAULT_COLOR
    assert res.annotations[1].classification == "['not', 'a', 'dict']"
    assert res.annotations[2].color == (0, 128, 0)
    out = write_geojson(res.annotations, tmp_path / "back.geojson")  # and it writes back as valid JSON
    json.loads(out.read_text())


def test_hundred_thousand_features_round_trip_in_reasonable_time(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 90_000, size=(100_000, 2)).round(1)
    doc = _fc(*[_feat([[[x, y], [x + 40, y], [x + 40, y + 40], [x, y + 40], [x, y]]]) for x, y in xy.tolist()])
    p = _write(tmp_path, "big", json.dumps(doc))
    t = time.perf_counter()
    res = read_geojson(p, bounds=(100_000, 100_000))
    write_geojson(res.annotations, tmp_path / "big-out.geojson")
    back = read_geojson(tmp_path / "big-out.geojson", bounds=(100_000, 100_000))
    dt = time.perf_counter() - t
    assert len(back.annotations) == 100_000 and not back.warnings
    assert back.annotations[-1].geometry.equals(Polygon(doc["features"][-1]["geometry"]["coordinates"][0]))
    assert dt < 60, f"read + write + read of 100 000 features took {dt:.1f} s"
