"""QuPath exports of every version survive a read + write: ROIs, points, cells, detections, tiles.

The fixtures follow the GeoJSON each QuPath version writes (0.2: the object type as the feature
id, ``colorRGB`` packed ints, measurements as a list; 0.3: ``objectType``, measurements as a
list; 0.4/0.5: ``objectType``, UUID ids, ``color`` triples, measurement maps, derived classes
as ``names`` arrays, cells with a top-level ``nucleusGeometry``).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from napari_pathomics.wsi.annotations import Annotation, QuPathObject, read_geojson, write_geojson
from napari_pathomics.wsi.roi_store import legacy_sidecar_path, load_saved_rois, save_rois, sidecar_path

SQUARE = [[[100, 100], [400, 100], [400, 400], [100, 400], [100, 100]]]
HOLED = [
    [[1000, 1000], [2000, 1000], [2000, 2000], [1000, 2000], [1000, 1000]],
    [[1400, 1400], [1600, 1400], [1600, 1600], [1400, 1600], [1400, 1400]],
]


def _poly(coords):
    return {"type": "Polygon", "coordinates": coords}


QUPATH_02 = {
    "type": "FeatureCollection",
    "features": [
        {
            "type": "Feature",
            "id": "PathAnnotationObject",
            "geometry": _poly(SQUARE),
            "properties": {
                "classification": {"name": "Tumor", "colorRGB": -3670016},
                "isLocked": False,
                "measurements": [],
            },
        },
        {
            "type": "Feature",
            "id": "PathDetectionObject",
            "geometry": _poly([[[10, 10], [20, 10], [20, 20], [10, 10]]]),
            "properties": {
                "classification": {"name": "Stroma", "colorRGB": -6895466},
                "measurements": [{"name": "Area µm^2", "value": 12.5}, {"name": "Hematoxylin OD mean", "value": 0.3}],
            },
        },
        {
            "type": "Feature",
            "id": "PathCellObject",
            "geometry": _poly([[[30, 30], [44, 30], [44, 44], [30, 44], [30, 30]]]),
            "nucleusGeometry": _poly([[[34, 34], [40, 34], [40, 40], [34, 40], [34, 34]]]),
            "properties": {"isLocked": False, "measurements": [{"name": "Nucleus: Area", "value": 36.0}]},
        },
    ],
}

QUPATH_03 = {
    "type": "FeatureCollection",
    "features": [
        {
            "type": "Feature",
            "geometry": _poly(HOLED),
            "properties": {
                "objectType": "annotation",
                "name": "holed tumour",
                "isLocked": True,
                "classification": {"name": "Tumor", "colorRGB": -3670016},
                "measurements": [],
            },
        },
        {
            "type": "Feature",
            "geometry": {"type": "MultiPoint", "coordinates": [[50, 60], [70, 80], [90, 95]]},
            "properties": {
                "objectType": "annotation",
                "classification": {"name": "Immune cells", "colorRGB": -6268256},
                "isLocked": False,
            },
        },
        {
            "type": "Feature",
            "geometry": {"type": "LineString", "coordinates": [[0, 0], [50, 50]]},
            "properties": {"objectType": "annotation", "name": "ruler"},
        },
        {
            "type": "Feature",
            "geometry": _poly([[[0, 0], [512, 0], [512, 512], [0, 512], [0, 0]]]),
            "properties": {"objectType": "tile", "measurements": [{"name": "prob_TUM", "value": 0.9}]},
        },
    ],
}

QUPATH_04 = {
    "type": "FeatureCollection",
    "features": [
        {
            "type": "Feature",
            "id": "b1a2c3d4-0000-4000-8000-000000000001",
            "geometry": _poly(SQUARE),
            "properties": {
                "objectType": "annotation",
                "name": "roi 1",
                "isEllipse": False,
                "isLocked": False,
                "classification": {"names": ["Tumor", "Positive"], "color": [200, 0, 0]},
                "metadata": {"reviewer": "JD"},
                "unknownField": [1, 2, 3],
            },
        },
        {
            "type": "Feature",
            "id": "b1a2c3d4-0000-4000-8000-000000000002",
            "geometry": {"type": "Point", "coordinates": [250.0, 250.0]},
            "properties": {
                "objectType": "annotation",
                "name": "calibration",
                "classification": {"name": "Other", "color": [0, 200, 0]},
            },
        },
        {
            "type": "Feature",
            "id": "b1a2c3d4-0000-4000-8000-000000000003",
            "geometry": _poly([[[300, 300], [330, 300], [330, 330], [300, 330], [300, 300]]]),
            "nucleusGeometry": _poly([[[310, 310], [320, 310], [320, 320], [310, 320], [310, 310]]]),
            "properties": {
                "objectType": "cell",
                "classification": {"name": "Tumor", "color": [200, 0, 0]},
                "measurements": {"Nucleus: Area µm^2": 25.0, "Cell: Area µm^2": 225.0},
            },
        },
        {
            "type": "Feature",
            "id": "b1a2c3d4-0000-4000-8000-000000000004",
            "geometry": {
                "type": "MultiPolygon",
                "coordinates": [SQUARE, [[[600, 600], [700, 600], [700, 700], [600, 600]]]],
            },
            "properties": {
                "objectType": "annotation",
                "classification": {"name": "Stroma", "color": [150, 200, 150]},
                "isEllipse": True,
            },
        },
        {
            "type": "Feature",
            "id": "b1a2c3d4-0000-4000-8000-000000000005",
            "geometry": _poly([[[9000, 9000], [9100, 9000], [9100, 9100], [9000, 9000]]]),
            "properties": {"objectType": "annotation", "name": "off the slide"},
        },
    ],
}

#: QuPath 0.5 writes the same layout as 0.4, with colours also on plain annotations' metadata.
QUPATH_05 = copy.deepcopy(QUPATH_04)
QUPATH_05["features"][0]["properties"]["color"] = [255, 0, 0]


@pytest.mark.parametrize("doc", [QUPATH_02, QUPATH_03, QUPATH_04, QUPATH_05], ids=["0.2", "0.3", "0.4", "0.5"])
def test_read_then_write_loses_nothing(tmp_path: Path, doc: dict) -> None:
    src = tmp_path / "in.geojson"
    src.write_text(json.dumps(doc))
    res = read_geojson(src, bounds=(5000, 5000))
    assert len(res.objects) == len(doc["features"])
    out = write_geojson(res.objects, tmp_path / "out.geojson")
    assert json.loads(out.read_text())["features"] == doc["features"]


def test_objects_are_typed_in_file_order() -> None:
    from napari_pathomics.wsi.annotations import parse_geojson

    res = parse_geojson(QUPATH_04, bounds=(5000, 5000))
    kinds = [o.kind if isinstance(o, QuPathObject) else "roi" for o in res.objects]
    assert kinds == ["roi", "point", "cell", "roi", "annotation"]  # the last one lies off the slide
    assert [a.id for a in res.annotations] == [
        "b1a2c3d4-0000-4000-8000-000000000001",
        "b1a2c3d4-0000-4000-8000-000000000004",
    ]
    assert res.annotations[0].classification == "Tumor: Positive"
    cell = res.of_kind("cell")[0]
    assert cell.measurements == {"Nucleus: Area µm^2": 25.0, "Cell: Area µm^2": 225.0}
    assert cell.nucleus is not None and cell.nucleus.area == 100
    assert any("off the slide" in w for w in res.warnings)


def test_qupath_02_lists_and_packed_colours() -> None:
    from napari_pathomics.wsi.annotations import parse_geojson

    res = parse_geojson(QUPATH_02)
    (roi,) = res.annotations
    assert roi.classification == "Tumor" and roi.color == (200, 0, 0)
    det, cell = res.of_kind("detection")[0], res.of_kind("cell")[0]
    assert det.measurements == {"Area µm^2": 12.5, "Hematoxylin OD mean": 0.3}
    assert det.classification == "Stroma" and cell.nucleus is not None


def test_edited_roi_keeps_its_properties_and_the_rest_is_untouched(tmp_path: Path) -> None:
    from dataclasses import replace

    from shapely.geometry import box

    src = tmp_path / "in.geojson"
    src.write_text(json.dumps(QUPATH_04))
    res = read_geojson(src, bounds=(5000, 5000))
    edited = replace(res.annotations[0], geometry=box(100, 100, 450, 400))
    objects = [edited if o is res.annotations[0] else o for o in res.objects]
    feats = json.loads(write_geojson(objects, tmp_path / "out.geojson").read_text())["features"]
    assert feats[1:] == QUPATH_04["features"][1:]
    first = feats[0]
    assert first["id"] == QUPATH_04["features"][0]["id"]
    assert first["properties"] == QUPATH_04["features"][0]["properties"]  # derived class, metadata, unknowns kept
    assert first["geometry"]["coordinates"][0][1] == [450.0, 100.0] or [450, 100] in first["geometry"]["coordinates"][0]


def test_sidecars_of_same_stem_slides_are_kept_apart(tmp_path: Path) -> None:
    from shapely.geometry import box

    svs, tif = tmp_path / "A.svs", tmp_path / "A.tif"
    svs.write_bytes(b"svs")
    tif.write_bytes(b"tiff!")
    save_rois(svs, [Annotation(box(0, 0, 10, 10), name="on svs")])
    save_rois(tif, [])  # deleting the ROIs shown on A.tif
    assert sidecar_path(svs) != sidecar_path(tif)
    assert [a.name for a in load_saved_rois(svs).annotations] == ["on svs"]
    assert load_saved_rois(tif).annotations == []


def test_a_first_build_sidecar_is_read_only_when_it_is_unambiguous(tmp_path: Path) -> None:
    svs = tmp_path / "B.svs"
    svs.write_bytes(b"svs")
    legacy_sidecar_path(svs).write_text(json.dumps(QUPATH_03))
    res = load_saved_rois(svs, bounds=(5000, 5000))
    assert res is not None and len(res.annotations) == 1 and any("will be saved as" in w for w in res.warnings)
    (tmp_path / "B.tif").write_bytes(b"another B")
    assert load_saved_rois(svs) is None  # B.svs and B.tif: the old file could be either's


def test_saved_for_another_file_of_the_same_name_is_said(tmp_path: Path) -> None:
    from shapely.geometry import box

    slide = tmp_path / "C.svs"
    slide.write_bytes(b"one")
    save_rois(slide, [Annotation(box(0, 0, 10, 10))])
    slide.write_bytes(b"a different file")
    res = load_saved_rois(slide)
    assert res is not None and any("check the ROIs" in w for w in res.warnings)


def test_autosave_keeps_what_the_roi_layer_does_not_show(tmp_path: Path) -> None:
    slide = tmp_path / "D.svs"
    slide.write_bytes(b"slide")
    src = tmp_path / "qp.geojson"
    doc = {"type": "FeatureCollection", "features": QUPATH_03["features"] + QUPATH_04["features"][1:]}
    src.write_text(json.dumps(doc))
    res = read_geojson(src, bounds=(5000, 5000))
    assert len(res.objects) == 8 and len(res.annotations) == 2
    # the layer shows the two ROIs; one is deleted: the six other objects are still saved
    kept = [o for o in res.objects if o is not res.annotations[1]]
    save_rois(slide, kept)
    back = load_saved_rois(slide, bounds=(5000, 5000))
    assert len(back.objects) == 7 and len(back.annotations) == 1


_SQ = _poly([[[0, 0], [100, 0], [100, 100], [0, 100], [0, 0]]])
#: Features of unusual (still valid) shape that an unedited trip once changed.
ODD_FEATURES = {
    "name null": {"type": "Feature", "geometry": _SQ, "properties": {"objectType": "annotation", "name": None}},
    "integer id": {"type": "Feature", "id": 5, "geometry": _SQ, "properties": {"objectType": "annotation"}},
    "no properties": {"type": "Feature", "geometry": _SQ},
    "properties null": {"type": "Feature", "geometry": _SQ, "properties": None},
    "integer name": {"type": "Feature", "geometry": _SQ, "properties": {"name": 12}},
    "class without a name": {
        "type": "Feature",
        "geometry": _SQ,
        "properties": {"classification": {"color": [1, 2, 3]}},
    },
    "class as a string": {"type": "Feature", "geometry": _SQ, "properties": {"classification": "Tumor"}},
    "3-D coordinates": {
        "type": "Feature",
        "properties": {},
        "geometry": _poly([[[0, 0, 1], [100, 0, 1], [100, 100, 1], [0, 0, 1]]]),
    },
    "bbox and foreign members": {
        "type": "Feature",
        "bbox": [0, 0, 100, 100],
        "geometry": _SQ,
        "properties": {},
        "foreign": {"x": 1},
    },
    "bow-tie (repaired for tiling)": {
        "type": "Feature",
        "properties": {"objectType": "annotation"},
        "geometry": _poly([[[0, 0], [100, 100], [100, 0], [0, 100], [0, 0]]]),
    },
    "past the slide's edge (clipped for tiling)": {
        "type": "Feature",
        "properties": {"objectType": "annotation"},
        "geometry": _poly([[[4900, 0], [5100, 0], [5100, 99], [4900, 0]]]),
    },
}


@pytest.mark.parametrize("name", ODD_FEATURES)
def test_an_unedited_roi_is_written_exactly_as_read(tmp_path: Path, name: str) -> None:
    feat = ODD_FEATURES[name]
    src = tmp_path / "in.geojson"
    src.write_text(json.dumps({"type": "FeatureCollection", "features": [feat]}))
    res = read_geojson(src, bounds=(5000, 5000))
    assert len(res.annotations) == 1
    out = write_geojson(res.objects, tmp_path / "out.geojson")
    assert json.loads(out.read_text())["features"] == [feat]


def test_an_edited_roi_keeps_its_id_and_name_types(tmp_path: Path) -> None:
    from dataclasses import replace

    from shapely.geometry import box

    feat = {
        "type": "Feature",
        "id": 5,
        "geometry": _SQ,
        "properties": {"name": 12, "classification": {"color": [1, 2, 3]}, "extra": True},
    }
    (roi,) = parse_geojson_features([feat]).annotations
    out = replace(roi, geometry=box(0, 0, 200, 100)).to_feature()
    assert out["id"] == 5 and out["properties"] == feat["properties"] and out["geometry"]["type"] == "Polygon"
    renamed = replace(roi, name="renamed", classification="Stroma").to_feature()
    assert renamed["properties"]["name"] == "renamed" and renamed["properties"]["classification"]["name"] == "Stroma"


def parse_geojson_features(features: list[dict]):
    from napari_pathomics.wsi.annotations import parse_geojson

    return parse_geojson({"type": "FeatureCollection", "features": copy.deepcopy(features)})
