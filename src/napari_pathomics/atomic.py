"""Crash-safe file writes: readers see the old complete file or the new one, never a torn one."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write to a temp file in the same folder, fsync, then ``os.replace`` over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; ROIs, bundles and reports are shared
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)  # make the rename itself durable
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = 2) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent, allow_nan=False) + "\n")


def _fsync_dir(folder: Path) -> None:
    try:
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def atomic_write_set(folder: str | Path, files: Mapping[str, bytes], keep_previous: bool = False) -> list[Path]:
    """Write several files that belong together: all or (on a full disk, a crash mid-write) none.

    Every file is first written whole to a hidden temp file beside its target; only when all of
    them are on disk are they renamed into place (renames need no space). With ``keep_previous``
    the files replaced are kept as ``.<name>.previous``, so the previous set stays recoverable.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    temps: list[tuple[str, Path]] = []
    try:
        for name, data in files.items():
            target = folder / name
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
            temps.append((name, Path(tmp)))
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o666 & ~_umask())
    except BaseException:
        for _, tmp in temps:
            tmp.unlink(missing_ok=True)
        raise
    out = []
    for name, tmp in temps:
        target = folder / name
        if keep_previous and target.is_file():
            os.replace(target, target.with_name(f".{target.name}.previous"))
        os.replace(tmp, target)
        out.append(target)
    _fsync_dir(folder)
    return out


def replace_dir(tmp: str | Path, out: str | Path) -> Path:
    """Put a finished folder ``tmp`` at ``out`` in one rename; a previous ``out`` is kept as ``.<out>.previous``."""
    tmp, out = Path(tmp), Path(out)
    backup = out.with_name(f".{out.name}.previous")
    if out.exists():
        if backup.exists():
            shutil.rmtree(backup)
        os.replace(out, backup)
    os.replace(tmp, out)
    _fsync_dir(out.parent)
    return out


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask



@contextlib.contextmanager
def atomic_open(path: str | Path, encoding: str = "utf-8") -> Iterator[TextIO]:
    """A text file that replaces ``path`` only when the block finishes (outputs too large to build in memory)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding=encoding, newline="") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)
