"""Shared pieces of the property-based tests: hypothesis settings, JSON strategies and mutators."""

from __future__ import annotations

import copy

import numpy as np
import shapely
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from shapely.geometry import Polygon

#: Reader fuzzing (hostile content): many cheap examples, or fewer for the ones that touch disk.
FAST = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
SLOW = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
#: Geometric properties (round trips, grid invariants).
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def json_paths(obj, prefix=()):
    """Every key/index path inside a JSON document (for mutation tests)."""
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from json_paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from json_paths(v, prefix + (i,))


scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=6)
json_any = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "type",
                    "features",
                    "geometry",
                    "coordinates",
                    "properties",
                    "classification",
                    "color",
                    "name",
                    "objectType",
                    "id",
                    "geometries",
                    "x",
                ]
            ),
            inner,
            max_size=4,
        )
    ),
    max_leaves=12,
)


def mutate(data, doc):
    """1-3 random deletions / replacements (by ``json_any``) anywhere inside a JSON document."""
    doc = copy.deepcopy(doc)
    for _ in range(data.draw(st.integers(1, 3))):
        paths = [p for p in json_paths(doc) if p]
        if not paths:
            break
        path = data.draw(st.sampled_from(paths))
        parent = doc
        for k in path[:-1]:
            parent = parent[k]
        if isinstance(parent, dict) and data.draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = data.draw(json_any)
    return doc


coord = st.floats(0, 5000, allow_nan=False, allow_infinity=False)


@st.composite
def polygons(draw):
    """Star-shaped polygons (always simple) with an optional star-shaped hole inside."""
    cx, cy = draw(coord), draw(coord)
    n = draw(st.integers(3, 12))
    angles = np.sort(
        np.array(draw(st.lists(st.floats(0, 2 * np.pi, exclude_max=True), min_size=n, max_size=n, unique=True)))
    )
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
