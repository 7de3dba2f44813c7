"""Score dock on the real viewer: same number as the CLI, report export, refusals."""

import json

import pytest

from _bundles import make_bundle
from _slides import small_slide
from napari_pathomics.cli import main
from napari_pathomics.widgets import session
from napari_pathomics.widgets.score_widget import ScoreWidget

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
    session.add_slide(viewer, slide_path)
    w = ScoreWidget(viewer)
    w.bundle_path.setText(str(sig_bundle.path))
    w.patient_id.setText("P-001")
    _score(qtbot, w)
    ps = w.patient_score
    assert ps is not None and ps.patient_id == "P-001"
    assert w.out["risk group"].text().lower().count(ps.score.group) == 1
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
    session.add_slide(viewer, small_slide(tmp_path / "c.svs"))
    w = ScoreWidget(viewer)
    w.bundle_path.setText(str(bundle.path))
    assert w.score() is None
    assert w.export_report(tmp_path / "r.html") is None
    assert len(viewer.layers) == 2
