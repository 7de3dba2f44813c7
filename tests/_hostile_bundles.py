"""A corpus of hostile bundles, generated from one valid tiny bundle (nothing shipped).

Each entry is broken in exactly one way that once escaped as a traceback (``AttributeError`` from
a Grad-CAM layer naming a parameter, ``SafetensorError`` from a corrupt risk head, ``IndexError``
from an empty bias or empty ``data_offsets``, "Out of range float values are not JSON compliant"
from NaN weights, ``RuntimeError`` from an encrypted zip, a 4 GiB allocation from
``input_size: 4096``...). Every one must now be a one-line ``BundleError``.
"""

from __future__ import annotations

import json
import shutil
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save

from _bundles import make_bundle
from napari_pathomics.provenance import sha256_file
from napari_pathomics.resources import DEFAULT_BUNDLE

RISK_HEAD = "risk_head.safetensors"


def base_bundle(folder: Path) -> Path:
    """The valid bundle every hostile one is derived from (timm ``test_resnet``, 96 features), with the
    shipped signature so that scoring (``pathomics score``, the Score dock) reaches the hostile part too."""
    return make_bundle(
        folder,
        arch="test_resnet",
        input_size=64,
        tile_um=32.0,
        mpp=0.5,
        layer="layer4",
        name="hostile-base",
        signature=json.loads((DEFAULT_BUNDLE / "signature.json").read_text()),
    ).path


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def _save_manifest(folder: Path, man: dict) -> None:
    """Write the manifest with every listed file's current sha256 (the hostility is not a hash mismatch)."""
    for name in man.get("files", {}):
        if (folder / name).is_file():
            man["files"][name] = sha256_file(folder / name)
    (folder / "manifest.json").write_text(json.dumps(man, indent=2))


def _edit(fn: Callable[[dict], None]) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        man = _manifest(folder)
        fn(man)
        _save_manifest(folder, man)

    return apply


def _risk_head(tensors: dict[str, np.ndarray] | bytes, spec: dict | None = None) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        data = tensors if isinstance(tensors, bytes) else save(tensors)
        (folder / RISK_HEAD).write_bytes(data)
        man = _manifest(folder)
        man["files"][RISK_HEAD] = ""
        man["risk_head"] = spec or {"weights": RISK_HEAD, "input": "pre_logits", "dim": 96}
        _save_manifest(folder, man)

    return apply


def _good_head(**override: np.ndarray) -> dict[str, np.ndarray]:
    d = 96
    t = {"weight": np.full(d, 0.01), "bias": np.array([0.0]), "mean": np.zeros(d), "scale": np.ones(d)}
    t.update(override)
    return t


def _header_entry(field: str, value) -> Callable[[Path], None]:
    """Rewrite one field of the first tensor entry in the weights' safetensors header."""

    def apply(folder: Path) -> None:
        w = folder / "model.safetensors"
        raw = w.read_bytes()
        (n,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8 : 8 + n])
        first = next(k for k in header if k != "__metadata__")
        header[first][field] = value
        text = json.dumps(header).encode()
        w.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n :])
        _save_manifest(folder, _manifest(folder))

    return apply


def _nan_weight(folder: Path) -> None:
    w = folder / "model.safetensors"
    t = load_file(str(w))
    key = sorted(k for k in t if t[k].dtype.kind == "f")[0]
    t[key] = t[key].copy()
    t[key].flat[0] = np.nan
    w.write_bytes(save(t))
    _save_manifest(folder, _manifest(folder))


def _name_clinical(name: str, place: str | None = None) -> Callable[[Path], None]:
    """Point ``signature_clinical`` at a real combined signature (the shipped one) named ``name``:
    copied to ``place`` (relative to the bundle folder) when given, else used where it lies."""

    def apply(folder: Path) -> None:
        if place is not None:
            (folder / place).resolve().parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(DEFAULT_BUNDLE / "signature_clinical.json", folder / place)
        man = _manifest(folder)
        man["signature_clinical"] = name
        _save_manifest(folder, man)

    return apply


def _signature(fn: Callable[[dict], None]) -> Callable[[Path], None]:
    """Edit the base's signature.json (the manifest then lists its new sha256: only the values are hostile)."""

    def apply(folder: Path) -> None:
        sig = json.loads((folder / "signature.json").read_text())
        fn(sig)
        (folder / "signature.json").write_text(json.dumps(sig))
        _save_manifest(folder, _manifest(folder))

    return apply


