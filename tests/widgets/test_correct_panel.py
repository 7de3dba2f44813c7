"""The Analyze dock's Correct panel on the real viewer: label by clicking, adapt, reopen, save, same map everywhere."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from qtpy.QtCore import QPoint, Qt

from _bundles import make_bundle
from _slides import textured_he
from napari_pathomics.bundle import Bundle, validate_bundle
from napari_pathomics.cli import main as cli_main
from napari_pathomics.inference.checks import runtime_problems
from napari_pathomics.inference.engine import Engine
from napari_pathomics.inference.subset import cams_run, tiles_in_box
from napari_pathomics.layers.base import cam_role
from napari_pathomics.resources import DEFAULT_BUNDLE
from napari_pathomics.results import DONE, TileResults
from napari_pathomics.results.labels import labels_path, saved_labels_path
from napari_pathomics.scoring import score_patient
from napari_pathomics.widgets import adapted_maps, layer_registry
from napari_pathomics.widgets.analyze_widget import AnalyzeWidget
from napari_pathomics.widgets.correct_panel import ROLE_SUGGESTIONS, ROLE_TILE_LABELS
from napari_pathomics.widgets.result_layers import display_of
from napari_pathomics.widgets.score_widget import ScoreWidget
from napari_pathomics.wsi.synthetic import write_slide

pytestmark = [pytest.mark.viewer, pytest.mark.slow]

MPP = 0.5
TILE = 64  # the test bundle: 32 µm tiles at 0.5 µm/px


@pytest.fixture
def two_tissue_slide(tmp_path: Path) -> Path:
    """Left half H&E-like texture, right half the same texture turned bluish: two tissues a head can split."""
    img = textured_he(768, 1024, seed=4)
    right = img[:, 512:].astype(np.int16)
    right[..., 0] -= 70
    right[..., 2] += 40
    img[:, 512:] = np.clip(right, 0, 255).astype(np.uint8)
    return write_slide(tmp_path / "two.svs", img, mpp=MPP, fmt="svs", min_size=128)


@pytest.fixture
def bundle(tmp_path: Path) -> Bundle:
    sig = json.loads((DEFAULT_BUNDLE / "signature.json").read_text())
    return make_bundle(tmp_path / "bundle", signature=sig)


def _wait(qtbot, worker, owner) -> None:  # noqa: ANN001 - qtbot, a napari worker, its widget
    """Until the widget has seen its worker finish (not the signal: a fast worker, e.g. one refused at
    once, can finish before anyone listens)."""
    assert worker is not None
    qtbot.waitUntil(lambda: owner.worker is None, timeout=180_000)


def _analyze(qtbot, viewer, bundle_path, ram: bool = False) -> AnalyzeWidget:  # noqa: ANN001
    w = AnalyzeWidget(viewer)
    w.bundle_path.setText(str(bundle_path))
    w._refresh_bundle()
    w.correct.refresh_classes()
    w.ram.setChecked(ram)
    _wait(qtbot, w.run(), w)
    return w


def _world(col: int, row: int) -> tuple[float, float]:
    """World (y, x) µm of a tile's centre."""
    return ((row * TILE + TILE / 2 - 0.5) * MPP, (col * TILE + TILE / 2 - 0.5) * MPP)


