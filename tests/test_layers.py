import numpy as np
from shapely.geometry import MultiPolygon, Polygon, box

from napari_pathomics.layers import annotations_to_shapes, shapes_to_annotations
from napari_pathomics.wsi.annotations import Annotation


def test_unedited_imports_come_back_whole_and_new_shapes_are_new_rois():
    holed = Annotation(Polygon([(0, 0), (100, 0), (100, 100), (0, 100)], [[(40, 40), (60, 40), (60, 60), (40, 60)]]))
    multi = Annotation(MultiPolygon([box(200, 200, 300, 300), box(400, 400, 450, 450)]), classification="Stroma")
    data, kw = annotations_to_shapes([holed, multi])
    assert len(data) == 3
    props = {k: list(v) for k, v in kw["properties"].items()}
    # a drawn shape has no id yet (the ROI layer gives shapes napari adds a fresh one)
    data.append(np.array([[600.0, 600.0], [600.0, 700.0], [700.0, 700.0]]))
    props["roi_id"].append(None)
    props["classification"].append("Tumor")
    out = shapes_to_annotations(data, ["polygon"] * 4, props, originals=kw["metadata"]["pathomics_annotations"])
    assert out[0] is holed and out[1] is multi
    assert len(out) == 3 and out[2].id not in (holed.id, multi.id)
    # editing one part of the MultiPolygon keeps it one ROI, with its id and class
    data[2] = data[2] + 1.0
    out = shapes_to_annotations(data, ["polygon"] * 4, props, originals=kw["metadata"]["pathomics_annotations"])
    assert out[0] is holed and len(out) == 3
    assert out[1] is not multi and out[1].id == multi.id and out[1].classification == "Stroma"
    assert isinstance(out[1].geometry, MultiPolygon) and len(out[1].geometry.geoms) == 2


def test_editing_an_outer_ring_keeps_the_holes_inside_it_and_the_id():
    hole_a, hole_b = [(20, 20), (30, 20), (30, 30), (20, 30)], [(70, 70), (80, 70), (80, 80), (70, 80)]
    roi = Annotation(Polygon([(0, 0), (100, 0), (100, 100), (0, 100)], [hole_a, hole_b]), name="t1")
    data, kw = annotations_to_shapes([roi])
    props = {k: list(v) for k, v in kw["properties"].items()}
    moved = np.asarray(data[0], dtype=float).copy()
    moved[np.argmax(moved.sum(axis=1))] += 5.0  # drag the (100, 100) corner out by 5 px
    notes: list[str] = []
    (out,) = shapes_to_annotations(
        [moved], ["polygon"], props, originals=kw["metadata"]["pathomics_annotations"], notes=notes
    )
    assert out.id == roi.id and out.name == "t1" and not notes
    assert [Polygon(h).equals(Polygon(x)) for h, x in zip(out.geometry.interiors, (hole_a, hole_b))] == [True, True]
    assert out.geometry.area == Polygon(moved[:, ::-1]).area - 200
    # shrink the outline past one hole: that hole goes, and the notes say so
    shrunk = np.array([[0.0, 0.0], [0.0, 50.0], [50.0, 50.0], [50.0, 0.0]])
    (out,) = shapes_to_annotations(
        [shrunk], ["polygon"], props, originals=kw["metadata"]["pathomics_annotations"], notes=notes
    )
    assert len(list(out.geometry.interiors)) == 1 and out.id == roi.id and "1 of its 2 holes" in notes[0]


def test_ellipse_and_lines():
    rect = np.array([[0.0, 0.0], [0.0, 200.0], [100.0, 200.0], [100.0, 0.0]])  # (y, x) bounding box
    out = shapes_to_annotations([rect, rect[:2]], ["ellipse", "line"], {})
    assert len(out) == 1
    assert abs(out[0].geometry.area - np.pi * 100 * 50) / (np.pi * 100 * 50) < 0.01


