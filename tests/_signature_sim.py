"""Shared simulator for the signature tests: survival data from a known Cox model."""

from __future__ import annotations

import numpy as np
import pandas as pd


def simulate_cox(
    n: int, beta: np.ndarray, seed: int, n_noise: int = 2, censor_rate: float = 0.02
) -> tuple[pd.DataFrame, np.ndarray]:
    """Exponential-baseline Cox data; returns the table and the true linear predictor."""
    rng = np.random.default_rng(seed)
    p = len(beta)
    X = rng.normal(size=(n, p + n_noise))
    if X.shape[1] > 1:
        X[:, 1] += 0.3 * X[:, 0]  # mild correlation, as real features have
    lp = X[:, :p] @ beta
    t_event = rng.exponential(1.0 / (0.01 * np.exp(lp)))
    t_cens = rng.exponential(1.0 / censor_rate, size=n)
    time = np.minimum(t_event, t_cens)
    event = (t_event <= t_cens).astype(int)
    cols = [f"f{i}" for i in range(p + n_noise)]
    df = pd.DataFrame(X * 2.0 + 5.0, columns=cols)  # unstandardised scale on purpose
    df["time"] = np.round(time, 3) + 0.001
    df["event"] = event
    return df, lp
