"""The per-slide step: plan a slide's tiles for an engine's bundle and run the engine over them.

``pathomics infer``, ``score``, ``score-cohort``, ``train-signature``'s embedding pass and the
Analyze dock all analyse a slide through :func:`analyze_slide`, so a slide is planned by one
rule and gets the same tiles, the same cache entry and the same numbers everywhere. A plan
without a tile is a :class:`~napari_pathomics.errors.TilingError` (:func:`plan_slide`), never an
empty run reported as done.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

from ..errors import TilingError
from ..results import TileResults
from ..wsi.annotations import Annotation
from ..wsi.slide import Slide
from ..wsi.tiling import TileGeometry, TileGrid, plan_for_bundle
from ..wsi.tissue import TissueMask
from .engine import BatchUpdate, Engine, InferenceRun

__all__ = ["SlideRun", "analyze_slide", "plan_slide"]


def plan_slide(
    slide: Slide,
    bundle: TileGeometry,
    rois: Sequence[Annotation] | None = None,
    *,
    tissue: TissueMask | Literal[False] | None = None,
    min_tissue: float | None = None,
) -> TileGrid:
    """The tiles ``bundle`` runs on ``slide`` (ROIs ∩ tissue); TilingError when there are none.

    ``tissue``: None detects it, False tiles the ROIs alone, a mask is used as given (the
    viewer's edited tissue). A slide without µm/px fails here with its own clear message.
    """
    slide.mpp  # noqa: B018 - a slide without µm/px fails here, before any tissue detection
    roi_list = list(rois) if rois else None
    grid = plan_for_bundle(slide, bundle, roi_list, tissue=tissue, min_tissue=min_tissue)
    if len(grid) == 0:
        with_tissue = tissue is not False
        where = "its ROIs and tissue" if roi_list and with_tissue else ("its ROIs" if roi_list else "its tissue")
        hint = "draw or widen an ROI" + (", or lower the minimum tissue fraction" if with_tissue else "")
        raise TilingError(
            f"no {bundle.tile_um:g} µm tile of {slide.path.name} lies inside {where}: nothing to analyse ({hint})"
        )
    return grid


class SlideRun(Iterator[BatchUpdate]):
    """One slide's analysis: its tile plan, and the engine's run over it.

    The plan is made when the step is built (an empty plan has already raised); the run opens
    (hashing the slide, reading the cache) on first use, so a UI can plan in its own thread and
    run in a worker. Iterate for :class:`BatchUpdate` s, or call :meth:`run_all`.
    """

    def __init__(self, slide: Slide, engine: Engine, grid: TileGrid, **run_options: object) -> None:
        self.slide = slide
        self.engine = engine
        self.grid = grid
        self._options = run_options
        self._run: InferenceRun | None = None
        self.computed = False  # some tile was computed (not all from the cache)

    @property
    def run(self) -> InferenceRun:
        """The engine's run (opened on first use)."""
        if self._run is None:
            self._run = self.engine.run(self.slide, self.grid, **self._options)  # type: ignore[arg-type]
        return self._run

    def __next__(self) -> BatchUpdate:
        upd = next(self.run)
        self.computed = self.computed or not upd.from_cache
        return upd

    def run_all(self) -> TileResults:
        """Run to the end (or until cancelled) and return the results."""
        for _ in self:
            pass
        return self.results

    def close(self) -> None:
        """Stop early: the results so far are flushed to the cache."""
        if self._run is not None:
            self._run.close()

    @property
    def results(self) -> TileResults:
        return self.run.results

    @property
    def stats(self) -> dict[str, float]:
        return self.run.stats

    @property
    def cache_file(self) -> Path | None:
        return self.run.cache_file

    @property
    def from_cache(self) -> bool:
        """Every tile came from the cache (meaningful once the run has ended)."""
        return not self.computed

    @property
    def unreadable_mm2(self) -> float:
        """Area of the slide that could not be decoded when its tissue was detected."""
        return float(self.grid.params.get("unreadable_mm2", 0.0))


def analyze_slide(
    slide: Slide,
    engine: Engine,
    rois: Sequence[Annotation] | None = None,
    *,
    tissue: TissueMask | Literal[False] | None = None,
    min_tissue: float | None = None,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    cancel: threading.Event | None = None,
    cams: Sequence[str] = (),
    embeddings: bool = False,
    cache_id: str | None = None,
    emb_dtype: str = "float16",
) -> SlideRun:
    """Plan ``slide`` for ``engine``'s bundle (:func:`plan_slide`) and return the run over it.

    The run options are :meth:`Engine.run`'s; the grid is checked against the engine at once.
    """
    grid = plan_slide(slide, engine.bundle, rois, tissue=tissue, min_tissue=min_tissue)
    engine.check_grid(slide, grid)
    return SlideRun(
        slide,
        engine,
        grid,
        cache_dir=cache_dir,
        use_cache=use_cache,
        cancel=cancel,
        cams=tuple(cams),
        embeddings=embeddings,
        cache_id=cache_id,
        emb_dtype=emb_dtype,
    )
