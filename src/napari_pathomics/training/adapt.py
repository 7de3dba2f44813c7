"""Adapt a bundle's tissue classifier to a pathologist's tile labels in seconds, on frozen embeddings.

The backbone stays as it is; only the linear head on its pooled features (timm ``pre_logits``,
kept with the results) is refitted:

* **The fit.** Multinomial logistic regression on the labelled tiles' embeddings, *regularised
  toward the bundle's own head*: the new head is ``W0 + ΔW``, ``b0 + Δb`` with the penalty
  ``λ/2 (‖ΔW·σ/s‖² + ‖Δb/s‖²)`` (σ the RMS norm of the centred embeddings, s the spread of the
  base head's logits, so λ counts in labelled tiles whatever the head's scale). A handful of labels moves the head only as far as they outweigh λ; many labels move it
  as far as the data say. Classes without a label keep their base row (their behaviour is the
  base's). Labels are class-balanced (each labelled class weighs the same in total).
* **Fast on 2 cores.** ΔW lies in the span of the centred embeddings; it is fitted in their top
  ``r`` = 256 principal directions (a randomized range finder; exact when there are ≤ 256
  labels) with a small L-BFGS, so even thousands of labels fit while the pathologist waits
  (figures: ``docs/benchmarks.md``, bench_adapt).
* **Honest figures.** Accuracy on the labels of the base head (it never saw them) and of the
  adapted procedure cross-validated (leave-one-tile-out up to 60 labels, else 5-fold, stratified),
  so "after" is never the accuracy on the labels it was fitted to.

``suggest_tiles`` proposes the next tiles worth labelling (active learning); ``collect_labelled``
gathers labelled tiles' embeddings from the cached results (running the backbone only on
labelled tiles without one); ``write_adapted_bundle`` writes the result as a new bundle that keeps
the base weights file byte for byte and adds ``head.safetensors`` (see ``inference.head``).
"""

from __future__ import annotations

import contextlib
import copy
import math
import shutil
import threading
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

try:
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn (grad-cam's dependency)
    threadpool_limits = None

from ..bundle import Bundle, staged_bundle, write_bundle
from ..bundle.archive import MANIFEST_NAME
from ..errors import BundleError, LabelsError
from ..inference.checks import runtime_problems
from ..inference.engine import Engine
from ..inference.head import HEAD_FILE, ClassHead, apply_head
from ..inference.subset import cell_index, cells_grid
from ..provenance import now_iso, versions
from ..results import DONE, PENDING, TileResults
from ..results.labels import SlideIdentity, TileLabels, read_labels
from ..wsi.slide import Slide, open_slide

__all__ = [
    "AdaptConfig",
    "AdaptResult",
    "LabelledTiles",
    "fit_head",
    "adapt_head",
    "suggest_tiles",
    "collect_labelled",
    "changed_tiles",
    "base_head",
    "write_adapted_bundle",
    "describe_counts",
    "one_blas_thread",
    "OpenSlide",
    "Adapted",
    "labelled_from_file",
    "gather_labelled",
    "fit_and_apply",
    "adapt_slides",
    "run_to_end",
]


def one_blas_thread() -> contextlib.AbstractContextManager:
    """BLAS/LAPACK on one thread for the block (threadpoolctl, when installed; else nothing changes).

    The fit's matrices are small (a few thousand × 1280), so one thread does them quickly. With
    torch loaded and the cores busy, OpenBLAS's own thread pool fights torch's for the cores and
    makes the fit many times slower (figures: ``docs/benchmarks.md``, bench_adapt).
    """
    if threadpool_limits is None:  # pragma: no cover
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


@dataclass(frozen=True)
class AdaptConfig:
    """How the head is refitted (recorded in the adapted bundle)."""

    #: λ, the pull toward the base head in labelled tiles' worth (the default is bench_adapt's best on
    #: a new centre). None chooses it by cross-validated log-loss on the labels, which trusts labels of
    #: neighbouring, alike tiles too much: it picks too small a λ (``docs/benchmarks.md``).
    strength: float | None = 0.5
    grid: tuple[float, ...] = (0.03, 0.1, 0.3, 1.0, 3.0)  # λ tried when it is chosen
    default_strength: float = 0.5  # λ when it cannot be chosen: too few labels per class, or very many
    select_min_per_class: int = 3
    select_max: int = 1500
    subspace: int = 256  # principal directions of the labelled embeddings ΔW may use
    max_iter: int = 100
    loo_max: int = 60  # leave-one-tile-out up to this many labels, else k-fold
    folds: int = 5
    seed: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "L2 toward the base head (ΔW·x in units of the base logits' spread)",
            "lambda": self.strength,
            "lambda_grid": list(self.grid) if self.strength is None else None,
            "subspace_dim": self.subspace,
            "class_balanced": True,
            "classes_without_labels": "keep the base head's row",
            "optimiser": f"L-BFGS, ≤ {self.max_iter} steps",
        }


