import numpy as np
from shapely.geometry import MultiPolygon, Polygon, box

from napari_pathomics.layers import annotations_to_shapes, shapes_to_annotations
from napari_pathomics.wsi.annotations import Annotation


def test_unedited_imports_keep_holes_and_new_shapes_get_new_ids():
    holed = Annotation(Polygon([(0, 0), (100, 0), (100, 100), (0, 100)], [[(40, 40), (60, 40), (60, 60), (40, 60)]]))
    multi = Annotation(MultiPolygon([box(200, 200, 300, 300), box(400, 400, 450, 450)]), classification="Stroma")
    data, kw = annotations_to_shapes([holed, multi])
    assert len(data) == 3
    props = {k: list(v) for k, v in kw["properties"].items()}
    # the user draws a new shape; napari copies the current properties (roi_id of `holed`)
    data.append(np.array([[600.0, 600.0], [600.0, 700.0], [700.0, 700.0]]))
    props["roi_id"].append(holed.id)
    props["classification"].append("Tumor")
    out = shapes_to_annotations(data, ["polygon"] * 4, props, originals=kw["metadata"]["pathomics_annotations"])
    assert out[0] is holed and out[1] is multi
    assert len(out) == 3 and out[2].id not in (holed.id, multi.id)
    # editing one part of the MultiPolygon turns its parts into plain new polygons
    data[2] = data[2] + 1.0
    out = shapes_to_annotations(data, ["polygon"] * 4, props, originals=kw["metadata"]["pathomics_annotations"])
    assert out[0] is holed and all(a is not multi for a in out) and len(out) == 4


def test_ellipse_and_lines():
    rect = np.array([[0.0, 0.0], [0.0, 200.0], [100.0, 200.0], [100.0, 0.0]])  # (y, x) bounding box
    out = shapes_to_annotations([rect, rect[:2]], ["ellipse", "line"], {})
    assert len(out) == 1
    assert abs(out[0].geometry.area - np.pi * 100 * 50) / (np.pi * 100 * 50) < 0.01