def _click(viewer, qtbot, col: int, row: int) -> None:  # noqa: ANN001
    """A real left click on the canvas over tile (col, row): the camera is centred there, the click at the centre."""
    viewer.camera.center = _world(col, row)
    viewer.camera.zoom = 2.0
    canvas = viewer.window._qt_viewer.canvas.native
    qtbot.wait(50)
    centre = QPoint(canvas.width() // 2, canvas.height() // 2)
    qtbot.mousePress(canvas, Qt.MouseButton.LeftButton, pos=centre)
    qtbot.mouseRelease(canvas, Qt.MouseButton.LeftButton, pos=centre)
    qtbot.wait(20)


def _key(viewer, qtbot, key, modifier=Qt.KeyboardModifier.NoModifier) -> None:  # noqa: ANN001
    canvas = viewer.window._qt_viewer.canvas.native
    canvas.setFocus()
    qtbot.keyClick(canvas, key, modifier)
    qtbot.wait(20)


LEFT = [(1, 2), (3, 5), (5, 8), (2, 9), (6, 3)]
RIGHT = [(10, 2), (12, 5), (14, 8), (9, 9), (13, 3)]
N_ROWS, N_COLS = 12, 16


def _brushed(centres: list[tuple[int, int]]) -> set[tuple[int, int]]:
    """The tiles a 3-tile brush labels clicking at ``centres``."""
    return {
        (c + dc, r + dr)
        for c, r in centres
        for dc in (-1, 0, 1)
        for dr in (-1, 0, 1)
        if 0 <= c + dc < N_COLS and 0 <= r + dr < N_ROWS
    }


def test_click_labels_adapt_changes_the_class_map_and_labels_come_back(
    make_napari_viewer, qtbot, two_tissue_slide, bundle, tmp_path
):
    viewer = make_napari_viewer(show=True)
    img = layer_registry.add_slide(viewer, two_tissue_slide)
    slide = layer_registry.slide_of(img)
    dock = _analyze(qtbot, viewer, bundle.path)
    panel = dock.correct
    before = dock.results[str(slide.path)]
    assert before.emb is not None and before.emb.dtype == np.float16  # embeddings kept with the results
    cls_before = before.class_map().copy()

    panel.brush.setValue(3)  # a 3 × 3-tile brush
    panel.set_mode(True)
    layer = layer_registry.find_layer(viewer, slide, ROLE_TILE_LABELS)
    assert layer is not None and viewer.layers.selection.active is layer and not layer.mouse_pan
    # keys pick the class on the canvas: 9 = TUM (the 9th class), 8 = STR
    _key(viewer, qtbot, Qt.Key.Key_9)
    assert panel.current == "TUM"
    for col, row in LEFT:
        _click(viewer, qtbot, col, row)
    _key(viewer, qtbot, Qt.Key.Key_8)
    assert panel.current == "STR"
    for col, row in RIGHT:
        _click(viewer, qtbot, col, row)
    _click(viewer, qtbot, 0, 0)  # one too many …
    _key(viewer, qtbot, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)  # … undone with Ctrl+Z
    lab = panel.labels_of(slide)
    want = {**{cell: "TUM" for cell in _brushed(LEFT)}, **{cell: "STR" for cell in _brushed(RIGHT)}}
    assert {(t.col, t.row): t.cls for t in lab} == want
    assert lab.get(0, 0) is None
    # drawn as an outline in the class colour: ring pixels set, tile interior empty
    k = layer.data.shape[0] // lab.lattice_shape(slide.width, slide.height)[0]
    c, r = LEFT[0]
    cell = layer.data[r * k : (r + 1) * k, c * k : (c + 1) * k]
    assert cell[0, 0] == 9 and cell[k // 2, k // 2] == 0
    assert saved_labels_path(slide.path) == labels_path(slide.path)  # autosaved beside the slide

    _wait(qtbot, panel.adapt(), panel)
    after = dock.results[str(slide.path)]
    assert after is not before and panel.result is not None
    cls_map = layer_registry.find_layer(viewer, slide, "class_map")
    tum, strm = bundle.class_names.index("TUM"), bundle.class_names.index("STR")
    pred = after.class_map()
    assert all(pred[r, c] == tum for c, r in LEFT) and all(pred[r, c] == strm for c, r in RIGHT)
    assert np.mean(pred[:, :8] == tum) > 0.7 and np.mean(pred[:, 8:16] == strm) > 0.7  # the regions, not just labels
    assert np.mean(cls_before[:, 8:16] == strm) < 0.3  # the right region was not stroma before
    assert not np.array_equal(pred, cls_before)
    assert cls_map is not None and cls_map.data[LEFT[1][1], LEFT[1][0]] == tum + 1  # the layer shows it
    assert "accuracy on the labels" in panel.status.text() and "changed class" in panel.status.text()

    # suggestions: a points layer; Next pans the view to a suggested tile
    idx = panel.suggest(6)
    assert idx.size == 6
    pts = layer_registry.find_layer(viewer, slide, ROLE_SUGGESTIONS)
    assert pts is not None and len(pts.data) == 6
    i = panel.step_suggestion(1)
    xy = after.origins[i] + after.tile_size_l0 / 2
    assert np.allclose(viewer.camera.center[-2:], ((xy[1] - 0.5) * MPP, (xy[0] - 0.5) * MPP))
    assert not any((int(after.cols[j]), int(after.rows[j])) in lab for j in idx)  # never an already labelled tile

    # the slide closed and opened again in a new viewer: the labels come back
    viewer.close()
    viewer2 = make_napari_viewer()
    img2 = layer_registry.add_slide(viewer2, two_tissue_slide)
    dock2 = AnalyzeWidget(viewer2)
    dock2.bundle_path.setText(str(bundle.path))
    dock2._refresh_bundle()
    lab2 = dock2.correct.labels_of(layer_registry.slide_of(img2))
    assert lab2.counts() == lab.counts()
    assert {(t.col, t.row, t.cls) for t in lab2} == {(t.col, t.row, t.cls) for t in lab}
    assert layer_registry.find_layer(viewer2, layer_registry.slide_of(img2), ROLE_TILE_LABELS) is not None


def test_adapted_bundle_gives_the_same_class_map_in_viewer_infer_and_score(
    make_napari_viewer, qtbot, two_tissue_slide, bundle, tmp_path, capsys
):
    viewer = make_napari_viewer()
    img = layer_registry.add_slide(viewer, two_tissue_slide)
    slide = layer_registry.slide_of(img)
    dock = _analyze(qtbot, viewer, bundle.path)
    panel = dock.correct
    panel.brush.setValue(3)
    panel.select_class("TUM")
    for c, r in LEFT:
        panel.label_world(_world(c, r))
    panel.select_class("STR")
    for c, r in RIGHT:
        panel.label_world(_world(c, r))
    _wait(qtbot, panel.adapt(), panel)
    adapted = dock.results[str(slide.path)].pred.copy()

    out = tmp_path / "adapted"
    new = panel.save_model(out)
    assert new is not None and validate_bundle(out) == [] and runtime_problems(Bundle.load(out)) == []
    assert new.file_hashes["model.safetensors"] == bundle.file_hashes["model.safetensors"]  # same backbone
    rec = new.manifest["adaptation"]
    assert rec["base_bundle_id"] == bundle.bundle_id and rec["counts"] == panel.labels_of(slide).counts()
    assert rec["label_sets"][0]["labels_sha256"] == panel.labels_of(slide).sha256()
    assert dock.bundle_path.text() == str(new.path)  # the dock now runs the adapted model

    # the viewer: Analyze with the adapted bundle (from the base's cached embeddings)
    _wait(qtbot, dock.run(), dock)
    viewer_pred = dock.results[str(slide.path)].pred
    np.testing.assert_array_equal(viewer_pred, adapted)
    # infer
    assert (
        cli_main(["infer", str(two_tissue_slide), "--bundle", str(out), "--out", str(tmp_path / "inf"), "--quiet"]) == 0
    )
    infer_pred = TileResults.load(tmp_path / "inf" / "results.npz").pred
    np.testing.assert_array_equal(infer_pred, viewer_pred)
    # score: the same tiles' classes and the same composition
    ps = score_patient([two_tissue_slide], Bundle.load(out))
    np.testing.assert_array_equal(ps.results[0].pred, viewer_pred)
    capsys.readouterr()
    assert cli_main(["score", str(two_tissue_slide), "--bundle", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["composition"] == pytest.approx(ps.composition)
    # a fresh run of the adapted model's own forward pass (no cache) agrees on every confident tile
    assert (
        cli_main(
            [
                "infer",
                str(two_tissue_slide),
                "--bundle",
                str(out),
                "--out",
                str(tmp_path / "fresh"),
                "--quiet",
                "--no-cache",
            ]
        )
        == 0
    )
    fresh = TileResults.load(tmp_path / "fresh" / "results.npz")
    p = np.sort(fresh.probs, axis=1)
    confident = (p[:, -1] - p[:, -2]) > 0.02
    np.testing.assert_array_equal(fresh.pred[confident], viewer_pred[confident])


def test_bad_input_is_a_message_and_nothing_is_lost(make_napari_viewer, qtbot, two_tissue_slide, bundle, tmp_path):
    viewer = make_napari_viewer()
    img = layer_registry.add_slide(viewer, two_tissue_slide)
    slide = layer_registry.slide_of(img)
    dock = _analyze(qtbot, viewer, bundle.path)
    panel = dock.correct
    assert panel.adapt() is None and "no labelled tiles" in panel.status.text()
    panel.select_class("TUM")
    for c, r in LEFT:
        panel.label_world(_world(c, r))
    worker = panel.adapt()  # one class only
    _wait(qtbot, worker, panel)
    assert "at least two classes" in panel.status.text()
    assert panel.labels_of(slide).counts() == {"TUM": 5}
    # a QuPath file with a class the bundle does not know: refused, listing it; the labels stay
    bad = tmp_path / "bad.geojson"
    bad.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "geometry": {"type": "Point", "coordinates": [700, 100]},
                        "properties": {"objectType": "annotation", "classification": {"name": "Perineural invasion"}},
                    }
                ],
            }
        )
    )
    assert panel.import_labels(bad) == ""
    assert "Perineural invasion" in panel.status.text() and "mapping" in panel.status.text()
    assert panel.labels_of(slide).counts() == {"TUM": 5}
    # a labels file made on another slide is refused
    other = tmp_path / "other.svs"
    other.write_bytes(two_tissue_slide.read_bytes()[:-64] + bytes(64))
    foreign = panel.labels_of(slide).to_geojson()
    foreign["pathomics_labels"]["slide"]["sha256"] = "0" * 64
    (tmp_path / "foreign.geojson").write_text(json.dumps(foreign))
    assert panel.import_labels(tmp_path / "foreign.geojson") == ""
    assert "were made on" in panel.status.text()
    assert panel.labels_of(slide).counts() == {"TUM": 5}


