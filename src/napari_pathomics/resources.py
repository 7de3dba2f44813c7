"""Paths of the data and bundles that ship inside the package (nothing is downloaded)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

_ROOT = Path(str(files(__package__)))

DATA_DIR: Path = _ROOT / "data"
SAMPLE_SLIDE: Path = DATA_DIR / "slides" / "CMU-1-Small-Region.svs"
NCT_TILES_DIR: Path = DATA_DIR / "tiles" / "nct-crc-he"
STAIN_REFERENCE: Path = DATA_DIR / "stain" / "Ref.png"
TCGA_COHORT_CSV: Path = DATA_DIR / "cohorts" / "tcga-crc-tme" / "TCGA_MEASUREMENTS.csv"
BUNDLES_DIR: Path = _ROOT / "bundles"
DEFAULT_BUNDLE: Path = BUNDLES_DIR / "default"
