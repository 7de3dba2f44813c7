"""A bundle's manifest and files, checked: the read-only ``Bundle`` view and its validation.

A bundle is a folder (or zip of one) with a JSON manifest validated against a versioned schema
and a sha256 for every listed file. Loading never unpickles, imports or executes anything from
the bundle, and every failure is a :class:`~napari_pathomics.errors.BundleError` whose one-line
message names the file and what is wrong. Turning a bundle into a running model is
``inference``'s job; this module knows only the file format.
"""

from __future__ import annotations

import copy
import hashlib
import math
from functools import cached_property
from pathlib import Path

from ..errors import BundleError
from ..provenance import sha256_file
from .archive import (
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    PICKLE_SUFFIXES,
    parse_manifest,
    resolve_folder,
    safetensors_problem,
    sniff_pickle,
    unsafe_name_reason,
)
from .schema import SUPPORTED_SCHEMA_VERSIONS, schema_problems

__all__ = [
    "Bundle",
    "validate_bundle",
    "read_manifest",
    "manifest_problems",
    "file_problems",
    "named_files",
    "reference_problem",
    "MANIFEST_NAME",
]


def read_manifest(folder: Path) -> tuple[dict, bytes]:
    mpath = folder / MANIFEST_NAME
    if not mpath.is_file():
        raise BundleError(f"{folder}: no {MANIFEST_NAME}")
    if mpath.stat().st_size > MAX_MANIFEST_BYTES:
        raise BundleError(f"{MANIFEST_NAME}: larger than {MAX_MANIFEST_BYTES} bytes")
    raw = mpath.read_bytes()
    return parse_manifest(raw), raw


