"""Tiny real bundles and cohorts for the cohort tests (no mocks): fast enough for 2 shared cores."""

from __future__ import annotations

from pathlib import Path

from napari_pathomics.bundle import Bundle, write_bundle
from napari_pathomics.inference.stain import MacenkoNormalizer

CLASSES = ["ADI", "BACK", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM"]
COLORS = ["#ffd27f", "#ffffff", "#a0522d", "#1f3fbf", "#87ceeb", "#b22222", "#2e8b57", "#ff69b4", "#800080"]


def tiny_bundle(out: Path, seed: int = 0, signature: dict | None = None, input_size: int = 64) -> Bundle:
    """timm ``test_resnet`` with seeded random weights, 112 µm tiles at 0.5 µm/px (the cohort lattice)."""
    import timm
    import torch

    torch.manual_seed(seed)
    model = timm.create_model("test_resnet", pretrained=False, num_classes=len(CLASSES))
    with torch.no_grad():
        model.get_classifier().weight.mul_(8.0)
    man: dict = {
        "name": "tiny-test-resnet", "version": "0", "files": {},
        "model": {
            "architecture": "test_resnet", "weights": "model.safetensors", "num_classes": len(CLASSES),
            "classes": [{"name": c, "color": col} for c, col in zip(CLASSES, COLORS)],
            "high_risk_classes": ["STR", "DEB"], "input_size": input_size, "tile_um": 112.0, "mpp": 0.5,
            "normalization": {"macenko": MacenkoNormalizer.from_reference_file().to_dict(),
                              "mean": [0.70, 0.55, 0.70], "std": [0.15, 0.15, 0.12]},
            "gradcam_target_layer": "layer4",
        },
    }
    extra = None
    if signature is not None:
        man["signature"] = "signature.json"
        extra = {"signature.json": signature}
    return Bundle.load(write_bundle(out, man, model.state_dict(), extra_files=extra))
