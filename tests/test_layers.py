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
    (out,) = shapes_to_annotations([moved], ["polygon"], props, originals=kw["metadata"]["pathomics_annotations"],
                                   notes=notes)
    assert out.id == roi.id and out.name == "t1" and not notes
    assert [Polygon(h).equals(Polygon(x)) for h, x in zip(out.geometry.interiors, (hole_a, hole_b))] == [True, True]
    assert out.geometry.area == Polygon(moved[:, ::-1]).area - 200
    # shrink the outline past one hole: that hole goes, and the notes say so
    shrunk = np.array([[0.0, 0.0], [0.0, 50.0], [50.0, 50.0], [50.0, 0.0]])
    (out,) = shapes_to_annotations([shrunk], ["polygon"], props, originals=kw["metadata"]["pathomics_annotations"],
                                   notes=notes)
    assert len(list(out.geometry.interiors)) == 1 and out.id == roi.id and "1 of its 2 holes" in notes[0]


def test_ellipse_and_lines():
    rect = np.array([[0.0, 0.0], [0.0, 200.0], [100.0, 200.0], [100.0, 0.0]])  # (y, x) bounding box
    out = shapes_to_annotations([rect, rect[:2]], ["ellipse", "line"], {})
    assert len(out) == 1
    assert abs(out[0].geometry.area - np.pi * 100 * 50) / (np.pi * 100 * 50) < 0.01
