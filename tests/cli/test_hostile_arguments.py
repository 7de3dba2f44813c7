"""Hostile arguments and input files get one line and an exit code, never an internal error (issue 18).

A 5 000-digit integer in a GeoJSON coordinate was an internal ValueError (Python's int-string
limit), ``--roi /dev/zero`` read forever, ``--threads 1024`` passed the range check and malformed
``--scheduler`` addresses reached dask.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from _slides import small_slide
from napari_pathomics.cli import main as cli_main
from napari_pathomics.cli.common import MAX_THREADS


@pytest.fixture(scope="module")
def slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_slide(tmp_path_factory.mktemp("hostile-args") / "s.svs")


def _one_line(capsys) -> str:
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "Traceback" not in err[0] and "internal error" not in err[0], err
    return err[0]


def _polygon_with(x: str) -> str:
    return (
        '{"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", '
        f'"coordinates": [[[0, 0], [{x}, 0], [10, 10], [0, 0]]]}}}}'
    )


@pytest.mark.parametrize("digits", [5000, 4000])
def test_a_huge_integer_coordinate_is_one_line(slide, tmp_path, capsys, digits) -> None:
    roi = tmp_path / "big.geojson"
    roi.write_text(_polygon_with("9" * digits))
    assert cli_main(["tiles", str(slide), "--roi", str(roi)]) == 5
    assert "big.geojson" in _one_line(capsys)


def test_a_roi_that_is_not_a_regular_file_is_refused_without_reading_it(slide, tmp_path, capsys) -> None:
    fifo = tmp_path / "roi.fifo"
    os.mkfifo(fifo)  # opening it would block: it must not even be opened
    for path in ("/dev/zero", str(fifo), str(tmp_path)):
        assert cli_main(["tiles", str(slide), "--roi", path]) == 5
        assert "not a regular file" in _one_line(capsys) or Path(path).is_dir()


def test_too_many_threads_are_refused(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        cli_main(["infer", str(tmp_path / "x.svs"), "--threads", "1024"])
    assert info.value.code == 2 and f"must be ≤ {MAX_THREADS}" in _one_line(capsys)
    assert 8 <= MAX_THREADS < 1024 or (os.cpu_count() or 1) >= 256


@pytest.mark.parametrize("address", ["tcp://", "tcp://host:notaport", "tcp://host:99999", "foo://bar", "", "host"])
def test_a_malformed_scheduler_address_is_one_line(tmp_path, capsys, address) -> None:
    with pytest.raises(SystemExit) as info:
        cli_main(["score-cohort", str(tmp_path / "c.csv"), "--out", str(tmp_path / "o"), "--scheduler", address])
    assert info.value.code == 2 and "is not a scheduler address" in _one_line(capsys)


def test_well_formed_scheduler_addresses_pass_the_check() -> None:
    from napari_pathomics.cli.common import SCHEDULER

    for ok in ("tcp://10.0.0.5:8786", "tls://sched.example.org:8786", "127.0.0.1:8786", "tcp://[::1]:8786"):
        assert SCHEDULER(ok) == ok
