"""The process's bundles and engine: verified once, one model in memory, reused across patients.

The Score and Analyze docks, ``pathomics score`` and each dask worker of ``score-cohort`` get
their bundle and engine here, so a long session or a worker scoring many slides hashes the
bundle and builds the model once. Only the most recent engine is kept: a second model in
memory would be a model's worth of RSS for no gain.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from ..bundle import MANIFEST_NAME, Bundle
from ..inference.engine import Engine

__all__ = ["load_bundle", "shared_engine", "clear_engines"]

_ENGINES: dict[tuple[Any, ...], Engine] = {}
_BUNDLES: dict[str, Bundle] = {}
_LOCK = threading.Lock()


def load_bundle(path: str | Path) -> Bundle:
    """``Bundle.load`` once per process, path and manifest version (its sha256 checks are not free).

    A rewritten manifest (a new signature attached, a retrained model) is loaded afresh; the
    weights' own hash is checked again whenever a model is built from them.
    """
    p = Path(path).expanduser().resolve()
    try:
        st = (p / MANIFEST_NAME).stat() if p.is_dir() else p.stat()
        key = f"{p}|{st.st_mtime_ns}|{st.st_size}"
    except OSError:
        return Bundle.load(path)  # let the loader say what is wrong
    with _LOCK:
        b = _BUNDLES.get(key)
    if b is None:
        b = Bundle.load(path)
        with _LOCK:
            _BUNDLES[key] = b
    return b


def shared_engine(
    bundle: Bundle,
    device: str = "auto",
    batch_size: int = 32,
    amp: str = "auto",
    num_threads: int | None = None,
    **engine_kw: Any,
) -> tuple[Engine, bool]:
    """This process's engine for ``bundle`` and these settings, and whether it was reused."""
    key = (
        bundle.bundle_id,
        str(Path(bundle.path).resolve()),
        device,
        int(batch_size),
        amp,
        num_threads,
        tuple(sorted(engine_kw.items())),
    )
    with _LOCK:
        eng = _ENGINES.get(key)
        if eng is not None:
            return eng, True
        _ENGINES.clear()
        eng = _ENGINES[key] = Engine(
            bundle, device=device, batch_size=batch_size, amp=amp, num_threads=num_threads, **engine_kw
        )
        return eng, False


def clear_engines() -> None:
    """Forget the cached engine and bundles (frees the model once nothing else holds it)."""
    with _LOCK:
        _ENGINES.clear()
        _BUNDLES.clear()
