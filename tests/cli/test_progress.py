"""Progress bars go to stderr and only to a terminal: piped output holds the result lines alone."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import termios

import pytest

from _cli import CLI
from _slides import small_slide
from napari_pathomics.cli.common import progress_bar


def _drive(bar) -> None:
    for _ in range(3):
        bar.update(1)
    bar.close()


def test_a_bar_is_drawn_on_a_terminal_and_not_on_a_pipe(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a new pty is 0 columns wide
    with os.fdopen(slave, "w") as tty:
        monkeypatch.setattr(sys, "stderr", tty)
        _drive(progress_bar(3, unit="tile", desc="s.svs"))
    drawn = b""
    while True:  # the slave end is closed: read what the bar wrote until the terminal is drained
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        drawn += chunk
    os.close(master)
    drawn = drawn.decode()
    assert "s.svs" in drawn and "3/3" in drawn

    r, w = os.pipe()
    with os.fdopen(w, "w") as pipe:
        monkeypatch.setattr(sys, "stderr", pipe)
        _drive(progress_bar(3, unit="tile", desc="s.svs"))
    with os.fdopen(r) as rd:
        assert rd.read() == ""
    assert progress_bar(3, quiet=True) is None


@pytest.mark.slow
def test_piped_score_prints_only_result_lines(tmp_path) -> None:
    """``pathomics score S | …`` without --quiet: stdout is the result lines, stderr holds no bar."""
    slide = small_slide(tmp_path / "s.svs")
    r = subprocess.run([*CLI, "score", str(slide), "--device", "cpu"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "\r" not in r.stdout + r.stderr and "%|" not in r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("patient s: risk ") and lines[-1].strip().startswith("Research use only")
    assert all(ln.startswith("  ") for ln in lines[1:]), lines
