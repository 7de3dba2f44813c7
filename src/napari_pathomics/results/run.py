"""What every per-slide run on the tile lattice shares: iteration, progress, flushing to its cache.

The engine's ``InferenceRun`` and the nuclei ``NucleiRun`` both fill a ``LatticeResults`` tile
by tile and are consumed alike by the napari worker, the CLI's progress bar and tests: an
iterator of updates, a first one replaying the cached tiles, ``close`` to stop early, and the
results so far flushed to the cache every few seconds and at the end, so a rerun resumes. A
subclass writes ``_steps`` (its work, as a generator of updates) and calls ``flush_if_due``
after each step and ``flush`` in its ``finally``.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Generic, TypeVar

from .cache import CacheWriter
from .lattice import LatticeResults

__all__ = ["LatticeRun", "Progress", "FLUSH_SHARE"]

L = TypeVar("L", bound=LatticeResults)
U = TypeVar("U")

#: The most of a run's time spent writing its cache: a flush waits at least 1/FLUSH_SHARE × its last cost.
FLUSH_SHARE = 0.05


class Progress:
    """What an update says about the whole run (its dataclass declares ``done`` and ``total``)."""

    done: int  # tiles with a final status so far (all runs)
    total: int  # tiles in the grid

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0


class LatticeRun(Iterator[U], Generic[L, U]):
    """One slide's run: iterate it for updates; ``results`` holds what is done, ``cache_file`` where it goes."""

    results: L

    def __init__(self, kind: str, flush_seconds: float, cache_file: Path | None = None) -> None:
        self.t_start = time.perf_counter()
        self.flush_seconds = float(flush_seconds)
        self._cache = CacheWriter(cache_file, kind)
        self._gen: Generator[U, None, None] | None = None
        self._last_flush = time.perf_counter()
        self._flush_cost = 0.0

    # ---- cache ----------------------------------------------------------------------------
    @property
    def cache_file(self) -> Path | None:
        """The cache entry the results go to (None: not cached, or the cache could not be written)."""
        return self._cache.path

    @cache_file.setter
    def cache_file(self, path: Path | None) -> None:
        self._cache.path = path

    @property
    def cache_warning(self) -> str | None:
        """Why this run is not cached after all (a full or read-only cache folder), once it happened."""
        return self._cache.warning

    def flush(self) -> None:
        """Write the results so far to the cache atomically (no-op without a cache)."""
        self._cache.write(self.results)

    def start_flush_clock(self) -> None:
        self._last_flush = time.perf_counter()

    def flush_if_due(self) -> None:
        """Flush every ``flush_seconds``, but never spend more than ``FLUSH_SHARE`` of the run writing."""
        if time.perf_counter() - self._last_flush >= max(self.flush_seconds, self._flush_cost / FLUSH_SHARE):
            t = time.perf_counter()
            self.flush()
            self._flush_cost = time.perf_counter() - t
            self._last_flush = time.perf_counter()

    # ---- iteration ------------------------------------------------------------------------
    def _steps(self) -> Generator[U, None, None]:
        raise NotImplementedError

    def __next__(self) -> U:
        if self._gen is None:
            self._gen = self._steps()
        return next(self._gen)

    def close(self) -> None:
        """Stop early (a consumer that breaks off): the results so far are flushed to the cache."""
        if self._gen is not None:
            self._gen.close()

    def run_all(self) -> L:
        """Run to the end (or until cancelled) and return the results."""
        for _ in self:
            pass
        return self.results

    def elapsed(self) -> float:
        """Seconds since the run started."""
        return time.perf_counter() - self.t_start
