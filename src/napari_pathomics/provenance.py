"""What every record written by the project says about how it was made, as strict JSON.

Run records, reports, bundles and cohort runs all list the same package versions, identify
files the same way (a fast fingerprint for caches, a full sha256 for provenance), and turn
numpy values, paths and non-finite floats into plain JSON (NaN/inf become null: JSON has none).
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
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


FINGERPRINT_METHOD = "sha256 of the whole file (remembered per device, inode, size and mtime)"


def file_fingerprint(path: str | Path) -> str:
    """The content fingerprint that caches and reports key on: the full sha256 of the file.

    Any changed byte changes it. Hashing a 5 GB slide takes seconds, so the value is remembered
    in the user cache, keyed by the file's device, inode, size and modification time: a file
    rewritten in place gets a new mtime and is hashed again.
    """
    path = Path(path)
    st = path.stat()
    stamp = [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]
    memo = cache_dir("fingerprints") / f"{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:32]}.json"
    try:
        rec = json.loads(memo.read_text(encoding="utf-8"))
        if rec.get("stat") == stamp and isinstance(rec.get("sha256"), str):
            return rec["sha256"]
    except (OSError, ValueError, AttributeError):
        pass
    digest = sha256_file(path)
    try:
        atomic_write_json(memo, {"path": str(path.resolve()), "stat": stamp, "sha256": digest})
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
