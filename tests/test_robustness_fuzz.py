"""Property-based hardening: GeoJSON round trip, manifest mutations, TileGrid invariants."""

import copy
import json

import numpy as np
import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shapely.geometry import MultiPolygon, Polygon

from napari_pathomics.wsi.annotations import Annotation, read_geojson, write_geojson
from napari_pathomics.errors import BundleError
from napari_pathomics.bundle import Bundle
from napari_pathomics.wsi.slide import open_slide
from napari_pathomics.wsi.synthetic import synthetic_he, write_slide
from napari_pathomics.wsi.tiling import plan_tiles
from napari_pathomics.wsi.tissue import detect_tissue

from _badfiles import json_paths

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

coord = st.floats(0, 5000, allow_nan=False, allow_infinity=False)


@st.composite
def polygons(draw):
    """Star-shaped polygons (always simple) with an optional star-shaped hole inside."""
    cx, cy = draw(coord), draw(coord)
    n = draw(st.integers(3, 12))
    angles = np.sort(np.array(draw(st.lists(st.floats(0, 2 * np.pi, exclude_max=True), min_size=n, max_size=n,
                                            unique=True))))
    radii = np.array(draw(st.lists(st.floats(60, 400), min_size=n, max_size=n)))
    ring = np.column_stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)])
    poly = Polygon(ring)
    if not poly.is_valid or poly.area < 100:
        poly = shapely.make_valid(poly).buffer(0)
        if not isinstance(poly, Polygon) or poly.area < 100:
            poly = Polygon([(cx, cy), (cx + 100, cy), (cx + 100, cy + 100)])
    if draw(st.booleans()):
        hole = Polygon([(cx - 20, cy - 20), (cx + 20, cy - 20), (cx + 20, cy + 20), (cx - 20, cy + 20)])
        if poly.contains(hole):
            poly = Polygon(poly.exterior.coords, [hole.exterior.coords])
    return poly


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


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    from _engine_helpers import make_bundle

    return make_bundle(tmp_path_factory.mktemp("fuzzb") / "b", arch="resnet18")


json_values = st.recursive(st.none() | st.booleans() | st.integers(-10, 10) | st.floats(allow_nan=False) | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                           max_leaves=6)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_mutated_manifest_is_loaded_or_refused_with_bundle_error(tiny_bundle, tmp_path_factory, data):
    import shutil

    folder = tmp_path_factory.mktemp("mut") / "b"
    shutil.copytree(tiny_bundle.path, folder)
    man = json.loads((folder / "manifest.json").read_text())
    mutated = copy.deepcopy(man)
    paths = [p for p in json_paths(mutated) if p]
    path = data.draw(st.sampled_from(paths))
    parent = mutated
    for k in path[:-1]:
        parent = parent[k]
    if data.draw(st.booleans()) and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = data.draw(json_values)
    (folder / "manifest.json").write_text(json.dumps(mutated))
    try:
        b = Bundle.load(folder)
    except BundleError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    b.class_names, b.input_size, b.tile_um, b.mpp  # a bundle that loads must be usable


@pytest.fixture(scope="module")
def fuzz_slide(tmp_path_factory):
    p = write_slide(tmp_path_factory.mktemp("fz") / "s.svs", synthetic_he(1536, 2048, seed=5), mpp=0.5, min_size=256)
    s = open_slide(p)
    return s, detect_tissue(s)


@SETTINGS
@given(polygons(), st.integers(0, 11), st.booleans(), st.sampled_from([0.01, 0.5, 1.0]))
def test_tile_grid_invariants(fuzz_slide, poly, shift, reverse, min_tissue):
    slide, tissue = fuzz_slide
    ring = list(poly.exterior.coords)[:-1]
    k = shift % len(ring)
    variants = [ring, ring[k:] + ring[:k]]
    if reverse:
        variants.append(ring[::-1])
    grids = [plan_tiles(slide, [Annotation(Polygon(r, [h.coords for h in poly.interiors]))], tissue=tissue,
                        tile_um=32, mpp=0.5, min_tissue=min_tissue) for r in variants]
    g = grids[0]
    assert all(len(x) == len(g) and np.array_equal(x.origins, g.origins) for x in grids[1:])
    o = g.origins
    assert len(np.unique(o, axis=0)) == len(o)
    assert ((o >= 0) & (o[:, :1] + g.tile_size_l0 <= slide.width + 1) & (o[:, 1:] + g.tile_size_l0 <= slide.height + 1)).all()
    assert (g.coverage >= min_tissue - 1e-9).all()
    if len(g):  # every kept tile touches the ROI
        tiles = shapely.box(o[:, 0], o[:, 1], o[:, 0] + g.tile_size_l0, o[:, 1] + g.tile_size_l0)
        assert shapely.intersects(tiles, poly).all()
