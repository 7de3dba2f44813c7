"""Cohort scale: semi-synthetic virtual patients, cohort tables, batch scoring on dask, and
training a seed-study signature from slides and outcomes. Qt-free; the CLI is ``cli/cohort_cmds``.

Submodules are imported lazily (torch and dask are heavy); import what you use, e.g.
``from napari_pathomics.cohort.generator import make_cohort``.
"""

from __future__ import annotations

__all__ = ["generator", "table", "batch", "train_signature", "tiles"]
