"""Cutoff finder: planted cutoff recovered, honest p-value, log-rank matches lifelines."""

from __future__ import annotations

import numpy as np
import pytest
from lifelines.statistics import logrank_test

from napari_pathomics.errors import SignatureError
from napari_pathomics.signature._cutoff import find_cutoff, lausen_schumacher_p, logrank_scores, logrank_statistics


def _planted(n: int = 500, cut: float = 0.6, seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=n)
    hz = np.where(x > cut, 3.0, 1.0)
    t = np.round(rng.exponential(1 / hz) * 100)
    c = np.round(rng.exponential(1.5, size=n) * 100)
    return x, np.minimum(t, c), (t <= c).astype(int)


def test_recovers_planted_cutoff() -> None:
    x, t, e = _planted()
    res = find_cutoff(x, t, e, min_group=0.2, n_permutations=500, seed=0)
    assert abs(res.cutoff - 0.6) < 0.04
    assert res.p_value < 0.01
    assert res.n_high + res.n_low == len(x)
    assert min(res.n_high, res.n_low) >= 0.2 * len(x)


def test_null_data_gives_large_p_and_is_seeded() -> None:
    x, t, e = _planted()
    noise = np.random.default_rng(7).uniform(size=len(x))
    a = find_cutoff(noise, t, e, n_permutations=500, seed=3)
    b = find_cutoff(noise, t, e, n_permutations=500, seed=3)
    assert a == b
    assert a.p_value > 0.05
    assert a.naive_p_value < a.p_value  # selection inflates the naive p-value


def test_logrank_matches_lifelines_with_ties() -> None:
    x, t, e = _planted(seed=4)
    for cut in (0.3, 0.5, 0.7):
        g = x > cut
        ref = logrank_test(t[g], t[~g], e[g], e[~g]).test_statistic
        assert logrank_statistics(g[None].astype(float), t, e)[0] == pytest.approx(ref, rel=1e-10)
    assert abs(logrank_scores(t, e).sum()) < 1e-9


def test_lausen_schumacher_is_monotone() -> None:
    assert lausen_schumacher_p(2.0, 0.2) > lausen_schumacher_p(8.0, 0.2) > lausen_schumacher_p(20.0, 0.2)


def test_bad_inputs() -> None:
    x, t, e = _planted(n=50)
    with pytest.raises(SignatureError):
        find_cutoff(x, t, e, min_group=0.6)
    with pytest.raises(SignatureError):
        find_cutoff(np.where(np.arange(50) == 3, np.nan, x), t, e)
    with pytest.raises(SignatureError):
        find_cutoff(np.ones(50), t, e)