# ---- QuPath points, cells, detections and tiles as layers (issue 10) ---------------------------
def _qupath_objects():
    """A QuPath 0.4-style file's objects: points of two classes (one a MultiPoint), a cell, a detection, a tile."""
    from napari_pathomics.wsi.annotations import parse_geojson

    def sq(x0: float, y0: float, s: float) -> dict:
        ring = [[x0, y0], [x0 + s, y0], [x0 + s, y0 + s], [x0, y0 + s], [x0, y0]]
        return {"type": "Polygon", "coordinates": [ring]}

    feats = [
        {"type": "Feature", "geometry": sq(100, 100, 300), "properties": {"objectType": "annotation"}},
        {
            "type": "Feature",
            "geometry": {"type": "MultiPoint", "coordinates": [[50, 60], [70, 80]]},
            "properties": {
                "objectType": "annotation",
                "name": "count A",
                "classification": {"name": "Immune cells", "colorRGB": -6268256},
            },
        },
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [250.0, 260.0]},
            "properties": {
                "objectType": "annotation",
                "name": "calibration",
                "classification": {"name": "Other", "color": [0, 200, 0]},
            },
        },
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [300.0, 310.0]},
            "properties": {
                "objectType": "annotation",
                "classification": {"name": "Immune cells", "color": [160, 90, 160]},
            },
        },
        {
            "type": "Feature",
            "geometry": sq(300, 300, 30),
            "nucleusGeometry": sq(310, 310, 10),
            "properties": {
                "objectType": "cell",
                "classification": {"names": ["Tumor", "Positive"], "color": [200, 0, 0]},
                "measurements": {"Nucleus: Area µm^2": 25.0, "Cell: Area µm^2": 225.0},
            },
        },
        {
            "type": "Feature",
            "geometry": sq(600, 600, 20),
            "properties": {
                "objectType": "detection",
                "classification": {"name": "Stroma", "colorRGB": -6895466},
                "measurements": [{"name": "Hematoxylin OD mean", "value": 0.3}],
            },
        },
        {
            "type": "Feature",
            "geometry": sq(0, 0, 512),
            "properties": {"objectType": "tile", "measurements": [{"name": "prob_TUM", "value": 0.9}]},
        },
    ]
    return parse_geojson({"type": "FeatureCollection", "features": feats}, bounds=(1536, 1024))


def _slide(tmp_path):
    from _slides import small_slide
    from napari_pathomics.wsi.slide import open_slide

    return open_slide(small_slide(tmp_path / "s.svs"))


def test_point_annotations_are_one_points_layer_per_class(tmp_path):
    from napari.layers import Points

    from napari_pathomics.colors import rgb_to_hex
    from napari_pathomics.layers import ROLE, ROLE_QUPATH_POINTS
    from napari_pathomics.layers.rois import qupath_point_layers

    res = _qupath_objects()
    with _slide(tmp_path) as slide:
        tuples = qupath_point_layers(slide, res.objects)
    by_class = {kw["metadata"]["classification"]: (data, kw, kind) for data, kw, kind in tuples}
    assert sorted(by_class) == ["Immune cells", "Other"]
    data, kw, kind = by_class["Immune cells"]
    assert kind == "points" and kw["metadata"][ROLE] == ROLE_QUPATH_POINTS
    # (y, x) level-0 px, a MultiPoint's points each one point, in file order; names and class kept
    np.testing.assert_array_equal(data, [[60, 50], [80, 70], [310, 300]])
    assert list(kw["features"]["name"]) == ["count A", "count A", ""]
    assert set(kw["features"]["classification"]) == {"Immune cells"}
    assert kw["face_color"] == rgb_to_hex(res.of_kind("point")[0].color)  # the class colour from QuPath
    other = by_class["Other"]
    np.testing.assert_array_equal(other[0], [[260, 250]])
    assert other[1]["face_color"].lower() == "#00c800" and list(other[1]["features"]["name"]) == ["calibration"]
    layer = Points(data, **kw)  # napari takes the tuple as it is
    assert len(layer.data) == 3 and list(layer.features["name"]) == ["count A", "count A", ""]


def test_cells_detections_and_tiles_are_one_layer_with_measurements(tmp_path):
    from napari.layers import Points

    from napari_pathomics.layers import ROLE, ROLE_QUPATH_CELLS
    from napari_pathomics.layers.rois import qupath_cell_layer

    res = _qupath_objects()
    with _slide(tmp_path) as slide:
        data, kw, kind = qupath_cell_layer(slide, res.objects)
    assert kind == "points" and kw["metadata"][ROLE] == ROLE_QUPATH_CELLS
    assert list(kw["features"]["kind"]) == ["cell", "detection", "tile"]
    assert list(kw["features"]["classification"]) == ["Tumor: Positive", "Stroma", ""]
    # measurements in map (0.4+) and list (0.2/0.3) form become numeric feature columns, NaN where absent
    np.testing.assert_allclose(kw["features"]["Nucleus: Area µm^2"], [25.0, np.nan, np.nan])
    np.testing.assert_allclose(kw["features"]["Hematoxylin OD mean"], [np.nan, 0.3, np.nan])
    np.testing.assert_allclose(kw["features"]["prob_TUM"], [np.nan, np.nan, 0.9])
    # one point per object, inside its outline; the outlines (the nucleus for a cell) are kept for drawing
    assert data.shape == (3, 2)
    for (y, x), geom in zip(data, [o.geometry for o in res.of_kind("cell", "detection", "tile")]):
        from shapely.geometry import Point

        assert geom.contains(Point(x, y))
    outlines = kw["metadata"]["pathomics_outlines"]
    assert [[g.area for g in o] for o in outlines] == [[900, 100], [400], [512 * 512]]  # a cell and its nucleus
    layer = Points(data, **kw)
    assert layer.features.shape[0] == 3


