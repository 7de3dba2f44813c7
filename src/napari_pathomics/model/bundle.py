"""Model bundles: a folder (or zip of one) with a JSON manifest, safetensors weights and sha256s.

Loading a bundle never unpickles and never imports or executes anything from it: the manifest
is JSON validated against a versioned schema, every listed file's sha256 is checked, weights
must be safetensors (pickled checkpoints are recognised by name and magic bytes and refused
without being opened by pickle), and zips are extracted with path-traversal, symlink and
zip-bomb guards. Every failure is a :class:`~napari_pathomics.errors.BundleError` with a
one-line message that names the file and what is wrong.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import stat
import struct
import tempfile
import zipfile
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from ..atomic import atomic_write_bytes
from ..errors import BundleError
from .schema import SUPPORTED_SCHEMA_VERSIONS, schema_problems

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ..stain import MacenkoNormalizer

__all__ = [
    "Bundle",
    "write_bundle",
    "attach_file",
    "validate_bundle",
    "sha256_file",
    "MANIFEST_NAME",
    "SUPPORTED_SCHEMA_VERSIONS",
]

MANIFEST_NAME = "manifest.json"
_MAX_MANIFEST_BYTES = 64 * 1024 * 1024
#: Zip limits (zip-bomb guards): entries, total uncompressed bytes, compression ratio.
_ZIP_MAX_ENTRIES = 10_000
_ZIP_MAX_TOTAL = 4 * 1024**3
_ZIP_MAX_RATIO = 200.0
_ZIP_RATIO_MIN_SIZE = 1024 * 1024
_PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin", ".joblib", ".npy", ".npz")


# ---------------------------------------------------------------------------------------------
# small helpers
def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _content_bytes(content: bytes | str | Mapping | list) -> bytes:
    if isinstance(content, bytes):
        return content
    if isinstance(content, str):
        return content.encode("utf-8")
    if isinstance(content, (Mapping, list)):
        return (json.dumps(content, indent=2, sort_keys=True, allow_nan=False) + "\n").encode("utf-8")
    raise BundleError(f"cannot write content of type {type(content).__name__} into a bundle")


def _unsafe_name_reason(name: str) -> str | None:
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


def _sniff_pickle(path: Path) -> str | None:
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


def _safetensors_problem(path: Path) -> str | None:
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
        end = max(end, int(info["data_offsets"][1]))
    if 8 + n + end > size:
        return f"safetensors data ends at byte {8 + n + end} but the file has {size}"
    return None


# ---------------------------------------------------------------------------------------------
# zip extraction
def _cache_root() -> Path:
    env = os.environ.get("PATHOMICS_CACHE_DIR")
    if env:
        return Path(env) / "bundles"
    try:
        from platformdirs import user_cache_dir

        return Path(user_cache_dir("napari-pathomics")) / "bundles"
    except Exception:  # pragma: no cover - platformdirs is a dependency
        return Path(tempfile.gettempdir()) / "napari-pathomics" / "bundles"


def _zip_plan(zf: zipfile.ZipFile, label: str) -> tuple[str, list[zipfile.ZipInfo]]:
    """Validate every entry of a bundle zip; return (root prefix, file entries)."""
    infos = zf.infolist()
    if len(infos) > _ZIP_MAX_ENTRIES:
        raise BundleError(f"{label}: {len(infos)} entries (limit {_ZIP_MAX_ENTRIES})")
    total = 0
    files: list[zipfile.ZipInfo] = []
    seen: set[str] = set()
    for info in infos:
        name = info.filename
        why = _unsafe_name_reason(name.rstrip("/")) if name.rstrip("/") else "empty name"
        if why or (len(name) > 1 and name[1] == ":"):
            raise BundleError(f"{label}: refusing entry {name!r} ({why or 'drive letter'})")
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


def _extract_zip(path: Path) -> Path:
    """Safely extract a bundle zip into the cache (keyed by the zip's sha256) and return the folder."""
    label = path.name
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise BundleError(f"{label}: not a readable zip file ({exc})") from None
    with zf:
        root, files = _zip_plan(zf, label)
        dest = _cache_root() / sha256_file(path)[:24]
        if (dest / MANIFEST_NAME).is_file():
            # Reuse the cached copy only if its manifest is still the zip's (hashes then pin the rest).
            if (dest / MANIFEST_NAME).read_bytes() == zf.read(root + MANIFEST_NAME):
                return dest
            shutil.rmtree(dest, ignore_errors=True)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest.parent))
        try:
            written = 0
            for info in files:
                entry_written = 0
                rel = info.filename[len(root):] if info.filename.startswith(root) else None
                if not rel:
                    continue
                target = (tmp / rel).resolve()
                if not target.is_relative_to(tmp.resolve()):
                    raise BundleError(f"{label}: entry {info.filename!r} escapes the bundle folder")
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as dst:
                    while block := src.read(1 << 20):
                        written += len(block)
                        entry_written += len(block)
                        # Headers can lie about sizes: count what is actually inflated.
                        if written > _ZIP_MAX_TOTAL or entry_written > info.file_size:
                            raise BundleError(f"{label}: inflated data exceeds its declared size (zip bomb?)")
                        dst.write(block)
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


