import json

import numpy as np
import pytest
import shapely
from shapely.geometry import MultiPolygon, Polygon, box

from napari_pathomics.wsi.annotations import Annotation, read_geojson, write_geojson
from napari_pathomics.errors import AnnotationError
from napari_pathomics.wsi.roi_store import autosave_path, load_saved_rois, save_rois, sidecar_path

QUPATH = {
    "type": "FeatureCollection",
    "features": [
        {"type": "Feature", "id": "a1",
         "geometry": {"type": "Polygon", "coordinates": [
             [[100.25, 100.5], [900.75, 120.0], [880.0, 700.0], [110.0, 690.0], [100.25, 100.5]],
             [[300, 300], [400, 300], [400, 400], [300, 400], [300, 300]]]},
         "properties": {"objectType": "annotation", "classification": {"name": "Tumor", "color": [200, 0, 0]},
                        "isLocked": False}},
        {"type": "Feature", "id": "a2",
         "geometry": {"type": "MultiPolygon", "coordinates": [
             [[[1000, 1000], [1200, 1000], [1200, 1200], [1000, 1200], [1000, 1000]]],
             [[[1500, 1500], [1600, 1500], [1600, 1650], [1500, 1500]]]]},
         "properties": {"objectType": "annotation", "name": "nodule",
                        "classification": {"name": "Stroma", "colorRGB": -16711936}}},
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


@pytest.mark.parametrize("text,match", [
    ("{not json", "not valid JSON"),
    ('"a string"', "not GeoJSON"),
    ('{"type": "Topology"}', "not GeoJSON"),
    ('{"type": "FeatureCollection", "features": []}', "no features"),
    ('{"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": '
     '{"type": "Point", "coordinates": [1, 2]}, "properties": {}}]}', "no usable ROI"),
])
def test_malformed_geojson(tmp_path, text, match):
    p = tmp_path / "bad.geojson"
    p.write_text(text)
    with pytest.raises(AnnotationError, match=match):
        read_geojson(p)


def _fc(coords):
    return {"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [coords]},
         "properties": {"objectType": "annotation"}}]}


def test_self_intersecting_is_repaired_and_said(tmp_path):
    p = tmp_path / "bow.geojson"
    p.write_text(json.dumps(_fc([[0, 0], [100, 100], [100, 0], [0, 100], [0, 0]])))
    res = read_geojson(p)
    assert res.annotations[0].geometry.is_valid
    assert res.annotations[0].geometry.area == pytest.approx(5000)
    assert any("repaired" in w for w in res.warnings)


def test_off_slide_clipped_or_refused(tmp_path):
    p = tmp_path / "off.geojson"
    p.write_text(json.dumps(_fc([[-50, -50], [50, -50], [50, 50], [-50, 50], [-50, -50]])))
    res = read_geojson(p, bounds=(1000, 1000))
    assert res.annotations[0].geometry.equals(box(0, 0, 50, 50))
    assert any("clipped" in w for w in res.warnings)
    p.write_text(json.dumps(_fc([[5000, 5000], [5100, 5000], [5100, 5100], [5000, 5000]])))
    with pytest.raises(AnnotationError, match="no usable ROI.*off the slide"):
        read_geojson(p, bounds=(1000, 1000))


def test_nan_coordinates_refused(tmp_path):
    p = tmp_path / "nan.geojson"
    p.write_text(json.dumps(_fc([[0, 0], [10, 0], [float("nan"), 10], [0, 0]])).replace("NaN", "NaN"))
    with pytest.raises(AnnotationError, match="NaN"):
        read_geojson(p)


def test_autosave_beside_slide_or_user_folder(tmp_path, monkeypatch):
    slide = tmp_path / "case.svs"
    slide.write_bytes(b"x")
    anns = [Annotation(box(0, 0, 10, 10))]
    assert save_rois(slide, anns) == sidecar_path(slide)
    assert load_saved_rois(slide).annotations[0].geometry.equals(box(0, 0, 10, 10))
    ro = tmp_path / "ro"
    ro.mkdir()
    slide2 = ro / "case2.svs"
    slide2.write_bytes(b"x")
    ro.chmod(0o555)
    try:
        import os
        if os.access(ro, os.W_OK):  # running as root: permissions are not enforced
            monkeypatch.setattr("napari_pathomics.roi_store._writable", lambda folder: False)
        dest = autosave_path(slide2)
        assert dest.parent != ro
        save_rois(slide2, anns)
        assert load_saved_rois(slide2).annotations[0].geometry.equals(box(0, 0, 10, 10))
        save_rois(slide2, [])
        assert load_saved_rois(slide2).annotations == []
    finally:
        ro.chmod(0o755)


def test_sample_slide_rois_never_written_into_the_package():
    from napari_pathomics.resources import SAMPLE_SLIDE

    assert autosave_path(SAMPLE_SLIDE).parent != SAMPLE_SLIDE.parent


def test_unknown_geometry_types_are_skipped_with_a_warning(tmp_path):
    p = tmp_path / "mixed.geojson"
    feats = [{"type": "Feature", "geometry": {"type": "LineString", "coordinates": [[0, 0], [5, 5]]}, "properties": {}},
             {"type": "Feature", "geometry": {"type": "Hexagon", "coordinates": []}, "properties": {}},
             {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [9, 0], [9, 9], [0, 0]]]},
              "properties": {"objectType": "annotation"}}]
    p.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    res = read_geojson(p)
    assert len(res.annotations) == 1
    assert any("LineString" in w for w in res.warnings) and any("Hexagon" in w for w in res.warnings)


def test_hundred_thousand_features(tmp_path):
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 90_000, size=(100_000, 2))
    feats = [{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[x, y], [x + 40, y], [x + 40, y + 40],
                                                                                  [x, y + 40], [x, y]]]},
              "properties": {"objectType": "annotation"}} for x, y in xy.tolist()]
    p = tmp_path / "big.geojson"
    p.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    res = read_geojson(p, bounds=(100_000, 100_000))
    assert len(res.annotations) == 100_000 and not res.warnings


def test_nan_properties_are_written_as_null(tmp_path):
    ann = Annotation(box(0, 0, 10, 10), properties={"measurements": {"area": float("nan")}, "score": float("inf")})
    out = write_geojson([ann], tmp_path / "n.geojson")
    doc = json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    props = doc["features"][0]["properties"]
    assert props["measurements"]["area"] is None and props["score"] is None
