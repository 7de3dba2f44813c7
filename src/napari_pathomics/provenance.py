"""What every record written by the project says about how it was made, as strict JSON.

Run records, reports, bundles and cohort runs all list the same package versions, identify
files the same way (a fast fingerprint for caches, a full sha256 for provenance), and turn
numpy values, paths and non-finite floats into plain JSON (NaN/inf become null: JSON has none).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import platform
import re
import secrets
import stat
from collections.abc import Sequence
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_write_json
from .resources import cache_dir

#: Packages whose versions determine the numbers the project produces.
PACKAGES: tuple[str, ...] = (
    "napari-pathomics",
    "numpy",
    "torch",
    "torchvision",
    "timm",
    "grad-cam",
    "safetensors",
    "tiffslide",
    "tifffile",
    "imagecodecs",
    "opencv-python-headless",
    "lifelines",
    "pandas",
    "scipy",
    "dask",
    "distributed",
)


def versions() -> dict[str, str]:
    """Python, platform and the installed versions of ``PACKAGES`` (read from metadata, no imports)."""
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def json_default(obj: Any) -> Any:
    """``json.dumps(default=...)`` for numpy scalars/arrays and paths."""
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def strict_json(obj: Any) -> Any:
    """A copy that ``json.dumps(..., allow_nan=False)`` accepts: numpy → Python, NaN/inf → None."""
    if isinstance(obj, dict):
        return {str(k): strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return strict_json(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's whole content, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


FINGERPRINT_METHOD = (
    "sha256 of the whole file (remembered per device, inode, size and mtime, "
    "and checked against a sample of the content)"
)

#: Files smaller than this are hashed whole every time: a memo would save nothing.
MEMO_MIN_BYTES = 8 << 20
_SAMPLE_BLOCKS, _SAMPLE_BLOCK = 32, 1 << 16


def sampled_digest(path: str | Path) -> str:
    """sha256 of the size and 32 blocks of 64 KiB at fixed offsets (first, last, evenly between).

    Cheap (2 MiB read whatever the size) and sensitive to content swapped in with the same size
    and mtime (``cp -p``, ``rsync -t``), which a stat stamp alone cannot see.
    """
    size = os.stat(path).st_size
    h = hashlib.sha256(str(size).encode())
    span = max(size - _SAMPLE_BLOCK, 0)
    with open(path, "rb") as fh:
        for k in range(_SAMPLE_BLOCKS):
            fh.seek(span * k // (_SAMPLE_BLOCKS - 1))
            h.update(fh.read(_SAMPLE_BLOCK))
    return h.hexdigest()


def _memo_key(folder: Path) -> bytes | None:
    """This cache's secret (created once, owner-only): memos not written by us do not verify."""
    path = folder / "memo.key"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    except OSError:
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(32))
        return path.read_bytes()
    except FileExistsError:  # another process made it first
        return path.read_bytes()
    except OSError:
        return None


def _memo_mac(key: bytes, stamp: list[int], sample: str, digest: str) -> str:
    return hmac.new(key, json.dumps([stamp, sample, digest]).encode(), hashlib.sha256).hexdigest()


def file_fingerprint(path: str | Path) -> str:
    """The content fingerprint that caches and reports key on: the full sha256 of the file.

    Any changed byte changes it. Hashing a 5 GB slide takes seconds, so the value is remembered
    in the user cache, keyed by the file's device, inode, size and modification time, and served
    only when a sample of the content still matches and the memo carries this cache's MAC (a
    memo edited or copied from elsewhere is ignored, and the file hashed again).
    """
    path = Path(path)
    st = path.stat()
    if st.st_size < MEMO_MIN_BYTES or not stat.S_ISREG(st.st_mode):
        return sha256_file(path)
    stamp = [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]
    folder = cache_dir("fingerprints")
    memo = folder / f"{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:32]}.json"
    key = _memo_key(folder)
    sample = sampled_digest(path)
    try:
        rec = json.loads(memo.read_text(encoding="utf-8"))
        digest = rec.get("sha256")
        if (
            key is not None
            and rec.get("stat") == stamp
            and rec.get("sample") == sample
            and isinstance(digest, str)
            and re.fullmatch(r"[0-9a-f]{64}", digest)
            and hmac.compare_digest(str(rec.get("mac")), _memo_mac(key, stamp, sample, digest))
        ):
            return digest
    except (OSError, ValueError, AttributeError, TypeError):
        pass
    digest = sha256_file(path)
    if key is not None:
        try:
            atomic_write_json(
                memo,
                {
                    "path": str(path.resolve()),
                    "stat": stamp,
                    "sample": sample,
                    "sha256": digest,
                    "mac": _memo_mac(key, stamp, sample, digest),
                },
            )
        except OSError:  # a read-only cache only costs the hash next time
            pass
    return digest


def now_iso() -> str:
    """Local time with its UTC offset, to the second, ISO 8601 (what every record stamps)."""
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


def run_record(
    command: str, argv: Sequence[str] | None = None, args: dict[str, Any] | None = None, **fields: Any
) -> dict[str, Any]:
    """The fields every run record starts with: command, arguments, versions, platform, time."""
    rec: dict[str, Any] = {
        "command": command,
        "argv": list(argv) if argv is not None else None,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in (args or {}).items() if not callable(v)},
        "versions": versions(),
        "platform": platform.platform(),
        "created": now_iso(),
    }
    rec.update(fields)
    return rec


def bundle_record(bundle: Any) -> dict[str, Any]:
    """How a record names the bundle it used: name, version, id, path and every file's sha256."""
    return {
        "name": bundle.name,
        "version": bundle.version,
        "id": bundle.bundle_id,
        "path": str(bundle.source),
        "file_hashes": bundle.file_hashes,
    }
