"""Macenko with a jittered reference: another stain batch of the same tissue, seeded, off by default."""

from __future__ import annotations

import numpy as np

from napari_pathomics.inference.stain import estimate_stain
from napari_pathomics.resources import DATA_DIR
from napari_pathomics.training._augment import AugmentConfig, augment_tile, macenko_jitter
from napari_pathomics.wsi.images import read_rgb

TILE = DATA_DIR / "tiles" / "nct-crc-he" / "TUM" / "VAL7K_TUM-TCGA-KECNIDCQ.png"


def test_jittered_stain_vectors_turn_within_the_bound_and_are_seeded() -> None:
    img = read_rgb(TILE)
    est = estimate_stain(img)
    assert est is not None
    a = macenko_jitter(img, np.random.default_rng(1), 12.0)
    np.testing.assert_array_equal(a, macenko_jitter(img, np.random.default_rng(1), 12.0))
    assert a.shape == img.shape and a.dtype == np.uint8
    assert np.abs(a.astype(int) - img).mean() > 2  # the colours change …
    new = estimate_stain(a)
    assert new is not None
    for k in range(2):  # … by a turn of the stain vectors within the bound (re-estimated: a few degrees of slack)
        u = est.stain_matrix[:, k] / np.linalg.norm(est.stain_matrix[:, k])
        v = new.stain_matrix[:, k] / np.linalg.norm(new.stain_matrix[:, k])
        assert np.degrees(np.arccos(np.clip(u @ v, -1, 1))) < 12.0 + 5.0
    gray = np.full((64, 64, 3), 200, np.uint8)  # no stain to estimate: left as it is
    np.testing.assert_array_equal(macenko_jitter(gray, np.random.default_rng(0), 12.0), gray)


def test_off_by_default_so_the_shipped_recipe_is_unchanged() -> None:
    img = read_rgb(TILE)
    assert AugmentConfig().macenko_jitter_deg == 0
    a = augment_tile(img, 224, np.random.default_rng(3))
    b = augment_tile(img, 224, np.random.default_rng(3), AugmentConfig(macenko_jitter_deg=12.0))
    assert a.shape == b.shape and not np.array_equal(a, b)