@dataclass
class LabelledTiles:
    """Embeddings and classes of the labelled tiles of one or more slides."""

    emb: np.ndarray  # (n, D) float32
    y: np.ndarray  # (n,) int64 class index
    sets: list[dict[str, Any]] = field(default_factory=list)  # per slide: name, sha256, labels hash, counts
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.y.size)

    @staticmethod
    def join(parts: Sequence[LabelledTiles]) -> LabelledTiles:
        dim = next((p.emb.shape[1] for p in parts if len(p)), 0)
        return LabelledTiles(
            np.concatenate([p.emb for p in parts]) if parts else np.zeros((0, dim), np.float32),
            np.concatenate([p.y for p in parts]) if parts else np.zeros(0, np.int64),
            [s for p in parts for s in p.sets],
            [n for p in parts for n in p.notes],
        )


@dataclass
class AdaptResult:
    """A refitted head and what it is worth."""

    head: ClassHead
    base: ClassHead
    classes: list[str]
    counts: dict[str, int]
    accuracy_before: float  # the base head on the labels
    accuracy_after: float  # the adapted procedure, cross-validated
    cv_method: str
    per_class: dict[str, dict[str, float | None]]  # "after" is None without cross-validation
    fit_s: float
    cv_s: float
    config: AdaptConfig
    n: int
    strength: float = float("nan")  # the λ used
    strength_how: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "n_labels": self.n,
            "counts": self.counts,
            "method": self.cv_method,
            "lambda": self.strength,
            "lambda_chosen": self.strength_how,
            "accuracy_before": round(self.accuracy_before, 6),
            "accuracy_after": round(self.accuracy_after, 6),
            "per_class": self.per_class,
            "fit_s": round(self.fit_s, 4),
            "cv_s": round(self.cv_s, 4),
        }


def describe_counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items()) or "none"


# ---------------------------------------------------------------------------------------------
# the fit
def _lbfgs(
    f: Callable[[np.ndarray], tuple[float, np.ndarray]], x0: np.ndarray, max_iter: int, m: int = 10, tol: float = 1e-7
) -> np.ndarray:
    """Minimise a smooth convex ``f`` (value, gradient) by L-BFGS with a backtracking line search.

    (scipy's L-BFGS-B spends more per step in its own bookkeeping than the gradient costs at this
    size; this loop costs what the gradient costs.)
    """
    x = x0.copy()
    fx, g = f(x)
    s_hist: list[np.ndarray] = []
    y_hist: list[np.ndarray] = []
    for _ in range(max_iter):
        q = g.copy()
        alphas = []
        for s, yv in zip(reversed(s_hist), reversed(y_hist)):
            a = float(s @ q) / float(yv @ s)
            alphas.append(a)
            q -= a * yv
        q *= (
            float(s_hist[-1] @ y_hist[-1]) / float(y_hist[-1] @ y_hist[-1])
            if s_hist
            else 1.0 / max(float(np.linalg.norm(g)), 1e-12)
        )
        for (s, yv), a in zip(zip(s_hist, y_hist), reversed(alphas)):
            q += s * (a - float(yv @ q) / float(yv @ s))
        d = -q
        gd = float(g @ d)
        if gd >= 0:  # not a descent direction: restart from the gradient
            s_hist.clear()
            y_hist.clear()
            d = -g / max(float(np.linalg.norm(g)), 1e-12)
            gd = float(g @ d)
        t = 1.0
        while True:
            xn = x + t * d
            fn, gn = f(xn)
            if fn <= fx + 1e-4 * t * gd or t < 1e-8:
                break
            t *= 0.5
        s, yv = xn - x, gn - g
        if float(s @ yv) > 1e-12:
            s_hist.append(s)
            y_hist.append(yv)
            if len(s_hist) > m:
                s_hist.pop(0)
                y_hist.pop(0)
        done = abs(fx - fn) <= tol * max(1.0, abs(fn))
        x, fx, g = xn, fn, gn
        if done or float(np.abs(g).max()) < 1e-6:
            break
    return x


