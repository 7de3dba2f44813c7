"""A changed slide is never scored from stale results (issue 10).

The cache key once hashed only the file size and its first and last MiB: after 400 KB in the
middle of a slide were overwritten, ``infer`` said "all from cache", ``score`` showed the new
sha256 beside the old numbers and ``score-cohort`` skipped the slide as complete. Here a real
slide is scored, ~400 KB of its level-0 tile data overwritten in place (same size, first and last
MiB untouched), and every path must recompute.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from _bundles import tiny_bundle
from _slides import textured_he
from napari_pathomics.cli import main as cli_main
from napari_pathomics.cohort.batch import score_cohort
from napari_pathomics.cohort.table import read_cohort
from napari_pathomics.resources import DEFAULT_BUNDLE
from napari_pathomics.scoring import score_patient
from napari_pathomics.wsi.synthetic import write_slide


def _slide(path: Path) -> Path:
    """A 2048² JPEG-tiled SVS at 0.5 µm/px (81 tiles of 112 µm), about 2.6 MB."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_slide(path, textured_he(2048, 2048, seed=4), mpp=0.5, min_size=256)


def _overwrite_middle(path: Path, n: int = 400_000) -> None:
    """Overwrite ``n`` bytes in the middle of the level-0 tile data, in place (same size)."""
    size = path.stat().st_size
    start = size // 2 - n // 2
    assert start > 1 << 20 and start + n < size - (1 << 20) or size < 3 << 20  # not in the first/last MiB
    with open(path, "r+b") as fh:
        fh.seek(start)
        fh.write(np.random.default_rng(0).integers(0, 256, n, dtype=np.uint8).tobytes())


def _infer(slide: Path, bundle: Path, out: Path, capsys) -> dict:
    assert (
        cli_main(
            [
                "infer",
                str(slide),
                "--bundle",
                str(bundle),
                "--out",
                str(out),
                "--device",
                "cpu",
                "--amp",
                "fp32",
                "--quiet",
                "--json",
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    return {**summary, "run": json.loads((out / "run.json").read_text())}


@pytest.fixture
def bundle(tmp_path: Path):
    return tiny_bundle(tmp_path / "bundle", signature=json.loads((DEFAULT_BUNDLE / "signature.json").read_text()))


def test_infer_recomputes_a_slide_changed_in_the_middle(tmp_path, bundle, capsys) -> None:
    slide = _slide(tmp_path / "copy.svs")
    first = _infer(slide, bundle.path, tmp_path / "out", capsys)
    assert first["run"]["tiles_computed"] == first["tiles"] > 0 and first["failed"] == 0
    again = _infer(slide, bundle.path, tmp_path / "out", capsys)
    assert again["run"]["tiles_computed"] == 0 and again["tiles_per_s"] is None  # the cache does work
    size = slide.stat().st_size
    _overwrite_middle(slide)
    assert slide.stat().st_size == size
    changed = _infer(slide, bundle.path, tmp_path / "out", capsys)
    assert changed["run"]["tiles_computed"] > 0, "a changed slide was served from the cache"
    assert changed["failed"] > 0  # the overwritten tiles no longer decode: new numbers, not the old ones
    assert changed["run"]["slide"]["hash"] == hashlib.sha256(slide.read_bytes()).hexdigest()
    assert changed["run"]["slide"]["hash"] != first["run"]["slide"]["hash"]


def test_score_and_score_cohort_recompute_a_changed_slide(tmp_path, bundle) -> None:
    slide = _slide(tmp_path / "slides" / "P1.svs")
    before = score_patient([slide], bundle, device="cpu", amp="fp32")
    assert not before.slides[0].from_cache
    assert score_patient([slide], bundle, device="cpu", amp="fp32").slides[0].from_cache
    table = tmp_path / "cohort.csv"
    table.write_text("patient_id,slide_path\nP1,slides/P1.svs\n")
    out = tmp_path / "out"
    kw = dict(bundle=bundle.path, workers=0, amp="fp32", progress=False)
    assert score_cohort(read_cohort(table), out, **kw)["summary"]["done"] == 1
    assert score_cohort(read_cohort(table), out, **kw)["summary"]["skipped"] == 1
    _overwrite_middle(slide)
    after = score_patient([slide], bundle, device="cpu", amp="fp32")
    s = after.slides[0]
    assert not s.from_cache and s.n_failed > 0
    assert s.sha256 == hashlib.sha256(slide.read_bytes()).hexdigest() != before.slides[0].sha256
    rec = score_cohort(read_cohort(table), out, **kw)
    assert rec["summary"]["skipped"] == 0 and rec["summary"]["done"] == 1, rec["summary"]
    assert rec["slides"][0]["counts"]["failed"] > 0