def _qupath_file(path: Path, features: list[tuple[dict, str]]) -> Path:
    path.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "geometry": g,
                        "properties": {"objectType": "annotation", "classification": {"name": n, "color": [200, 0, 0]}},
                    }
                    for g, n in features
                ],
            }
        )
    )
    return path


def _square(x0: float, y0: float, x1: float, y1: float) -> dict:
    return {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}


def test_qupath_polygons_import_export_round_trips_and_foreign_labels_need_the_box(
    make_napari_viewer, qtbot, two_tissue_slide, bundle, tmp_path
):
    from napari_pathomics.wsi.annotations import read_geojson

    viewer = make_napari_viewer()
    img = layer_registry.add_slide(viewer, two_tissue_slide)
    slide = layer_registry.slide_of(img)
    dock = AnalyzeWidget(viewer)  # importing needs no analysis: labels live on the bundle's lattice
    dock.bundle_path.setText(str(bundle.path))
    dock._refresh_bundle()
    panel = dock.correct
    panel.refresh_classes()
    # a QuPath export of classified polygons (QuPath's own class names) and a point; one polygon off the slide
    q = _qupath_file(
        tmp_path / "qupath.geojson",
        [
            (_square(TILE, TILE, TILE * 6, TILE * 10), "Tumor"),  # tile centres inside: cols 1-5, rows 1-9
            (_square(TILE * 9, TILE, TILE * 15, TILE * 10), "Stroma"),  # cols 9-14, rows 1-9
            ({"type": "Point", "coordinates": [TILE * 7.5, TILE * 11.5]}, "Immune cells"),  # tile (7, 11)
            (_square(TILE * 40, TILE * 40, TILE * 42, TILE * 42), "Necrosis"),  # off a 16 × 12-tile slide
        ],
    )
    text = panel.import_labels(q)
    lab = panel.labels_of(slide)
    want = {(c, r): "TUM" for c in range(1, 6) for r in range(1, 10)}
    want |= {(c, r): "STR" for c in range(9, 15) for r in range(1, 10)}
    want[(7, 11)] = "LYM"
    assert {(t.col, t.row): t.cls for t in lab} == want
    assert "imported 100 labelled tiles" in text and text in panel.status.text()
    layer = layer_registry.find_layer(viewer, slide, ROLE_TILE_LABELS)
    k = layer.data.shape[0] // N_ROWS
    assert layer.data[2 * k, 3 * k] == bundle.class_names.index("TUM") + 1  # drawn: the top edge of tile (3, 2)
    assert saved_labels_path(slide.path) == labels_path(slide.path)  # and autosaved
    panel.undo()  # the import is one Ctrl+Z
    assert len(panel.labels_of(slide)) == 0
    panel.import_labels(q)
    assert {(t.col, t.row): t.cls for t in panel.labels_of(slide)} == want

    # export: QuPath GeoJSON tile squares with classification; read back by QuPath's rules and by the panel
    out = panel.export_labels(tmp_path / "export.geojson")
    doc = json.loads(out.read_text())
    assert len(doc["features"]) == 100 and doc["pathomics_labels"]["slide"]["sha256"] == slide.file_hash()
    f = next(
        f
        for f in doc["features"]
        if f["properties"]["pathomics_label"] == {**f["properties"]["pathomics_label"], "col": 7, "row": 11}
    )
    assert f["properties"]["classification"]["name"] == "LYM" and f["properties"]["objectType"] == "annotation"
    assert f["geometry"]["coordinates"][0][0] == [7 * TILE, 11 * TILE]
    assert sorted(a.classification for a in read_geojson(out).annotations).count("TUM") == 45
    panel.brush.setValue(1)
    panel.select_class("erase")
    for t in list(panel.labels_of(slide)):
        panel.label_cells(slide, [(t.col, t.row)])
    assert len(panel.labels_of(slide)) == 0
    panel.import_labels(out)
    assert {(t.col, t.row): t.cls for t in panel.labels_of(slide)} == want

    # all off the slide: a message, the labels stay
    off = _qupath_file(tmp_path / "off.geojson", [(_square(TILE * 40, TILE * 40, TILE * 42, TILE * 42), "Tumor")])
    assert panel.import_labels(off) == ""
    assert "lie off the slide" in panel.status.text() and len(panel.labels_of(slide)) == 100
    # another slide's labels: refused with a pointer to the box, accepted with it ticked (with a warning)
    foreign = json.loads(out.read_text())
    foreign["pathomics_labels"]["slide"]["sha256"] = "0" * 64
    for feat in foreign["features"]:
        feat["properties"]["classification"]["name"] = "MUS"
    (tmp_path / "foreign.geojson").write_text(json.dumps(foreign))
    assert panel.import_labels(tmp_path / "foreign.geojson") == ""
    assert "were made on" in panel.status.text() and "Accept labels made on another slide" in panel.status.text()
    assert panel.labels_of(slide).counts() == {"LYM": 1, "STR": 54, "TUM": 45}
    panel.force_other.setChecked(True)
    assert "imported 100" in panel.import_labels(tmp_path / "foreign.geojson")
    assert panel.labels_of(slide).counts() == {"MUS": 100}