@dataclass
class _Prepared:
    """The labelled embeddings in the fit's coordinates (shared by the full fit and the CV folds)."""

    base_logits: np.ndarray  # (n, C) float32
    z: np.ndarray  # (n, r) float32: centred, projected, scaled
    basis: np.ndarray  # (D, r) float32 orthonormal
    mu: np.ndarray  # (D,) float32
    sigma: float  # RMS norm of the projected embeddings / the base logits' spread
    spread: float  # the base logits' spread (mean over tiles of the std over classes)
    y: np.ndarray
    free: np.ndarray  # class indices with labels (their rows are refitted)


def _prepare(emb: np.ndarray, y: np.ndarray, base: ClassHead, cfg: AdaptConfig) -> _Prepared:
    x = np.ascontiguousarray(emb, dtype=np.float32)
    mu = x.mean(axis=0)
    xc = x - mu
    n, dim = xc.shape
    r = min(cfg.subspace, dim)
    if n <= r:  # the span of the labelled tiles itself (exact)
        basis, _ = np.linalg.qr(xc.T.astype(np.float64))
        basis = basis.astype(np.float32)
    else:  # randomized range finder with one power step: the top principal directions
        rng = np.random.default_rng(cfg.seed)
        probe = rng.standard_normal((dim, r)).astype(np.float32)
        basis, _ = np.linalg.qr(xc.T @ (xc @ probe))
        basis = basis.astype(np.float32)
    z = xc @ basis
    base_logits = base.logits(x).astype(np.float32)
    # ΔW·x in units of the base head's own logit spread, so λ means the same for any head's scale
    spread = max(float(np.mean(base_logits.std(axis=1))), 1e-3)
    sigma = (float(np.sqrt(np.mean(np.sum(z.astype(np.float64) ** 2, axis=1)))) or 1.0) / spread
    z /= sigma
    return _Prepared(
        base_logits, np.ascontiguousarray(z), basis, mu, sigma, spread, np.asarray(y, dtype=np.int64), np.unique(y)
    )


def _fit(
    p: _Prepared, idx: np.ndarray, cfg: AdaptConfig, x0: np.ndarray | None = None, lam: float | None = None
) -> np.ndarray:
    """θ = (V (k, r), Δb (k,)) for the free classes, fitted on tiles ``idx`` with penalty ``lam``."""
    z, y, bl = p.z[idx], p.y[idx], p.base_logits[idx]
    n, r = z.shape
    free = p.free
    k = free.size
    counts = np.bincount(y, minlength=bl.shape[1]).astype(np.float64)
    n_cls = max(int(np.count_nonzero(counts)), 1)
    w = (n / (n_cls * counts[y])).astype(np.float32)
    lam = float(lam if lam is not None else cfg.strength if cfg.strength is not None else cfg.default_strength)
    spread = p.spread
    rows = np.arange(n)

    def f(theta: np.ndarray) -> tuple[float, np.ndarray]:
        v = theta[: k * r].reshape(k, r)
        db = theta[k * r :]
        logits = bl.copy()
        logits[:, free] += z @ v.T + spread * db
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        tot = e.sum(axis=1)
        nll = -float(np.sum(w * (logits[rows, y] - np.log(tot))))
        grad = e / tot[:, None]
        grad[rows, y] -= 1.0
        grad *= w[:, None]
        gf = grad[:, free]
        gv = gf.T @ z + lam * v
        gb = spread * gf.sum(axis=0) + lam * db
        return nll + 0.5 * lam * float(np.sum(v * v) + np.sum(db * db)), np.concatenate([gv.ravel(), gb])

    start = np.zeros(k * r + k, dtype=np.float32) if x0 is None else x0.astype(np.float32)
    return _lbfgs(f, start, cfg.max_iter)


def _head_of(p: _Prepared, theta: np.ndarray, base: ClassHead) -> ClassHead:
    k, r = p.free.size, p.z.shape[1]
    v = theta[: k * r].reshape(k, r)
    db = theta[k * r :]
    dw = (v @ p.basis.T) / p.sigma  # (k, D) in embedding coordinates
    weight = base.weight.copy()
    bias = base.bias.copy()
    weight[p.free] += dw
    bias[p.free] += p.spread * db - dw @ p.mu
    return ClassHead(weight.astype(np.float32), bias.astype(np.float32))


