"""Colours a pathologist reads maps in: distinct from H&E, shared by viewer and report, honest scales."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage.color import rgb2lab

from napari_pathomics.colormaps import (
    COLORBLIND_PALETTE,
    CONTRAST_PALETTE,
    class_palette,
    mpl_colormap,
    napari_colormap,
    ramp,
    robust_limits,
)
from napari_pathomics.colors import hex_to_rgb
from napari_pathomics.resources import DATA_DIR

TILES = Path(DATA_DIR) / "tiles" / "nct-crc-he"
BUNDLE_COLOURS = {
    "ADI": "#F2E394",
    "BACK": "#D3D3D3",
    "DEB": "#6B4226",
    "LYM": "#5B2C9F",
    "MUC": "#8EC9E8",
    "MUS": "#E88FB4",
    "NORM": "#2E9E44",
    "STR": "#F08A24",
    "TUM": "#D62728",
}


@pytest.fixture(scope="module")
def stained_lab() -> np.ndarray:
    """CIELAB of stained pixels of the vendored real H&E tiles (every class, glass left out)."""
    files = sorted(p for p in TILES.glob("*/*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".tif"))
    assert len(files) >= 20
    px = np.concatenate([np.asarray(Image.open(f).convert("RGB")).reshape(-1, 3)[::37] for f in files])
    hsv = cv2.cvtColor(px.reshape(-1, 1, 3), cv2.COLOR_RGB2HSV).reshape(-1, 3)
    stained = px[(hsv[:, 1] > 20) & (hsv[:, 2] > 40)]
    return rgb2lab(stained.reshape(-1, 1, 3) / 255.0).reshape(-1, 3)


def lab(colors: list[str]) -> np.ndarray:
    """CIELAB (D65) of '#rrggbb' colours, by scikit-image."""
    rgb = np.asarray([hex_to_rgb(c) for c in colors], dtype=np.float64).reshape(-1, 1, 3) / 255.0
    return rgb2lab(rgb).reshape(-1, 3)


def _he_like_share(colour: str, stained: np.ndarray, delta_e: float = 20.0) -> float:
    return float((np.linalg.norm(stained - lab([colour])[0], axis=1) < delta_e).mean())


@pytest.mark.parametrize("palette", [CONTRAST_PALETTE, COLORBLIND_PALETTE], ids=["contrast", "colour-blind"])
def test_class_colours_stand_apart_from_real_he(stained_lab, palette):
    shares = {name: _he_like_share(c, stained_lab) for name, c in palette.items()}
    assert max(shares.values()) < 0.01, shares


def test_the_bundle_muscle_pink_is_what_the_check_catches(stained_lab):
    assert _he_like_share(BUNDLE_COLOURS["MUS"], stained_lab) > 0.1  # invisible over eosin, as reported


def test_palettes_are_distinct_and_cover_unknown_names():
    names = ["TUM", "Stroma", "tumor", "necrosis", "weird-1", "weird-2"]
    bundle = ["#111111"] * len(names)
    contrast = class_palette(names, bundle, "contrast")
    assert contrast[0] == contrast[2] == CONTRAST_PALETTE["TUM"] and contrast[1] == CONTRAST_PALETTE["STR"]
    assert len(set(contrast[3:])) == 3 and "#111111" not in contrast
    assert class_palette(names, bundle, "bundle") == bundle
    for scheme in ("contrast", "colour-blind safe"):
        nine = class_palette(list(CONTRAST_PALETTE), [], scheme)
        pairs = [np.linalg.norm(lab([a])[0] - lab([b])[0]) for i, a in enumerate(nine) for b in nine[i + 1 :]]
        assert min(pairs) > 15, scheme


def test_viewer_and_report_maps_are_the_same_colours():
    cm = mpl_colormap("risk")
    np.testing.assert_allclose(cm(np.linspace(0, 1, len(ramp("risk")))), ramp("risk"), atol=0.01)
    nap = napari_colormap("risk", 0.3)
    controls = np.asarray(nap["controls"])
    colors = np.asarray(nap["colors"])
    assert colors[0][3] == 0 and colors[1][3] == 0 and controls[1] == pytest.approx(0.3)
    np.testing.assert_allclose(colors[-1][:3], ramp("risk")[-1][:3])


def test_robust_limits_fit_the_data_not_zero_to_one():
    rng = np.random.default_rng(0)
    ram = np.where(rng.random(5000) < 0.35, 0.0, rng.gamma(1.0, 0.002, 5000))  # RAM-like: tiny, many zeros
    lo, hi = robust_limits(ram, floor=0.0)
    assert lo == 0.0 and 0.005 < hi < 0.02
    assert robust_limits(np.array([np.nan, np.nan])) == (0.0, 1.0)
    lo, hi = robust_limits(np.full(10, 0.4))
    assert hi > lo