def test_outlines_are_those_in_the_box_nearest_first_and_capped(tmp_path):
    from napari.layers import Shapes

    from napari_pathomics.layers.rois import qupath_cell_layer, qupath_outline_layer, qupath_outlines

    res = _qupath_objects()
    with _slide(tmp_path) as slide:
        _, kw, _ = qupath_cell_layer(slide, res.objects)
        meta = kw["metadata"]
        # a box around the cell (300..330) only: the cell and its nucleus, (y, x) corner vertices, its colour
        data, colors = qupath_outlines(meta, (290, 290, 340, 340))
        assert len(data) == 3 and colors[:2] == ["#c80000", "#c80000"]  # cell, nucleus; the tile (0..512) too
        assert sorted(len(r) for r in data) == [4, 4, 4]
        np.testing.assert_array_equal(data[0], [[300, 300], [300, 330], [330, 330], [330, 300]])
        assert qupath_outlines(meta, (700, 700, 800, 800)) == ([], [])  # nothing there
        data, _ = qupath_outlines(meta, (0, 0, 1536, 1024), max_shapes=2)
        assert len(data) == 2
        d, k, _ = qupath_outline_layer(slide, data, ["#ff0000"] * 2)
        layer = Shapes(d, **k)
        assert len(layer.data) == 2


def test_no_cells_no_layer(tmp_path):
    from napari_pathomics.layers.rois import qupath_cell_layer, qupath_point_layers

    with _slide(tmp_path) as slide:
        assert qupath_cell_layer(slide, []) is None and qupath_point_layers(slide, []) == []


def test_a_near_zero_activation_map_is_not_washed_over_the_roi_and_its_bar_says_what_it_reads(tmp_path):
    """A RAM whose values are 0–0.01, mostly near 0: its colour bar names the number, and only the tiles
    that stand out are coloured (the rest are transparent until the user moves the threshold)."""
    from _slides import small_slide
    from napari_pathomics.layers.results import SCALE_KEY, Display, cam_layer, uncertainty_layer
    from napari_pathomics.results import DONE, TileResults
    from napari_pathomics.wsi.slide import open_slide
    from napari_pathomics.wsi.tiling import plan_tiles

    with open_slide(small_slide(tmp_path / "s.svs")) as slide:
        grid = plan_tiles(slide, tissue=False, tile_um=32, mpp=0.25)
        res = TileResults.empty(grid, ["STR", "TUM"], ["#ff9f1c", "#e6194b"])
        res.status[:] = DONE
        res.probs[:] = (0.3, 0.7)
        rng = np.random.default_rng(0)
        cams = rng.uniform(0, 2e-4, (len(res), 4, 4)).astype(np.float32)
        cams[:5] = rng.uniform(0.006, 0.01, (5, 4, 4))  # a few tiles that stand out
        res.cams["risk"] = cams
        for layer in (cam_layer(slide, res, "risk", Display(shown="cam:risk")), uncertainty_layer(slide, res)):
            data, kw, _ = layer
            scale = kw["metadata"][SCALE_KEY]
            assert scale["units"], kw["name"]  # the colour bar says what the number is
        data, kw, _ = cam_layer(slide, res, "risk", Display(shown="cam:risk"))
        scale = kw["metadata"][SCALE_KEY]
        lo, hi = scale["limits"]
        assert "activation" in scale["units"] and hi <= 0.01 + 1e-9
        drawn = data[np.isfinite(data)] >= scale["threshold"]
        assert 0 < drawn.mean() < 0.2, drawn.mean()  # the standing-out tiles, not the whole ROI
        # a threshold the user sets wins
        _, kw2, _ = cam_layer(slide, res, "risk", Display(shown="cam:risk", thresholds={"cam:risk": lo}))
        assert kw2["metadata"][SCALE_KEY]["threshold"] == lo
