"""Test-time augmentation: dihedral views averaged in feature space; off by default; cached apart."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from _bundles import make_bundle
from _slides import small_slide
from napari_pathomics.errors import InferenceError
from napari_pathomics.inference.engine import TTA_MODES, Engine, tta_views
from napari_pathomics.inference.head import ClassHead
from napari_pathomics.wsi.slide import open_slide
from napari_pathomics.wsi.tiling import plan_for_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("tta") / "bundle")


def test_views_are_the_dihedral_group() -> None:
    x = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).reshape(2, 3, 5, 5)
    assert len(tta_views(x, "none")) == 1 and tta_views(x, "none")[0] is x
    d4 = tta_views(x, "d4")
    assert len(d4) == TTA_MODES["d4"] == 8 and torch.equal(d4[0], x)
    a = x[0, 0].numpy()
    want = {np.rot90(m, k).tobytes() for m in (a, a.T) for k in range(4)}  # the 8 symmetries of a square
    assert {v[0, 0].numpy().tobytes() for v in d4} == want
    assert len({v[0, 0].numpy().tobytes() for v in tta_views(x, "flips")}) == 4


def test_d4_predictions_do_not_change_when_the_tile_is_turned(bundle) -> None:
    torch.manual_seed(0)
    x = torch.rand(3, 3, 64, 64)
    plain, tta = Engine(bundle, device="cpu", amp="fp32"), Engine(bundle, device="cpu", amp="fp32", tta="d4")
    p0, p1 = plain.predict(x), tta.predict(x)
    turned = tta.predict(torch.rot90(x, 1, dims=(-2, -1)).contiguous())
    flipped = tta.predict(x.flip(-1).contiguous())
    np.testing.assert_allclose(turned.probs, p1.probs, atol=1e-4)
    np.testing.assert_allclose(flipped.probs, p1.probs, atol=1e-4)
    assert not np.allclose(plain.predict(torch.rot90(x, 1, dims=(-2, -1)).contiguous()).probs, p0.probs, atol=1e-4)
    # the kept embedding is the mean of the views', and the head on it gives the probabilities
    head = ClassHead.from_module(tta.model.get_classifier())
    np.testing.assert_allclose(head.probs(p1.emb), p1.probs, atol=1e-5)
    views = [plain.predict(v.contiguous()).emb for v in tta_views(x, "d4")]
    np.testing.assert_allclose(np.mean(views, axis=0), p1.emb, rtol=1e-4, atol=1e-5)


def test_off_by_default_and_cached_apart(bundle, tmp_path: Path) -> None:
    with pytest.raises(InferenceError, match="test-time augmentation must be one of none, flips, d4"):
        Engine(bundle, tta="rot")
    assert Engine(bundle).tta == "none"
    slide_path = small_slide(tmp_path / "s.svs", h=512, w=512, mpp=0.5)
    cache = tmp_path / "cache"
    with open_slide(slide_path) as slide:
        grid = plan_for_bundle(slide, bundle)
        plain = Engine(bundle, device="cpu", amp="fp32")
        r0 = plain.run_all(slide, grid, cache_dir=cache)
        assert "tta" not in r0.meta and r0.meta["cache_id"] == bundle.bundle_id
        r1 = Engine(bundle, device="cpu", amp="fp32", tta="flips").run_all(slide, grid, cache_dir=cache)
        assert r1.meta["tta"] == "flips" and r1.meta["cache_id"] not in ("", bundle.bundle_id)
        assert not np.allclose(r0.probs[r0.status == 1], r1.probs[r1.status == 1])
        assert len(list(cache.rglob("*.npz"))) == 2  # two cache files: neither run reads the other's numbers
        again = plain.run_all(slide, grid, cache_dir=cache)
        np.testing.assert_array_equal(again.probs, r0.probs)


def test_score_takes_tta_and_records_it(tmp_path: Path, capsys) -> None:
    import json

    from napari_pathomics.cli import main as cli_main
    from napari_pathomics.resources import DEFAULT_BUNDLE

    b = make_bundle(tmp_path / "sig", signature=json.loads((DEFAULT_BUNDLE / "signature.json").read_text()))
    slide_path = small_slide(tmp_path / "s.svs", h=512, w=512, mpp=0.5)
    out = {}
    for tta in ("none", "flips"):
        assert (
            cli_main(["score", str(slide_path), "--bundle", str(b.path), "--amp", "fp32", "--tta", tta, "--json"]) == 0
        )
        out[tta] = json.loads(capsys.readouterr().out)
    assert "tta" not in out["none"]["bundle"] and out["flips"]["bundle"]["tta"] == "flips"
    assert out["flips"]["risk"] != pytest.approx(out["none"]["risk"], abs=1e-6)
