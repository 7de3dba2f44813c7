"""Results carried over from another content of the slide are never served (issue 18).

Three ways old answers outlived the bytes they were computed on: tiles that failed while the
slide was being rewritten stayed "failed" after it was restored; content swapped in with the same
size and mtime (``cp -p``, ``rsync -t``) was answered from the fingerprint memo; and a forged memo's
sha256 was written into the run record as the slide's hash.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import tifffile

from _bundles import tiny_bundle
from _slides import textured_he
from napari_pathomics import provenance
from napari_pathomics.bundle import Bundle
from napari_pathomics.cli import main as cli_main
from napari_pathomics.inference.engine import Engine
from napari_pathomics.provenance import file_fingerprint
from napari_pathomics.resources import cache_dir
from napari_pathomics.wsi.slide import open_slide
from napari_pathomics.wsi.synthetic import write_slide
from napari_pathomics.wsi.tiling import plan_for_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_bundle(tmp_path_factory.mktemp("carried") / "bundle").path


def _slide(path: Path, compression: str = "jpeg") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_slide(path, textured_he(1024, 1024, seed=4), mpp=0.5, min_size=4096, compression=compression)


def _infer(slide: Path, bundle: Path, out: Path, capsys) -> dict:
    argv = ["infer", str(slide), "--bundle", str(bundle), "--out", str(out), "--device", "cpu", "--amp", "fp32"]
    assert cli_main([*argv, "--quiet", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    return {**summary, "run": json.loads((out / "run.json").read_text())}


def _same_size_mtime(path: Path, data: bytes) -> None:
    """Write ``data`` over ``path`` in place and give it back its mtime (what ``cp -p`` leaves)."""
    st = path.stat()
    assert len(data) == st.st_size
    with open(path, "r+b") as fh:
        fh.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_tiles_that_failed_mid_rewrite_are_read_again(tmp_path, bundle, capsys, recwarn) -> None:
    slide = _slide(tmp_path / "s.svs")
    good = slide.read_bytes()
    with tifffile.TiffFile(slide) as tf:
        page = tf.pages[0]
        spans = [(page.dataoffsets[i], page.databytecounts[i]) for i in (0, 1, 4, 5)]
    engine = Engine(Bundle.load(bundle), device="cpu", amp="fp32")
    with open_slide(slide) as s:
        run = engine.run(s, plan_for_bundle(s, engine.bundle, tissue=False))  # fingerprint of the good file
        with open(slide, "r+b") as fh:  # ... then the file is rewritten under the run
            for off, n in spans:
                fh.seek(off)
                fh.write(b"\x00" * n)
        for _ in run:
            pass
    failed = run.results.counts()["failed"]
    assert failed > 0
    slide.write_bytes(good)  # restored
    again = _infer(slide, bundle, tmp_path / "out", capsys)
    assert again["failed"] == 0, "tiles that failed during the rewrite were kept as failed"
    assert again["run"]["tiles_computed"] == failed


def test_content_swapped_in_with_the_same_size_and_mtime_is_recomputed(
    tmp_path, bundle, capsys, monkeypatch, recwarn
) -> None:
    monkeypatch.setattr(provenance, "MEMO_MIN_BYTES", 0)  # the memo is used for slides this small too
    slide = _slide(tmp_path / "s.svs", compression="none")  # any bytes decode: other pixels, same size
    first = _infer(slide, bundle, tmp_path / "out", capsys)
    assert list(cache_dir("fingerprints").glob("*.json")), "the memo was not written"
    data = bytearray(slide.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 600_000] = np.random.default_rng(1).integers(0, 256, 600_000, dtype=np.uint8).tobytes()
    _same_size_mtime(slide, bytes(data))
    changed = _infer(slide, bundle, tmp_path / "out", capsys)
    assert changed["run"]["slide"]["hash"] == hashlib.sha256(bytes(data)).hexdigest() != first["run"]["slide"]["hash"]
    assert changed["run"]["tiles_computed"] > 0, "other content was answered from the old results"
    assert changed["failed"] == 0


def test_a_forged_memo_is_not_believed(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(provenance, "MEMO_MIN_BYTES", 0)
    f = tmp_path / "slide.bin"
    f.write_bytes(np.random.default_rng(0).integers(0, 256, 300_000, dtype=np.uint8).tobytes())
    true = hashlib.sha256(f.read_bytes()).hexdigest()
    assert file_fingerprint(f) == true
    (memo,) = cache_dir("fingerprints").glob("*.json")
    rec = json.loads(memo.read_text())
    calls = []
    monkeypatch.setattr(provenance, "sha256_file", lambda p: calls.append(p) or true)
    assert file_fingerprint(f) == true and not calls  # an intact memo is served without hashing
    for forged in ({**rec, "sha256": "0" * 64}, {k: v for k, v in rec.items() if k != "mac"}, {**rec, "mac": "x"}):
        memo.write_text(json.dumps(forged))
        assert file_fingerprint(f) == true
    assert len(calls) == 3  # each forged memo made it hash the file again


def test_nuclei_tiles_that_failed_mid_rewrite_are_read_again(tmp_path) -> None:
    from napari_pathomics.cells.run import run_nuclei

    slide = _slide(tmp_path / "n.svs")
    good = slide.read_bytes()
    with tifffile.TiffFile(slide) as tf:
        page = tf.pages[0]
        spans = [(page.dataoffsets[i], page.databytecounts[i]) for i in (0, 1, 4, 5)]
    bundle_ = Bundle.load(tiny_bundle(tmp_path / "b").path)
    with open_slide(slide) as s:
        grid = plan_for_bundle(s, bundle_, tissue=False)
        run = run_nuclei(s, grid, method="otsu")  # fingerprint of the good file ...
        with open(slide, "r+b") as fh:  # ... then the file is rewritten under the run
            for off, n in spans:
                fh.seek(off)
                fh.write(b"\x00" * n)
        run.run_all()
    failed = run.results.counts()["failed"]
    assert failed > 0
    slide.write_bytes(good)  # restored
    with open_slide(slide) as s:
        again = run_nuclei(s, grid, method="otsu")
        assert again.results.counts()["failed"] == 0 and again.results.pending().size == failed  # read again
        again.run_all()
    assert again.results.counts()["failed"] == 0, "nuclei tiles that failed during the rewrite were kept as failed"
