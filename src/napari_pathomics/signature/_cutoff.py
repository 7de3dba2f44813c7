"""Risk-group cutoff: maximally selected log-rank statistic (X-tile style) with honest p-value.

Candidates are the midpoints between consecutive distinct risk scores that leave at least
``min_group`` of patients on each side; a patient is "high" when ``risk > cutoff``. Picking
the best of many cutoffs inflates the naive log-rank p-value, so the p-value of the *maximum*
is obtained by permutation (risk scores shuffled against the survival data, the whole search
repeated, seeded); the Lausen–Schumacher (1992) approximation is stored alongside.
The selection uses the log-rank score statistic with its permutation variance (as R's
``maxstat``), which makes each permutation a cumulative sum.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..errors import SignatureError

METHOD = "maximally selected standardised log-rank score statistic, permutation p-value"


@dataclass(frozen=True)
class CutoffResult:
    """The frozen cutoff and how it was chosen."""

    cutoff: float
    statistic: float
    p_value: float
    p_value_lausen_schumacher: float
    naive_p_value: float
    logrank_chi2: float
    min_group: float
    n_permutations: int
    seed: int
    n_candidates: int
    n_high: int
    n_low: int
    method: str = METHOD
    rule: str = "high if risk > cutoff"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def logrank_statistics(groups: np.ndarray, time: np.ndarray, event: np.ndarray) -> np.ndarray:
    """Standardised log-rank chi-square (1 df) for many binary splits at once.

    ``groups`` is ``(K, n)`` 0/1 (1 = high). Hypergeometric variance, as lifelines'
    ``logrank_test``. Subjects are sorted by time so the at-risk and death counts of the high
    group at every distinct event time are differences of cumulative sums: O(K n).
    """
    time = np.asarray(time, float)
    event = np.asarray(event, int)
    order = np.argsort(time, kind="stable")
    ts, es = time[order], event[order]
    g = np.atleast_2d(np.asarray(groups, float))[:, order]
    ev_times = np.unique(ts[es == 1])
    start = np.searchsorted(ts, ev_times, side="left")  # first subject with time >= t_j
    stop = np.searchsorted(ts, ev_times, side="right")
    n = len(ts)
    n_j = (n - start).astype(float)
    ce_all = np.concatenate([[0], np.cumsum(es)])
    d_j = (ce_all[stop] - ce_all[start]).astype(float)
    suffix = np.concatenate([np.cumsum(g[:, ::-1], axis=1)[:, ::-1], np.zeros((g.shape[0], 1))], axis=1)
    n1 = suffix[:, start]
    ce = np.concatenate([np.zeros((g.shape[0], 1)), np.cumsum(g * es, axis=1)], axis=1)
    d1 = ce[:, stop] - ce[:, start]
    e1 = n1 * d_j / n_j
    with np.errstate(invalid="ignore", divide="ignore"):
        v = np.where(n_j > 1, n1 * (n_j - n1) * d_j * (n_j - d_j) / (n_j**2 * (n_j - 1)), 0.0)
    o_e = (d1 - e1).sum(1)
    var = v.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(var > 0, o_e**2 / var, 0.0)


def candidate_cutoffs(risk: np.ndarray, min_group: float) -> np.ndarray:
    """Midpoints between distinct risks leaving >= min_group of patients on each side."""
    r = np.sort(np.asarray(risk, float))
    n = len(r)
    u = np.unique(r)
    mids = (u[:-1] + u[1:]) / 2
    n_high = n - np.searchsorted(r, mids, side="right")
    lo = int(np.ceil(min_group * n))
    ok = (n_high >= lo) & (n - n_high >= lo)
    return mids[ok]


def lausen_schumacher_p(statistic: float, min_group: float) -> float:
    """Lausen & Schumacher (1992) approximation of P(max standardised log-rank >= observed)."""
    from scipy.stats import norm  # heavy: scipy.stats takes seconds to import

    z = float(np.sqrt(max(statistic, 0.0)))
    if z <= 0:
        return 1.0
    e1 = e2 = min_group
    log_term = np.log((1 - e1) * (1 - e2) / (e1 * e2))
    p = norm.pdf(z) * (z - 1 / z) * log_term + 4 * norm.pdf(z) / z
    return float(min(1.0, max(p, 0.0)))


def logrank_scores(time: np.ndarray, event: np.ndarray) -> np.ndarray:
    """Log-rank (Savage) scores a_i = event_i - H_NA(t_i): the high group's O - E is their sum."""
    time = np.asarray(time, float)
    event = np.asarray(event, int)
    ts = np.sort(time)
    ev_times, d = np.unique(time[event == 1], return_counts=True)
    n_at = len(ts) - np.searchsorted(ts, ev_times, side="left")
    H = np.concatenate([[0.0], np.cumsum(d / n_at)])
    return event - H[np.searchsorted(ev_times, time, side="right")]


