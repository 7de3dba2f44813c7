"""An engine carrying a head adapted in memory: its numbers, its own cache id, its CAMs and its score."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from _slides import small_slide
from napari_pathomics.errors import InferenceError, SignatureError
from napari_pathomics.inference.engine import Engine
from napari_pathomics.inference.head import ClassHead, apply_head
from napari_pathomics.inference.subset import cams_missing, cams_run, merge_cams, tiles_in_box
from napari_pathomics.results import DONE
from napari_pathomics.scoring import score_patient
from napari_pathomics.scoring.report import write_report_html
from napari_pathomics.scoring.tiles import load_signature, score_tiles, slide_tiles
from napari_pathomics.training.adapt import base_head
from napari_pathomics.wsi.slide import open_slide
from napari_pathomics.wsi.tiling import plan_for_bundle


@pytest.fixture(scope="module")
def slide_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_slide(tmp_path_factory.mktemp("slide") / "s.svs", h=512, w=768, mpp=0.5)


CAM = ("TUM",)  # a class's Grad-CAM: the random test network's RAM is zero everywhere


def _other_head(engine: Engine) -> ClassHead:
    """The base head with its class rows shuffled and jittered: another tissue map from the same embeddings."""
    base = base_head(engine)
    rng = np.random.default_rng(3)
    order = rng.permutation(base.num_classes)
    return ClassHead(
        (base.weight[order] + rng.normal(0, 0.05, base.weight.shape)).astype(np.float32), base.bias[order].copy()
    )


def test_a_head_in_memory_gives_what_the_embeddings_say_and_caches_apart(sig_bundle, slide_path, tmp_path):
    engine = Engine(sig_bundle, device="cpu", amp="fp32")
    head = _other_head(engine)
    adapted = engine.with_class_head(head)
    assert adapted.net.module is not engine.net.module and base_head(engine).digest() != head.digest()
    assert adapted.cache_id_of(sig_bundle.bundle_id) != engine.cache_id_of(sig_bundle.bundle_id)
    with open_slide(slide_path) as slide:
        grid = plan_for_bundle(slide, sig_bundle, tissue=False)
        base = engine.run_all(slide, grid, cache_dir=tmp_path, embeddings=True)
        run = adapted.run(slide, grid, cache_dir=tmp_path)  # from the base cache: no backbone run
        for _ in run:
            pass
        derived = run.results
        fresh = adapted.run_all(slide, grid, use_cache=False)  # the network itself, carrying the head
        again = engine.run_all(slide, grid, cache_dir=tmp_path)
    done = base.status == DONE
    assert done.sum() > 10 and run.stats["model_tiles"] == 0
    assert derived.meta["class_head"] == head.digest() and derived.meta["cache_id"] != base.meta["cache_id"]
    want = apply_head(base, head, engine.weights).probs[done]
    np.testing.assert_allclose(derived.probs[done], want, atol=1e-5)
    np.testing.assert_allclose(fresh.probs[done], want, atol=2e-3)  # float16 embeddings in the cache
    assert not np.array_equal(np.argmax(want, 1), np.argmax(base.probs[done], 1))
    np.testing.assert_array_equal(again.probs[done], base.probs[done])  # the bundle's own cache untouched
    with pytest.raises(InferenceError, match="does not fit"):
        engine.with_class_head(ClassHead(head.weight[:3], head.bias[:3]))


def test_cams_of_some_tiles_with_the_adapted_head_fill_exactly_those(sig_bundle, slide_path):
    engine = Engine(sig_bundle, device="cpu", amp="fp32")
    head = _other_head(engine)
    with open_slide(slide_path) as slide:
        grid = plan_for_bundle(slide, sig_bundle, tissue=False)
        base = engine.run_all(slide, grid, use_cache=False, cams=CAM, embeddings=True)
        adapted = apply_head(base, head, engine.weights)
        assert not adapted.cams and cams_missing(adapted, CAM).size == int((adapted.status == DONE).sum())
        s = adapted.tile_size_l0
        box = (0.0, 0.0, 3 * s - 1, 2 * s - 1)  # 3 × 2 tiles in the top-left corner
        assert tiles_in_box(adapted, box).size == 6
        mass = np.nansum(base.cams["TUM"], axis=(1, 2))
        idx = cams_missing(adapted, CAM, np.argsort(-mass)[:6])  # tiles the base map lights up
        assert idx.size == 6 and mass[idx].min() > 0
        run = cams_run(engine.with_class_head(head), slide, adapted, CAM, idx)
        for _ in run:
            pass
        assert merge_cams(adapted, run.results) == 6
    have = np.flatnonzero(~adapted.missing_cam("TUM") & (adapted.status == DONE))
    np.testing.assert_array_equal(have, idx)
    assert not np.allclose(adapted.cams["TUM"][idx], base.cams["TUM"][idx], atol=1e-4)  # the head's, not the base's
    assert cams_missing(adapted, CAM, idx).size == 0


def test_score_with_an_adapted_head_is_the_score_of_its_tiles(sig_bundle, slide_path, tmp_path):
    engine = Engine(sig_bundle, device="cpu", amp="fp32")
    head = _other_head(engine)
    ps = score_patient([slide_path], sig_bundle, class_head=head, use_cache=False, amp="fp32")
    assert ps.bundle["class_head"]["digest"] == head.digest()
    with open_slide(slide_path) as slide:
        base = engine.run_all(slide, plan_for_bundle(slide, sig_bundle), use_cache=False, embeddings=True)
    sig = load_signature(sig_bundle)
    want = score_tiles(sig, [slide_tiles(apply_head(base, head, engine.weights))])[1]
    plain = score_tiles(sig, [slide_tiles(base)])[1]
    assert ps.score.risk == pytest.approx(want.risk, abs=1e-3) and want.risk != pytest.approx(plain.risk, abs=1e-3)
    html = write_report_html(ps, tmp_path / "report.html").read_text()
    assert "adapted in the viewer and not saved" in html and head.digest() in html
    with pytest.raises(SignatureError, match="not both"):
        score_patient([slide_path], sig_bundle, class_head=head, results=[base])
