"""Models from elsewhere, made bundles without running anything of theirs (``pathomics import-model``).

Two folder layouts are understood:

* a timm / Hugging Face folder, as ``timm.models._hub.save_for_hf(model, dir, safe_serialization=True)``
  writes it: ``config.json`` (``architecture``, ``num_classes``, ``label_names``, ``model_args``,
  ``pretrained_cfg`` with input size and mean/std) and ``model.safetensors``;
* a WSInfer model folder: ``config.json`` (``spec_version``, ``architecture``, ``num_classes``,
  ``class_names``, ``patch_size_pixels``, ``spacing_um_px``, ``transform``) and safetensors weights.

Only JSON is parsed and only safetensors tensors are read. Pickled or TorchScript weights are
refused with the command that converts them on a trusted machine. What the source does not say
(tile µm, class colours, the Grad-CAM layer, high-risk classes) comes from the user or from
defaults derived from the architecture, and the result is checked like any bundle.
"""

from __future__ import annotations

import json
import math
import re
import shlex
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..bundle import Bundle, staged_bundle, validate_bundle, write_bundle
from ..bundle.archive import PICKLE_SUFFIXES, safetensors_problem, sniff_pickle
from ..bundle.schema import model_args_problems
from ..errors import BundleError
from ..provenance import now_iso, sha256_file
from ..units import DEFAULT_MPP
from .checks import runtime_problems
from .stain import MacenkoNormalizer

__all__ = ["ImportOptions", "import_model", "detect_format"]

#: Colours for imported classes: Okabe–Ito (colour-blind safe), then a few more distinct ones.
PALETTE = (
    "#E69F00",
    "#56B4E9",
    "#009E73",
    "#F0E442",
    "#0072B2",
    "#D55E00",
    "#CC79A7",
    "#000000",
    "#999999",
    "#8C564B",
    "#17BECF",
    "#BCBD22",
)
#: A class whose name contains one of these is high-risk by default (tumour-like classes).
TUMOUR_WORDS = ("tum", "cancer", "carcinoma", "malignant", "metast", "invasive", "neoplas")
#: Fixed conversion programs (no input is ever put into them): the checkpoint and the output
#: file come as command-line arguments, shell-quoted (see :func:`_convert_hint`).
_CONVERT = (
    "import sys, torch; from safetensors.torch import save_file; "
    'sd = torch.load(sys.argv[1], map_location="cpu", weights_only=True); '
    "save_file({k: v.contiguous() for k, v in sd.items()}, sys.argv[2])"
)
_CONVERT_JIT = (
    "import sys, torch; from safetensors.torch import save_file; "
    'm = torch.jit.load(sys.argv[1], map_location="cpu"); '
    "save_file({k: v.contiguous() for k, v in m.state_dict().items()}, sys.argv[2])"
)


def _convert_hint(path: Path, jit: bool) -> str:
    """The command converting ``path`` to ``model.safetensors`` beside it: a fixed program, the paths
    as shell-quoted arguments, so no file name can become code when the line is pasted."""
    src, dst = str(path), str(path.with_name("model.safetensors"))
    if not (src.isprintable() and dst.isprintable()):
        return "rename it to a plain file name first; import-model then prints the conversion command"
    program = _CONVERT_JIT if jit else _CONVERT
    return f"python -c {shlex.quote(program)} {shlex.quote(src)} {shlex.quote(dst)}"


@dataclass
class ImportOptions:
    """What the user adds to (or overrides in) the source's own description."""

    name: str | None = None
    tile_um: float | None = None
    mpp: float | None = None
    colors: dict[str, str] = field(default_factory=dict)
    gradcam_layer: str | None = None
    high_risk: list[str] | None = None
    macenko: bool = False


def _read_config(src: Path) -> dict[str, Any]:
    path = src / "config.json"
    if not path.is_file():
        raise BundleError(f"{src}: no config.json (expected a timm/Hugging Face or WSInfer model folder)")
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise BundleError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(cfg, dict):
        raise BundleError(f"{path}: top level must be a JSON object")
    return cfg


def detect_format(cfg: dict[str, Any]) -> str:
    """'wsinfer' or 'timm' from the keys a config carries."""
    if "spec_version" in cfg or "patch_size_pixels" in cfg or "spacing_um_px" in cfg:
        return "wsinfer"
    if "architecture" in cfg and ("pretrained_cfg" in cfg or "num_classes" in cfg):
        return "timm"
    raise BundleError(
        "config.json is neither a timm/Hugging Face nor a WSInfer model config "
        "(no architecture + pretrained_cfg, no spec_version / patch_size_pixels)"
    )


