"""``pathomics info`` and ``pathomics tiles``: JSON output, ROIs, one-line errors, a slide without a pixel size."""

import json
import subprocess

import pytest

from _cli import CLI
from napari_pathomics.cli import main
from napari_pathomics.wsi.synthetic import synthetic_he, write_slide

KEYS = {
    "path",
    "vendor",
    "width",
    "height",
    "level_count",
    "level_dimensions",
    "level_downsamples",
    "mpp_x",
    "mpp_y",
    "objective_power",
    "associated_images",
}


def test_info_json(sample_slide_path, capsys):
    assert main(["info", str(sample_slide_path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert KEYS <= set(info)
    assert info["width"] == 2220 and info["mpp_x"] == pytest.approx(0.499)
    assert info["level_dimensions"] == [[2220, 2967]]


def test_tiles_json_with_roi(pyramid_svs, tmp_path, capsys):
    roi = tmp_path / "roi.geojson"
    roi.write_text(
        json.dumps(
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [2000, 0], [2000, 2000], [0, 2000], [0, 0]]]},
                "properties": {"objectType": "annotation"},
            }
        )
    )
    assert main(["tiles", str(pyramid_svs), "--roi", str(roi), "--no-tissue", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["tile_count"] == len(out["origins"]) == 16  # 4 × 4 cells of 448 px fit in 2000 px


def test_errors_are_one_line(tmp_path):
    bad = tmp_path / "broken.svs"
    bad.write_bytes(b"\x00" * 100)
    r = subprocess.run([*CLI, "info", str(bad)], capture_output=True, text=True)
    assert r.returncode == 3
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert "broken.svs" in r.stderr


def test_missing_mpp_cli(tmp_path):
    p = write_slide(tmp_path / "nompp.tif", synthetic_he(600, 900), mpp=None, fmt="tiff", min_size=256)
    r = subprocess.run([*CLI, "tiles", str(p)], capture_output=True, text=True)
    assert r.returncode == 4 and "--slide-mpp" in r.stderr and "Traceback" not in r.stderr
    assert main(["tiles", str(p), "--slide-mpp", "0.5", "--no-tissue"]) == 0


def test_infer_with_nothing_to_analyse_says_so_in_one_line(tmp_path, capsys):
    """An ROI over glass (or a slide of glass) once gave exit 0 with '0 tiles ... (all from cache)'."""
    import numpy as np

    from _slides import small_slide
    from napari_pathomics.errors import TilingError

    glass = write_slide(tmp_path / "glass.svs", np.full((1024, 1536, 3), 243, np.uint8), mpp=0.5)
    corner = tmp_path / "corner.geojson"
    corner.write_text(
        json.dumps({"type": "Polygon", "coordinates": [[[-1e9, -1e9], [10, -1e9], [10, 10], [-1e9, -1e9]]]})
    )
    slide = small_slide(tmp_path / "s.svs")
    for argv, words in (
        ([glass], "inside its tissue"),
        ([slide, "--roi", corner], "inside its ROIs and tissue"),
        ([slide, "--roi", corner, "--no-tissue"], "inside its ROIs"),
    ):
        out = tmp_path / "out"
        assert (
            main(["infer", *map(str, argv), "--out", str(out), "--device", "cpu", "--quiet"]) == TilingError.exit_code
        )
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert len(err) == 1 and words in err[0] and "nothing to analyse" in err[0], err
        assert not out.exists()


def test_infer_with_test_time_augmentation_records_it(tmp_path, capsys):
    from _slides import small_slide

    slide = small_slide(tmp_path / "s.svs")
    out = tmp_path / "out"
    assert (
        main(["infer", str(slide), "--out", str(out), "--device", "cpu", "--quiet", "--tta", "flips", "--no-tissue"])
        == 0
    )
    run = json.loads((out / "run.json").read_text())
    assert '"tta": "flips"' in json.dumps(run)
    plain = tmp_path / "plain"
    assert main(["infer", str(slide), "--out", str(plain), "--device", "cpu", "--quiet", "--no-tissue"]) == 0
    assert '"tta": "flips"' not in (plain / "run.json").read_text()
