"""What makes a bundle's files safe to touch: names, pickles, safetensors headers, zips.

Nothing here opens a pickle or imports torch: pickled checkpoints are recognised by name and
magic bytes, safetensors files by their JSON header, and zips are extracted with path-traversal,
symlink and zip-bomb guards into a cache keyed by the zip's sha256.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import struct
import tempfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from ..errors import BundleError
from ..provenance import sha256_file
from ..resources import cache_dir

MANIFEST_NAME = "manifest.json"
#: Zip limits (zip-bomb guards): entries, total uncompressed bytes, compression ratio.
_ZIP_MAX_ENTRIES = 10_000
_ZIP_MAX_TOTAL = 4 * 1024**3
_ZIP_MAX_RATIO = 200.0
_ZIP_RATIO_MIN_SIZE = 1024 * 1024
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin", ".joblib", ".npy", ".npz")
MAX_MANIFEST_BYTES = 64 * 1024 * 1024
#: What a damaged zip entry raises while it is inflated (bad CRC, truncated data, unknown method).
_ZIP_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, ValueError, OSError)


def parse_manifest(raw: bytes) -> dict:
    """A manifest's JSON object from its bytes; BundleError in one line when it is not one."""
    if len(raw) > MAX_MANIFEST_BYTES:
        raise BundleError(f"{MANIFEST_NAME}: larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise BundleError(f"{MANIFEST_NAME}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise BundleError(f"{MANIFEST_NAME}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise BundleError(f"{MANIFEST_NAME}: JSON nested too deeply") from None
    except ValueError as exc:  # e.g. an integer literal too long to convert
        raise BundleError(f"{MANIFEST_NAME}: unreadable JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{MANIFEST_NAME}: top level must be a JSON object")
    return manifest


def listed_names(manifest: dict) -> set[str]:
    """The safe file names a manifest lists (unsafe ones are the manifest check's to report)."""
    files = manifest.get("files")
    if not isinstance(files, dict):
        return set()
    return {n for n in files if isinstance(n, str) and unsafe_name_reason(n) is None and n != MANIFEST_NAME}


def unsafe_name_reason(name: str) -> str | None:
    """Why a bundle-relative file name is unsafe (None if fine)."""
    if not isinstance(name, str) or not name:
        return "empty name"
    if "\\" in name or ":" in name or "\x00" in name:
        return "backslash, colon or NUL in name"
    if name.startswith("/"):
        return "absolute path"
    parts = PurePosixPath(name).parts
    if any(p in ("..", ".") for p in parts):
        return "'..' or '.' path component"
    return None


def sniff_pickle(path: Path) -> str | None:
    """Describe the file if it looks like a pickle / torch checkpoint, without unpickling it."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return f"pickle data (protocol {head[1]})"
    if head[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(path) as zf:
                if any(n.endswith("data.pkl") or n.endswith(".pkl") for n in zf.namelist()):
                    return "a torch zip checkpoint containing pickled data (data.pkl)"
        except zipfile.BadZipFile:
            pass
        return "a zip archive"
    return None


def safetensors_problem(path: Path) -> str | None:
    """Check the safetensors header (8-byte length + JSON) without loading tensors."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) < 8:
            return "too short to be safetensors"
        (n,) = struct.unpack("<Q", raw)
        if n == 0 or n > min(size - 8, 100 * 1024 * 1024):
            return f"bad safetensors header length {n} for a {size}-byte file"
        header = fh.read(n)
    try:
        meta = json.loads(header.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return "safetensors header is not JSON"
    if not isinstance(meta, dict):
        return "safetensors header is not a JSON object"
    end = 0
    for key, info in meta.items():
        if key == "__metadata__":
            continue
        if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= info.keys():
            return f"safetensors entry {key!r} lacks dtype/shape/data_offsets"
        why = _entry_problem(info)
        if why:
            return f"safetensors entry {key!r}: {why}"
        end = max(end, int(info["data_offsets"][1]))
    if 8 + n + end > size:
        return f"safetensors data ends at byte {8 + n + end} but the file has {size}"
    return None


#: Bytes per element of the safetensors dtypes.
_DTYPE_BYTES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}


def _entry_problem(info: dict) -> str | None:
    """Why one tensor entry of a safetensors header is not what its data can be (None if fine)."""
    off, shape, dtype = info["data_offsets"], info["shape"], info["dtype"]
    if not (
        isinstance(off, list) and len(off) == 2 and all(type(v) is int and v >= 0 for v in off) and off[0] <= off[1]
    ):
        return f"data_offsets must be two increasing byte offsets, got {off!r}"
    if not (isinstance(shape, list) and all(type(v) is int and v >= 0 for v in shape)):
        return f"shape must be a list of sizes, got {shape!r}"
    if dtype not in _DTYPE_BYTES:
        return f"unknown dtype {dtype!r}"
    n = _DTYPE_BYTES[dtype]
    for v in shape:
        n *= v
    if n != off[1] - off[0]:
        return f"{dtype}{shape} needs {n} bytes but data_offsets span {off[1] - off[0]}"
    return None


def _zip_plan(zf: zipfile.ZipFile, label: str) -> tuple[str, list[zipfile.ZipInfo]]:
    """Validate every entry of a bundle zip; return (root prefix, file entries)."""
    infos = zf.infolist()
    if len(infos) > _ZIP_MAX_ENTRIES:
        raise BundleError(f"{label}: {len(infos)} entries (limit {_ZIP_MAX_ENTRIES})")
    total = packed = 0
    files: list[zipfile.ZipInfo] = []
    seen: set[str] = set()
    for info in infos:
        name = info.filename
        why = unsafe_name_reason(name.rstrip("/")) if name.rstrip("/") else "empty name"
        if why or (len(name) > 1 and name[1] == ":"):
            raise BundleError(f"{label}: refusing entry {name!r} ({why or 'drive letter'})")
        if info.flag_bits & 0x1:
            raise BundleError(f"{label}: entry {name!r} is encrypted; bundles must be plain zips")
        mode = (info.external_attr >> 16) & 0xFFFF
        if stat.S_ISLNK(mode):
            raise BundleError(f"{label}: refusing symlink entry {name!r}")
        if info.is_dir():
            continue
        if name in seen:
            raise BundleError(f"{label}: duplicate entry {name!r}")
        seen.add(name)
        total += info.file_size
        if total > _ZIP_MAX_TOTAL:
            raise BundleError(f"{label}: uncompressed size exceeds {_ZIP_MAX_TOTAL} bytes (zip bomb?)")
        if info.file_size > _ZIP_RATIO_MIN_SIZE and info.file_size > _ZIP_MAX_RATIO * max(info.compress_size, 1):
            raise BundleError(
                f"{label}: entry {name!r} expands {info.file_size / max(info.compress_size, 1):.0f}x "
                f"(limit {_ZIP_MAX_RATIO:.0f}x, zip bomb?)"
            )
        files.append(info)
        packed += info.compress_size
    if total > _ZIP_RATIO_MIN_SIZE and total > _ZIP_MAX_RATIO * max(packed, 1):
        raise BundleError(
            f"{label}: expands {total / max(packed, 1):.0f}x in all (limit {_ZIP_MAX_RATIO:.0f}x, zip bomb?)"
        )
    names = [i.filename for i in files]
    if MANIFEST_NAME in names:
        root = ""
    else:
        tops = {n.split("/", 1)[0] for n in names}
        if len(tops) == 1 and f"{next(iter(tops))}/{MANIFEST_NAME}" in names:
            root = next(iter(tops)) + "/"
        else:
            raise BundleError(f"{label}: no {MANIFEST_NAME} at the zip root or in a single top folder")
    return root, files


def _read_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, label: str) -> bytes:
    """One (small, size-checked) entry's bytes; a damaged entry is one BundleError line."""
    try:
        with zf.open(info) as src:
            data = src.read(info.file_size + 1)
    except _ZIP_READ_ERRORS as exc:
        raise BundleError(f"{label}: entry {info.filename!r} is damaged ({exc})") from None
    if len(data) > info.file_size:
        raise BundleError(f"{label}: entry {info.filename!r} inflates past its declared size (zip bomb?)")
    return data


def _listed_entries(
    zf: zipfile.ZipFile, root: str, files: list[zipfile.ZipInfo], label: str
) -> tuple[bytes, list[tuple[str, zipfile.ZipInfo]]]:
    """The zip's manifest bytes and the (name, entry) of the files it lists, from the central directory.

    Only these are extracted: entries the manifest does not list never reach the disk, so what a
    zip may put in the cache is bounded by what its manifest names.
    """
    by_name = {i.filename[len(root) :]: i for i in files if i.filename.startswith(root)}
    man_info = by_name[MANIFEST_NAME]
    if man_info.file_size > MAX_MANIFEST_BYTES:
        raise BundleError(f"{label}: {MANIFEST_NAME} larger than {MAX_MANIFEST_BYTES} bytes")
    raw = _read_entry(zf, man_info, label)
    listed = listed_names(parse_manifest(raw))
    chosen = [(n, by_name[n]) for n in sorted(listed) if n in by_name]
    total = sum(i.file_size for _, i in chosen)
    if total > _ZIP_MAX_TOTAL:
        raise BundleError(f"{label}: the listed files declare {total} bytes (limit {_ZIP_MAX_TOTAL})")
    return raw, chosen


def _extract_zip(path: Path) -> Path:
    """Check a bundle zip from its central directory, then extract its manifest and the files it
    lists (nothing else) into the cache, keyed by the zip's sha256; return the folder."""
    label = path.name
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise BundleError(f"{label}: not a readable zip file ({exc})") from None
    with zf:
        root, files = _zip_plan(zf, label)
        raw, chosen = _listed_entries(zf, root, files, label)
        dest = cache_dir("bundles") / sha256_file(path)[:24]
        if (dest / MANIFEST_NAME).is_file():
            # Reuse the cached copy only if its manifest is still the zip's (hashes then pin the rest).
            if (dest / MANIFEST_NAME).read_bytes() == raw:
                return dest
            shutil.rmtree(dest, ignore_errors=True)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest.parent))
        try:
            (tmp / MANIFEST_NAME).write_bytes(raw)
            for rel, info in chosen:
                target = (tmp / rel).resolve()
                if not target.is_relative_to(tmp.resolve()):
                    raise BundleError(f"{label}: entry {info.filename!r} escapes the bundle folder")
                target.parent.mkdir(parents=True, exist_ok=True)
                _inflate(zf, info, target, label)
            try:
                os.replace(tmp, dest)
            except OSError:  # another process extracted it first
                if not (dest / MANIFEST_NAME).is_file():
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return dest


def _inflate(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, label: str) -> None:
    """Write one entry, counting what is actually inflated (headers can lie about sizes)."""
    written = 0
    try:
        with zf.open(info) as src, open(target, "wb") as dst:
            while block := src.read(1 << 20):
                written += len(block)
                if written > info.file_size:
                    raise BundleError(f"{label}: entry {info.filename!r} inflates past its declared size (zip bomb?)")
                dst.write(block)
    except BundleError:
        raise
    except _ZIP_READ_ERRORS as exc:
        raise BundleError(f"{label}: entry {info.filename!r} is damaged ({exc})") from None


def resolve_folder(path: str | Path) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise BundleError(f"bundle not found: {p}")
    if p.is_file():
        if p.name == MANIFEST_NAME:
            return p.parent
        if zipfile.is_zipfile(p):
            return _extract_zip(p)
        raise BundleError(f"{p}: not a bundle folder, a {MANIFEST_NAME} or a zip")
    return p
