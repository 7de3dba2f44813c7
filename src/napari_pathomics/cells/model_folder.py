"""Learned nuclei model folders: ``manifest.json`` + ``weights.safetensors`` (+ README), checked like bundles.

A folder is valid when its manifest is JSON with the keys below, every file in the folder is
listed in ``files`` with its sha256 (nothing unlisted, no pickles, no symlinks), and the weights
are well-formed safetensors. The bundle's checks (``bundle.manifest.file_problems``) do the file
part. Loading never unpickles or executes anything from the folder.

Manifest keys: ``format`` (``napari-pathomics-nuclei``), ``format_version``, ``name``,
``licence`` (SPDX-like), ``attribution``, ``architecture`` (encoder, decoder, outputs), ``mpp``
(the model's resolution), ``post`` (views per tile and post-processing thresholds), ``training`` (data, settings,
history), ``figures`` (measured scores, with the data they were measured on), ``files``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..atomic import replace_dir
from ..bundle.manifest import file_problems, read_manifest
from ..dihedral import VIEW_COUNTS
from ..errors import BundleError, NucleiError
from ..provenance import sha256_file
from ..wsi.normalize import MacenkoNormalizer
from .learned import PostParams
from .unet import DEFAULT_DECODER, build_unet

__all__ = ["NucleiModel", "validate_model_folder", "load_model_folder", "write_model_folder", "FORMAT", "WEIGHTS"]

FORMAT = "napari-pathomics-nuclei"
FORMAT_VERSION = 1
WEIGHTS = "weights.safetensors"
_REQUIRED = ("format", "format_version", "name", "licence", "architecture", "mpp", "post", "files")


def validate_model_folder(path: str | Path) -> list[str]:
    """Every problem of a nuclei model folder (empty = valid)."""
    folder = Path(path)
    if not folder.is_dir():
        return [f"nuclei model folder not found: {folder}"]
    try:
        man, _ = read_manifest(folder)
    except BundleError as exc:
        return [str(exc)]
    probs = [f"manifest.json: missing {k!r}" for k in _REQUIRED if k not in man]
    if probs:
        return probs
    if man["format"] != FORMAT or man["format_version"] != FORMAT_VERSION:
        return [f"manifest.json: not a nuclei model (format {man['format']!r} v{man['format_version']!r})"]
    files = man["files"]
    if not isinstance(files, dict) or WEIGHTS not in files:
        return [f"manifest.json: files must list {WEIGHTS} with its sha256"]
    mpp = man["mpp"]
    if not isinstance(mpp, (int, float)) or not 0.1 <= float(mpp) <= 2.0:
        probs.append(f"manifest.json: mpp must be 0.1–2 µm/px, got {mpp!r}")
    arch = man["architecture"]
    if not isinstance(arch, dict) or not isinstance(arch.get("encoder"), str):
        probs.append("manifest.json: architecture.encoder must be a timm model name")
    post = man["post"]
    views = post.get("views", 1) if isinstance(post, dict) else None
    if isinstance(views, bool) or views not in VIEW_COUNTS:
        probs.append(f"manifest.json: post must be an object whose views is one of {VIEW_COUNTS}")
    listed = set(files) | {"manifest.json"}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if p.is_file() and rel not in listed and not rel.startswith("."):
            probs.append(f"{rel}: not listed in manifest.json files (a model folder carries only what it lists)")
    probs += file_problems(folder, {"model": {"weights": WEIGHTS}, "files": files})
    return probs


@dataclass(frozen=True)
class NucleiModel:
    """A validated model folder, ready to build its network."""

    path: Path
    manifest: dict[str, Any]
    weights_sha256: str

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @property
    def licence(self) -> str:
        return str(self.manifest["licence"])

    @property
    def mpp(self) -> float:
        return float(self.manifest["mpp"])

    @property
    def post(self) -> PostParams:
        return PostParams.from_json(self.manifest.get("post"))

    def normaliser(self) -> MacenkoNormalizer | None:
        """The Macenko normaliser to the model's reference stain (None: the model takes raw RGB)."""
        ref = self.manifest.get("stain_reference")
        return MacenkoNormalizer.from_dict(ref) if isinstance(ref, dict) else None

    @property
    def key(self) -> str:
        """What identifies this model's output (cache keys): the weights and the post-processing."""
        blob = json.dumps(
            [self.weights_sha256, self.post.to_json(), self.mpp, self.manifest.get("stain_reference")],
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        """Name, licence, attribution and where it came from, for CLI output, reports and JSON."""
        return {
            "name": self.name,
            "kind": "learned",
            "licence": self.licence,
            "attribution": self.manifest.get("attribution", ""),
            "path": str(self.path),
            "weights_sha256": self.weights_sha256,
        }

    def network(self) -> Any:
        """The torch network with this folder's weights (cached per process)."""
        return _network(str(self.path), self.weights_sha256)


def load_model_folder(path: str | Path) -> NucleiModel:
    """The model in ``path``; a NucleiError naming the first problem when it is not valid."""
    folder = Path(path).expanduser()
    probs = validate_model_folder(folder)
    if probs:
        raise NucleiError(f"nuclei model {folder}: {probs[0]}")
    man, _ = read_manifest(folder)
    return NucleiModel(folder.resolve(), man, str(man["files"][WEIGHTS]).lower())


@lru_cache(maxsize=4)
def _network(path: str, sha: str) -> Any:
    from safetensors.torch import load_file  # heavy

    man, _ = read_manifest(Path(path))
    arch = man["architecture"]
    net = build_unet(arch["encoder"], tuple(arch.get("decoder") or DEFAULT_DECODER))
    state = load_file(str(Path(path) / WEIGHTS))
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise NucleiError(f"nuclei model {path}: weights do not fit its architecture ({str(exc)[:200]})") from None
    import torch  # heavy

    net.eval()
    return net.to(memory_format=torch.channels_last)  # about a third faster on CPU


def write_model_folder(out: str | Path, state_dict: dict[str, Any], manifest: dict[str, Any], readme: str) -> Path:
    """Write a complete model folder atomically (a temp folder renamed into place)."""
    from safetensors.torch import save_file  # heavy

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    # float16 halves the folder; loading copies into the float32 network
    tensors = {
        k: (v.detach().half() if v.is_floating_point() else v.detach()).contiguous().clone()
        for k, v in state_dict.items()
    }
    save_file(tensors, str(tmp / WEIGHTS))
    (tmp / "README.md").write_text(readme, encoding="utf-8")
    man = dict(manifest)
    man["format"], man["format_version"] = FORMAT, FORMAT_VERSION
    man["files"] = {WEIGHTS: sha256_file(tmp / WEIGHTS), "README.md": sha256_file(tmp / "README.md")}
    (tmp / "manifest.json").write_text(json.dumps(man, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    for f in tmp.iterdir():
        os.chmod(f, 0o666 & ~umask)
    return replace_dir(tmp, out)
