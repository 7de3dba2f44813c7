"""The CLI's top level turns whatever escapes a command into one line (issue 10).

An unforeseen exception (a bug) is one line naming its type and a log file holding the traceback,
exit 70 (EX_SOFTWARE); an OS failure one line and exit 2; Ctrl+C exit 130; a user error its own
exit code and no log. The command functions are replaced by ones that raise, in-process and in a
child process (so nothing else prints a traceback to stderr on the way out).
"""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from napari_pathomics.cli import INTERNAL_ERROR_EXIT
from napari_pathomics.cli import main as cli_main
from napari_pathomics.cli import slide as slide_cli
from napari_pathomics.errors import SlideError


def _raising(exc: BaseException):
    def handler(args):
        def deeper():
            raise exc

        deeper()

    return handler


def _run(monkeypatch, capsys, tmp_path: Path, exc: BaseException) -> tuple[int, list[str]]:
    monkeypatch.setenv("PATHOMICS_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setattr(slide_cli, "_info", _raising(exc))
    code = cli_main(["info", str(tmp_path / "x.svs")])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    return code, err


def _log_named(line: str) -> Path:
    m = re.search(r"\(traceback in (.+\.log)\)$", line)
    assert m, line
    return Path(m.group(1))


def test_an_unexpected_exception_is_one_line_with_a_log(monkeypatch, capsys, tmp_path) -> None:
    code, err = _run(monkeypatch, capsys, tmp_path, RuntimeError("boom\nsecond line of the message"))
    assert code == INTERNAL_ERROR_EXIT == 70
    assert len(err) == 1 and err[0].startswith("pathomics info: internal error: RuntimeError: boom second line")
    log = _log_named(err[0])
    assert log.parent == tmp_path / "logs"
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "in deeper" in text and "RuntimeError: boom" in text


def test_an_os_error_is_one_line_and_exit_2(monkeypatch, capsys, tmp_path) -> None:
    code, err = _run(monkeypatch, capsys, tmp_path, OSError(errno.ENOSPC, "No space left on device"))
    assert code == 2 and len(err) == 1 and "No space left on device" in err[0]
    assert "Traceback" in _log_named(err[0]).read_text()


def test_interrupt_and_user_errors(monkeypatch, capsys, tmp_path) -> None:
    code, err = _run(monkeypatch, capsys, tmp_path, KeyboardInterrupt())
    assert code == 130 and err == ["pathomics info: interrupted"]
    code, err = _run(monkeypatch, capsys, tmp_path, SlideError("x.svs: not a slide"))
    assert code == SlideError.exit_code and err == ["pathomics info: error: x.svs: not a slide"]
    assert not (tmp_path / "logs").exists() or not list((tmp_path / "logs").iterdir())


def test_an_unwritable_log_folder_still_gives_one_line(monkeypatch, capsys, tmp_path) -> None:
    (tmp_path / "logs").write_text("a file where the log folder should be")
    code, err = _run(monkeypatch, capsys, tmp_path, ValueError("odd"))
    assert code == 70 and len(err) == 1 and err[0].endswith("ValueError: odd")


CHILD = """
import sys
from napari_pathomics.cli import main, slide
def boom(args):
    {}.get("missing")["key"]
slide._info = boom
sys.exit(main(["info", "whatever.svs"]))
"""


def test_in_a_child_process_stderr_is_exactly_one_line(tmp_path) -> None:
    r = subprocess.run(
        [sys.executable, "-c", CHILD],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PATHOMICS_LOG_DIR": str(tmp_path)},
    )
    assert r.returncode == 70, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "internal error: TypeError" in lines[0] and "Traceback" not in r.stderr, r.stderr
    assert "TypeError" in _log_named(lines[0]).read_text()


@pytest.mark.parametrize("argv", [["no-such-command"], ["info"], ["info", "a", "--bogus"]])
def test_usage_errors_are_one_line(argv, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        cli_main(argv)
    assert info.value.code == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "error:" in err[0], err