def _weights(src: Path) -> Path:
    """The folder's safetensors weights; pickles and TorchScript are refused with how to convert them."""
    tensors = sorted(src.glob("*.safetensors"))
    preferred = [p for p in tensors if p.name == "model.safetensors"] or tensors
    if preferred:
        weights = preferred[0]
        if sniff_pickle(weights):
            raise BundleError(f"{weights.name}: refused, it is {sniff_pickle(weights)} named .safetensors")
        why = safetensors_problem(weights)
        if why:
            raise BundleError(f"{weights.name}: not valid safetensors ({why})")
        return weights
    pickled = sorted(p for p in src.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickled:
        p = pickled[0]
        jit = "torchscript" in p.name.lower() or "jit" in p.name.lower() or _is_torchscript(p)
        kind = "TorchScript" if jit else "pickled"
        raise BundleError(
            f"{p.name!r}: {kind} weights are refused (loading them runs code from the file); "
            f"on a trusted machine, convert them with: {_convert_hint(p.resolve(), jit)}"
        )
    raise BundleError(f"{src}: no weights (.safetensors) found")


def _is_torchscript(path: Path) -> bool:
    """A TorchScript archive by its listing (compiled ``code/`` and ``constants.pkl``), nothing unpickled."""
    try:
        with zipfile.ZipFile(path) as zf:
            return any("/code/" in n or n.endswith("constants.pkl") for n in zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _finite(value: Any, what: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise BundleError(f"config.json: {what} must be a number, got {value!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise BundleError(f"config.json: {what} must be a positive number, got {value!r}")
    return v


#: The most classes a bundle may have (the manifest schema's bound).
MAX_CLASSES = 10_000


def _count(value: Any, what: str, hi: int) -> int:
    """A whole number in 1..``hi`` (a class count, a patch size), before anything is sized by it."""
    v = _finite(value, what)
    if v != int(v) or v > hi:
        raise BundleError(f"config.json: {what} must be a whole number from 1 to {hi}, got {value!r}")
    return int(v)


def _triple(value: Any, what: str) -> list[float]:
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise BundleError(f"config.json: {what} must be three numbers, got {value!r}")
    out = []
    for v in value:
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise BundleError(f"config.json: {what} must be three numbers, got {value!r}") from None
        if not math.isfinite(f):
            raise BundleError(f"config.json: {what} must be finite numbers, got {value!r}")
        out.append(f)
    return out


def _class_names(raw: Any, n: int) -> list[str]:
    if isinstance(raw, dict):  # timm: {index: name} when ids have gaps
        try:
            raw = [raw[k] for k in sorted(raw, key=lambda k: int(k))]
        except (TypeError, ValueError):
            raise BundleError("config.json: label_names must map class indices to names") from None
    names = [str(c) for c in raw] if isinstance(raw, (list, tuple)) else [f"class_{i}" for i in range(n)]
    if len(names) != n:
        raise BundleError(f"config.json: {len(names)} class names for {n} classes")
    if len(set(names)) != n:
        raise BundleError(f"config.json: duplicate class names {names}")
    return names


def _from_timm(cfg: dict[str, Any]) -> dict[str, Any]:
    pc = cfg.get("pretrained_cfg") or {}
    if not isinstance(pc, dict):
        raise BundleError("config.json: pretrained_cfg must be an object")
    n = _count(cfg.get("num_classes", pc.get("num_classes")), "num_classes", MAX_CLASSES)
    size = pc.get("input_size", [3, 224, 224])
    if not (isinstance(size, (list, tuple)) and len(size) == 3 and size[1] == size[2]):
        raise BundleError(f"config.json: pretrained_cfg.input_size must be [3, S, S], got {size!r}")
    raw_args = cfg.get("model_args") or {}
    if not isinstance(raw_args, dict):
        raise BundleError(f"config.json: model_args must be an object, got {type(raw_args).__name__}")
    args = {
        k: v
        for k, v in raw_args.items()
        if k not in ("num_classes", "pretrained", "pretrained_cfg", "pretrained_cfg_overlay")
    }
    problems = model_args_problems(args)  # typed and bounded before timm builds anything from them
    if problems:
        raise BundleError(f"config.json: {problems[0]}")
    return {
        "architecture": str(cfg["architecture"]),
        "num_classes": n,
        "input_size": _count(size[1], "pretrained_cfg.input_size", 65536),
        "classes": _class_names(cfg.get("label_names"), n),
        "mean": _triple(pc.get("mean", (0.485, 0.456, 0.406)), "pretrained_cfg.mean"),
        "std": _triple(pc.get("std", (0.229, 0.224, 0.225)), "pretrained_cfg.std"),
        "model_args": args,
        "tile_um": None,
        "mpp": None,
        "format": "timm/Hugging Face",
    }


def _from_wsinfer(cfg: dict[str, Any]) -> dict[str, Any]:
    for key in ("architecture", "num_classes", "patch_size_pixels", "spacing_um_px"):
        if key not in cfg:
            raise BundleError(f"config.json: WSInfer config lacks {key!r}")
    n = _count(cfg["num_classes"], "num_classes", MAX_CLASSES)
    patch = _count(cfg["patch_size_pixels"], "patch_size_pixels", 65536)
    spacing = _finite(cfg["spacing_um_px"], "spacing_um_px")
    size, mean, std = patch, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    for t in cfg.get("transform") or []:
        if not isinstance(t, dict):
            continue
        a = t.get("arguments") or {}
        if t.get("name") == "Resize":
            s = a.get("size")
            s = s[0] if isinstance(s, (list, tuple)) and s else s
            size = _count(s, "transform Resize size", 65536)
        elif t.get("name") == "Normalize":
            mean, std = (
                _triple(a.get("mean"), "transform Normalize mean"),
                _triple(a.get("std"), "transform Normalize std"),
            )
    return {
        "architecture": str(cfg["architecture"]),
        "num_classes": n,
        "input_size": size,
        "classes": _class_names(cfg.get("class_names"), n),
        "mean": mean,
        "std": std,
        "model_args": {},
        "tile_um": patch * spacing,
        "mpp": spacing,
        "format": f"WSInfer {cfg.get('spec_version', '')}".strip(),
    }


def _tumour_like(name: str) -> bool:
    """'tumor', 'Tumour epithelium', 'carcinoma' yes; 'notumor', 'non-tumour', 'benign' no."""
    low = name.lower()
    return any(w in low for w in TUMOUR_WORDS) and not re.match(r"^(non|not|no)[-_ ]?", low)


def _default_layer(architecture: str, model_args: dict[str, Any], num_classes: int) -> str:
    """The last feature stage timm reports for the architecture (a good Grad-CAM target)."""
    import timm  # heavy

    try:
        m = timm.create_model(architecture, pretrained=False, num_classes=num_classes, **model_args)
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        raise BundleError(f"architecture {architecture!r}: timm cannot build it ({exc})") from None
    info = getattr(m, "feature_info", None) or [{}]
    module = info[-1].get("module") if isinstance(info[-1], dict) else None
    if not module:
        raise BundleError(f"architecture {architecture!r}: no feature stage to use for Grad-CAM; give --gradcam-layer")
    return str(module)


def import_model(src: str | Path, out: str | Path, opts: ImportOptions | None = None) -> Bundle:
    """Write a validated bundle at ``out`` from the model folder ``src``; BundleError says what is missing."""
    opts = opts or ImportOptions()
    src = Path(src).expanduser()
    out = Path(out).expanduser()
    if not src.is_dir():
        raise BundleError(f"{src}: not a model folder")
    if out.exists() and any(out.iterdir()):
        raise BundleError(f"{out} exists and is not empty; choose a new folder for the bundle")
    cfg = _read_config(src)
    fmt = detect_format(cfg)
    spec = _from_wsinfer(cfg) if fmt == "wsinfer" else _from_timm(cfg)
    weights = _weights(src)
    mpp = opts.mpp or spec["mpp"] or DEFAULT_MPP
    tile_um = opts.tile_um or spec["tile_um"] or spec["input_size"] * mpp
    for what, v in (("--tile-um", tile_um), ("--mpp", mpp)):
        _finite(v, what)
    classes = spec["classes"]
    unknown = sorted(set(opts.colors) - set(classes))
    if unknown:
        raise BundleError(f"--color names unknown classes {unknown} (classes: {classes})")
    high = opts.high_risk if opts.high_risk is not None else [c for c in classes if _tumour_like(c)]
    bad = sorted(set(high) - set(classes))
    if bad:
        raise BundleError(f"--high-risk names unknown classes {bad} (classes: {classes})")
    layer = opts.gradcam_layer or _default_layer(spec["architecture"], spec["model_args"], spec["num_classes"])
    macenko = MacenkoNormalizer.from_reference_file().to_dict() if opts.macenko else None
    manifest: dict[str, Any] = {
        "name": opts.name or src.name,
        "version": "imported",
        "created": now_iso(),
        "description": f"{spec['architecture']} imported from a {spec['format']} model folder ({src.name})",
        "files": {},
        "model": {
            "architecture": spec["architecture"],
            "weights": "model.safetensors",
            "num_classes": spec["num_classes"],
            "classes": [
                {"name": c, "color": opts.colors.get(c, PALETTE[i % len(PALETTE)])} for i, c in enumerate(classes)
            ],
            "high_risk_classes": high,
            "input_size": spec["input_size"],
            "tile_um": float(tile_um),
            "mpp": float(mpp),
            "normalization": {"macenko": macenko, "mean": spec["mean"], "std": spec["std"]},
            "gradcam_target_layer": layer,
            **({"model_args": spec["model_args"]} if spec["model_args"] else {}),
        },
        "signature": None,
        "provenance": {
            "imported_from": {
                "format": spec["format"],
                "folder": str(src),
                "config_sha256": sha256_file(src / "config.json"),
                "weights": weights.name,
                "weights_sha256": sha256_file(weights),
            }
        },
    }
    with staged_bundle(out) as tmp:
        shutil.copyfile(weights, tmp / "model.safetensors")
        (tmp / "config.json.source").write_bytes((src / "config.json").read_bytes())
        manifest["files"] = {
            "model.safetensors": sha256_file(tmp / "model.safetensors"),
            "config.json.source": sha256_file(tmp / "config.json.source"),
        }
        write_bundle(tmp, manifest)
        problems = validate_bundle(tmp) or runtime_problems(Bundle.load(tmp))
        if problems:
            raise BundleError(f"the imported bundle does not run: {problems[0]}")
    return Bundle.load(out)
