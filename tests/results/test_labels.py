"""Tile labels: edits and undo, QuPath GeoJSON round trip, classified polygon/point import, mapping, autosave."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from _slides import small_slide
from napari_pathomics.errors import LabelsError
from napari_pathomics.resources import DATA_DIR, SAMPLE_SLIDE
from napari_pathomics.results.labels import (
    DEFAULT_MAPPING,
    IGNORE,
    SlideIdentity,
    TileLabels,
    labels_path,
    load_saved_labels,
    outline_image,
    read_labels,
    resolve_class,
    saved_labels_path,
)
from napari_pathomics.wsi.annotations import read_geojson
from napari_pathomics.wsi.roi_store import user_store_dir
from napari_pathomics.wsi.slide import open_slide

CLASSES = ["ADI", "BACK", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM"]
S = 224.0
IDENT = SlideIdentity("case.svs", 1234, "ab" * 32, 4480, 2240)  # 20 × 10 tiles


def _feature(geom: dict, name: str | None, **props) -> dict:
    p = {"objectType": "annotation", **props}
    if name is not None:
        p["classification"] = {"name": name, "color": [200, 0, 0]}
    return {"type": "Feature", "geometry": geom, "properties": p}


def _poly(x0, y0, x1, y1) -> dict:
    return {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}


def _write(path: Path, features: list[dict], **extra) -> Path:
    path.write_text(json.dumps({"type": "FeatureCollection", **extra, "features": features}))
    return path


def test_edits_undo_and_strokes() -> None:
    lab = TileLabels(S, IDENT)
    assert lab.set([(1, 1), (2, 1)], "TUM", by="dr a") == 2
    assert lab.set([(2, 1)], "TUM") == 0  # no change, no undo step
    assert lab.set([(2, 1), (3, 1)], "STR") == 2
    assert lab.counts() == {"STR": 2, "TUM": 1}
    assert lab.get(1, 1).by == "dr a" and lab.get(1, 1).at
    assert sorted(lab.undo()) == [(2, 1), (3, 1)]
    assert lab.counts() == {"TUM": 2}
    lab.set([(5, 5)], "LYM")
    lab.set([(6, 5)], "LYM")
    lab.set([(5, 5)], None)  # erase
    lab.merge_steps(3)  # a brush stroke is one Ctrl+Z
    assert lab.counts() == {"LYM": 1, "TUM": 2}
    lab.undo()
    assert lab.counts() == {"TUM": 2}
    assert lab.undo() and lab.undo() == [] and len(lab) == 0
    assert lab.origin(3, 2) == (672, 448)
    assert lab.cell_at(671.9, 448.0) == (2, 2)


def test_geojson_round_trip_and_qupath_reads_the_squares(tmp_path: Path) -> None:
    lab = TileLabels(S, IDENT, tile_um=112.0, mpp=0.5)
    lab.set([(0, 0), (4, 2), (19, 9)], "TUM", by="dr a", at="2026-12-01T10:00:00+00:00")
    lab.set([(7, 3)], "STR", by="dr b", at="2026-12-01T11:00:00+00:00")
    path = lab.save(tmp_path / "case.svs.labels.geojson", {"TUM": "#d62728", "STR": "#f08a24"})
    doc = json.loads(path.read_text())
    # QuPath GeoJSON: classified annotation squares, our header beside the features
    f = next(f for f in doc["features"] if f["properties"]["pathomics_label"]["col"] == 4)
    assert f["properties"]["objectType"] == "annotation"
    assert f["properties"]["classification"] == {"name": "TUM", "color": [214, 39, 40]}
    assert f["geometry"]["coordinates"][0][0] == [896, 448] and f["geometry"]["coordinates"][0][2] == [1120, 672]
    assert doc["pathomics_labels"]["slide"]["sha256"] == IDENT.sha256
    anns = read_geojson(path).annotations  # the project's QuPath reader sees classified squares
    assert sorted(a.classification for a in anns) == ["STR", "TUM", "TUM", "TUM"]
    back, notes = read_labels(path, S, CLASSES, slide=IDENT, bounds=(IDENT.width, IDENT.height))
    assert notes == []
    assert [(t.col, t.row, t.cls, t.by, t.at) for t in back] == [(t.col, t.row, t.cls, t.by, t.at) for t in lab]
    assert back.sha256() == lab.sha256() and back.mapping == lab.mapping
    assert not back.can_undo  # reading is not an edit


def test_qupath_classified_polygons_and_points_import(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "qupath.geojson",
        [
            _feature(_poly(0, 0, 700, 450), "Tumor"),  # tile centres at x 112, 336, 560; y 112, 336
            _feature(_poly(1000, 1000, 1400, 1300), "Stroma"),  # centres x 1008, 1232; y 1008, 1232
            _feature({"type": "Point", "coordinates": [2000.5, 600]}, "Immune cells"),
            _feature({"type": "MultiPoint", "coordinates": [[3000, 100], [3100, 120]]}, "Necrosis"),
            _feature(
                _poly(2300, 1500, 2600, 1700), "Tumor: Positive"
            ),  # derived class (first part); x 2352, 2576; y 1680
            _feature(_poly(0, 1600, 4000, 2200), "Region*"),  # ignored by the default mapping
            _feature(_poly(3000, 1000, 3600, 1500), None),  # unclassified: skipped
            _feature({"type": "LineString", "coordinates": [[0, 0], [50, 50]]}, "Tumor"),  # a line labels nothing
        ],
    )
    lab, notes = read_labels(path, S, CLASSES, bounds=(IDENT.width, IDENT.height))
    got = {(t.col, t.row): t.cls for t in lab}
    want = {(c, r): "TUM" for c in range(3) for r in range(2)}
    want |= {(c, r): "STR" for c in (4, 5) for r in (4, 5)}
    want |= {(8, 2): "LYM", (13, 0): "DEB", (10, 7): "TUM", (11, 7): "TUM"}
    assert got == want
    assert lab.mapping == DEFAULT_MAPPING


def test_mapping_unknown_classes_and_user_entries(tmp_path: Path) -> None:
    assert resolve_class("tumor", CLASSES, DEFAULT_MAPPING) == "TUM"
    assert resolve_class("STR", CLASSES, {}) == "STR"
    assert resolve_class("Ignore*", CLASSES, DEFAULT_MAPPING) == IGNORE
    assert resolve_class("Perineural invasion", CLASSES, DEFAULT_MAPPING) is None
    path = _write(
        tmp_path / "q.geojson",
        [
            _feature(_poly(0, 0, 300, 300), "Tumor"),
            _feature(_poly(600, 0, 900, 300), "Perineural invasion"),
            _feature(_poly(1200, 0, 1500, 300), "Granulation tissue"),
        ],
    )
    with pytest.raises(LabelsError) as err:
        read_labels(path, S, CLASSES)
    msg = str(err.value)
    assert "'Granulation tissue' (1)" in msg and "'Perineural invasion' (1)" in msg
    assert "Tumor→TUM" in msg and "bundle classes: ADI" in msg
    lab, _ = read_labels(path, S, CLASSES, mapping={"Perineural invasion": "TUM", "Granulation tissue": IGNORE})
    assert lab.counts() == {"TUM": 2}
    assert lab.mapping["Perineural invasion"] == "TUM"  # the mapping travels with the labels
    lab2, _ = read_labels(lab.save(tmp_path / "saved.geojson"), S, CLASSES)
    assert lab2.mapping["Perineural invasion"] == "TUM"


def test_another_slide_is_refused_unless_forced(tmp_path: Path) -> None:
    lab = TileLabels(S, IDENT)
    lab.set([(1, 1)], "TUM")
    path = lab.save(tmp_path / "l.geojson")
    other = SlideIdentity("case.svs", 1234, "cd" * 32)
    with pytest.raises(LabelsError, match="were made on case.svs .sha256 ababab.*use --force"):
        read_labels(path, S, CLASSES, slide=other)
    forced, notes = read_labels(path, S, CLASSES, slide=other, force=True)
    assert len(forced) == 1 and any("forced" in n for n in notes)
    # a file without our header (plain QuPath) cannot be checked: accepted
    plain = _write(tmp_path / "plain.geojson", [_feature(_poly(0, 0, 300, 300), "Tumor")])
    assert len(read_labels(plain, S, CLASSES, slide=other)[0]) == 1


def test_off_the_slide_and_empty_files(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "q.geojson",
        [
            _feature(_poly(0, 0, 300, 300), "Tumor"),
            _feature(_poly(9000, 9000, 9500, 9500), "Stroma"),  # off a 4480 × 2240 slide
            _feature({"type": "Point", "coordinates": [-50, 10]}, "Stroma"),
        ],
    )
    lab, notes = read_labels(path, S, CLASSES, bounds=(IDENT.width, IDENT.height))
    assert lab.counts() == {"TUM": 1} and any("off the slide" in n for n in notes)
    off = _write(tmp_path / "off.geojson", [_feature(_poly(9000, 9000, 9500, 9500), "Stroma")])
    with pytest.raises(LabelsError, match="lie off the slide"):
        read_labels(off, S, CLASSES, bounds=(IDENT.width, IDENT.height))
    with pytest.raises(LabelsError, match="labels no tile"):
        read_labels(_write(tmp_path / "empty.geojson", []), S, CLASSES)
    with pytest.raises(LabelsError, match="not valid JSON"):
        (tmp_path / "bad.geojson").write_text("{")
        read_labels(tmp_path / "bad.geojson", S, CLASSES)
    with pytest.raises(LabelsError, match="not found"):
        read_labels(tmp_path / "missing.geojson", S, CLASSES)
    lab.set([(30, 30)], "STR")
    assert lab.off_slide(IDENT.width, IDENT.height) == [(30, 30)]


def test_another_lattice_takes_the_tiles_whose_centre_is_labelled() -> None:
    lab = TileLabels(224.0)
    lab.set([(1, 1)], "TUM")
    fine = lab.on_lattice(112.0)
    assert {(t.col, t.row) for t in fine} == {(2, 2), (2, 3), (3, 2), (3, 3)}
    assert lab.on_lattice(224.0) is lab


def test_autosave_beside_the_slide_and_back(tmp_path: Path) -> None:
    slide_path = small_slide(tmp_path / "case.svs")
    with open_slide(slide_path) as slide:
        s = 32.0 / slide.mpp[0]
        lab = TileLabels(s, SlideIdentity.of(slide))
        lab.set([(2, 3), (4, 4)], "TUM")
        saved = lab.save(labels_path(slide.path))
        assert saved == slide_path.resolve().with_name("case.svs.labels.geojson")
        assert saved_labels_path(slide.path) == saved
        back, notes = load_saved_labels(slide, s, CLASSES)
        assert back is not None and back.counts() == {"TUM": 2} and notes == []


def test_autosave_of_another_file_of_the_same_name_is_set_aside(tmp_path: Path) -> None:
    slide_path = small_slide(tmp_path / "case.svs")
    with open_slide(slide_path) as slide:
        lab = TileLabels(64.0, SlideIdentity("case.svs", 99, "0" * 64))
        lab.set([(1, 1)], "TUM")
        saved = lab.save(labels_path(slide.path))
        back, notes = load_saved_labels(slide, 64.0, CLASSES)
    assert back is None and "were made on" in notes[0]
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("case.svs.labels.geojson.other-slide-")]
    assert len(kept) == 1 and not saved.exists()  # never overwritten by the next autosave


def test_the_packaged_sample_slide_saves_in_the_user_data_folder() -> None:
    path = labels_path(SAMPLE_SLIDE)
    assert DATA_DIR.resolve() not in path.parents and path.name.startswith("CMU-1-Small-Region.svs-")
    assert path.parent == user_store_dir() / "labels"


def test_outline_image_draws_rings_in_the_class_index() -> None:
    lab = TileLabels(S)
    lab.set([(1, 0)], "TUM")
    lab.set([(0, 1)], "ADI")
    img = outline_image(lab, 2, 3, CLASSES, k=8)
    assert img.shape == (16, 24)
    tile = img[0:8, 8:16]
    assert (tile[0] == 9).all() and (tile[:, 0] == 9).all() and (tile[1:-1, 1:-1] == 0).all()
    assert img[8, 0] == 1 and img[0, 0] == 0
    lab.set([(1, 0)], None)
    outline_image(lab, 2, 3, CLASSES, k=8, cells=[(1, 0)], out=img)
    assert not img[0:8, 8:16].any() and img[8, 0] == 1
    assert np.count_nonzero(img) == 28
