"""A full or read-only results cache does not stop inference: the run goes on uncached, with a warning.

The disk-full case patches the one OS call every cache write starts with (``tempfile.mkstemp``
in the cache folder raises ENOSPC); the read-only case uses a real ``chmod`` and is skipped where
it has no effect (running as root).
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path

import pytest

from _bundles import tiny_bundle
from _slides import small_slide
from napari_pathomics.bundle import Bundle
from napari_pathomics.cli import main as cli_main
from napari_pathomics.inference.engine import Engine
from napari_pathomics.wsi.slide import open_slide
from napari_pathomics.wsi.tiling import plan_for_bundle


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("ro")
    return {"bundle": tiny_bundle(root / "bundle").path, "slide": small_slide(root / "case.svs")}


def _disk_full_under(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    real, root = tempfile.mkstemp, folder.resolve()

    def mkstemp(*a, dir=None, **kw):
        if dir is not None and Path(dir).resolve().is_relative_to(root):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*a, dir=dir, **kw)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


def _infer_uncached(setup, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    with pytest.warns(RuntimeWarning, match=r"results cache .* is not writable .*not cached") as rec:
        code = cli_main(
            [
                "infer",
                str(setup["slide"]),
                "--bundle",
                str(setup["bundle"]),
                "--out",
                str(out),
                "--device",
                "cpu",
                "--quiet",
            ]
        )
    err = capsys.readouterr()
    assert code == 0, err.err
    assert len([w for w in rec if "results cache" in str(w.message)]) == 1  # said once, not per batch
    assert "Traceback" not in err.err and not err.err.strip(), err.err
    assert (out / "results.npz").is_file() and "classified" in err.out and "0 failed" in err.out


def test_a_full_cache_disk_runs_uncached_with_a_warning(setup, tmp_path, monkeypatch, capsys) -> None:
    cache = Path(os.environ["PATHOMICS_CACHE_DIR"])
    cache.mkdir(parents=True, exist_ok=True)
    _disk_full_under(monkeypatch, cache)
    _infer_uncached(setup, tmp_path, capsys)
    assert not list(cache.rglob("*.npz"))
    # the API says so too: a RuntimeWarning and the run's cache_warning, the results complete
    engine = Engine(Bundle.load(setup["bundle"]), device="cpu")
    with open_slide(setup["slide"]) as slide:
        run = engine.run(slide, plan_for_bundle(slide, engine.bundle))
        with pytest.warns(RuntimeWarning, match="not writable"):
            for _ in run:
                pass
    assert run.results.complete and run.cache_warning and "No space left" in run.cache_warning


def test_a_read_only_cache_runs_uncached_with_a_warning(setup, tmp_path, monkeypatch, capsys) -> None:
    cache = tmp_path / "ro-cache"
    (cache / "results").mkdir(parents=True)
    (cache / "fingerprints").mkdir()
    monkeypatch.setenv("PATHOMICS_CACHE_DIR", str(cache))
    for d in (cache / "results", cache / "fingerprints", cache):
        d.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        if os.access(cache / "results", os.W_OK):
            pytest.skip("chmod does not make folders read-only here (running as root)")
        _infer_uncached(setup, tmp_path, capsys)
    finally:
        for d in (cache, cache / "results", cache / "fingerprints"):
            d.chmod(stat.S_IRWXU)
