"""Writing bundles: files atomically, each sha256 recorded, the manifest validated and written last."""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save

from ..atomic import atomic_write_bytes, atomic_write_set, replace_dir
from ..errors import BundleError
from ..provenance import sha256_file
from .archive import MANIFEST_NAME, PICKLE_SUFFIXES, unsafe_name_reason
from .manifest import file_problems, manifest_problems, read_manifest
from .schema import SUPPORTED_SCHEMA_VERSIONS

__all__ = ["write_bundle", "attach_file", "staged_bundle"]


def _content_bytes(content: bytes | str | Mapping | list) -> bytes:
    if isinstance(content, bytes):
        return content
    if isinstance(content, str):
        return content.encode("utf-8")
    if isinstance(content, (Mapping, list)):
        return (json.dumps(content, indent=2, sort_keys=True, allow_nan=False) + "\n").encode("utf-8")
    raise BundleError(f"cannot write content of type {type(content).__name__} into a bundle")


def write_bundle(
    out_dir: str | Path,
    manifest: dict,
    tensors: Mapping[str, Any] | None = None,
    extra_files: Mapping[str, bytes | str | dict] | None = None,
) -> Path:
    """Write a folder bundle atomically per file, fill ``files`` with sha256s, validate, return it."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    man = copy.deepcopy(manifest)
    man.setdefault("schema_version", SUPPORTED_SCHEMA_VERSIONS[-1])
    files: dict[str, str] = dict(man.get("files") or {})
    if tensors is not None:
        weights = man.get("model", {}).get("weights")
        if not isinstance(weights, str) or not weights.endswith(".safetensors"):
            raise BundleError("model.weights must name a .safetensors file to write tensors")
        data = save({k: _as_array(v) for k, v in tensors.items()})
        _check_writable_name(weights)
        atomic_write_bytes(out / weights, data)
        files[weights] = hashlib.sha256(data).hexdigest()
    for name, content in (extra_files or {}).items():
        _check_writable_name(name)
        data = _content_bytes(content)
        atomic_write_bytes(out / name, data)
        files[name] = hashlib.sha256(data).hexdigest()
    # Files listed but not written now must already be there; refresh their hashes.
    for name in list(files):
        p = out / name
        if name not in (extra_files or {}) and not (tensors is not None and name == man["model"]["weights"]):
            if not p.is_file():
                raise BundleError(f"{name}: listed in files but not present in {out}")
            files[name] = sha256_file(p)
    man["files"] = dict(sorted(files.items()))
    _finish_manifest(out, man)
    return out


def attach_file(
    bundle_dir: str | Path,
    filename: str,
    content: bytes | str | dict,
    manifest_key: str | None = None,
    manifest_updates: dict | None = None,
) -> None:
    """Add or replace one file of a folder bundle and record it in the manifest (re-validated)."""
    folder = Path(bundle_dir)
    if not folder.is_dir():
        raise BundleError(f"attach_file needs a bundle folder, got {folder}")
    _check_writable_name(filename)
    manifest, _ = read_manifest(folder)
    man = copy.deepcopy(manifest)
    data = _content_bytes(content)
    man.setdefault("files", {})[filename] = hashlib.sha256(data).hexdigest()
    man["files"] = dict(sorted(man["files"].items()))
    if manifest_key is not None:
        if manifest_key in ("files", "model", "schema_version"):
            raise BundleError(f"attach_file: manifest_key {manifest_key!r} is reserved")
        man[manifest_key] = filename
    if manifest_updates:
        for key in ("files", "schema_version"):
            if key in manifest_updates:
                raise BundleError(f"attach_file: manifest_updates may not change {key!r}")
        man.update(copy.deepcopy(manifest_updates))
    probs = manifest_problems(man)
    if probs:
        raise BundleError(f"attach_file {filename}: {probs[0]}")
    others = {**man, "files": {k: v for k, v in man["files"].items() if k != filename}}
    probs = file_problems(folder, others)
    if probs:
        raise BundleError(f"cannot write bundle {folder}: {probs[0]}")
    # the file and the manifest that hashes it go in as one set; the previous pair stays as .<name>.previous
    atomic_write_set(folder, {filename: data, MANIFEST_NAME: _manifest_bytes(man)}, keep_previous=True)


def _check_writable_name(name: str) -> None:
    why = unsafe_name_reason(name)
    if why:
        raise BundleError(f"unsafe bundle file name {name!r} ({why})")
    if name == MANIFEST_NAME:
        raise BundleError(f"{MANIFEST_NAME} is written by the bundle code itself")
    if name.lower().endswith(PICKLE_SUFFIXES):
        raise BundleError(f"{name!r}: bundles carry no pickled files; use .safetensors or JSON")


def _finish_manifest(folder: Path, man: dict) -> None:
    probs = manifest_problems(man) or file_problems(folder, man)
    if probs:
        raise BundleError(f"cannot write bundle {folder}: {probs[0]}")
    atomic_write_bytes(folder / MANIFEST_NAME, _manifest_bytes(man))


def _manifest_bytes(man: dict) -> bytes:
    return (json.dumps(man, indent=2, sort_keys=False, allow_nan=False) + "\n").encode("utf-8")


def _as_array(tensor: Any) -> np.ndarray:
    """A weight as a contiguous numpy array (torch tensors are detached and moved to the CPU)."""
    if hasattr(tensor, "detach"):
        tensor = tensor.detach().cpu().contiguous().numpy()
    return np.ascontiguousarray(tensor)


@contextmanager
def staged_bundle(out: str | Path) -> Iterator[Path]:
    """A hidden sibling folder to build a new bundle in; when the block succeeds it becomes ``out``.

    ``out`` appears whole or not at all. A bundle already at ``out`` is kept as ``.<out>.previous``;
    a folder there that is not a bundle is refused rather than moved aside.
    """
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise BundleError(f"{out} exists and is not a folder; choose another bundle folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST_NAME).is_file():
        raise BundleError(f"{out} is a folder that is not a bundle; choose an empty or new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".new", dir=out.parent))
    try:
        yield tmp
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
