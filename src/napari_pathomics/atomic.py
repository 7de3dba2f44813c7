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
    them are on disk are they renamed into place (renames need no space). Each target is first
    hard-linked to a backup (it never disappears), so a rename that fails half-way through the
    set puts the previous files back. With ``keep_previous`` the files replaced stay as
    ``.<name>.previous``, so the previous set remains recoverable after a crash too.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    temps: list[tuple[str, Path]] = []
    try:
        for name, data in files.items():
            target = folder / name
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
            temps.append((name, Path(tmp_name)))
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp_name, 0o666 & ~_umask())
    except BaseException:
        for _, tmp in temps:
            tmp.unlink(missing_ok=True)
        raise
    out: list[Path] = []
    backups: dict[Path, Path | None] = {}  # target -> its backup (None: no backup to restore)
    existed: set[Path] = set()
    try:
        for name, tmp in temps:
            target = folder / name
            if target.is_file():
                existed.add(target)
            backups[target] = _link_backup(target, "previous" if keep_previous else "rollback")
            os.replace(tmp, target)
            out.append(target)
    except BaseException:
        for target in out:  # undo the renames that were done: the previous set, whole
            backup = backups[target]
            try:
                if backup is not None:
                    os.replace(backup, target)
                elif target not in existed:
                    target.unlink(missing_ok=True)
            except OSError:
                pass
        for target, backup in backups.items():
            if backup is not None and target not in out and not keep_previous:
                backup.unlink(missing_ok=True)
        for _, tmp in temps:
            tmp.unlink(missing_ok=True)
        raise
    if not keep_previous:
        for backup in backups.values():
            if backup is not None:
                backup.unlink(missing_ok=True)
    _fsync_dir(folder)
    return out


def _link_backup(target: Path, tag: str) -> Path | None:
    """A hard link ``.<name>.<tag>`` to the current ``target``; None if there is none or links are unsupported."""
    if not target.is_file():
        return None
    backup = target.with_name(f".{target.name}.{tag}")
    tmp = target.with_name(f".{target.name}.{os.urandom(6).hex()}.link")
    tmp.unlink(missing_ok=True)
    try:
        os.link(target, tmp)
    except OSError:  # no hard links on this file system (FAT, some shares): this file cannot be rolled back
        return None
    try:
        os.replace(tmp, backup)
    finally:
        tmp.unlink(missing_ok=True)  # left when backup already was this very file (rename does nothing then)
    return backup


def replace_dir(tmp: str | Path, out: str | Path) -> Path:
    """Put a finished folder ``tmp`` at ``out`` in one rename; a previous ``out`` is kept as ``.<out>.previous``."""
    tmp, out = Path(tmp), Path(out)
    backup = out.with_name(f".{out.name}.previous")
    moved = out.exists()
    if moved:
        if backup.exists():
            shutil.rmtree(backup)
        os.replace(out, backup)
    try:
        os.replace(tmp, out)
    except BaseException:
        if moved:  # the previous folder goes back where it was
            os.replace(backup, out)
        raise
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
