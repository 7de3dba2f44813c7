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
