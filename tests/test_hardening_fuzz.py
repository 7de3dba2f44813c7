"""Fuzzing every reader of user files: only the typed error, never a bare exception.

``tests/test_robustness_fuzz.py`` has the geometric properties (GeoJSON round trip, TileGrid
invariants, mutated manifests). This file drives the readers with hostile content:
arbitrary JSON and mutated QuPath features into ``parse_geojson`` (found: a colour of strings raised
TypeError), byte-level mutations of a valid manifest and of a valid results ``.npz`` (found: a torn
npz raised BadZipFile/EOFError), arbitrary text as a cohort CSV, and mutated signature JSON.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_pathomics.wsi.annotations import parse_geojson, to_geojson
from napari_pathomics.errors import (AnnotationError, BundleError, CohortError, PathomicsError, ResultsError,
                                     SignatureError)

from _badfiles import json_paths

FAST = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
SLOW = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))

scalars = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=6)
json_any = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(st.sampled_from(["type", "features", "geometry", "coordinates", "properties",
                                                           "classification", "color", "name", "objectType", "id",
                                                           "geometries", "x"]), inner, max_size=4), max_leaves=12)

VALID_FEATURE = {"type": "Feature", "id": "a",
                 "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [100, 0], [100, 100], [0, 100], [0, 0]],
                                                                 [[10, 10], [20, 10], [20, 20], [10, 10]]]},
                 "properties": {"objectType": "annotation", "name": "r",
                                "classification": {"name": "Tumor", "color": [200, 0, 0]}}}


def _mutate(data, doc):
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
    _check_geojson(_mutate(data, {"type": "FeatureCollection", "features": [VALID_FEATURE, VALID_FEATURE]}))


# ---- bundle manifest, byte level ---------------------------------------------------------------
@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from _cohort_helpers import tiny_bundle

    return tiny_bundle(tmp_path_factory.mktemp("fz") / "b").path


@SLOW
@given(st.data())
def test_manifest_byte_mutations_only_bundle_error(bundle_dir: Path, tmp_path_factory, data) -> None:
    import shutil

    from napari_pathomics.bundle import Bundle

    folder = tmp_path_factory.mktemp("m") / "b"
    shutil.copytree(bundle_dir, folder)
    raw = bytearray((folder / "manifest.json").read_bytes())
    for _ in range(data.draw(st.integers(1, 8))):
        op = data.draw(st.sampled_from(["flip", "delete", "insert", "truncate"]))
        i = data.draw(st.integers(0, len(raw) - 1))
        if op == "flip":
            raw[i] = data.draw(st.integers(0, 255))
        elif op == "delete":
            del raw[i:i + data.draw(st.integers(1, 20))]
        elif op == "insert":
            raw[i:i] = data.draw(st.sampled_from([b"[", b"{", b'"', b"\\", b"\xff", b"NaN", b"1e999", b",", b"../"]))
        else:
            del raw[i:]
        if not raw:
            break
    (folder / "manifest.json").write_bytes(bytes(raw))
    try:
        Bundle.load(folder)
    except BundleError as exc:
        assert "\n" not in str(exc)


# ---- results npz, byte level ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def results_bytes() -> bytes:
    from napari_pathomics.results import TileResults
    from napari_pathomics.wsi.tiling import TileGrid

    n = 40
    grid = TileGrid(cols=np.arange(n) % 8, rows=np.arange(n) // 8, tile_size_l0=448.0, tile_um=112.0, mpp=0.5,
                    slide_width=8 * 448, slide_height=5 * 448, coverage=np.ones(n, np.float32))
    return TileResults.empty(grid, ["A", "B"], ["#ff0000", "#00ff00"], {"v": 0}).to_npz_bytes()


@SLOW
@given(st.data())
def test_results_byte_mutations_only_results_error(results_bytes: bytes, tmp_path_factory, data) -> None:
    from napari_pathomics.results import TileResults

    raw = bytearray(results_bytes)
    for _ in range(data.draw(st.integers(1, 6))):
        i = data.draw(st.integers(0, len(raw) - 1))
        if data.draw(st.booleans()):
            raw[i] = data.draw(st.integers(0, 255))
        else:
            del raw[i:]
            break
    p = tmp_path_factory.mktemp("r") / "r.npz"
    p.write_bytes(bytes(raw))
    try:
        TileResults.load(p)
    except ResultsError as exc:
        assert "\n" not in str(exc)


# ---- cohort CSV ----------------------------------------------------------------------------------
csv_text = st.lists(st.lists(st.sampled_from(["patient_id", "slide_path", "roi_path", "a.svs", "P1", "P2", "", " ",
                                              '"', "x,y", "\x00", "é", "../a.svs", "/nonexistent.svs"]),
                             min_size=0, max_size=4), max_size=5).map(
    lambda rows: "\n".join(",".join(r) for r in rows))


@FAST
@given(csv_text | st.text(max_size=80))
def test_cohort_csv_only_cohort_error(tmp_path_factory, text: str) -> None:
    from napari_pathomics.cohort.table import read_cohort

    d = tmp_path_factory.mktemp("c")
    (d / "a.svs").write_bytes(b"x")
    p = d / "t.csv"
    p.write_text(text, encoding="utf-8", errors="surrogatepass") if "\ud800" not in text else p.write_bytes(b"\xff")
    try:
        t = read_cohort(p)
    except CohortError as exc:
        assert "\n" not in str(exc)
        return
    assert all(r.slide_path.is_file() for r in t.rows)


# ---- signature JSON --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def signature_doc() -> dict:
    from napari_pathomics.resources import DEFAULT_BUNDLE

    from napari_pathomics.bundle import Bundle

    b = Bundle.load(DEFAULT_BUNDLE)
    if b.signature_path is None:
        pytest.skip("the default bundle carries no signature")
    return json.loads(b.signature_path.read_text())


@SLOW
@given(st.data())
def test_signature_mutations_only_typed_errors(signature_doc: dict, data) -> None:
    from napari_pathomics.signature.model import Signature

    doc = _mutate(data, signature_doc)
    try:
        Signature.from_json(doc)
    except (SignatureError, BundleError) as exc:
        assert "\n" not in str(exc)
    except PathomicsError as exc:  # any typed error is acceptable, but say which
        pytest.fail(f"unexpected typed error {type(exc).__name__}: {exc}")
