"""The training embedding pass: a slide's ROI ∩ tissue tiles → backbone features + probabilities.

It is an engine run that also keeps each tile's pooled backbone features (timm ``pre_logits``),
so training sees tiles planned, read, background-filtered and preprocessed exactly as inference
does. Its cache is keyed by slide fingerprint × backbone × grid, so a re-run of ``train-signature``
with other horizons or seeds, or on a bundle it derived (same backbone, new head), costs no
inference.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..bundle import Bundle
from ..errors import CohortError
from ..results import DONE, FAILED, TileResults
from ..results.cache import digest_key
from ..wsi.annotations import read_geojson
from ..wsi.slide import open_slide
from .analyze import analyze_slide
from .engine import Engine

__all__ = ["SlideEmbeddings", "backbone_key", "extract_slide"]


def backbone_key(bundle: Bundle) -> str:
    """Identity of what produces the embeddings: weights, architecture, preprocessing, tiling."""
    m = bundle.manifest["model"]
    doc = [
        bundle.file_hashes.get(m["weights"]),
        m["architecture"],
        m["input_size"],
        m["tile_um"],
        m["mpp"],
        m["normalization"],
    ]
    return digest_key(doc)[:16]


@dataclass
class SlideEmbeddings:
    """The classified tiles of one slide with their embeddings (a view of a ``TileResults``)."""

    results: TileResults

    @property
    def _done(self) -> np.ndarray:
        return self.results.status == DONE

    @property
    def probs(self) -> np.ndarray:  # (N, C) float32
        return self.results.probs[self._done]

    @property
    def emb(self) -> np.ndarray:  # (N, D) float32
        assert self.results.emb is not None
        return self.results.emb[self._done]

    @property
    def class_names(self) -> list[str]:
        return list(self.results.class_names)

    @property
    def n_grid(self) -> int:  # tiles planned (classified + background + failed)
        return len(self.results)

    @property
    def n_failed(self) -> int:
        return int(np.count_nonzero(self.results.status == FAILED))


def extract_slide(
    engine: Engine,
    slide_path: str | Path,
    roi_path: str | Path | None = None,
    cache_dir: str | Path | None = None,
    no_tissue: bool = False,
    min_tissue: float | None = None,
) -> SlideEmbeddings:
    """Embeddings and probabilities of a slide's ROI ∩ tissue tiles (cached when ``cache_dir``).

    A slide without a tile in its ROIs ∩ tissue is a TilingError, as in every other command.
    """
    with open_slide(slide_path) as slide:
        rois = read_geojson(roi_path, bounds=slide.dimensions).annotations if roi_path else None
        res = analyze_slide(
            slide,
            engine,
            rois,
            tissue=False if no_tissue else None,
            min_tissue=min_tissue,
            cache_dir=cache_dir,
            use_cache=cache_dir is not None,
            embeddings=True,
            cache_id=f"emb{backbone_key(engine.bundle)}",
            emb_dtype="float32",
        ).run_all()
    if not np.any(res.status == DONE):
        raise CohortError(f"{Path(slide_path).name}: every tile is background or failed to decode")
    return SlideEmbeddings(res)