def _logits(p: _Prepared, theta: np.ndarray, idx: np.ndarray) -> np.ndarray:
    k, r = p.free.size, p.z.shape[1]
    logits = p.base_logits[idx].astype(np.float64)
    logits[:, p.free] += p.z[idx] @ theta[: k * r].reshape(k, r).T + p.spread * theta[k * r :]
    return logits


def _predict(p: _Prepared, theta: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return np.argmax(_logits(p, theta, idx), axis=1)


def _choose_strength(p: _Prepared, cfg: AdaptConfig) -> tuple[float, str]:
    """λ by 5-fold cross-validated log-loss on the labels (ties go to the larger λ, nearer the base)."""
    y = p.y
    if cfg.strength is not None:
        return float(cfg.strength), "given"
    counts = np.bincount(y)[np.unique(y)]
    if counts.min() < cfg.select_min_per_class or y.size > cfg.select_max:
        why = (
            f"fewer than {cfg.select_min_per_class} labels in a class"
            if counts.min() < cfg.select_min_per_class
            else f"more than {cfg.select_max} labels"
        )
        return cfg.default_strength, f"default ({why})"
    folds, _ = _folds(y, replace(cfg, loo_max=0))
    losses = []
    warm: dict[int, np.ndarray] = {}
    for lam in sorted(cfg.grid, reverse=True):  # strong to weak: each fold warm-starts from the last λ
        nll = 0.0
        for f, test in enumerate(folds):
            train = np.setdiff1d(np.arange(y.size), test, assume_unique=True)
            theta = warm[f] = _fit(p, train, cfg, x0=warm.get(f), lam=lam)
            z = _logits(p, theta, test)
            z -= z.max(axis=1, keepdims=True)
            nll -= float(np.sum(z[np.arange(test.size), y[test]] - np.log(np.exp(z).sum(axis=1))))
        losses.append((nll / y.size, lam))
    best = min(loss for loss, _ in losses)
    lam = max(lam for loss, lam in losses if loss <= best * 1.01 + 1e-9)
    return lam, f"5-fold CV log-loss over {', '.join(f'{g:g}' for g in cfg.grid)}"


def _check_labels(y: np.ndarray, classes: Sequence[str]) -> None:
    if y.size == 0:
        raise LabelsError("no labelled tiles: label some tiles (or import a labels file) first")
    present = np.unique(y)
    if present.size < 2:
        raise LabelsError(
            f"all {y.size} labels are {classes[int(present[0])]}: label tiles of at least two classes "
            "(one class alone would only teach the model to call everything that)"
        )


def fit_head(emb: np.ndarray, y: np.ndarray, base: ClassHead, cfg: AdaptConfig = AdaptConfig()) -> ClassHead:
    """The base head refitted to labelled embeddings (see the module doc for the penalty)."""
    y = np.asarray(y, dtype=np.int64)
    _check_labels(y, [str(i) for i in range(base.num_classes)])
    with one_blas_thread():
        p = _prepare(emb, y, base, cfg)
        return _head_of(p, _fit(p, np.arange(y.size), cfg, lam=_choose_strength(p, cfg)[0]), base)


def _folds(y: np.ndarray, cfg: AdaptConfig) -> tuple[list[np.ndarray], str]:
    n = y.size
    if n <= cfg.loo_max:
        return [np.array([i]) for i in range(n)], "leave-one-tile-out"
    rng = np.random.default_rng(cfg.seed)
    fold = np.empty(n, dtype=np.int64)
    for c in np.unique(y):  # stratified: each class dealt round the folds
        idx = rng.permutation(np.flatnonzero(y == c))
        fold[idx] = (np.arange(idx.size) + rng.integers(cfg.folds)) % cfg.folds
    return [np.flatnonzero(fold == f) for f in range(cfg.folds) if np.any(fold == f)], f"{cfg.folds}-fold (stratified)"


def adapt_head(
    emb: np.ndarray,
    y: np.ndarray,
    base: ClassHead,
    classes: Sequence[str],
    cfg: AdaptConfig = AdaptConfig(),
    cross_validate: bool = True,
) -> AdaptResult:
    """Refit the head; accuracy on the labels before (base head) and after (cross-validated)."""
    y = np.asarray(y, dtype=np.int64)
    _check_labels(y, classes)
    if emb.shape[0] != y.size or emb.shape[1] != base.dim:
        raise LabelsError(
            f"{emb.shape[0]} embeddings of {emb.shape[1]} features for {y.size} labels and a head of {base.dim} inputs"
        )
    with one_blas_thread():
        return _adapt_head(emb, y, base, classes, cfg, cross_validate)


def _adapt_head(
    emb: np.ndarray, y: np.ndarray, base: ClassHead, classes: Sequence[str], cfg: AdaptConfig, cross_validate: bool
) -> AdaptResult:
    t0 = time.perf_counter()
    p = _prepare(emb, y, base, cfg)
    lam, how = _choose_strength(p, cfg)
    theta = _fit(p, np.arange(y.size), cfg, lam=lam)
    head = _head_of(p, theta, base)
    fit_s = time.perf_counter() - t0
    before = np.argmax(p.base_logits, axis=1)
    after = np.full(y.size, -1, dtype=np.int64)
    method = "none"
    t1 = time.perf_counter()
    if cross_validate:
        folds, method = _folds(y, cfg)
        for test in folds:
            train = np.setdiff1d(np.arange(y.size), test, assume_unique=True)
            if np.unique(y[train]).size < 2:
                after[test] = before[test]
                continue
            after[test] = _predict(p, _fit(p, train, cfg, x0=theta, lam=lam), test)
    cv_s = time.perf_counter() - t1
    per_class = {}
    counts = {}
    for c in np.unique(y):
        sel = y == c
        counts[classes[int(c)]] = int(sel.sum())
        per_class[classes[int(c)]] = {
            "n": int(sel.sum()),
            "before": round(float(np.mean(before[sel] == c)), 6),
            "after": round(float(np.mean(after[sel] == c)), 6) if cross_validate else None,
        }
    return AdaptResult(
        head,
        base,
        list(classes),
        counts,
        float(np.mean(before == y)),
        float(np.mean(after == y)) if cross_validate else float("nan"),
        method,
        per_class,
        fit_s,
        cv_s,
        cfg,
        int(y.size),
        lam,
        how,
    )


# ---------------------------------------------------------------------------------------------
# which tiles, and their embeddings
def collect_labelled(
    engine: Engine,
    slide: Slide,
    labels: TileLabels,
    results: TileResults | None = None,
    *,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    cancel: threading.Event | None = None,
    source: str | None = None,
) -> LabelledTiles:
    """The embeddings of a slide's labelled tiles: from ``results`` where they have one, else computed.

    Labels are put on the bundle's lattice first; labels off the slide, on glass (background:
    never classified) or on tiles that fail to decode are left out with a note; classes the
    bundle does not have are a LabelsError (nothing is dropped silently).
    """
    bundle = engine.bundle
    classes = bundle.class_names
    lab = labels.on_lattice(bundle.tile_um / slide.mpp[0])
    notes: list[str] = []
    unknown = sorted({t.cls for t in lab if t.cls not in classes})
    if unknown:
        raise LabelsError(
            f"labels of classes the bundle {bundle.name!r} does not have: {', '.join(unknown)} "
            f"(its classes: {', '.join(classes)})"
        )
    off = set(lab.off_slide(slide.width, slide.height))
    if off:
        notes.append(f"{slide.path.name}: {len(off)} labelled tiles lie off the slide and are not used")
    cells = [(t.col, t.row) for t in lab if (t.col, t.row) not in off]
    emb: dict[tuple[int, int], np.ndarray] = {}
    background: set[tuple[int, int]] = set()
    if results is not None:
        idx = cell_index(results)
        for cell in cells:
            i = idx.get(cell)
            if i is None:
                continue
            if results.status[i] == DONE and results.emb is not None and np.isfinite(results.emb[i, 0]):
                emb[cell] = results.emb[i].astype(np.float32)
            elif results.status[i] != PENDING:
                background.add(cell)
    todo = [c for c in cells if c not in emb and c not in background]
    if todo:
        grid = cells_grid(slide, bundle, todo)
        res = engine.run_all(slide, grid, cache_dir=cache_dir, use_cache=use_cache, embeddings=True, cancel=cancel)
        if cancel is not None and cancel.is_set():
            raise LabelsError("cancelled")
        for i, cell in enumerate(zip(res.cols.tolist(), res.rows.tolist())):
            if res.status[i] == DONE and res.emb is not None and np.isfinite(res.emb[i, 0]):
                emb[cell] = res.emb[i].astype(np.float32)
            else:
                background.add(cell)
    if background:
        notes.append(
            f"{slide.path.name}: {len(background)} labelled tiles are glass or unreadable (never classified) "
            "and are not used"
        )
    use = [c for c in cells if c in emb]
    y = np.array([classes.index(lab.get(*c).cls) for c in use], dtype=np.int64)  # type: ignore[union-attr]
    x = np.stack([emb[c] for c in use]).astype(np.float32) if use else np.zeros((0, engine.net.feature_dim), np.float32)
    counts: dict[str, int] = {}
    for c in y:
        counts[classes[int(c)]] = counts.get(classes[int(c)], 0) + 1
    sets = [
        {
            "slide": slide.path.name,
            "slide_sha256": slide.file_hash(),
            "labels_sha256": lab.sha256(),
            "source": source,
            "n": int(y.size),
            "counts": dict(sorted(counts.items())),
        }
    ]
    return LabelledTiles(x, y, sets, notes)


def base_head(engine: Engine) -> ClassHead:
    """The head the engine's model runs (the weights file's classifier, or an adapted bundle's head)."""
    return ClassHead.from_module(engine.net.classifier())


def changed_tiles(before: TileResults, after: TileResults) -> int:
    """Classified tiles whose class differs between two results of one grid."""
    a, b = before.pred, after.pred
    ok = (a >= 0) & (b >= 0)
    return int(np.count_nonzero(a[ok] != b[ok]))


# ---------------------------------------------------------------------------------------------
# active learning
def suggest_tiles(
    results: TileResults, labels: TileLabels | None = None, n: int = 20, spacing: float | None = None
) -> np.ndarray:
    """Result indices of the next tiles worth labelling: uncertain, spread over the slide and the classes.

    Uncertainty is ``1 − (p₁ − p₂)`` (the margin between the two most likely classes). Classes
    take turns (the class whose most uncertain tile is most uncertain first); a tile closer than
    ``spacing`` lattice cells to one already chosen or labelled is passed over (default: about
    half the distance that would spread ``n`` tiles evenly, at least 2).
    """
    ok = np.flatnonzero(results.status == DONE)
    if labels is not None and len(labels):
        lab = labels.on_lattice(results.tile_size_l0)
        taken = np.array([(int(c), int(r)) in lab for c, r in zip(results.cols[ok], results.rows[ok])], dtype=bool)
        ok = ok[~taken]
    if ok.size == 0 or n <= 0:
        return np.zeros(0, dtype=np.int64)
    p = np.sort(results.probs[ok], axis=1)
    unc = 1.0 - (p[:, -1] - p[:, -2]) if p.shape[1] > 1 else np.zeros(ok.size)
    pred = np.argmax(results.probs[ok], axis=1)
    if spacing is None:
        spacing = max(2.0, 0.5 * math.sqrt(ok.size / max(n, 1)))
    chosen: list[int] = []
    pts = [
        (float(c), float(r))
        for c, r in (
            (lab_t.col, lab_t.row) for lab_t in (labels.on_lattice(results.tile_size_l0) if labels is not None else [])
        )
    ]
    queues = {int(c): list(np.argsort(-unc[pred == c], kind="stable")) for c in np.unique(pred)}
    members = {int(c): np.flatnonzero(pred == c) for c in np.unique(pred)}
    order = sorted(queues, key=lambda c: -unc[members[c][queues[c][0]]])
    sp2 = spacing * spacing
    while len(chosen) < n and any(queues.values()):
        for c in order:
            q = queues[c]
            while q:
                j = int(members[c][q.pop(0)])
                cc, rr = float(results.cols[ok[j]]), float(results.rows[ok[j]])
                if all((cc - a) ** 2 + (rr - b) ** 2 >= sp2 for a, b in pts):
                    chosen.append(int(ok[j]))
                    pts.append((cc, rr))
                    break
            if len(chosen) >= n:
                break
        if not any(queues.values()) and len(chosen) < n and spacing > 1:  # too few far apart: relax the spacing
            return suggest_tiles(results, labels, n, spacing / 2)
    return np.array(chosen, dtype=np.int64)


# ---------------------------------------------------------------------------------------------
# the adapted bundle
def write_adapted_bundle(
    base: Bundle,
    result: AdaptResult,
    label_sets: Sequence[Mapping[str, Any]],
    out: str | Path,
    name: str | None = None,
    command: str = "pathomics adapt",
) -> Bundle:
    """A new bundle: the base's files byte for byte (weights by hash), ``head.safetensors``, the record.

    The manifest records the base bundle id (and the first non-adapted ancestor's, whose cached
    embeddings an engine reuses), the label sets' hashes and per-class counts, the CV figures and
    the regularisation. The bundle is validated like any other (format, model build, forward).
    """
    if result.head.num_classes != base.num_classes:
        raise BundleError(f"the head has {result.head.num_classes} classes but {base.name} has {base.num_classes}")
    man = copy.deepcopy(base.manifest)
    base_adapt = man.pop("adaptation", None) or {}
    old_head = (man.pop("head", None) or {}).get("weights")
    man["name"] = name or (base.name if base.name.endswith("-adapted") else f"{base.name}-adapted")
    man["created"] = now_iso()
    man["version"] = f"{base.version.split('+adapt')[0]}+adapt{time.strftime('%Y%m%d%H%M%S')}"
    counts = {c: 0 for c in base.class_names}
    for s in label_sets:
        for c, v in (s.get("counts") or {}).items():
            counts[c] = counts.get(c, 0) + int(v)
    counts = {c: v for c, v in counts.items() if v}
    man["description"] = (
        f"{base.name} adapted to {sum(counts.values())} tile labels "
        f"({describe_counts(counts)}): new class head on the same backbone"
    )
    man["head"] = {
        "weights": HEAD_FILE,
        "input": "pre_logits",
        "dim": result.head.dim,
        "replaces": "classifier",
        "definition": "probs = softmax(emb · weight.T + bias); emb = the backbone's pooled features (timm pre_logits)",
    }
    man["adaptation"] = {
        "base_bundle_id": base.bundle_id,
        "root_bundle_id": base_adapt.get("root_bundle_id", base.bundle_id),
        "base_name": base.name,
        "method": "logistic head refitted on frozen embeddings, regularised toward the base head",
        "regularisation": result.config.to_json(),
        "label_sets": [dict(s) for s in label_sets],
        "counts": counts,
        "cv": result.to_json(),
        "created": man["created"],
    }
    man.setdefault("metrics", {})["adaptation_cv"] = {
        "method": result.cv_method,
        "n": result.n,
        "accuracy_before": round(result.accuracy_before, 6),
        "accuracy_after": round(result.accuracy_after, 6),
        "note": "accuracy on the pathologist's labels: the base head as it was, and the adapted head cross-validated",
    }
    man["provenance"] = {
        "kind": "adapted",
        "command": command,
        "versions": versions(),
        "created": man["created"],
        "base": {
            "name": base.name,
            "version": base.version,
            "id": base.bundle_id,
            "provenance": base.manifest.get("provenance"),
        },
    }
    keep = [f for f in base.file_hashes if f not in (old_head, HEAD_FILE, MANIFEST_NAME)]
    man["files"] = {f: base.file_hashes[f] for f in keep}
    with staged_bundle(out) as tmp:
        for fname in keep:  # byte for byte: the weights keep their sha256
            (tmp / fname).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(base.path / fname, tmp / fname)
        write_bundle(tmp, man, extra_files={HEAD_FILE: result.head.to_safetensors()})
        problems = runtime_problems(Bundle.load(tmp))
        if problems:
            raise BundleError(f"the adapted bundle does not run: {problems[0]}")
    return Bundle.load(out)


# ---------------------------------------------------------------------------------------------
# the workflow, shared by ``pathomics adapt`` and the viewer's Correct panel
#: Progress of a step: (fraction done, what is being done).
Progress = tuple[float, str]


@dataclass
class OpenSlide:
    """A slide open in the viewer: its labels and the bundle's own results of it (either may be missing)."""

    slide: Slide
    labels: TileLabels | None
    base: TileResults | None


@dataclass
class Adapted:
    """An adapted head, what it was fitted on, and the open slides' results before and after it."""

    result: AdaptResult
    data: LabelledTiles
    bases: dict[str, TileResults]  # slide path -> the bundle's own results (with embeddings)
    refreshed: dict[str, TileResults]  # slide path -> the same tiles through the adapted head


def labelled_from_file(
    engine: Engine,
    slide_path: str | Path,
    labels_path: str | Path,
    *,
    mapping: Mapping[str, str] | None = None,
    force: bool = False,
    mpp: float | None = None,
    use_cache: bool = True,
    cancel: threading.Event | None = None,
) -> LabelledTiles:
    """A labels file (ours or QuPath's) on a slide file → its labelled tiles' embeddings, with the file's notes."""
    with open_slide(slide_path, mpp=mpp) as slide:
        labels, notes = read_labels(
            labels_path,
            engine.bundle.tile_um / slide.mpp[0],
            engine.bundle.class_names,
            slide=SlideIdentity.of(slide),
            bounds=(slide.width, slide.height),
            mapping=mapping,
            force=force,
        )
        part = collect_labelled(engine, slide, labels, use_cache=use_cache, cancel=cancel, source=str(labels_path))
    part.notes[:0] = notes
    return part


def gather_labelled(
    engine: Engine,
    open_slides: Sequence[OpenSlide] = (),
    files: Sequence[tuple[str | Path, str | Path]] = (),
    *,
    mapping: Mapping[str, str] | None = None,
    force: bool = False,
    mpp: float | None = None,
    use_cache: bool = True,
    cancel: threading.Event | None = None,
) -> Generator[Progress, None, tuple[LabelledTiles, dict[str, TileResults]]]:
    """Every labelled tile's embedding: of the open slides (from their results, whose missing embeddings
    are computed once) and of (slide file, labels file) pairs. Yields progress; returns
    ``(LabelledTiles, {slide path: results with embeddings})``."""
    parts: list[LabelledTiles] = []
    bases: dict[str, TileResults] = {}
    for item in open_slides:
        s, base = item.slide, item.base
        if base is not None and base.missing_emb().any():  # cached before embeddings were kept
            run = engine.run(s, base.grid(s), embeddings=True, cancel=cancel)
            for upd in run:
                yield upd.fraction, f"{s.path.name}: embeddings {upd.done}/{upd.total} tiles"
            base = run.results
        if base is not None:
            bases[str(s.path)] = base
        if item.labels is not None and len(item.labels):
            parts.append(collect_labelled(engine, s, item.labels, base, cancel=cancel, source="viewer"))
    for slide_path, labels_path in files:
        parts.append(
            labelled_from_file(
                engine,
                slide_path,
                labels_path,
                mapping=mapping,
                force=force,
                mpp=mpp,
                use_cache=use_cache,
                cancel=cancel,
            )
        )
    return LabelledTiles.join(parts), bases


def fit_and_apply(
    engine: Engine,
    data: LabelledTiles,
    bases: Mapping[str, TileResults] | None = None,
    cfg: AdaptConfig = AdaptConfig(),
) -> Adapted:
    """Fit the head to the labels and run it on ``bases``' kept embeddings (their maps, at once)."""
    result = adapt_head(data.emb, data.y, base_head(engine), engine.bundle.class_names, cfg)
    meta = {"adapted": True, "adapted_labels": result.n}
    with one_blas_thread():  # small GEMMs: BLAS's thread pool only fights torch's for the cores
        refreshed = {p: apply_head(b, result.head, engine.patch_risk, meta=meta) for p, b in (bases or {}).items()}
    return Adapted(result, data, dict(bases or {}), refreshed)


def adapt_slides(
    engine: Engine,
    open_slides: Sequence[OpenSlide] = (),
    files: Sequence[tuple[str | Path, str | Path]] = (),
    *,
    cfg: AdaptConfig = AdaptConfig(),
    cancel: threading.Event | None = None,
) -> Generator[Progress, None, Adapted]:
    """The Correct panel's Adapt: ``gather_labelled`` then ``fit_and_apply``; yields progress, returns ``Adapted``."""
    data, bases = yield from gather_labelled(engine, open_slides, files, cancel=cancel)
    yield 0.9, f"fitting on {len(data)} labels…"
    return fit_and_apply(engine, data, bases, cfg)


def run_to_end(steps: Generator[Progress, None, Any]) -> Any:
    """The return value of a progress generator, its progress dropped (the command line's way)."""
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value