def _score_stats(a_sorted: np.ndarray, n_high: np.ndarray) -> np.ndarray:
    """Standardised score statistics for splits 'top n_high by risk'; rows = permutations."""
    n = a_sorted.shape[-1]
    cs = np.cumsum(a_sorted, axis=-1)
    S = cs[..., n_high - 1]
    ss = float(np.sum(a_sorted[0] ** 2)) if a_sorted.ndim == 2 else float(np.sum(a_sorted**2))
    var = n_high * (n - n_high) / (n * (n - 1)) * ss
    return S**2 / var


def find_cutoff(
    risk: np.ndarray,
    time: np.ndarray,
    event: np.ndarray,
    min_group: float = 0.2,
    n_permutations: int = 1000,
    seed: int = 0,
) -> CutoffResult:
    """Choose the risk cutoff maximising the standardised log-rank statistic.

    Selection and permutation use the log-rank *score* form with its exact permutation
    variance (Hothorn & Lausen's maxstat ``smethod="LogRank"``): the high group's O - E is a
    cumulative sum of log-rank scores in risk order, so 1000 permutations of the whole search
    cost milliseconds. The classical (hypergeometric) log-rank chi-square of the chosen split
    and its naive p-value are reported too, but only the permutation p-value is honest.
    """
    from scipy.stats import chi2  # heavy

    risk = np.asarray(risk, float)
    time = np.asarray(time, float)
    event = np.asarray(event, int)
    if not (0 < min_group < 0.5):
        raise SignatureError(f"min group share must be in (0, 0.5), got {min_group}")
    if not (len(risk) == len(time) == len(event)):
        raise SignatureError("risk, time and event must have the same length")
    if not np.all(np.isfinite(risk)):
        raise SignatureError("risk scores contain NaN or inf")
    if event.sum() == 0:
        raise SignatureError("no events: a cutoff cannot be chosen")
    cands = candidate_cutoffs(risk, min_group)
    if len(cands) == 0:
        raise SignatureError(f"no cutoff leaves {min_group:.0%} of patients in each group")
    n = len(risk)
    order = np.argsort(-risk, kind="stable")  # high risk first
    n_high = n - np.searchsorted(np.sort(risk), cands, side="right")
    a = logrank_scores(time, event)
    stats = _score_stats(a[order][None, :], n_high)[0]
    best = int(np.argmax(stats))
    obs = float(stats[best])
    rng = np.random.default_rng(seed)
    exceed = 0
    for start in range(0, n_permutations, 200):
        b = min(200, n_permutations - start)
        perms = np.argsort(rng.random((b, n)), axis=1)  # b random permutations
        mx = _score_stats(a[perms], n_high).max(axis=1)
        exceed += int(np.sum(mx >= obs * (1 - 1e-12)))
    p_perm = (1 + exceed) / (1 + n_permutations)
    high = risk > cands[best]
    classic = float(logrank_statistics(high[None, :].astype(float), time, event)[0])
    return CutoffResult(
        cutoff=float(cands[best]),
        statistic=obs,
        p_value=float(p_perm),
        p_value_lausen_schumacher=lausen_schumacher_p(obs, min_group),
        naive_p_value=float(chi2.sf(classic, 1)),
        logrank_chi2=classic,
        min_group=float(min_group),
        n_permutations=int(n_permutations),
        seed=int(seed),
        n_candidates=int(len(cands)),
        n_high=int(high.sum()),
        n_low=int((~high).sum()),
    )
