"""Score dock on the real viewer: same number as the CLI, report export, refusals."""

import json
import os
from pathlib import Path

import pytest
from qtpy.QtWidgets import QWidget

from _bundles import make_bundle
from _slides import small_slide
from napari_pathomics.cli import main
from napari_pathomics.scoring.combined import load_clinical_signature
from napari_pathomics.widgets import layer_registry
from napari_pathomics.widgets.score_widget import ScoreWidget
from scoring._combined import add_combined  # tests/scoring: a combined signature fitted with the real API

pytestmark = [pytest.mark.viewer, pytest.mark.slow]


def _score(qtbot, w):
    worker = w.score()
    assert worker is not None
    with qtbot.waitSignal(worker.finished, timeout=180_000):
        pass
    qtbot.waitUntil(lambda: w.worker is None, timeout=10_000)


def test_widget_and_cli_give_the_same_score(make_napari_viewer, qtbot, tmp_path, sig_bundle, capsys, monkeypatch):
    slide_path = small_slide(tmp_path / "case.svs")
    viewer = make_napari_viewer()
    layer_registry.add_slide(viewer, slide_path)
    w = ScoreWidget(viewer)
    w.bundle_path.setText(str(sig_bundle.path))
    w.patient_id.setText("P-001")
    _score(qtbot, w)
    ps = w.patient_score
    assert ps is not None and ps.patient_id == "P-001"
    assert ps.context["group_headline"] in w.out["risk group"].text()  # 'above the cutoff': the split is not validated
    assert "HIGH" not in w.out["risk group"].text() and "all tissue" in w.out["area scored"].text()
    assert f"{ps.score.risk:+.3f}" in w.out["risk score"].text()
    assert w.plots.count() == 2  # survival over reference KM, tissue composition

    monkeypatch.setenv("PATHOMICS_CACHE_DIR", str(tmp_path / "fresh-cache"))  # recompute headless
    capsys.readouterr()
    assert main(["score", str(slide_path), "--bundle", str(sig_bundle.path), "--patient", "P-001", "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert cli["risk"] == pytest.approx(ps.score.risk, abs=1e-9)
    assert cli["group"] == ps.score.group

    html, js = w.export_report(tmp_path / "report.html")
    text = html.read_text()
    assert "P-001" in text and "not a clinical test" in text
    assert "http://" not in text and "https://" not in text.replace("https://doi.org", "")
    assert json.loads(js.read_text())["risk"] == pytest.approx(ps.score.risk)


def test_bundle_without_signature_is_refused(make_napari_viewer, tmp_path):
    bundle = make_bundle(tmp_path / "nosig")
    viewer = make_napari_viewer()
    layer_registry.add_slide(viewer, small_slide(tmp_path / "c.svs"))
    w = ScoreWidget(viewer)
    w.bundle_path.setText(str(bundle.path))
    assert w.score() is None
    assert w.export_report(tmp_path / "r.html") is None
    assert len(viewer.layers) == 2


def _screenshot_dir(tmp_path):
    d = os.environ.get("PATHOMICS_SCREENSHOT_DIR")
    return Path(d) if d else tmp_path


def test_score_in_context_and_combined_with_clinical_values(make_napari_viewer, qtbot, tmp_path, sig_bundle):
    """The dock says what was scored and how well the split is validated, takes clinical values in
    fields generated from the combined signature's frozen encoding, names a bad value without
    losing the results, shows both risks side by side and puts them into the report."""
    bundle = add_combined(sig_bundle)
    viewer = make_napari_viewer()
    layer_registry.add_slide(viewer, small_slide(tmp_path / "case.svs"))
    w = ScoreWidget(viewer)
    w.bundle_path.setText(str(bundle.path))
    w.load_fields()
    panel = w.clinical_panel
    assert panel.isVisibleTo(w)
    assert list(panel.fields) == ["stage", "age", "marker"]  # two covariates, one interplay column
    assert [panel.fields["stage"].itemText(i) for i in range(panel.fields["stage"].count())] == ["", "1", "2", "3", "4"]
    assert panel.fields["age"].placeholderText() == "35–85 years"
    # the signature's human label, the column name in small print; an unlabelled column keeps its name and unit
    stage_label = panel.form.labelForField(panel.fields["stage"]).text()
    assert stage_label.startswith("stage (I–IV)<br><small") and stage_label.endswith(">stage</small>")
    assert panel.form.labelForField(panel.fields["age"]).text() == "age (years)"
    panel.set_values({"stage": "3", "age": "120"})  # out of the fitted range
    _score(qtbot, w)
    ps = w.patient_score
    risk_text = w.out["risk score"].text()
    assert ps is not None and ps.clinical is None  # the bad value refused, the image-only score shown
    assert "'age' = 120 is outside the range" in panel.error.text() and "unchanged" in panel.error.text()
    assert "e53935" in panel.fields["age"].styleSheet() and panel.fields["stage"].styleSheet() == ""
    # the context: area, evidence, no shouted group for a split the test signature does not validate
    assert "all tissue on 1 slide" in w.out["area scored"].text()
    assert f"{ps.slides[0].n_done} tissue tile" in w.out["area scored"].text()
    assert ps.context["group_headline"] in w.out["risk group"].text()
    assert "not a validated split" in w.out["evidence"].text() and "C-index" in w.out["evidence"].text()
    assert "HIGH" not in w.out["risk group"].text() and "BACK" in w.out["composition"].text()
    layers = len(viewer.layers)

    panel.set_values({"age": "sixty"})
    assert w.apply_clinical() is None and "'age' = 'sixty' is not a number" in panel.error.text()
    panel.set_values({"stage": "3", "age": "64", "marker": "50"})
    panel.apply_btn.click()  # the button, as a user applies them: the plots are redrawn too
    c = ps.clinical
    assert c is not None and ps.clinical is c and w.out["risk score"].text() == risk_text
    assert panel.fields["age"].styleSheet() == "" and len(viewer.layers) == layers and not panel.error.isVisibleTo(w)
    combined = load_clinical_signature(bundle)
    cells = [panel.compare.itemAt(i).widget().text() for i in range(panel.compare.count())]
    assert f"{c['risk']:+.3f}" in cells and f"{ps.score.risk:+.3f}" in cells
    assert f"{combined.evaluation['models']['combined']['cv_c_index']:.2f}" in " ".join(cells)
    assert "marker curves: pathomics" in panel.compare_note.text() and "ΔC" in panel.compare_note.text()
    assert "log-hazard parts (vs the reference mean): pathomics" in panel.compare_note.text()
    assert w.plots.count() == 3  # combined survival, tissue composition, the marker's interplay curves
    assert "combined signature" in w.status.text()

    w.case_type.setEditText("skin (e.g. melanoma, carcinoma)")
    assert w.mismatch.isVisibleTo(w) and "not validated for this case" in w.mismatch.text()
    w.case_type.setEditText("colorectal adenocarcinoma")
    assert not w.mismatch.isVisibleTo(w) and "match" in w.out["cancer type"].text()
    # a pre-filled case type says where it came from; it is the user's only once the user states it
    w.prefill_case_type("skin (e.g. melanoma, carcinoma)", "the demo")
    for text in (w.out["cancer type"].text(), w.mismatch.text(), w.case_type_note.text()):
        assert "pre-filled by the demo" in text and "stated by the user" not in text, text
    assert ps.to_json()["context"]["cancer_type"]["case_source"] == "the demo"
    w.case_type.lineEdit().clear()
    qtbot.keyClicks(w.case_type.lineEdit(), "colorectal adenocarcinoma")
    assert "stated by the user" in w.out["cancer type"].text() and not w.case_type_note.isVisibleTo(w)
    assert ps.to_json()["context"]["cancer_type"]["case_source"] == "the user"

    # what a pathologist sees at a dock width of ~360 px (looked at by hand; saved for review)
    # the dock's width on a 1366 px screen, less the scroll bar
    assert w.minimumSizeHint().width() <= 316, [
        (type(c).__name__, getattr(c, "text", str)()[:40], c.minimumSizeHint().width())
        for c in w.findChildren(QWidget)
        if c.minimumSizeHint().width() > 300
    ]
    w.resize(360, w.heightForWidth(360) if w.hasHeightForWidth() else w.sizeHint().height())
    qtbot.wait(50)
    w.resize(360, max(w.height(), w.sizeHint().height()))
    shot = w.grab()
    assert shot.save(str(_screenshot_dir(tmp_path) / "score_dock.png")) and shot.width() == 360

    html, js = w.export_report(tmp_path / "report.html")
    text = html.read_text()
    assert "Clinical values and the combined model" in text and f"{c['risk']:+.3f}" in text
    assert "Research use only" in text and "not validated" in text
    doc = json.loads(js.read_text())
    assert doc["clinical"]["values"] == {"stage": "3", "age": "64"} and doc["context"]["area"]["scope"] == "all tissue"

    for n in panel.fields:  # all empty again: the image-only signature, and the report says nothing clinical
        panel.set_values({n: ""})
    assert w.apply_clinical() is None and ps.clinical is None and "pathomics-only" in w.status.text()
    assert w.plots.count() == 2


def test_the_nuclei_panels_choice_is_the_score_docks(make_napari_viewer, qtbot, tmp_path):
    """One choice everywhere: the model picked in the Nuclei panel gives the Score dock's nuclear features."""
    from _bundles import nuclear_signature, tiny_bundle
    from napari_pathomics.widgets.cells_panel import CellsPanel

    bundle = tiny_bundle(tmp_path / "bundle", signature=nuclear_signature())
    slide_path = small_slide(tmp_path / "case.svs", seed=1, mpp=0.5)
    viewer = make_napari_viewer()
    layer_registry.add_slide(viewer, slide_path)
    panel = CellsPanel(viewer)
    w = ScoreWidget(viewer)
    w.bundle_path.setText(str(bundle.path))
    _score(qtbot, w)
    assert w.patient_score.nuclei_model["name"] == "otsu"  # the default
    panel.model.setCurrentIndex(panel.model.findData("classical"))
    _score(qtbot, w)
    assert w.patient_score.nuclei_model["name"] == "classical"
    assert "nuclei model classical" in w.status.text(), w.status.text()