def test_without_a_usable_bundle_saved_labels_are_left_alone(make_napari_viewer, two_tissue_slide, tmp_path):
    from napari_pathomics.results.labels import SlideIdentity, TileLabels
    from napari_pathomics.wsi.slide import open_slide

    with open_slide(two_tissue_slide) as s:
        lab = TileLabels(float(TILE), SlideIdentity.of(s))
        lab.set([(1, 1), (2, 2)], "TUM")
        saved = lab.save(labels_path(s.path))
    before = saved.read_bytes()
    viewer = make_napari_viewer()
    img = layer_registry.add_slide(viewer, two_tissue_slide)
    dock = AnalyzeWidget(viewer)
    dock.bundle_path.setText(str(tmp_path / "no-such-bundle"))
    dock._refresh_bundle()  # what Enter in the path box does
    panel = dock.correct
    panel.tool._classes = []  # as if no bundle had ever been usable
    panel.current = "TUM"
    assert panel.label_world(_world(5, 5)) == 0
    assert "no usable bundle" in panel.status.text()
    assert (
        saved.read_bytes() == before and saved_labels_path(two_tissue_slide) == saved
    )  # not set aside, not overwritten
    assert str(layer_registry.slide_of(img).path) not in panel.labels


def test_adapt_recomputes_the_ram_in_view_and_rescores_the_score_dock(
    make_napari_viewer, qtbot, two_tissue_slide, bundle, monkeypatch
):
    viewer = make_napari_viewer(show=True)
    img = layer_registry.add_slide(viewer, two_tissue_slide)
    slide = layer_registry.slide_of(img)
    dock = _analyze(qtbot, viewer, bundle.path, ram=True)
    base = dock.results[str(slide.path)]
    assert "risk" in base.cams and not base.missing_cam("risk").any()
    score = ScoreWidget(viewer)
    score.bundle_path.setText(str(bundle.path))
    _wait(qtbot, score.score(), score)
    risk_before = score.patient_score.score.risk
    dock.show_view(cam_role("risk"))

    panel = dock.correct
    panel.current = "TUM"
    panel.label_cells(slide, _brushed(LEFT))
    panel.current = "STR"
    panel.label_cells(slide, _brushed(RIGHT))
    viewer.camera.center = _world(3, 4)
    viewer.camera.zoom = 2.0  # a few tiles in view
    _wait(qtbot, panel.adapt(), panel)
    after = dock.results[str(slide.path)]
    assert after is not base and panel.result is not None
    qtbot.waitUntil(lambda: panel.cam_worker is None and "recomputed" in panel.status.text(), timeout=180_000)

    # the RAM of the tiles in view is the adapted head's (not the model's), the rest waits for the button
    box = layer_registry.visible_box(viewer, slide)
    in_view = tiles_in_box(after, box)
    assert 0 < in_view.size < len(after)
    have = ~after.missing_cam("risk")
    assert np.array_equal(np.flatnonzero(have), np.intersect1d(in_view, np.flatnonzero(after.status == DONE)))
    eng = Engine(bundle, device="cpu").with_class_head(panel.result.head)
    check = cams_run(eng, slide, after, ("risk",), in_view[:4])
    for _ in check:
        pass
    got = check.results  # the same tiles through a fresh engine carrying the adapted head
    for j in range(4):
        i = int(np.flatnonzero((after.cols == got.cols[j]) & (after.rows == got.rows[j]))[0])
        assert np.allclose(after.cams["risk"][i], got.cams["risk"][j], atol=1e-3)
    assert not np.allclose(after.cams["risk"][in_view], base.cams["risk"][in_view], atol=1e-3)
    assert display_of(viewer).shown == cam_role("risk")  # the map the pathologist was looking at comes back

    viewer.camera.center = _world(12, 8)  # panned elsewhere: the tiles now in view get theirs
    panned = tiles_in_box(after, layer_registry.visible_box(viewer, slide))
    assert after.missing_cam("risk")[panned].any()
    qtbot.waitUntil(lambda: panel.cam_worker is None and not after.missing_cam("risk")[panned].any(), timeout=180_000)

    assert panel.maps_btn.isEnabled() and panel.refresh_maps(whole=True) is not None
    qtbot.waitUntil(lambda: panel.cam_worker is None, timeout=180_000)
    assert not after.missing_cam("risk").any()

    # the Score dock rescored by itself with the adapted head, and says so
    qtbot.waitUntil(
        lambda: score.worker is None and score.patient_score.bundle.get("class_head") is not None, timeout=180_000
    )
    ps = score.patient_score
    assert ps.bundle["class_head"]["digest"] == panel.result.head.digest()
    assert "adapted in the Correct panel" in score.status.text()
    again = score_patient([two_tissue_slide], bundle, class_head=panel.result.head)
    assert again.score.risk == pytest.approx(ps.score.risk)
    assert ps.score.risk != pytest.approx(risk_before)

    # a new Analyze run after Adapt: the adapted head is applied again to its results
    _wait(qtbot, dock.run(), dock)
    qtbot.waitUntil(lambda: panel.worker is None and dock.results[str(slide.path)].meta.get("adapted"), timeout=180_000)
    np.testing.assert_array_equal(dock.results[str(slide.path)].class_map(), after.class_map())
    qtbot.waitUntil(lambda: score.worker is None and panel.cam_worker is None, timeout=180_000)

    # Revert: the model's own map and score again; the labels stay
    panel.revert()
    assert not dock.results[str(slide.path)].meta.get("adapted")
    np.testing.assert_array_equal(dock.results[str(slide.path)].class_map(), base.class_map())
    qtbot.waitUntil(
        lambda: score.worker is None and score.patient_score.bundle.get("class_head") is None, timeout=180_000
    )
    assert score.patient_score.score.risk == pytest.approx(risk_before)
    assert len(panel.labels_of(slide)) == len(_brushed(LEFT) | _brushed(RIGHT))

    # more tiles in view than are recomputed at once: the maps wait for the button, and say so
    monkeypatch.setattr(adapted_maps, "AUTO_CAM_TILES", 1)
    _wait(qtbot, panel.adapt(), panel)
    assert panel.cam_worker is None and "the activation maps wait" in panel.status.text()
    assert not dock.results[str(slide.path)].cams
    qtbot.waitUntil(lambda: score.worker is None, timeout=180_000)  # it rescored again: no worker outlives the test
