"""The real CLI in a child process (``python -m napari_pathomics.cli``) and its one-line error contract."""

from __future__ import annotations

import subprocess
import sys

CLI = [sys.executable, "-m", "napari_pathomics.cli"]


def run_cli(*args, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def assert_one_line(r: subprocess.CompletedProcess, code: int, words: str) -> None:
    """Exit ``code``, no traceback, exactly one stderr line and it contains ``words``."""
    assert r.returncode == code, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert words in lines[0], lines[0]
