"""Instance-segmentation scores against planted or expert nuclei: Dice, AJI, detection, splits.

* Pixel Dice of the foregrounds, ``2|A∩B| / (|A| + |B|)``.
* Aggregated Jaccard Index (Kumar et al., IEEE TMI 2017): every true nucleus ``G_i`` is paired
  with the predicted nucleus ``S_j`` of highest IoU with it; ``C = Σ |G_i ∩ S_j|``,
  ``U = Σ |G_i ∪ S_j|`` plus the area of every predicted nucleus never paired. A true nucleus
  without any overlapping prediction adds its area to ``U`` only. AJI = C / U, so splits,
  merges, misses and false positives all cost.
* Detection: a true and a predicted nucleus match when their IoU exceeds 0.5 (such a match is
  unique both ways); precision, recall and F1 count those matches.
* Panoptic quality (Kirillov et al. 2019), as HoVer-Net reports it: matches at IoU > 0.5,
  ``PQ = Σ IoU(matches) / (TP + FP/2 + FN/2)`` (detection quality × segmentation quality).
* Split accuracy: the share of true nuclei that touch another true nucleus and are matched,
  i.e. were separated from their neighbours and not cut apart.

Everything is computed from one sparse contingency table of the two label images.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import sparse

__all__ = ["InstanceScores", "score_instances", "aji", "dice", "pq", "contingency"]


def contingency(truth: np.ndarray, pred: np.ndarray) -> tuple[sparse.csr_matrix, np.ndarray, np.ndarray]:
    """Overlap counts (n_true + 1, n_pred + 1) and the areas of both label sets (index 0 = background)."""
    t = np.asarray(truth).ravel().astype(np.int64)
    p = np.asarray(pred).ravel().astype(np.int64)
    if t.shape != p.shape:
        raise ValueError(f"label images differ in size: {np.shape(truth)} vs {np.shape(pred)}")
    nt, np_ = int(t.max(initial=0)) + 1, int(p.max(initial=0)) + 1
    table = sparse.coo_matrix((np.ones(t.size, dtype=np.int64), (t, p)), shape=(nt, np_)).tocsr()
    return table, np.bincount(t, minlength=nt), np.bincount(p, minlength=np_)


def dice(truth: np.ndarray, pred: np.ndarray) -> float:
    """Pixel Dice of the two foregrounds (1.0 when both are empty)."""
    a, b = np.asarray(truth) > 0, np.asarray(pred) > 0
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int(np.count_nonzero(a & b)) / s


def _pairs(table: sparse.csr_matrix, area_t: np.ndarray, area_p: np.ndarray) -> tuple[np.ndarray, ...]:
    """Foreground overlaps as (true id, pred id, intersection, IoU) arrays."""
    fg = table[1:, 1:].tocoo()
    ti, pj, inter = fg.row + 1, fg.col + 1, fg.data.astype(np.float64)
    iou = inter / (area_t[ti] + area_p[pj] - inter)
    return ti, pj, inter, iou


def aji(truth: np.ndarray, pred: np.ndarray) -> float:
    """Aggregated Jaccard Index (see the module docstring); 1.0 when both are empty."""
    table, area_t, area_p = contingency(truth, pred)
    return _aji(table, area_t, area_p)


def _aji(table: sparse.csr_matrix, area_t: np.ndarray, area_p: np.ndarray) -> float:
    n_t = area_t.size - 1
    if n_t == 0:
        return 1.0 if area_p[1:].sum() == 0 else 0.0
    ti, pj, inter, iou = _pairs(table, area_t, area_p)
    c = 0.0
    u = float(area_t[1:].sum())  # true nuclei without a partner count their area only
    used = np.zeros(area_p.size, dtype=bool)
    if ti.size:
        order = np.lexsort((-iou, ti))  # by true id, best IoU first
        first = np.ones(order.size, dtype=bool)
        first[1:] = ti[order][1:] != ti[order][:-1]
        best = order[first]
        c = float(inter[best].sum())
        u += float((area_p[pj[best]] - inter[best]).sum())  # |G ∪ S| = |G| + |S| − |G ∩ S|
        used[pj[best]] = True
    used[0] = True
    u += float(area_p[~used].sum())
    return c / u if u > 0 else 1.0


def pq(truth: np.ndarray, pred: np.ndarray) -> float:
    """Panoptic quality of the instances (see the module docstring); 1.0 when both are empty."""
    table, area_t, area_p = contingency(truth, pred)
    return _pq(table, area_t, area_p)


def _pq(table: sparse.csr_matrix, area_t: np.ndarray, area_p: np.ndarray) -> float:
    n_t = int(np.count_nonzero(area_t[1:]))
    n_p = int(np.count_nonzero(area_p[1:]))
    if n_t + n_p == 0:
        return 1.0
    _, _, _, iou = _pairs(table, area_t, area_p)
    hit = iou[iou > 0.5]
    tp = hit.size
    denom = tp + 0.5 * (n_p - tp) + 0.5 * (n_t - tp)
    return float(hit.sum() / denom) if denom > 0 else 0.0


@dataclass
class InstanceScores:
    """Every figure the nuclei benchmark prints for one image (or a pooled set)."""

    n_true: int
    n_pred: int
    matched: int
    precision: float
    recall: float
    f1: float
    dice: float
    aji: float
    pq: float
    split_accuracy: float  # of touching true nuclei, the share matched one-to-one
    n_touching: int
    count_ratio: float  # n_pred / n_true (1.5 = 50 % too many: over-splitting)

    def to_json(self) -> dict[str, float]:
        return asdict(self)


def score_instances(truth: np.ndarray, pred: np.ndarray, touching: np.ndarray | None = None) -> InstanceScores:
    """All scores of ``pred`` against ``truth``; ``touching`` (n_true,) marks true nuclei in contact."""
    table, area_t, area_p = contingency(truth, pred)
    n_t, n_p = area_t.size - 1, area_p.size - 1
    n_t = int(np.count_nonzero(area_t[1:]))
    n_p = int(np.count_nonzero(area_p[1:]))
    ti, pj, _, iou = _pairs(table, area_t, area_p)
    hit = iou > 0.5
    matched_t = np.zeros(area_t.size, dtype=bool)
    matched_t[ti[hit]] = True
    m = int(hit.sum())
    prec = m / n_p if n_p else (1.0 if n_t == 0 else 0.0)
    rec = m / n_t if n_t else 1.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec > 0 else 0.0
    if touching is None:
        split, n_touch = float("nan"), 0
    else:
        touch = np.asarray(touching, dtype=bool)
        n_touch = int(touch.sum())
        split = float(matched_t[1:][touch].mean()) if n_touch else float("nan")
    return InstanceScores(
        n_true=n_t,
        n_pred=n_p,
        matched=m,
        precision=prec,
        recall=rec,
        f1=f1,
        dice=dice(truth, pred),
        aji=_aji(table, area_t, area_p),
        pq=_pq(table, area_t, area_p),
        split_accuracy=split,
        n_touching=n_touch,
        count_ratio=n_p / n_t if n_t else float("nan"),
    )
