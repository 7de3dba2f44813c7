"""Small real bundles for the tests (no mocks): seeded random weights, written by ``write_bundle``."""

from __future__ import annotations

from pathlib import Path

from napari_pathomics.bundle import Bundle, write_bundle
from napari_pathomics.inference.backbones import keep_triton_out
from napari_pathomics.inference.stain import MacenkoNormalizer

CLASSES = ["ADI", "BACK", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM"]
COLORS = ["#ffd27f", "#ffffff", "#a0522d", "#1f3fbf", "#87ceeb", "#b22222", "#2e8b57", "#ff69b4", "#800080"]


def make_bundle(
    out: Path,
    arch: str = "resnet18",
    input_size: int = 64,
    tile_um: float = 32.0,
    mpp: float = 0.5,
    layer: str = "layer4",
    seed: int = 0,
    signature: dict | None = None,
    high_risk: tuple[str, ...] | list[str] = ("STR", "TUM"),
    name: str | None = None,
) -> Bundle:
    """A valid bundle with random (seeded) weights: 64 px tiles of 32 µm so tests stay fast."""
    keep_triton_out()  # as the product does before it builds a model: a test may already show a canvas
    import timm
    import torch

    torch.manual_seed(seed)
    model = timm.create_model(arch, pretrained=False, num_classes=len(CLASSES))
    # Spread the logits so classes are not all ~1/9 (argmax comparisons then mean something).
    with torch.no_grad():
        model.get_classifier().weight.mul_(8.0)
    man: dict = {
        "name": name if name is not None else f"test-{arch}",
        "version": "0",
        "files": {},
        "model": {
            "architecture": arch,
            "weights": "model.safetensors",
            "num_classes": len(CLASSES),
            "classes": [{"name": c, "color": col} for c, col in zip(CLASSES, COLORS)],
            "high_risk_classes": list(high_risk),
            "input_size": input_size,
            "tile_um": tile_um,
            "mpp": mpp,
            "normalization": {
                "macenko": MacenkoNormalizer.from_reference_file().to_dict(),
                "mean": [0.70, 0.55, 0.70],
                "std": [0.15, 0.15, 0.12],
            },
            "gradcam_target_layer": layer,
        },
    }
    extra = None
    if signature is not None:
        man["signature"] = "signature.json"
        extra = {"signature.json": signature}
    return Bundle.load(write_bundle(out, man, model.state_dict(), extra_files=extra))


def tiny_bundle(out: Path, seed: int = 0, signature: dict | None = None, input_size: int = 64) -> Bundle:
    """timm ``test_resnet`` with seeded random weights, 112 µm tiles at 0.5 µm/px (the cohort lattice)."""
    return make_bundle(
        out,
        arch="test_resnet",
        input_size=input_size,
        tile_um=112.0,
        mpp=0.5,
        seed=seed,
        signature=signature,
        high_risk=["STR", "DEB"],
        name="tiny-test-resnet",
    )


def nuclear_signature(nuclei_model: dict | None = None, seed: int = 1) -> dict:
    """A signature of nuclear density only (fitted on a seeded table, ~2 s): scoring it segments nuclei.

    ``nuclei_model`` is recorded in its feature spec as the nuclei method its features came from.
    """
    import numpy as np
    import pandas as pd

    from napari_pathomics.signature import FeatureSpec, SignatureFitter

    rng = np.random.default_rng(seed)
    n = 80
    dens = rng.normal(3000, 800, n)
    t = rng.exponential(30 * np.exp(-(dens - 3000) / 800))
    df = pd.DataFrame({"time": np.minimum(t, 60.0), "event": (t <= 60.0).astype(int)})
    for stat, f in (("mean", 1.0), ("q10", 0.6), ("q50", 1.0), ("q90", 1.4)):
        df[f"nuc_{stat}_density_mm2"] = dens * f + rng.normal(0, 60, n)
    spec = FeatureSpec([], tme_stats=[], nuclear=["density_mm2"], nuclei_model=nuclei_model)
    fitter = SignatureFitter(n_permutations=10, cross_validate=False)
    return fitter.fit(df, "time", "event", list(df.columns[2:]), feature_spec=spec, name="nuclear").to_json()