def _set_stain(matrix: list[list[float]]) -> Callable[[Path], None]:
    return _edit(lambda m: m["model"]["normalization"]["macenko"].__setitem__("stain_matrix", matrix))


def _rename_covariate(sig: dict) -> None:
    sig["cox"]["covariates"][0] = "tme_mean_XYZ"
    sig["features"] = list(sig["cox"]["covariates"])


def _set_model(**kv) -> Callable[[Path], None]:
    return _edit(lambda m: m["model"].update(kv))


def _set_norm(key: str, value) -> Callable[[Path], None]:
    return _edit(lambda m: m["model"]["normalization"].__setitem__(key, value))


#: name -> (how to break a copy of the base folder, words the one-line error must contain)
FOLDER_CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "gradcam-parameter": (_set_model(gradcam_target_layer="fc.weight"), "gradcam_target_layer"),
    "gradcam-dunder": (_set_model(gradcam_target_layer="__class__"), "gradcam_target_layer"),
    "gradcam-nested-dunder": (_set_model(gradcam_target_layer="layer4.__dict__"), "gradcam_target_layer"),
    "risk-head-corrupt": (_risk_head(b"\x10\x00\x00\x00\x00\x00\x00\x00{not safetensors!!" + bytes(64)), RISK_HEAD),
    "risk-head-empty-bias": (_risk_head(_good_head(bias=np.zeros(0))), RISK_HEAD),
    "risk-head-list-name": (
        _risk_head(_good_head(), {"weights": [RISK_HEAD], "input": "pre_logits", "dim": 96}),
        "risk_head.weights",
    ),
    "risk-head-nan": (_risk_head(_good_head(weight=np.full(96, np.nan))), RISK_HEAD),
    "risk-head-wrong-width": (
        _risk_head(
            {"weight": np.ones(7), "bias": np.array([0.0]), "mean": np.zeros(7), "scale": np.ones(7)},
            {"weights": RISK_HEAD, "input": "pre_logits", "dim": 7},
        ),
        "risk head",
    ),
    "offsets-int": (_header_entry("data_offsets", 5), "data_offsets"),
    "offsets-empty": (_header_entry("data_offsets", []), "data_offsets"),
    "shape-lies": (_header_entry("shape", [10**9]), "safetensors"),
    "nan-weights": (_nan_weight, "NaN"),
    "nan-mean": (_set_norm("mean", [float("nan"), 0.5, 0.5]), "normalization"),
    "inf-std": (_set_norm("std", [float("inf"), 0.2, 0.2]), "normalization"),
    "input-size-4096": (_set_model(input_size=4096), "input_size"),
    "mpp-1e-4": (_set_model(mpp=1e-4), "mpp"),
    "tile-px-absurd": (_set_model(tile_um=9000.0, mpp=0.5), "tile_um"),
    # every file a bundle reads goes through one resolver: listed, hashed, a plain name inside it
    "clinical-absolute": (_name_clinical(str(DEFAULT_BUNDLE / "signature_clinical.json")), "signature_clinical"),
    "clinical-dotdot": (_name_clinical("../outside_clinical.json", "../outside_clinical.json"), "signature_clinical"),
    "clinical-unlisted": (_name_clinical("signature_clinical.json", "signature_clinical.json"), "signature_clinical"),
    # values a schema cannot see, refused where the run reads them (the engine) and by validate-bundle
    "stain-zeros": (_set_stain([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]), "macenko"),
    "stain-collinear": (_set_stain([[0.6, 0.6], [0.64, 0.64], [0.48, 0.48]]), "macenko"),
    "stain-not-unit": (_set_stain([[1.5, 0.6], [2.2, 2.6], [1.2, 1.4]]), "macenko"),
    "risk-head-overflow": (_risk_head(_good_head(weight=np.full(96, 1e300), mean=np.full(96, -1e300))), RISK_HEAD),
}

