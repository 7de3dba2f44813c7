"""From tile results to one patient's features and score: the one TileResults → features adapter.

Features are computed from DONE tiles only (background, failed and pending tiles carry no
probabilities) with the signature's own frozen :class:`~napari_pathomics.signature.FeatureSpec`,
then scored with :meth:`Signature.score`. ``score``, the Score dock, ``score-cohort``'s
``patients.csv``, the combined (clinical) score and the Correct panel all go through
:func:`slide_tiles` and :func:`score_tiles`, so they give the same number for the same tiles.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np

from ..bundle import Bundle
from ..cells.methods import NucleiMethod, resolve_method, same_method
from ..cells.run import run_nuclei
from ..errors import CancelledError, SignatureError
from ..inference.checks import check_values
from ..results import DONE, TileResults
from ..signature import FeatureSpec, Signature, SignatureScore, SlideTiles
from ..wsi.slide import Slide, open_slide

__all__ = [
    "load_signature",
    "slide_tiles",
    "nuclear_tile_values",
    "nuclei_method",
    "nuclei_model_warning",
    "tile_features",
    "score_tiles",
    "composition",
]

#: A nuclei method as callers give it: resolved, a name, a model folder, or None (the default).
NucleiChoice: TypeAlias = NucleiMethod | str | Path | None


def load_signature(bundle: Bundle) -> Signature:
    """The bundle's signature, checked against its model; SignatureError says why it cannot score."""
    path = bundle.file("signature")  # the bundle's one resolver: listed, inside, sha256 verified
    if path is None:
        raise SignatureError(f"bundle {bundle.name!r} has no signature: it can classify tiles but not score a patient")
    check_values(bundle, ["signature"])  # the values validate-bundle checks, and its fit to the model
    return Signature.from_json(path)


def slide_tiles(
    res: TileResults, slide_id: str = "", risk: np.ndarray | None = None, nuclear: dict[str, np.ndarray] | None = None
) -> SlideTiles:
    """The DONE tiles of one result as :class:`SlideTiles`: what every feature spec consumes.

    ``risk`` replaces the stored patch risk of those tiles (training scores them with a new head);
    ``nuclear`` holds per-tile nuclear values indexed like ``res`` (see :func:`nuclear_tile_values`).
    """
    ok = res.status == DONE
    r = res.risk[ok] if risk is None else np.asarray(risk)
    nuc = None if nuclear is None else {k: np.asarray(v, dtype=np.float64)[ok] for k, v in nuclear.items()}
    return SlideTiles(
        probs=res.probs[ok].astype(np.float64),
        class_names=tuple(res.class_names),
        risk=r.astype(np.float64),
        slide_id=slide_id,
        nuclear=nuc,
    )


def nuclear_tile_values(
    slide: Slide | str | Path,
    res: TileResults,
    spec: FeatureSpec | None = None,
    cancel: threading.Event | None = None,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    method: NucleiChoice = None,
) -> dict[str, np.ndarray] | None:
    """Per-tile nuclear values for ``res``'s tiles (None when ``spec`` needs none).

    Nuclei are segmented over exactly the result's tiles (the same lattice), through the nuclei
    cache, so the viewer, ``score``, ``score-cohort`` and ``train-signature`` get the same values.
    ``method`` is the nuclei method (``--nuclei-model``; None: the default); the cache is keyed by
    it, so two methods never share a segmentation.
    """
    if spec is not None and not spec.nuclear:
        return None
    s = slide if isinstance(slide, Slide) else open_slide(slide)
    own = s is not slide
    try:
        grid = res.grid(s)
        if len(grid) == 0:
            return {}
        run = run_nuclei(s, grid, cancel=cancel, cache_dir=cache_dir, use_cache=use_cache, method=nuclei_method(method))
        nres = run.run_all()
        if not nres.complete:
            raise CancelledError(f"nuclei of {s.path.name} cancelled ({nres.n_done}/{len(nres)} tiles)")
        return nres.aligned_to(res.cols, res.rows, res.tile_size_l0)
    finally:
        if own:
            s.close()


def nuclei_method(choice: NucleiChoice = None) -> NucleiMethod:
    """The method ``choice`` names (None: the default); a bad name or folder is a NucleiError."""
    return resolve_method(choice) if choice is None or isinstance(choice, (str, Path)) else choice


def nuclei_model_warning(spec: FeatureSpec | None, method: NucleiMethod) -> str | None:
    """A warning when ``spec``'s nuclear features were computed with another nuclei method than
    ``method`` (features shift between methods); None when they match or nothing is recorded."""
    recorded = spec.nuclei_model if spec is not None and spec.nuclear else None
    if recorded is None or same_method(recorded, method):
        return None
    now = method.describe()
    return (
        f"the signature's nuclear features were computed with nuclei model {recorded.get('name')!r}, "
        f"this score with {now['name']!r}: nuclear features shift between nuclei methods, so the risk "
        "may not compare with the signature's cohort"
    )


def tile_features(spec: FeatureSpec | None, tiles: Sequence[SlideTiles], name: str = "") -> dict[str, float]:
    """One patient's features from its slides' tiles with a frozen spec (a signature's, or TME only)."""
    if spec is None:
        raise SignatureError(f"signature {name!r} has no feature spec: it cannot be computed from tiles")
    return {k: float(v) for k, v in spec.transform(list(tiles)).items()}


def score_tiles(
    signature: Signature, tiles: Sequence[SlideTiles], clinical: Mapping[str, Any] | None = None
) -> tuple[dict[str, float], SignatureScore]:
    """One patient's features (the signature's frozen spec) and score, from its slides' tiles.

    The one call from tiles to a score: the Score dock, ``score``, ``score-cohort``'s
    ``patients.csv`` and the Correct panel's before/after all make it. ``clinical`` holds the raw
    covariate values of a signature with clinical covariates.
    """
    features = tile_features(signature.feature_spec, tiles, signature.name)
    return features, signature.score(features, clinical)


def composition(probs: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    """Mean class probability over tiles (the tissue composition), by class name."""
    if probs.shape[0] == 0:
        return {}
    m = probs.astype(np.float64).mean(axis=0)
    return {n: float(v) for n, v in zip(names, m)}