def _non_finite(obj: object, path: str) -> str | None:
    """The JSON path of the first NaN or infinite number in ``obj`` (None if there is none)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return path
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for k, v in items:
        found = _non_finite(v, f"{path}.{k}")
        if found:
            return found
    return None


def named_files(manifest: dict) -> dict[str, object]:
    """Block → the file name it gives, for every manifest block that makes the program read a file.

    The one list of such blocks: the model's weights, the image-only and combined signatures,
    the risk head and the class head. An absent, null or empty entry names no file.
    """
    out: dict[str, object] = {}
    model = manifest.get("model")
    if isinstance(model, dict) and model.get("weights") not in (None, ""):
        out["model.weights"] = model["weights"]
    for key in ("signature", "signature_clinical"):
        if manifest.get(key) not in (None, ""):
            out[key] = manifest[key]
    for key in ("risk_head", "head"):
        spec = manifest.get(key)
        if isinstance(spec, dict):
            out[f"{key}.weights"] = spec.get("weights", f"{key}.safetensors")
    return out


def reference_problem(block: str, name: object, files: object) -> str | None:
    """Why ``name`` (given by manifest ``block``) may not be read (None if it may).

    The one rule for every file a bundle makes the program read: a plain relative name inside
    the bundle, listed in ``files`` with its sha256 (which loading verifies).
    """
    if not isinstance(name, str):
        return f"{block} must be a file name, got {type(name).__name__} {str(name)[:80]!r}"
    why = unsafe_name_reason(name)
    if why:
        return f"{block} {name[:200]!r} is not a plain relative name inside the bundle ({why})"
    if not isinstance(files, dict) or name not in files:
        return f"{block} {name[:200]!r} is not listed in files (every file a bundle reads needs its sha256 there)"
    return None


def _semantic_problems(manifest: dict) -> list[str]:
    """Consistency checks that a JSON schema cannot express."""
    probs: list[str] = []
    model = manifest.get("model", {})
    where = _non_finite(manifest, "manifest")
    if where:
        probs.append(f"{where}: NaN or infinite number")
    tile_um, mpp = model.get("tile_um"), model.get("mpp")
    if isinstance(tile_um, (int, float)) and isinstance(mpp, (int, float)) and mpp > 0 and tile_um / mpp > 8192:
        probs.append(f"model.tile_um / model.mpp = {tile_um / mpp:.0f} px per tile side (limit 8192)")
    classes = model.get("classes", [])
    names = [c.get("name") for c in classes if isinstance(c, dict)]
    if isinstance(model.get("num_classes"), int) and len(classes) != model["num_classes"]:
        probs.append(f"model.num_classes is {model['num_classes']} but model.classes lists {len(classes)}")
    dupes = sorted({n for n in names if names.count(n) > 1}, key=str)  # a broken manifest may mix types
    if dupes:
        probs.append(f"model.classes: duplicate class names {dupes}")
    unknown = [c for c in model.get("high_risk_classes", []) if c not in names]
    if unknown:
        probs.append(f"model.high_risk_classes names unknown classes {unknown} (classes: {names})")
    files = manifest.get("files", {})
    for name in files:
        why = unsafe_name_reason(name)
        if why:
            probs.append(f"files: unsafe file name {name!r} ({why})")
        elif name == MANIFEST_NAME:
            probs.append(f"files: {MANIFEST_NAME} must not list itself")
    for block, name in named_files(manifest).items():
        why = reference_problem(block, name, files)
        if why:
            probs.append(why)
    weights = model.get("weights")
    if isinstance(weights, str) and weights.lower().endswith(PICKLE_SUFFIXES):
        probs.append(f"model.weights {weights!r}: pickled checkpoints are refused; convert to .safetensors")
    for name in files:
        if name.lower().endswith(PICKLE_SUFFIXES):
            probs.append(f"files: {name!r} looks like a pickled file; bundles carry only safetensors/JSON")
    return probs


def file_problems(folder: Path, manifest: dict) -> list[str]:
    """Existence, containment, sha256 and pickle checks of every listed file."""
    probs: list[str] = []
    root = folder.resolve()
    weights = manifest.get("model", {}).get("weights")
    for name, expected in manifest.get("files", {}).items():
        if unsafe_name_reason(name):
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
        pick = sniff_pickle(p)
        if pick and (name == weights or pick != "a zip archive"):
            probs.append(f"{name}: refused, file is {pick} (bundles must not carry pickles)")
            continue
        actual = sha256_file(p)
        if isinstance(expected, str) and actual != expected.lower():
            probs.append(f"{name}: sha256 mismatch, manifest {expected[:12]}… file {actual[:12]}…")
            continue
        if name == weights:
            why = safetensors_problem(p)
            if why:
                probs.append(f"{name}: not valid safetensors ({why})")
    return probs


def manifest_problems(manifest: dict) -> list[str]:
    version = manifest.get("schema_version")
    if version not in SUPPORTED_SCHEMA_VERSIONS:
        return [
            f"{MANIFEST_NAME}: unsupported schema_version {version!r}; "
            f"supported: {', '.join(SUPPORTED_SCHEMA_VERSIONS)}"
        ]
    try:
        return schema_problems(manifest, version) or _semantic_problems(manifest)
    except RecursionError:
        return [f"{MANIFEST_NAME}: JSON nested too deeply"]


def validate_bundle(path: str | Path) -> list[str]:
    """Every problem of a bundle's files and manifest (empty list = the format is valid).

    Building the model and loading its weights is the runtime's job
    (``inference.backbones.check_runnable``); ``pathomics validate-bundle`` runs both.
    """
    try:
        folder = resolve_folder(path)
        manifest, _ = read_manifest(folder)
    except BundleError as exc:
        return [str(exc)]
    return manifest_problems(manifest) or file_problems(folder, manifest)


class Bundle:
    """A validated model bundle on disk (read-only view of its manifest and files)."""

    def __init__(self, path: Path, manifest: dict, manifest_bytes: bytes, source: Path | None = None) -> None:
        self.path = path
        self.manifest = manifest
        self.source = source or path
        self._manifest_bytes = manifest_bytes

    @classmethod
    def load(cls, path: str | Path) -> "Bundle":
        """Load and fully check a bundle folder or zip; raise BundleError on any problem."""
        src = Path(path).expanduser()
        folder = resolve_folder(src)
        manifest, raw = read_manifest(folder)
        probs = manifest_problems(manifest) or file_problems(folder, manifest)
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
    def class_descriptions(self) -> dict[str, str]:
        """Class name → its full name for legends (the name itself where the bundle gives none)."""
        return {c["name"]: str(c.get("description") or c["name"]) for c in self._model["classes"]}

    @property
    def model_args(self) -> dict:
        """Extra timm ``create_model`` arguments of the architecture (e.g. an image size); usually empty."""
        return copy.deepcopy(self._model.get("model_args") or {})

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

    def declared_tensors(self, key: str, default_file: str, what: str) -> tuple[str, dict, dict] | None:
        """An optional weights block's (file name, block, numpy arrays), e.g. ``head`` or ``risk_head``.

        None when the manifest declares no such block; BundleError (naming ``what``) when it is
        declared but its file is not among the bundle's hashed files or cannot be read.
        """
        from safetensors import SafetensorError  # heavy: only a bundle with a head needs it
        from safetensors.numpy import load_file  # numpy only: reading a bundle loads no torch

        spec = self.manifest.get(key)
        if not isinstance(spec, dict):
            return None
        path = self.file(f"{key}.weights")
        assert path is not None  # a declared block always names a file (default_file when it omits one)
        name = path.name
        try:
            return name, spec, load_file(str(path))
        except (OSError, ValueError, TypeError, SafetensorError) as exc:
            raise BundleError(f"{name}: unreadable {what} ({type(exc).__name__}: {exc})") from None

    def file(self, block: str, verify: bool = True) -> Path | None:
        """The file manifest ``block`` names (see :func:`named_files`), or None when it names none.

        The one resolver of every file a bundle makes the program read: a listed, plain relative
        name inside the bundle, no symlink, present, and (``verify``) still the sha256 the
        manifest pins. BundleError in one line otherwise.
        """
        name = named_files(self.manifest).get(block)
        if name is None:
            return None
        why = reference_problem(block, name, self.manifest.get("files"))
        if why:
            raise BundleError(why)
        assert isinstance(name, str)
        p = self.path / name
        if p.is_symlink() or not p.resolve().is_relative_to(self.path.resolve()):
            raise BundleError(f"{block} {name!r}: a symlink or outside the bundle folder")
        if not p.is_file():
            raise BundleError(f"{block} {name!r}: listed in files but missing from {self.path}")
        if verify:
            actual = sha256_file(p)
            if actual != str(self.file_hashes[name]).lower():
                raise BundleError(f"{name}: sha256 changed since the bundle was loaded ({actual[:12]}…)")
        return p

    @property
    def weights_path(self) -> Path:
        """The weights file, resolved but not re-hashed (``file("model.weights")`` hashes it)."""
        p = self.file("model.weights", verify=False)
        assert p is not None  # the schema requires model.weights
        return p

    @property
    def signature_path(self) -> Path | None:
        """The image-only signature, resolved but not re-hashed (``file("signature")`` hashes it)."""
        return self.file("signature", verify=False)