def _resolve_folder(path: str | Path) -> Path:
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


# ---------------------------------------------------------------------------------------------
# checks
def _read_manifest(folder: Path) -> tuple[dict, bytes]:
    mpath = folder / MANIFEST_NAME
    if not mpath.is_file():
        raise BundleError(f"{folder}: no {MANIFEST_NAME}")
    if mpath.stat().st_size > _MAX_MANIFEST_BYTES:
        raise BundleError(f"{MANIFEST_NAME}: larger than {_MAX_MANIFEST_BYTES} bytes")
    raw = mpath.read_bytes()
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise BundleError(f"{MANIFEST_NAME}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise BundleError(f"{MANIFEST_NAME}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise BundleError(f"{MANIFEST_NAME}: JSON nested too deeply") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{MANIFEST_NAME}: top level must be a JSON object")
    return manifest, raw


def _semantic_problems(manifest: dict) -> list[str]:
    """Consistency checks that a JSON schema cannot express."""
    probs: list[str] = []
    model = manifest.get("model", {})
    classes = model.get("classes", [])
    names = [c.get("name") for c in classes if isinstance(c, dict)]
    if isinstance(model.get("num_classes"), int) and len(classes) != model["num_classes"]:
        probs.append(f"model.num_classes is {model['num_classes']} but model.classes lists {len(classes)}")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        probs.append(f"model.classes: duplicate class names {dupes}")
    unknown = [c for c in model.get("high_risk_classes", []) if c not in names]
    if unknown:
        probs.append(f"model.high_risk_classes names unknown classes {unknown} (classes: {names})")
    files = manifest.get("files", {})
    for name in files:
        why = _unsafe_name_reason(name)
        if why:
            probs.append(f"files: unsafe file name {name!r} ({why})")
        elif name == MANIFEST_NAME:
            probs.append(f"files: {MANIFEST_NAME} must not list itself")
    weights = model.get("weights")
    if isinstance(weights, str):
        if weights not in files:
            probs.append(f"model.weights {weights!r} is not listed in files")
        if weights.lower().endswith(_PICKLE_SUFFIXES):
            probs.append(f"model.weights {weights!r}: pickled checkpoints are refused; convert to .safetensors")
    for name in files:
        if name.lower().endswith(_PICKLE_SUFFIXES):
            probs.append(f"files: {name!r} looks like a pickled file; bundles carry only safetensors/JSON")
    sig = manifest.get("signature")
    if isinstance(sig, str) and sig not in files:
        probs.append(f"signature {sig!r} is not listed in files")
    return probs


def _file_problems(folder: Path, manifest: dict) -> list[str]:
    """Existence, containment, sha256 and pickle checks of every listed file."""
    probs: list[str] = []
    root = folder.resolve()
    weights = manifest.get("model", {}).get("weights")
    for name, expected in manifest.get("files", {}).items():
        if _unsafe_name_reason(name):
            continue  # already reported
        p = folder / name
        if p.is_symlink():
            probs.append(f"{name}: symlinks are refused in bundles")
            continue
        if not p.resolve().is_relative_to(root):
            probs.append(f"{name}: resolves outside the bundle folder")
            continue
        if not p.is_file():
            probs.append(f"{name}: listed in files but missing")
            continue
        pick = _sniff_pickle(p)
        if pick and (name == weights or pick != "a zip archive"):
            probs.append(f"{name}: refused, file is {pick} (bundles must not carry pickles)")
            continue
        actual = sha256_file(p)
        if isinstance(expected, str) and actual != expected.lower():
            probs.append(f"{name}: sha256 mismatch, manifest {expected[:12]}… file {actual[:12]}…")
            continue
        if name == weights:
            why = _safetensors_problem(p)
            if why:
                probs.append(f"{name}: not valid safetensors ({why})")
    return probs


def _manifest_problems(manifest: dict) -> list[str]:
    version = manifest.get("schema_version")
    if version not in SUPPORTED_SCHEMA_VERSIONS:
        return [
            f"{MANIFEST_NAME}: unsupported schema_version {version!r}; "
            f"supported: {', '.join(SUPPORTED_SCHEMA_VERSIONS)}"
        ]
    probs = schema_problems(manifest, version)
    if probs:
        return probs
    return _semantic_problems(manifest)


def validate_bundle(path: str | Path, deep: bool = False) -> list[str]:
    """All problems found in a bundle (empty list = valid).

    ``deep=True`` also builds the model and loads the weights strictly (slower, needs timm).
    """
    try:
        folder = _resolve_folder(path)
        manifest, _ = _read_manifest(folder)
    except BundleError as exc:
        return [str(exc)]
    probs = _manifest_problems(manifest)
    if probs:
        return probs
    probs = _file_problems(folder, manifest)
    if probs or not deep:
        return probs
    try:
        Bundle.load(folder).create_model()
    except BundleError as exc:
        return [str(exc)]
    return []


# ---------------------------------------------------------------------------------------------
class Bundle:
    """A validated model bundle on disk (read-only view of its manifest and files)."""

    def __init__(self, path: Path, manifest: dict, manifest_bytes: bytes, source: Path | None = None) -> None:
        self.path = path
        self.manifest = manifest
        self.source = source or path
        self._manifest_bytes = manifest_bytes
        self._normalizer: Any = None

    @classmethod
    def load(cls, path: str | Path) -> "Bundle":
        """Load and fully check a bundle folder or zip; raise BundleError on any problem."""
        src = Path(path).expanduser()
        folder = _resolve_folder(src)
        manifest, raw = _read_manifest(folder)
        probs = _manifest_problems(manifest) or _file_problems(folder, manifest)
        if probs:
            more = f" (+{len(probs) - 1} more problems)" if len(probs) > 1 else ""
            raise BundleError(f"invalid bundle {src}: {probs[0]}{more}")
        return cls(folder.resolve(), manifest, raw, src)

    def __repr__(self) -> str:
        return f"Bundle({self.name!r}, id={self.bundle_id}, path={str(self.path)!r})"

    # ---- manifest views ---------------------------------------------------------------------
    @property
    def _model(self) -> dict:
        return self.manifest["model"]

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def architecture(self) -> str:
        return str(self._model["architecture"])

    @property
    def class_names(self) -> list[str]:
        return [c["name"] for c in self._model["classes"]]

    @property
    def class_colors(self) -> list[str]:
        return [c["color"] for c in self._model["classes"]]

    @property
    def class_descriptions(self) -> list[str]:
        return [c.get("description", c["name"]) for c in self._model["classes"]]

    @property
    def num_classes(self) -> int:
        return int(self._model["num_classes"])

    @property
    def high_risk_classes(self) -> list[str]:
        return list(self._model.get("high_risk_classes", []))

    @property
    def input_size(self) -> int:
        return int(self._model["input_size"])

    @property
    def tile_um(self) -> float:
        return float(self._model["tile_um"])

    @property
    def mpp(self) -> float:
        return float(self._model["mpp"])

    @property
    def mean(self) -> list[float]:
        return [float(v) for v in self._model["normalization"]["mean"]]

    @property
    def std(self) -> list[float]:
        return [float(v) for v in self._model["normalization"]["std"]]

    @property
    def macenko(self) -> dict | None:
        m = self._model["normalization"].get("macenko")
        return copy.deepcopy(m) if m else None

    @property
    def gradcam_target_layer(self) -> str:
        return str(self._model["gradcam_target_layer"])

    @property
    def metrics(self) -> dict:
        return dict(self.manifest.get("metrics", {}))

    @cached_property
    def bundle_id(self) -> str:
        """Short content id: sha256 of the manifest bytes (which pin every file's sha256)."""
        return hashlib.sha256(self._manifest_bytes).hexdigest()[:16]

    @property
    def file_hashes(self) -> dict[str, str]:
        return dict(self.manifest["files"])

    @property
    def weights_path(self) -> Path:
        return self.path / self._model["weights"]

    @property
    def signature_path(self) -> Path | None:
        sig = self.manifest.get("signature")
        return self.path / sig if sig else None

    # ---- behaviour --------------------------------------------------------------------------
    def risk_weights(self) -> np.ndarray:
        """Per-class weights (C,) of the patch risk: 1 for high-risk classes, else 0."""
        hr = set(self.high_risk_classes)
        return np.array([1.0 if n in hr else 0.0 for n in self.class_names], dtype=np.float32)

    def normalizer(self) -> "MacenkoNormalizer | None":
        """The Macenko normaliser of this bundle's reference (cached), or None if it has none."""
        m = self._model["normalization"].get("macenko")
        if not m:
            return None
        if self._normalizer is None:
            from ..stain import MacenkoNormalizer

            try:
                self._normalizer = MacenkoNormalizer.from_dict(m)
            except (ValueError, KeyError) as exc:
                raise BundleError(f"{MANIFEST_NAME}: bad model.normalization.macenko ({exc})") from None
        return self._normalizer

    def create_model(self, device: str = "cpu") -> "torch.nn.Module":
        """Build the timm architecture and load the safetensors weights strictly (eval mode)."""
        import timm
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            model = timm.create_model(self.architecture, pretrained=False, num_classes=self.num_classes)
        except (RuntimeError, KeyError, ValueError) as exc:
            raise BundleError(f"model.architecture {self.architecture!r}: timm cannot build it ({exc})") from None
        # Re-check the weights file right before reading it (it could have changed since load).
        name = self._model["weights"]
        actual = sha256_file(self.weights_path)
        if actual != self.file_hashes[name]:
            raise BundleError(f"{name}: sha256 changed since the bundle was loaded ({actual[:12]}…)")
        try:
            state = load_file(str(self.weights_path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise BundleError(f"{name}: cannot read safetensors ({exc})") from None
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()
            raise BundleError(
                f"{name}: weights do not fit {self.architecture} with {self.num_classes} classes "
                f"({' '.join(s.strip() for s in first[:3])[:300]})"
            ) from None
        resolve_layer(model, self.gradcam_target_layer)
        model.eval()
        return model.to(device)


def resolve_layer(model: Any, dotted: str) -> Any:
    """The submodule at a dotted attribute path (Grad-CAM target); BundleError if absent."""
    obj = model
    for part in dotted.split("."):
        if part.isdigit() and hasattr(obj, "__getitem__"):
            try:
                obj = obj[int(part)]
                continue
            except (IndexError, TypeError):
                pass
        if not hasattr(obj, part):
            raise BundleError(f"model.gradcam_target_layer {dotted!r}: no attribute {part!r} in the model")
        obj = getattr(obj, part)
    return obj


# ---------------------------------------------------------------------------------------------
# writing
def write_bundle(
    out_dir: str | Path,
    manifest: dict,
    tensors: Mapping[str, "torch.Tensor"] | None = None,
    extra_files: Mapping[str, bytes | str | dict] | None = None,
) -> Path:
    """Write a folder bundle atomically per file, fill ``files`` with sha256s, validate, return it."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    man = copy.deepcopy(manifest)
    man.setdefault("schema_version", SUPPORTED_SCHEMA_VERSIONS[-1])
    files: dict[str, str] = dict(man.get("files") or {})
    if tensors is not None:
        from safetensors.torch import save

        weights = man.get("model", {}).get("weights")
        if not isinstance(weights, str) or not weights.endswith(".safetensors"):
            raise BundleError("model.weights must name a .safetensors file to write tensors")
        data = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
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
    manifest, _ = _read_manifest(folder)
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
    probs = _manifest_problems(man)
    if probs:
        raise BundleError(f"attach_file {filename}: {probs[0]}")
    atomic_write_bytes(folder / filename, data)
    _finish_manifest(folder, man)


def _check_writable_name(name: str) -> None:
    why = _unsafe_name_reason(name)
    if why:
        raise BundleError(f"unsafe bundle file name {name!r} ({why})")
    if name == MANIFEST_NAME:
        raise BundleError(f"{MANIFEST_NAME} is written by the bundle code itself")
    if name.lower().endswith(_PICKLE_SUFFIXES):
        raise BundleError(f"{name!r}: bundles carry no pickled files; use .safetensors or JSON")


def _finish_manifest(folder: Path, man: dict) -> None:
    probs = _manifest_problems(man) or _file_problems(folder, man)
    if probs:
        raise BundleError(f"cannot write bundle {folder}: {probs[0]}")
    data = (json.dumps(man, indent=2, sort_keys=False, allow_nan=False) + "\n").encode("utf-8")
    atomic_write_bytes(folder / MANIFEST_NAME, data)
