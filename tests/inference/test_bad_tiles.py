"""A few undecodable file tiles cost only their own area, and the loss is said everywhere (issue 10).

One corrupt tile of 64 once greyed a whole 1024² block out of the tissue ("0 failed" reported),
and four corrupt tiles gave ``infer`` exit 0 with "0 tiles". On a real slide with four zeroed file
tiles: ``tiles`` and ``infer`` plan the unreadable area as tissue, report its tiles as failed and
say the unreadable mm²; the case report shows it; the Analyze dock warns before the run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tifffile

from _bundles import tiny_bundle
from napari_pathomics.cli import main as cli_main
from napari_pathomics.resources import DEFAULT_BUNDLE
from napari_pathomics.wsi.slide import open_slide
from napari_pathomics.wsi.synthetic import synthetic_he, write_slide
from napari_pathomics.wsi.tiling import plan_tiles

BAD_TILES = (9, 10, 17, 18)  # a 2 x 2 block of the 8 x 8 file tiles (256 px each)


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad-tiles")
    img = synthetic_he(2048, 2048, seed=2, tissue_fraction=1.0)
    good = write_slide(root / "good.svs", img, mpp=0.5, min_size=4096)  # one level: the overview is level 0
    bad = root / "bad.svs"
    bad.write_bytes(good.read_bytes())
    with tifffile.TiffFile(bad) as tf:
        page = tf.pages[0]
        spans = [(page.dataoffsets[i], page.databytecounts[i]) for i in BAD_TILES]
    with open(bad, "r+b") as fh:
        for off, n in spans:
            fh.seek(off)
            fh.write(b"\x00" * n)
    sig = json.loads((DEFAULT_BUNDLE / "signature.json").read_text())
    return {"good": good, "bad": bad, "bundle": tiny_bundle(root / "bundle", signature=sig).path}


def test_tiles_plan_the_unreadable_area_and_say_it(slides, capsys) -> None:
    with open_slide(slides["good"]) as s:
        ref = plan_tiles(s, tile_um=112, mpp=0.5)
    assert cli_main(["tiles", str(slides["bad"]), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["tile_count"] >= len(ref) > 0  # nothing lost to the bad block
    assert cli_main(["tiles", str(slides["bad"])]) == 0
    text = capsys.readouterr().out
    assert "mm² of the slide could not be decoded" in text


def test_infer_reports_failed_tiles_and_the_unreadable_area(slides, tmp_path, capsys) -> None:
    with pytest.warns(RuntimeWarning, match="undecodable"):
        assert (
            cli_main(
                [
                    "infer",
                    str(slides["bad"]),
                    "--bundle",
                    str(slides["bundle"]),
                    "--out",
                    str(tmp_path / "o"),
                    "--device",
                    "cpu",
                    "--quiet",
                    "--json",
                ]
            )
            == 0
        )
    s = json.loads(capsys.readouterr().out)
    assert s["tiles"] > 0 and s["failed"] > 0 and s["done"] > 0, s
    assert s["unreadable_mm2"] == pytest.approx(len(BAD_TILES) * (256 * 0.5 / 1000) ** 2, rel=0.5)
    with pytest.warns(RuntimeWarning):
        assert (
            cli_main(
                [
                    "infer",
                    str(slides["bad"]),
                    "--bundle",
                    str(slides["bundle"]),
                    "--out",
                    str(tmp_path / "o"),
                    "--device",
                    "cpu",
                    "--quiet",
                ]
            )
            == 0
        )
    text = capsys.readouterr().out
    assert f"{s['failed']} failed" in text and "unreadable:" in text and "mm²" in text


def test_the_case_report_shows_the_unreadable_area(slides, tmp_path, capsys) -> None:
    with pytest.warns(RuntimeWarning):
        assert (
            cli_main(
                [
                    "score",
                    str(slides["bad"]),
                    "--bundle",
                    str(slides["bundle"]),
                    "--report",
                    str(tmp_path / "r.html"),
                    "--device",
                    "cpu",
                    "--quiet",
                ]
            )
            == 0
        )
    capsys.readouterr()
    doc = json.loads((tmp_path / "r.json").read_text())
    sl = doc["slides"][0]
    assert sl["tiles"]["failed"] > 0 and sl["unreadable_mm2"] > 0
    assert "unreadable (mm²)" in (tmp_path / "r.html").read_text()


@pytest.mark.viewer
@pytest.mark.slow
def test_the_analyze_dock_warns_and_counts_failed_tiles(make_napari_viewer, qtbot, slides) -> None:
    from napari.utils.notifications import NotificationSeverity, notification_manager

    from napari_pathomics.widgets import layer_registry
    from napari_pathomics.widgets.analyze_widget import AnalyzeWidget

    viewer = make_napari_viewer()
    with pytest.warns(RuntimeWarning):
        layer_registry.add_slide(viewer, slides["bad"])
        w = AnalyzeWidget(viewer)
        w.bundle_path.setText(str(slides["bundle"]))
        w._refresh_bundle()
        start = len(notification_manager.records)
        worker = w.run()
        assert worker is not None
        with qtbot.waitSignal(worker.finished, timeout=120_000):
            pass
    qtbot.waitUntil(lambda: w.worker is None, timeout=10_000)
    warns = [str(r.message) for r in notification_manager.records[start:] if r.severity == NotificationSeverity.WARNING]
    assert any("mm² cannot be decoded" in m for m in warns), warns
    assert "failed" in w.status.text()
