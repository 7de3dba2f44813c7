"""A bundle's risk head is applied by the engine itself, in the classifier's forward pass."""

import numpy as np

from _bundles import CLASSES, make_bundle
from _slides import small_slide
from napari_pathomics.bundle import Bundle, attach_file
from napari_pathomics.inference.engine import Engine
from napari_pathomics.inference.head import ClassHead, apply_head
from napari_pathomics.inference.preprocess import preprocess_batch
from napari_pathomics.inference.risk_head import RISK_HEAD_FILE, PatchRisk, RiskHead, bundle_patch_risk, load_risk_head
from napari_pathomics.results import DONE, TileResults, patch_risk
from napari_pathomics.wsi.slide import open_slide
from napari_pathomics.wsi.tiling import TileGrid, plan_for_bundle


def test_engine_uses_the_bundle_risk_head(tmp_path):
    base = make_bundle(tmp_path / "b")
    rng = np.random.default_rng(0)
    d = 512  # resnet18 pooled features
    head = RiskHead(rng.normal(size=d), 0.3, rng.normal(size=d), np.abs(rng.normal(size=d)) + 0.5)
    attach_file(
        base.path,
        RISK_HEAD_FILE,
        head.to_safetensors(),
        manifest_updates={"risk_head": {"weights": RISK_HEAD_FILE, "input": "pre_logits", "dim": d}},
    )
    bundle = Bundle.load(base.path)
    assert load_risk_head(bundle) is not None
    slide = open_slide(small_slide(tmp_path / "s.svs"))
    grid = plan_for_bundle(slide, bundle, tissue=False)
    engine = Engine(bundle, device="cpu", amp="fp32", batch_size=16)
    res = engine.run_all(slide, grid, use_cache=False)
    assert res.meta["risk_source"] == "risk_head"
    done = np.flatnonzero(res.status == DONE)[:8]
    tiles = np.stack([slide.read_tile(tuple(res.origins[i]), grid.tile_size_l0, grid.tile_px) for i in done])
    pred = engine.predict(preprocess_batch(tiles, bundle))
    emb, probs = pred.emb, pred.probs
    np.testing.assert_allclose(res.probs[done], probs, atol=1e-5)
    np.testing.assert_allclose(res.risk[done], head.predict(emb), atol=1e-5)
    # and not the class-weighted risk a bundle without a head gets
    plain = Engine(base_copy := make_bundle(tmp_path / "plain"), device="cpu", amp="fp32").run_all(
        slide, grid, use_cache=False
    )
    assert base_copy.bundle_id != bundle.bundle_id
    assert not np.allclose(plain.risk[done], res.risk[done])


def test_the_patch_risk_choice_is_one_function(tmp_path):
    """Class weights without a head, the head with one: the engine and ``apply_head`` both ask ``PatchRisk``."""
    rng = np.random.default_rng(1)
    d, c = 8, len(CLASSES)
    probs = rng.dirichlet(np.ones(c), size=5).astype(np.float32)
    emb = rng.normal(size=(5, d)).astype(np.float32)
    plain = bundle_patch_risk(make_bundle(tmp_path / "b"))
    assert plain.head is None and plain.source == "class_weights"
    np.testing.assert_array_equal(plain(probs, emb), patch_risk(probs, plain.weights))
    head = RiskHead(rng.normal(size=d), 0.1, np.zeros(d), np.ones(d))
    with_head = PatchRisk(plain.weights, head)
    assert with_head.source == "risk_head"
    np.testing.assert_array_equal(with_head(probs, emb), head.predict(emb))
    # a class head applied to cached embeddings takes its risk from the same choice
    grid = TileGrid(
        cols=np.arange(5),
        rows=np.zeros(5, np.int64),
        tile_size_l0=100.0,
        tile_um=50.0,
        mpp=0.5,
        slide_width=500,
        slide_height=100,
        coverage=np.ones(5, np.float32),
    )
    res = TileResults.empty(grid, CLASSES, ["#000000"] * c)
    res.status[:] = DONE
    res.probs[:] = probs
    res.ensure_emb(d)[:] = emb
    ch = ClassHead(rng.normal(size=(c, d)).astype(np.float32), np.zeros(c, np.float32))
    new = ch.probs(emb)
    np.testing.assert_allclose(apply_head(res, ch, with_head).risk, head.predict(emb), rtol=1e-6)
    np.testing.assert_allclose(apply_head(res, ch, plain.weights, head).risk, head.predict(emb), rtol=1e-6)
    np.testing.assert_allclose(apply_head(res, ch, plain).risk, patch_risk(new, plain.weights), rtol=1e-6)
