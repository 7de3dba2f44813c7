"""A bundle's risk head is applied by the engine itself, in the classifier's forward pass."""

import numpy as np

from _bundles import make_bundle
from _slides import small_slide
from napari_pathomics.bundle import Bundle, attach_file
from napari_pathomics.inference.engine import Engine
from napari_pathomics.inference.preprocess import preprocess_batch
from napari_pathomics.inference.risk_head import RISK_HEAD_FILE, RiskHead, load_risk_head
from napari_pathomics.results import DONE
from napari_pathomics.wsi.slide import open_slide
from napari_pathomics.wsi.tiling import plan_for_bundle


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
