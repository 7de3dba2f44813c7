"""Embedding extraction for signature training: a torn embedding cache is recomputed."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from _bundles import tiny_bundle
from _slides import small_slide
from napari_pathomics.inference.embed import extract_slide
from napari_pathomics.inference.engine import Engine


def test_train_signature_recomputes_over_a_torn_embedding_cache(tmp_path: Path) -> None:
    """A torn embedding cache is recomputed by ``extract_slide``, never a traceback out of train-signature."""
    engine = Engine(tiny_bundle(tmp_path / "b"), device="cpu", amp="fp32", num_threads=1)
    slide = small_slide(tmp_path / "s.svs")
    cache = tmp_path / "emb"
    first = extract_slide(engine, slide, None, cache, no_tissue=True)
    (cache_file,) = cache.glob("*.npz")
    for torn in (b"", cache_file.read_bytes()[:300]):
        cache_file.write_bytes(torn)
        again = extract_slide(engine, slide, None, cache, no_tissue=True)
        assert np.array_equal(again.emb, first.emb) and np.array_equal(again.probs, first.probs)