#: Signatures whose values cannot score: name -> (breaker, words, whether ``infer`` refuses it too).
#: ``infer`` reads only the patch-risk weights of a signature; ``score`` and validate-bundle read it all.
SIGNATURE_CASES: dict[str, tuple[Callable[[Path], None], str, bool]] = {
    "cox-nan": (_signature(lambda s: s["cox"]["coefficients"].__setitem__(0, float("nan"))), "cox.coefficients", False),
    "cox-block-short": (_signature(lambda s: s["cox"]["coefficients"].pop()), "cox.coefficients", False),
    "unknown-feature": (_signature(_rename_covariate), "unknown feature names", False),
    "hazard-strings": (
        _signature(
            lambda s: s["cox"]["baseline"].__setitem__("cumulative_hazard", ["x"] * len(s["cox"]["baseline"]["times"]))
        ),
        "cox.baseline.cumulative_hazard",
        False,
    ),
    "hazard-backwards": (_signature(lambda s: s["cox"]["baseline"]["times"].reverse()), "cox.baseline.times", False),
    "time-unit-odd": (_signature(lambda s: s.__setitem__("time_unit", "fortnights")), "time_unit", False),
    "horizons-million": (_signature(lambda s: s.__setitem__("horizons", [365.0] * 1_000_000)), "horizons", False),
    "reference-empty": (_signature(lambda s: s["reference"].__setitem__("risk_sorted", [])), "risk_sorted", False),
    "patch-weights-1e308": (
        _signature(lambda s: s["patch_risk_weights"].__setitem__("TUM", 1e308)),
        "patch_risk_weights",
        True,
    ),
}


def _zip_folder(folder: Path, dest: Path, extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(folder.iterdir()):
            zf.write(p, p.name)
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return dest


def _encrypt_flags(path: Path) -> None:
    """Set the 'encrypted' bit of every entry, in the local headers and the central directory."""
    raw = bytearray(path.read_bytes())
    for sig, flag_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        i = raw.find(sig)
        while i >= 0:
            (flags,) = struct.unpack_from("<H", raw, i + flag_at)
            struct.pack_into("<H", raw, i + flag_at, flags | 0x1)
            i = raw.find(sig, i + 4)
    path.write_bytes(bytes(raw))


def _stored_zip_with_bad_crc(folder: Path, dest: Path, entry: str = "signature.json") -> Path:
    """An uncompressed zip of ``folder`` whose ``entry`` has one data byte flipped: its CRC-32 no longer matches."""
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_STORED) as zf:
        for p in sorted(folder.iterdir()):
            zf.write(p, p.name)
    with zipfile.ZipFile(dest) as zf:
        info = zf.getinfo(entry)
    raw = bytearray(dest.read_bytes())
    (name_len, extra_len) = struct.unpack_from("<HH", raw, info.header_offset + 26)
    at = info.header_offset + 30 + name_len + extra_len + info.file_size // 2
    raw[at] ^= 0xFF
    dest.write_bytes(bytes(raw))
    return dest


#: The zip cases of the corpus (the folder cases are FOLDER_CASES).
ZIP_CASES = ("encrypted-zip", "zero-zip-1000x", "zip-bad-crc")


def make_hostile_corpus(folder: Path, only: list[str] | None = None) -> dict[str, tuple[Path, str]]:
    """name -> (hostile bundle path, words its error names); ``only`` limits it to some names."""
    folder.mkdir(parents=True, exist_ok=True)
    base = base_bundle(folder / "base")
    out: dict[str, tuple[Path, str]] = {}
    cases = {**FOLDER_CASES, **{k: (v[0], v[1]) for k, v in SIGNATURE_CASES.items()}}
    for name, (breaker, words) in cases.items():
        if only is not None and name not in only:
            continue
        dst = folder / name
        shutil.copytree(base, dst)
        breaker(dst)
        out[name] = (dst, words)
    if only is None or "encrypted-zip" in only:
        z = _zip_folder(base, folder / "encrypted.zip")
        _encrypt_flags(z)
        out["encrypted-zip"] = (z, "encrypted")
    if only is None or "zero-zip-1000x" in only:
        # a manifest and zero-filled entries just under the per-entry check's 1 MiB floor (~1000x in all):
        # only the whole-archive ratio catches them, before anything is inflated
        zeros = {f"pad/{i:03d}.bin": bytes(1024 * 1024 - 1) for i in range(48)}
        z = folder / "zeros.zip"
        with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.write(base / "manifest.json", "manifest.json")
            for entry, data in zeros.items():
                zf.writestr(entry, data)
        out["zero-zip-1000x"] = (z, "expands")
    if only is None or "zip-bad-crc" in only:
        out["zip-bad-crc"] = (_stored_zip_with_bad_crc(base, folder / "bad-crc.zip"), "damaged")
    return out
