"""Shared fixtures: real files only (the vendored CMU slide, synthetic pyramids, seeded test bundles)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from _bundles import make_bundle
from napari_pathomics.bundle import Bundle
from napari_pathomics.resources import DEFAULT_BUNDLE, SAMPLE_SLIDE
from napari_pathomics.wsi.synthetic import synthetic_he, write_slide


@pytest.fixture(autouse=True)
def _isolated_user_dirs(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep ROI autosaves and result caches of tests out of the user's folders."""
    base = tmp_path_factory.mktemp("userdirs")
    monkeypatch.setenv("PATHOMICS_DATA_DIR", str(base / "data"))
    monkeypatch.setenv("PATHOMICS_CACHE_DIR", str(base / "cache"))


@pytest.fixture
def sample_slide_path(tmp_path: Path) -> Path:
    """A private copy of the real CMU-1-Small-Region.svs (so autosaves land in tmp)."""
    dst = tmp_path / SAMPLE_SLIDE.name
    dst.write_bytes(SAMPLE_SLIDE.read_bytes())
    return dst


@pytest.fixture(scope="session")
def he_image() -> np.ndarray:
    return synthetic_he(3072, 4096, seed=3)


@pytest.fixture
def pyramid_svs(tmp_path: Path, he_image: np.ndarray) -> Path:
    """A 4096 × 3072 JPEG-tiled Aperio SVS at 0.25 µm/px with 4 stored levels + label."""
    label = np.full((120, 240, 3), 200, dtype=np.uint8)
    return write_slide(tmp_path / "synthetic.svs", he_image, mpp=0.25, fmt="svs", label=label)


@pytest.fixture(scope="session")
def resnet18_bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    """The default ``make_bundle`` (seeded resnet18, 32 µm tiles); shared read-only, tests copy it to modify."""
    return make_bundle(tmp_path_factory.mktemp("resnet18") / "b")


@pytest.fixture
def sig_bundle(tmp_path: Path) -> Bundle:
    """A fresh ``make_bundle`` carrying the default bundle's signature."""
    return make_bundle(tmp_path / "bundle", signature=json.loads((DEFAULT_BUNDLE / "signature.json").read_text()))
