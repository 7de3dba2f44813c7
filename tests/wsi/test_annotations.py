"""GeoJSON ROIs: QuPath round trip, and every bad file is an AnnotationError in one line or a
repaired ROI with a warning that says what was done; through ``pathomics tiles --roi`` exit 5,
one stderr line. Also property-based: geometry round trips, and arbitrary / mutated JSON into
``parse_geojson`` gives only the typed error.

Cases found by probing: a JSON nested deeper than Python's recursion limit (was a bare
RecursionError), a UTF-8 BOM (was refused as invalid JSON), and a colour of strings (was a TypeError).
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
import shapely
from hypothesis import given
from hypothesis import strategies as st
from shapely.geometry import MultiPolygon, Polygon, box

from _cli import CLI
from _fuzz import FAST, SETTINGS, json_any, mutate, polygons
from _slides import small_slide
from napari_pathomics.errors import AnnotationError
from napari_pathomics.wsi.annotations import (
    DEFAULT_COLOR,
    Annotation,
    parse_geojson,
    read_geojson,
    to_geojson,
    write_geojson,
)

QUPATH = {
    "type": "FeatureCollection",
    "features": [
        {
            "type": "Feature",
            "id": "a1",
            "geometry": {
                "type": "Polygon",
                "coordinates": [
                    [[100.25, 100.5], [900.75, 120.0], [880.0, 700.0], [110.0, 690.0], [100.25, 100.5]],
                    [[300, 300], [400, 300], [400, 400], [300, 400], [300, 300]],
                ],
            },
            "properties": {
                "objectType": "annotation",
                "classification": {"name": "Tumor", "color": [200, 0, 0]},
                "isLocked": False,
            },
        },
        {
            "type": "Feature",
            "id": "a2",
            "geometry": {
                "type": "MultiPolygon",
                "coordinates": [
                    [[[1000, 1000], [1200, 1000], [1200, 1200], [1000, 1200], [1000, 1000]]],
                    [[[1500, 1500], [1600, 1500], [1600, 1650], [1500, 1500]]],
                ],
            },
            "properties": {
                "objectType": "annotation",
                "name": "nodule",
                "classification": {"name": "Stroma", "colorRGB": -16711936},
            },
        },
    ],
}


def test_qupath_round_trip_keeps_holes_and_multipolygons(tmp_path):
    src = tmp_path / "in.geojson"
    src.write_text(json.dumps(QUPATH))
    res = read_geojson(src, bounds=(5000, 5000))
    assert res.warnings == []
    a1, a2 = res.annotations
    assert isinstance(a1.geometry, Polygon) and len(a1.geometry.interiors) == 1
    assert isinstance(a2.geometry, MultiPolygon) and len(a2.geometry.geoms) == 2
    assert a2.classification == "Stroma" and a2.color == (0, 255, 0) and a2.name == "nodule"
    out = tmp_path / "out.geojson"
    write_geojson(res.annotations, out)
    doc = json.loads(out.read_text())
    assert doc["features"][0]["properties"]["objectType"] == "annotation"
    assert doc["features"][0]["properties"]["classification"] == {"name": "Tumor", "color": [200, 0, 0]}
    back = read_geojson(out).annotations
    for a, b in zip(res.annotations, back):
        assert shapely.hausdorff_distance(a.geometry, b.geometry) <= 0.5
        assert a.geometry.symmetric_difference(b.geometry).area < 1.0


@pytest.mark.parametrize(
    "text,match",
    [
        ("{not json", "not valid JSON"),
        ('"a string"', "not GeoJSON"),
        ('{"type": "Topology"}', "not GeoJSON"),
        ('{"type": "FeatureCollection", "features": []}', "no features"),
        (
            '{"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": '
            '{"type": "Point", "coordinates": [1, 2]}, "properties": {}}]}',
            "no usable ROI",
        ),
    ],
)
def test_malformed_geojson(tmp_path, text, match):
    p = tmp_path / "bad.geojson"
    p.write_text(text)
    with pytest.raises(AnnotationError, match=match):
        read_geojson(p)


def _one_polygon(coords):
    return {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [coords]},
                "properties": {"objectType": "annotation"},
            }
        ],
    }


def test_self_intersecting_is_repaired_and_said(tmp_path):
    p = tmp_path / "bow.geojson"
    p.write_text(json.dumps(_one_polygon([[0, 0], [100, 100], [100, 0], [0, 100], [0, 0]])))
    res = read_geojson(p)
    assert res.annotations[0].geometry.is_valid
    assert res.annotations[0].geometry.area == pytest.approx(5000)
    assert any("repaired" in w for w in res.warnings)


def test_off_slide_clipped_or_refused(tmp_path):
    p = tmp_path / "off.geojson"
    p.write_text(json.dumps(_one_polygon([[-50, -50], [50, -50], [50, 50], [-50, 50], [-50, -50]])))
    res = read_geojson(p, bounds=(1000, 1000))
    assert res.annotations[0].geometry.equals(box(0, 0, 50, 50))
    assert any("clipped" in w for w in res.warnings)
    p.write_text(json.dumps(_one_polygon([[5000, 5000], [5100, 5000], [5100, 5100], [5000, 5000]])))
    with pytest.raises(AnnotationError, match="no usable ROI.*off the slide"):
        read_geojson(p, bounds=(1000, 1000))


def test_nan_coordinates_refused(tmp_path):
    p = tmp_path / "nan.geojson"
    p.write_text(json.dumps(_one_polygon([[0, 0], [10, 0], [float("nan"), 10], [0, 0]])).replace("NaN", "NaN"))
    with pytest.raises(AnnotationError, match="NaN"):
        read_geojson(p)


def test_unknown_geometry_types_are_kept_with_a_warning(tmp_path):
    p = tmp_path / "mixed.geojson"
    feats = [
        {"type": "Feature", "geometry": {"type": "LineString", "coordinates": [[0, 0], [5, 5]]}, "properties": {}},
        {"type": "Feature", "geometry": {"type": "Hexagon", "coordinates": []}, "properties": {}},
        {
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [9, 0], [9, 9], [0, 0]]]},
            "properties": {"objectType": "annotation"},
        },
    ]
    p.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    res = read_geojson(p)
    assert len(res.annotations) == 1
    assert any("LineString" in w for w in res.warnings) and any("Hexagon" in w for w in res.warnings)


@pytest.mark.slow
def test_hundred_thousand_features(tmp_path):
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 90_000, size=(100_000, 2))
    feats = [
        {
            "type": "Feature",
            "geometry": {
                "type": "Polygon",
                "coordinates": [[[x, y], [x + 40, y], [x + 40, y + 40], [x, y + 40], [x, y]]],
            },
            "properties": {"objectType": "annotation"},
        }
        for x, y in xy.tolist()
    ]
    p = tmp_path / "big.geojson"
    p.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    res = read_geojson(p, bounds=(100_000, 100_000))
    assert len(res.annotations) == 100_000 and not res.warnings


def test_non_finite_numbers_are_written_as_qupath_writes_them(tmp_path):
    """QuPath writes a measurement it could not compute as ``NaN`` (Gson's special values) and reads
    measurements as doubles, failing on ``null``: such values go back as QuPath wrote them."""
    import math

    ann = Annotation(
        box(0, 0, 10, 10),
        properties={
            "measurements": {"area": float("nan")},
            "score": float("inf"),
            "low": np.float32("-inf"),
            "n": np.int64(3),
        },
    )
    qupath = (
        '{"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": {"type": "Point", '
        '"coordinates": [5, 5]}, "properties": {"objectType": "detection", "measurements": '
        '[{"name": "Nucleus: DAB OD mean", "value": NaN}, {"name": "Area", "value": 12.5}]}}]}'
    )
    src = tmp_path / "qupath.geojson"
    src.write_text(qupath)
    res = read_geojson(src, allow_empty=True)
    out = write_geojson([ann, *res.objects], tmp_path / "n.geojson")
    text = out.read_text()
    assert "null" not in text and "NaN" in text and "-Infinity" in text
    doc = json.loads(text)
    props = doc["features"][0]["properties"]
    assert math.isnan(props["measurements"]["area"]) and props["score"] == math.inf and props["low"] == -math.inf
    assert props["n"] == 3
    m = doc["features"][1]["properties"]["measurements"]
    assert math.isnan(m[0]["value"]) and m[1] == {"name": "Area", "value": 12.5}


# ---- the full corpus of bad files, with the exact outcome of each ------------------------------
BOUNDS = (1536, 1024)  # the slide below: 1536 x 1024 px


def _feat(coords, gtype="Polygon", **props) -> dict:
    return {
        "type": "Feature",
        "geometry": {"type": gtype, "coordinates": coords},
        "properties": {"objectType": "annotation", **props},
    }


def _fc(*feats) -> dict:
    return {"type": "FeatureCollection", "features": list(feats)}


SQUARE = [[[100, 100], [400, 100], [400, 400], [100, 400], [100, 100]]]

REFUSED = {  # name -> (file content, words of the one-line AnnotationError)
    "not-json": ("{ this is not json", "is not valid JSON (line 1"),
    "binary": (b"\x89PNG\r\n\x1a\n\x00\x00", "cannot read ROI file"),
    "json-not-geojson-number": ("42", "the file is JSON but not GeoJSON"),
    "json-not-geojson-type": (
        json.dumps({"type": "Topology", "objects": {}}),
        "not GeoJSON: top-level type is 'Topology'",
    ),
    "features-not-a-list": (
        json.dumps({"type": "FeatureCollection", "features": {}}),
        "FeatureCollection without a 'features' list",
    ),
    "empty-collection": (json.dumps(_fc()), "contains no features"),
    "only-unknown-geometry": (json.dumps(_fc(_feat([], "Hexagon"))), "unreadable 'Hexagon'"),
    "only-lines": (
        json.dumps(_fc(_feat([[0, 0], [5, 5]], "LineString"))),
        "LineString has no area (ROIs must be polygons)",
    ),
    "null-geometry": (
        json.dumps(_fc({"type": "Feature", "geometry": None, "properties": {}})),
        "no geometry, kept as it is",
    ),
    "nan-coordinates": (
        '{"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": '
        "[[[0, 0], [NaN, 0], [5, 5], [0, 0]]]}}",
        "feature 1 has NaN or infinite coordinates",
    ),
    "infinite-coordinates": (
        '{"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": '
        "[[[0, 0], [Infinity, 0], [5, 5], [0, 0]]]}}",
        "NaN or infinite coordinates",
    ),
    "wholly-off-slide": (
        json.dumps(_fc(_feat([[[5000, 5000], [6000, 5000], [6000, 6000], [5000, 5000]]]))),
        "lies entirely off the slide",
    ),
    "too-few-points": (json.dumps(_fc(_feat([[[0, 0], [1, 1]]]))), "A linearring requires at least 4 coordinates"),
    "deeply-nested": ("[" * 100_000 + "]" * 100_000, "JSON nested too deeply"),
    "only-detections": (json.dumps(_fc(_feat(SQUARE, objectType="cell"))), "contains no usable ROI"),
}


@pytest.fixture(scope="module")
def slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
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


@pytest.mark.parametrize(
    "name", ["not-json", "empty-collection", "nan-coordinates", "wholly-off-slide", "deeply-nested"]
)
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
    p = _write(
        tmp_path, "edge", json.dumps(_fc(_feat([[[-100, -100], [200, -100], [200, 200], [-100, 200], [-100, -100]]])))
    )
    res = read_geojson(p, bounds=BOUNDS)
    assert res.annotations[0].geometry.equals(shapely.box(0, 0, 200, 200))
    assert res.warnings == ["feature 1: clipped to the slide bounds"]


def test_mixed_file_keeps_the_good_roi_and_says_what_was_not_used(tmp_path: Path) -> None:
    doc = _fc(
        _feat(SQUARE),
        _feat([], "Hexagon"),
        _feat([[0, 0], [5, 5]], "LineString"),
        {"type": "Feature", "geometry": None, "properties": {}},
        _feat(SQUARE, objectType="detection"),
    )
    res = read_geojson(_write(tmp_path, "mixed", json.dumps(doc)), bounds=BOUNDS)
    assert len(res.annotations) == 1 and res.annotations[0].area_px == 90_000
    assert len(res.warnings) == 3
    assert "Hexagon" in res.warnings[0] and "LineString" in res.warnings[1] and "no geometry" in res.warnings[2]
    # nothing is lost: every feature is in objects, in file order, and writes back as it was
    assert [o.to_feature() for o in res.objects] == doc["features"]


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    p = _write(tmp_path, "bom", b"\xef\xbb\xbf" + json.dumps(_fc(_feat(SQUARE))).encode())
    assert len(read_geojson(p).annotations) == 1


def test_odd_classification_values_fall_back(tmp_path: Path) -> None:
    doc = _fc(
        _feat(SQUARE, classification={"name": "Tumor", "color": ["red", "x", "y"]}),
        _feat(SQUARE, classification=["not", "a", "dict"]),
        _feat(SQUARE, classification={"name": "Stroma", "color": -16744448}),
    )  # QuPath packed int
    res = read_geojson(_write(tmp_path, "cls", json.dumps(doc)))
    assert res.annotations[0].color == DEFAULT_COLOR
    assert res.annotations[1].classification == "['not', 'a', 'dict']"
    assert res.annotations[2].color == (0, 128, 0)
    out = write_geojson(res.annotations, tmp_path / "back.geojson")  # and it writes back as valid JSON
    json.loads(out.read_text())


@pytest.mark.slow
def test_hundred_thousand_features_round_trip_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 90_000, size=(100_000, 2)).round(1)
    doc = _fc(*[_feat([[[x, y], [x + 40, y], [x + 40, y + 40], [x, y + 40], [x, y]]]) for x, y in xy.tolist()])
    p = _write(tmp_path, "big", json.dumps(doc))
    res = read_geojson(p, bounds=(100_000, 100_000))
    write_geojson(res.annotations, tmp_path / "big-out.geojson")
    back = read_geojson(tmp_path / "big-out.geojson", bounds=(100_000, 100_000))
    assert len(back.annotations) == 100_000 and not back.warnings
    assert back.annotations[-1].geometry.equals(Polygon(doc["features"][-1]["geometry"]["coordinates"][0]))


# ---- properties --------------------------------------------------------------------------------
@SETTINGS
@given(st.lists(polygons(), min_size=1, max_size=4), st.booleans())
def test_geojson_round_trip_preserves_geometry(tmp_path, polys, as_multi):
    if as_multi and len(polys) > 1:
        merged = shapely.union_all(polys)
        anns = [Annotation(merged if isinstance(merged, (Polygon, MultiPolygon)) else polys[0])]
    else:
        anns = [Annotation(p) for p in polys]
    path = tmp_path / "rt.geojson"
    write_geojson(anns, path)
    back = read_geojson(path).annotations
    assert len(back) == len(anns)
    for a, b in zip(anns, back):
        assert a.geometry.symmetric_difference(b.geometry).area < 1e-6 * max(1.0, a.geometry.area)
        assert shapely.hausdorff_distance(a.geometry, b.geometry) <= 0.5


VALID_FEATURE = {
    "type": "Feature",
    "id": "a",
    "geometry": {
        "type": "Polygon",
        "coordinates": [[[0, 0], [100, 0], [100, 100], [0, 100], [0, 0]], [[10, 10], [20, 10], [20, 20], [10, 10]]],
    },
    "properties": {"objectType": "annotation", "name": "r", "classification": {"name": "Tumor", "color": [200, 0, 0]}},
}


def _check_geojson(doc) -> None:
    for bounds in (None, (50.0, 50.0)):
        try:
            res = parse_geojson(doc, bounds=bounds)
        except AnnotationError as exc:
            assert "\n" not in str(exc)
            continue
        assert res.annotations and all(a.geometry.is_valid and not a.geometry.is_empty for a in res.annotations)
        json.dumps(to_geojson(res.annotations))  # what was read can be written back


@FAST
@given(json_any)
def test_parse_geojson_arbitrary_json(doc) -> None:
    _check_geojson(doc)


@FAST
@given(st.data())
def test_parse_geojson_mutated_qupath_feature(data) -> None:
    _check_geojson(mutate(data, {"type": "FeatureCollection", "features": [VALID_FEATURE, VALID_FEATURE]}))
