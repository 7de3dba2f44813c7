"""The head refitted on frozen embeddings: regularised toward the base, honest CV, suggestions, refusals."""

from __future__ import annotations

import numpy as np
import pytest

from napari_pathomics.errors import LabelsError
from napari_pathomics.inference.head import ClassHead, apply_head
from napari_pathomics.results import BACKGROUND, DONE, PENDING, TileResults
from napari_pathomics.results.labels import TileLabels
from napari_pathomics.training.adapt import AdaptConfig, adapt_head, changed_tiles, fit_head, suggest_tiles

C, D = 5, 48
CLASSES = ["A", "B", "C", "D", "E"]


def _domain(seed: int = 0):
    """Class means in embedding space; the base head knows a *shifted* version of them (another centre)."""
    rng = np.random.default_rng(seed)
    means = np.abs(rng.normal(0, 1.0, (C, D))).astype(np.float32)
    shift = np.zeros(D, np.float32)
    shift[: D // 3] = 2.0
    base_means = means - shift * (np.arange(C)[:, None] % 2)  # the base saw odd classes without the shift
    w = (base_means - base_means.mean(0)) * 2.0
    b = -0.5 * (w * base_means).sum(1) + 0.5 * (w * base_means).sum(1).mean()
    return means, ClassHead(w.astype(np.float32), b.astype(np.float32)), rng


def _draw(means, rng, n_per, classes=range(C)):
    y = np.repeat(np.asarray(list(classes)), n_per)
    x = (means[y] + rng.normal(0, 0.45, (y.size, D))).astype(np.float32)
    return x, y


def test_a_few_labels_fix_a_shifted_head_and_cv_says_so() -> None:
    means, base, rng = _domain()
    xt, yt = _draw(means, rng, 200)
    xl, yl = _draw(means, rng, 6)
    before = np.mean(np.argmax(base.logits(xt), 1) == yt)
    res = adapt_head(xl, yl, base, CLASSES)
    after = np.mean(np.argmax(res.head.logits(xt), 1) == yt)
    assert before < 0.8 and after > before + 0.15, (before, after)
    assert res.cv_method == "leave-one-tile-out" and res.n == 30
    assert res.accuracy_after > res.accuracy_before  # cross-validated on the labels
    assert res.counts == {c: 6 for c in CLASSES}
    assert set(res.per_class) == set(CLASSES) and res.per_class["A"]["n"] == 6
    big = adapt_head(*_draw(means, rng, 20), base, CLASSES)
    assert big.cv_method.startswith("5-fold")


def test_regularised_toward_the_base_and_unlabelled_classes_keep_their_row() -> None:
    means, base, rng = _domain(1)
    moves = []
    for n in (1, 4, 32):
        x, y = _draw(means, rng, n, classes=(0, 1, 2))
        head = fit_head(x, y, base)
        np.testing.assert_array_equal(head.weight[3:], base.weight[3:])  # D, E: no labels, base behaviour
        np.testing.assert_array_equal(head.bias[3:], base.bias[3:])
        moves.append(float(np.linalg.norm(head.weight - base.weight)))
    assert moves[0] < moves[1] < moves[2]  # a handful of labels moves it only so far
    x, y = _draw(means, rng, 8, classes=(0, 1, 2))
    strong = fit_head(x, y, base, AdaptConfig(strength=50.0))
    weak = fit_head(x, y, base, AdaptConfig(strength=0.05))
    assert np.linalg.norm(strong.weight - base.weight) < np.linalg.norm(weak.weight - base.weight)


def test_the_head_is_the_fit_and_any_scale_of_head_adapts_alike() -> None:
    means, base, rng = _domain(2)
    x, y = _draw(means, rng, 5)
    xt, yt = _draw(means, rng, 100)
    a = fit_head(x, y, base)
    scaled = ClassHead(base.weight * 10, base.bias * 10)  # the same head, ten times sharper
    b = fit_head(x, y, scaled)
    pa, pb = np.argmax(a.logits(xt), 1), np.argmax(b.logits(xt), 1)
    assert np.mean(pa == pb) > 0.9


def test_bad_labels_are_refused() -> None:
    means, base, rng = _domain()
    with pytest.raises(LabelsError, match="no labelled tiles"):
        adapt_head(np.zeros((0, D), np.float32), np.zeros(0, np.int64), base, CLASSES)
    x, y = _draw(means, rng, 4, classes=(2,))
    with pytest.raises(LabelsError, match="all 4 labels are C: label tiles of at least two classes"):
        adapt_head(x, y, base, CLASSES)
    x, y = _draw(means, rng, 4, classes=(1, 2))
    with pytest.raises(LabelsError, match="features"):
        adapt_head(x[:, :10], y, base, CLASSES)


def test_strength_chosen_by_cross_validation_when_asked() -> None:
    means, base, rng = _domain(3)
    x, y = _draw(means, rng, 4)
    res = adapt_head(x, y, base, CLASSES, AdaptConfig(strength=None))
    assert res.strength in AdaptConfig().grid and "CV log-loss" in res.strength_how
    few = adapt_head(*_draw(means, rng, 2), base, CLASSES, AdaptConfig(strength=None))
    assert few.strength == AdaptConfig().default_strength and "fewer than" in few.strength_how


def _results(n_side: int = 12, seed: int = 0) -> TileResults:
    rng = np.random.default_rng(seed)
    n = n_side * n_side
    probs = rng.dirichlet(np.ones(C) * 0.7, n).astype(np.float32)
    emb = rng.normal(0, 1, (n, D)).astype(np.float16)
    status = np.full(n, DONE, np.int8)
    status[:5] = BACKGROUND
    probs[:5] = np.nan
    emb[:5] = np.nan
    return TileResults(
        cols=np.arange(n) % n_side,
        rows=np.arange(n) // n_side,
        origins=np.column_stack([np.arange(n) % n_side, np.arange(n) // n_side]) * 100,
        tile_size_l0=100.0,
        n_cols=n_side,
        n_rows=n_side,
        class_names=CLASSES,
        class_colors=["#000000"] * C,
        probs=probs,
        risk=np.zeros(n, np.float32),
        status=status,
        stain_fallback=np.zeros(n, bool),
        emb=emb,
    )


def test_suggestions_are_uncertain_spread_and_never_labelled() -> None:
    res = _results()
    lab = TileLabels(100.0)
    lab.set([(6, 6), (7, 7)], "A")
    idx = suggest_tiles(res, lab, n=8)
    assert idx.size == 8 and len(set(idx.tolist())) == 8
    assert all(res.status[i] == DONE for i in idx)
    assert not any((int(res.cols[i]), int(res.rows[i])) in lab for i in idx)
    p = np.sort(res.probs[res.status == DONE], 1)
    margin = p[:, -1] - p[:, -2]
    chosen = np.sort(res.probs[idx], 1)
    assert np.median(chosen[:, -1] - chosen[:, -2]) < np.median(margin)  # more uncertain than the typical tile
    pts = np.column_stack([res.cols[idx], res.rows[idx]]).astype(float)
    d = np.hypot(*(pts[:, None] - pts[None]).transpose(2, 0, 1))
    assert d[np.triu_indices(8, 1)].min() >= 2  # spread over the slide
    assert len(set(np.argmax(res.probs[idx], 1))) >= 3  # and over the classes
    assert suggest_tiles(res, lab, n=0).size == 0


def test_apply_head_refreshes_probabilities_keeps_background_and_marks_missing_embeddings() -> None:
    res = _results()
    res.emb[10] = np.nan  # classified, but cached before embeddings were kept
    rng = np.random.default_rng(4)
    head = ClassHead(rng.normal(0, 1, (C, D)).astype(np.float32), np.zeros(C, np.float32))
    new = apply_head(res, head, np.linspace(0, 1, C), meta={"adapted": True})
    np.testing.assert_allclose(new.probs[20], head.probs(res.emb[20:21].astype(np.float32))[0], rtol=1e-5)
    np.testing.assert_allclose(new.risk[20], float(new.probs[20] @ np.linspace(0, 1, C)), rtol=1e-5)
    assert (new.status[:5] == BACKGROUND).all() and new.status[10] == PENDING
    assert res.status[10] == DONE and new.meta["adapted"] and new.cams == {}
    assert 0 < changed_tiles(res, new) <= len(res) - 6
