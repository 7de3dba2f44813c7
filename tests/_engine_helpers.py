"""Small real bundles and slides for the engine / CAM / results tests (no mocks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_pathomics.bundle import Bundle, write_bundle
from napari_pathomics.inference.stain import MacenkoNormalizer
from napari_pathomics.wsi.synthetic import synthetic_he, write_slide

CLASSES = ["ADI", "BACK", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM"]
COLORS = ["#ffd27f", "#ffffff", "#a0522d", "#1f3fbf", "#87ceeb", "#b22222", "#2e8b57", "#ff69b4", "#800080"]


def make_bundle(out: Path, arch: str = "resnet18", input_size: int = 64, tile_um: float = 32.0, mpp: float = 0.5,
                layer: str = "layer4", seed: int = 0, signature: dict | None = None) -> Bundle:
    """A valid bundle with random (seeded) weights: 64 px tiles of 32 µm so tests stay fast."""
    import timm
    import torch

    torch.manual_seed(seed)
    model = timm.create_model(arch, pretrained=False, num_classes=len(CLASSES))
    # Spread the logits so classes are not all ~1/9 (argmax comparisons then mean something).
    with torch.no_grad():
        model.get_classifier().weight.mul_(8.0)
    man: dict = {
        "name": f"test-{arch}", "version": "0", "files": {},
        "model": {
            "architecture": arch, "weights": "model.safetensors", "num_classes": len(CLASSES),
            "classes": [{"name": c, "color": col} for c, col in zip(CLASSES, COLORS)],
            "high_risk_classes": ["STR", "TUM"], "input_size": input_size, "tile_um": tile_um, "mpp": mpp,
            "normalization": {"macenko": MacenkoNormalizer.from_reference_file().to_dict(),
                              "mean": [0.70, 0.55, 0.70], "std": [0.15, 0.15, 0.12]},
            "gradcam_target_layer": layer,
        },
    }
    extra = None
    if signature is not None:
        man["signature"] = "signature.json"
        extra = {"signature.json": signature}
    return Bundle.load(write_bundle(out, man, model.state_dict(), extra_files=extra))


def textured_he(h: int, w: int, seed: int = 0) -> np.ndarray:
    """H&E-like texture everywhere (varied hue so Macenko can estimate most tiles)."""
    img = synthetic_he(h, w, seed=seed, tissue_fraction=1.0)
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, 18, size=(h // 8, w // 8, 3)).astype(np.float32)
    import cv2

    noise = cv2.resize(noise, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)


def small_slide(path: Path, h: int = 1024, w: int = 1536, seed: int = 1, mpp: float = 0.25) -> Path:
    """A real JPEG-tiled SVS pyramid (1024 × 1536 at 0.25 µm/px → 96 tiles of 32 µm)."""
    return write_slide(path, synthetic_he(h, w, seed=seed), mpp=mpp)
