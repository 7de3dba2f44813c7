"""Paths of the data and bundles that ship inside the package (nothing is downloaded)."""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

from platformdirs import user_cache_path, user_log_path

_ROOT = Path(str(files(__package__)))

DATA_DIR: Path = _ROOT / "data"
SAMPLE_SLIDE: Path = DATA_DIR / "slides" / "CMU-1-Small-Region.svs"
#: What the sample is (data/slides/SOURCE.txt): the demo states it, so the score is checked against it.
SAMPLE_CASE_TYPE = "skin (e.g. melanoma, carcinoma)"
NCT_TILES_DIR: Path = DATA_DIR / "tiles" / "nct-crc-he"
STAIN_REFERENCE: Path = DATA_DIR / "stain" / "Ref.png"
TCGA_COHORT_CSV: Path = DATA_DIR / "cohorts" / "tcga-crc-tme" / "TCGA_MEASUREMENTS.csv"
#: Real H&E images vendored from PyPI wheels (BSD-3), with the µm/px their SOURCE.txt gives.
NUCLEI_IMAGES: dict[str, tuple[Path, float]] = {
    "tiatoolbox-target": (DATA_DIR / "nuclei" / "tiatoolbox" / "target_image.png", 0.25),
    "stardist-histo": (DATA_DIR / "nuclei" / "stardist" / "histo.jpg", 0.5),
}
BUNDLES_DIR: Path = _ROOT / "bundles"
DEFAULT_BUNDLE: Path = BUNDLES_DIR / "default"
#: Learned nuclei model folders shipped in the package, by the name ``--nuclei-model`` takes.
NUCLEI_MODELS_DIR: Path = _ROOT / "models"
NUCLEI_MODELS: dict[str, Path] = {"monuseg": NUCLEI_MODELS_DIR / "nuclei-monuseg"}


def cache_dir(kind: str) -> Path:
    """The user cache folder for ``kind`` (results, bundles, embeddings): ``$PATHOMICS_CACHE_DIR/kind``
    when set (tests, shared workstations), else the platform's user cache folder."""
    env = os.environ.get("PATHOMICS_CACHE_DIR")
    if env:
        return Path(env).expanduser() / kind
    return user_cache_path("napari-pathomics") / kind


def log_dir() -> Path:
    """Where the CLI writes tracebacks of unexpected failures: ``$PATHOMICS_LOG_DIR`` or the user log folder."""
    env = os.environ.get("PATHOMICS_LOG_DIR")
    return Path(env).expanduser() if env else user_log_path("napari-pathomics")
