"""Patient features from per-tile engine results, described by a JSON-serialisable spec.

A signature stores the :class:`FeatureSpec` it was trained with, so scoring a new patient
recomputes exactly the same numbers (same classes, same slide combination, same MIL
vocabulary and idf). Inputs are plain numpy: per slide ``probs (N, C)``, ``class_names`` and,
for the MIL family, ``risk (N,)`` in [0, 1].

Families
--------
``tme``  Tumour-microenvironment composition. Per slide: ``tme_mean_<CLS>`` (mean class
         probability over tiles) and ``tme_frac_<CLS>`` (fraction of tiles whose argmax is the
         class). Per patient the slide values are combined per class by ``combine``:
         ``"max"``, ``"mean"`` (unweighted over slides) or ``"weighted"`` (weighted by tile
         count, i.e. the pooled-tile value).

         The bundled TCGA CRC reference table holds per-class maxima over slides of mean
         probabilities (docs/architecture.md, "The TCGA table"), so its columns map to
         ``tme_mean_<CLS>`` with ``combine="max"``.

``mil``  The seed study's multiple-instance features over the pooled tiles of all slides of
         a patient: the histogram of patch risk probabilities rounded to two decimals
         (101 bins, ``mil_hist_p000``..``mil_hist_p100``) and the histogram of patch
         predictions (argmax class, ``mil_pred_<CLS>``), each min-max normalised per patient;
         and a bag-of-words TF-IDF (``mil_tfidf_<word>``) whose words are the rounded
         probabilities (``p0.37``) and predicted classes (``c_TUM``). The vocabulary and the
         smoothed idf ``log((1 + n) / (1 + df)) + 1`` are learnt by :meth:`FeatureSpec.fit`
         and frozen; tf is the word share in the patient, the tf-idf vector is L2-normalised
         (scikit-learn's TfidfVectorizer defaults, re-implemented so scoring needs no sklearn).

``nuc``  Nuclear features (optional): per-tile nuclear values (``cells``' per-tile table:
         density, mean nuclear area, mean N:C ratio, …) pooled over the tiles of all slides of
         a patient, tiles without a value ignored, summarised by their mean and quantiles:
         ``nuc_<stat>_<measure>`` with stat ``mean``, ``q10``, ``q50``, ``q90``… Nothing is
         fitted; the measures and statistics are frozen in the spec like the others, with the
         nuclei method the values came from where it is known (``nuclei_model``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import SignatureError

SPEC_KIND = "pathomics-feature-spec"
SPEC_VERSION = 1
COMBINE_MODES = ("max", "mean", "weighted")
TME_STATS = ("mean", "frac")
N_HIST_BINS = 101
#: Statistics of the nuclear family over a patient's tiles (``qNN`` = the NN-th percentile).
NUCLEAR_STATS = ("mean", "q10", "q25", "q50", "q75", "q90")
DEFAULT_NUCLEAR_STATS = ("mean", "q10", "q50", "q90")


@dataclass(frozen=True)
class SlideTiles:
    """Per-tile results of one slide (inside the ROIs): what features are computed from."""

    probs: np.ndarray
    class_names: tuple[str, ...]
    risk: np.ndarray | None = None
    slide_id: str = ""
    nuclear: Mapping[str, np.ndarray] | None = None  # per-tile nuclear values by measure, NaN = none

    @classmethod
    def coerce(cls, obj: Any) -> "SlideTiles":
        """Accept a SlideTiles, a mapping or any object with ``probs``/``class_names``/``risk``."""
        if isinstance(obj, SlideTiles):
            return obj
        get = obj.get if isinstance(obj, Mapping) else (lambda k, d=None: getattr(obj, k, d))
        probs = get("probs")
        names = get("class_names")
        if probs is None or names is None:
            raise SignatureError("slide results need 'probs' and 'class_names'")
        risk = get("risk", None)
        sid = get("slide_id", None) or get("name", None) or ""
        nuclear = get("nuclear", None)
        return cls(
            probs=np.asarray(probs, dtype=float),
            class_names=tuple(str(c) for c in names),
            risk=None if risk is None else np.asarray(risk, dtype=float).reshape(-1),
            slide_id=str(sid),
            nuclear=None
            if nuclear is None
            else {str(k): np.asarray(v, dtype=float).reshape(-1) for k, v in dict(nuclear).items()},
        )


def _label(slide: SlideTiles) -> str:
    return f"slide {slide.slide_id!r}" if slide.slide_id else "a slide"


def _check_slide(slide: SlideTiles, classes: Sequence[str], need_risk: bool) -> np.ndarray:
    """Validate one slide and return its probabilities reordered to ``classes``."""
    p = slide.probs
    if p.ndim != 2 or p.shape[1] != len(slide.class_names):
        raise SignatureError(f"{_label(slide)}: probs has shape {p.shape}, expected (tiles, {len(slide.class_names)})")
    if p.shape[0] == 0:
        raise SignatureError(f"{_label(slide)} has no tiles in its ROIs; cannot compute features")
    missing = [c for c in classes if c not in slide.class_names]
    if missing:
        raise SignatureError(
            f"{_label(slide)} lacks classes {missing} required by the signature (has {list(slide.class_names)})"
        )
    if not np.all(np.isfinite(p)):
        raise SignatureError(f"{_label(slide)}: class probabilities contain NaN or inf")
    if need_risk:
        if slide.risk is None:
            raise SignatureError(f"{_label(slide)}: MIL features need per-tile risk")
        if slide.risk.shape[0] != p.shape[0]:
            raise SignatureError(f"{_label(slide)}: {slide.risk.shape[0]} risks for {p.shape[0]} tiles")
        if not np.all(np.isfinite(slide.risk)):
            raise SignatureError(f"{_label(slide)}: tile risk contains NaN or inf")
    idx = [slide.class_names.index(c) for c in classes]
    return p[:, idx]


def _check_nuclear(slide: SlideTiles, measures: Sequence[str]) -> None:
    """The slide carries one value per tile for every nuclear measure the spec needs."""
    if slide.nuclear is None:
        raise SignatureError(
            f"{_label(slide)}: the signature uses nuclear features, but no nuclei were computed for its tiles"
        )
    missing = [m for m in measures if m not in slide.nuclear]
    if missing:
        raise SignatureError(f"{_label(slide)} lacks nuclear measures {missing} (has {sorted(slide.nuclear)})")
    n = slide.probs.shape[0]
    bad = [m for m in measures if slide.nuclear[m].shape[0] != n]
    if bad:
        raise SignatureError(f"{_label(slide)}: nuclear values of {bad} do not match its {n} tiles")


def nuclear_stat(values: np.ndarray, stat: str) -> float:
    """One statistic of the finite values (``mean`` or ``qNN``, the NN-th percentile, linear)."""
    if stat == "mean":
        return float(values.mean())
    return float(np.percentile(values, float(stat[1:])))


def slide_tme(probs: np.ndarray, class_names: Sequence[str]) -> dict[str, float]:
    """TME composition of one slide: mean probability and argmax fraction per class.

    The argmax is taken over the slide's own classes, so a tile counts for at most one class.
    """
    s = SlideTiles.coerce({"probs": probs, "class_names": class_names})
    p = _check_slide(s, s.class_names, need_risk=False)
    arg = np.argmax(p, axis=1)
    out: dict[str, float] = {}
    for j, c in enumerate(s.class_names):
        out[f"tme_mean_{c}"] = float(p[:, j].mean())
    for j, c in enumerate(s.class_names):
        out[f"tme_frac_{c}"] = float(np.mean(arg == j))
    return out


def combine_slides(values: np.ndarray, n_tiles: np.ndarray, how: str) -> np.ndarray:
    """Combine per-slide feature rows ``(S, F)`` into one patient row by ``how``."""
    values = np.asarray(values, dtype=float)
    if how == "max":
        return values.max(axis=0)
    if how == "mean":
        return values.mean(axis=0)
    if how == "weighted":
        w = np.asarray(n_tiles, dtype=float)
        return (values * w[:, None]).sum(axis=0) / w.sum()
    raise SignatureError(f"unknown slide combination {how!r}; choose one of {COMBINE_MODES}")


def _patient_slides(patient: Any) -> list[SlideTiles]:
    if isinstance(patient, (SlideTiles, Mapping)) or hasattr(patient, "probs"):
        patient = [patient]
    slides = [SlideTiles.coerce(s) for s in patient]
    if not slides:
        raise SignatureError("a patient needs at least one slide with results")
    return slides


def _words(risk: np.ndarray, pred: np.ndarray, classes: Sequence[str]) -> list[str]:
    bins = np.clip(np.round(risk * 100).astype(int), 0, 100)
    return [f"p{b / 100:.2f}" for b in bins] + [f"c_{classes[k]}" for k in pred]


def _minmax(v: np.ndarray) -> np.ndarray:
    lo, hi = float(v.min()), float(v.max())
    return np.zeros_like(v) if hi == lo else (v - lo) / (hi - lo)


@dataclass
class FeatureSpec:
    """What patient features are and how to compute them; ``fit`` learns the MIL vocabulary.

    Use ``FeatureSpec(classes, tme_stats=("mean",), combine="max", mil=False)`` for the TME
    family only (nothing to fit). With ``mil=True`` call :meth:`fit` on the training patients
    before :meth:`transform`.
    """

    classes: list[str]
    tme_stats: list[str] = field(default_factory=lambda: ["mean", "frac"])
    combine: str = "max"
    mil: bool = False
    vocabulary: list[str] | None = None
    idf: list[float] | None = None
    source: str = "tiles"
    nuclear: list[str] | None = None  # nuclear measures (per-tile values), None = no nuclear family
    nuclear_stats: list[str] = field(default_factory=lambda: list(DEFAULT_NUCLEAR_STATS))
    #: the nuclei method the nuclear values came from (its ``describe()``: name, licence, key), when
    #: recorded: features shift between methods, so scoring with another one is worth a warning
    nuclei_model: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.classes = [str(c) for c in self.classes]
        self.tme_stats = [str(s) for s in self.tme_stats]
        if self.nuclear is not None:
            self.nuclear = [str(m) for m in self.nuclear]
            self.nuclear_stats = [str(s) for s in self.nuclear_stats]
            if not self.nuclear or len(set(self.nuclear)) != len(self.nuclear):
                raise SignatureError(f"nuclear measures must be distinct names, got {self.nuclear}")
            bad_n = [s for s in self.nuclear_stats if s not in NUCLEAR_STATS]
            if bad_n or not self.nuclear_stats:
                raise SignatureError(
                    f"unknown nuclear statistics {bad_n or self.nuclear_stats}; choose from {NUCLEAR_STATS}"
                )
        if not self.classes and not (self.nuclear and not self.tme_stats and not self.mil):
            raise SignatureError("a feature spec needs at least one class")
        if len(set(self.classes)) != len(self.classes):
            raise SignatureError(f"duplicate classes in feature spec: {self.classes}")
        bad = [s for s in self.tme_stats if s not in TME_STATS]
        if bad:
            raise SignatureError(f"unknown TME statistics {bad}; choose from {TME_STATS}")
        if self.combine not in COMBINE_MODES:
            raise SignatureError(f"unknown slide combination {self.combine!r}; choose one of {COMBINE_MODES}")

    # ----------------------------------------------------------------- names
    @property
    def tme_names(self) -> list[str]:
        return [f"tme_{s}_{c}" for s in self.tme_stats for c in self.classes]

    @property
    def nuclear_names(self) -> list[str]:
        return [f"nuc_{s}_{m}" for s in self.nuclear_stats for m in (self.nuclear or [])]

    @property
    def feature_names(self) -> list[str]:
        """All names :meth:`transform` returns, in a stable order."""
        names = list(self.tme_names)
        if self.mil:
            names += [f"mil_hist_p{b:03d}" for b in range(N_HIST_BINS)]
            names += [f"mil_pred_{c}" for c in self.classes]
            names += [f"mil_tfidf_{w}" for w in (self.vocabulary or [])]
        names += self.nuclear_names
        return names

    @property
    def is_fitted(self) -> bool:
        return (not self.mil) or (self.vocabulary is not None and self.idf is not None)

    # ------------------------------------------------------------ compute
    def _pooled(self, slides: list[SlideTiles]) -> tuple[list[np.ndarray], np.ndarray | None]:
        probs = [_check_slide(s, self.classes, need_risk=self.mil) for s in slides]
        risk = np.concatenate([s.risk for s in slides]) if self.mil else None
        return probs, risk

    def fit(self, patients: Iterable[Any]) -> "FeatureSpec":
        """Learn the TF-IDF vocabulary and idf from training patients (no-op without MIL)."""
        if not self.mil:
            return self
        df: dict[str, int] = {}
        n = 0
        for patient in patients:
            probs, risk = self._pooled(_patient_slides(patient))
            pred = np.argmax(np.concatenate(probs), axis=1)
            for w in set(_words(risk, pred, self.classes)):  # type: ignore[arg-type]
                df[w] = df.get(w, 0) + 1
            n += 1
        if n == 0:
            raise SignatureError("cannot fit MIL features on zero patients")
        vocab = sorted(df)
        self.vocabulary = vocab
        self.idf = [math.log((1 + n) / (1 + df[w])) + 1.0 for w in vocab]
        return self

    def transform(self, patient: Any) -> dict[str, float]:
        """Features of one patient (one slide or a sequence of slides)."""
        if not self.is_fitted:
            raise SignatureError("MIL feature spec is not fitted: call fit(patients) first")
        slides = _patient_slides(patient)
        probs, risk = self._pooled(slides)
        out: dict[str, float] = {}
        n_tiles = np.array([p.shape[0] for p in probs])
        for stat in self.tme_stats:
            if stat == "mean":
                rows = np.stack([p.mean(axis=0) for p in probs])
            else:
                rows = np.stack([np.bincount(np.argmax(p, 1), minlength=len(self.classes)) / p.shape[0] for p in probs])
            comb = combine_slides(rows, n_tiles, self.combine)
            out.update({f"tme_{stat}_{c}": float(v) for c, v in zip(self.classes, comb)})
        if self.mil:
            assert risk is not None
            allp = np.concatenate(probs)
            pred = np.argmax(allp, axis=1)
            bins = np.clip(np.round(risk * 100).astype(int), 0, 100)
            hist = _minmax(np.bincount(bins, minlength=N_HIST_BINS).astype(float))
            out.update({f"mil_hist_p{b:03d}": float(v) for b, v in enumerate(hist)})
            ph = _minmax(np.bincount(pred, minlength=len(self.classes)).astype(float))
            out.update({f"mil_pred_{c}": float(v) for c, v in zip(self.classes, ph)})
            words = _words(risk, pred, self.classes)
            index = {w: i for i, w in enumerate(self.vocabulary or [])}
            tf = np.zeros(len(index))
            for w in words:
                i = index.get(w)
                if i is not None:
                    tf[i] += 1.0
            tf /= max(len(words), 1)
            v = tf * np.asarray(self.idf or [], dtype=float)
            norm = float(np.linalg.norm(v))
            if norm > 0:
                v = v / norm
            out.update({f"mil_tfidf_{w}": float(x) for w, x in zip(self.vocabulary or [], v)})
        if self.nuclear:
            out.update(self._nuclear_features(slides))
        return out

    def _nuclear_features(self, slides: list[SlideTiles]) -> dict[str, float]:
        """Mean and quantiles of each nuclear measure over the patient's pooled tiles."""
        measures = list(self.nuclear or [])
        for s in slides:
            _check_nuclear(s, measures)
        out: dict[str, float] = {}
        for m in measures:
            vals = np.concatenate([s.nuclear[m] for s in slides])  # type: ignore[index]
            vals = vals[np.isfinite(vals)]
            if vals.size == 0:
                raise SignatureError(
                    f"{_label(slides[0])}: no tile has a value of nuclear measure {m!r} "
                    "(no nuclei were found in its ROIs)"
                )
            for st in self.nuclear_stats:
                out[f"nuc_{st}_{m}"] = nuclear_stat(vals, st)
        return {k: out[k] for k in self.nuclear_names}

    def transform_many(self, patients: Mapping[str, Any]) -> "Any":
        """Feature table (pandas DataFrame, one row per patient id)."""
        rows = {pid: self.transform(p) for pid, p in patients.items()}
        return pd.DataFrame.from_dict(rows, orient="index")[self.feature_names]

    # --------------------------------------------------------------- JSON
    def to_json(self) -> dict[str, Any]:
        return {
            "kind": SPEC_KIND,
            "schema_version": SPEC_VERSION,
            "source": self.source,
            "classes": list(self.classes),
            "tme": {"stats": list(self.tme_stats), "combine": self.combine},
            "mil": (
                {
                    "hist_bins": N_HIST_BINS,
                    "rounding": 2,
                    "normalisation": "min-max per patient",
                    "tfidf": {"vocabulary": self.vocabulary, "idf": self.idf, "norm": "l2"},
                }
                if self.mil
                else None
            ),
            **(
                {
                    "nuclear": {
                        "measures": list(self.nuclear),
                        "stats": list(self.nuclear_stats),
                        "pooling": "tiles of all slides of the patient; tiles without a value ignored",
                        **({"nuclei_model": dict(self.nuclei_model)} if self.nuclei_model else {}),
                    }
                }
                if self.nuclear
                else {}
            ),
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any] | str | Path) -> "FeatureSpec":
        if isinstance(obj, (str, Path)):
            obj = json.loads(Path(obj).read_text())
        if not isinstance(obj, Mapping) or obj.get("kind") != SPEC_KIND:
            raise SignatureError("not a pathomics feature spec (kind != 'pathomics-feature-spec')")
        if obj.get("schema_version") != SPEC_VERSION:
            raise SignatureError(f"unsupported feature-spec schema_version {obj.get('schema_version')!r}")
        tme = obj.get("tme") or {"stats": [], "combine": "max"}
        mil = obj.get("mil")
        nuc = obj.get("nuclear") or None
        tfidf = (mil or {}).get("tfidf") or {}
        return cls(
            classes=list(obj["classes"]),
            tme_stats=list(tme.get("stats", [])),
            combine=str(tme.get("combine", "max")),
            mil=bool(mil),
            vocabulary=tfidf.get("vocabulary"),
            idf=tfidf.get("idf"),
            source=str(obj.get("source", "tiles")),
            nuclear=list(nuc["measures"]) if nuc else None,
            nuclear_stats=list(nuc.get("stats", DEFAULT_NUCLEAR_STATS)) if nuc else list(DEFAULT_NUCLEAR_STATS),
            nuclei_model=dict(nuc["nuclei_model"]) if nuc and isinstance(nuc.get("nuclei_model"), Mapping) else None,
        )


def tcga_feature_spec(classes: Sequence[str]) -> FeatureSpec:
    """Spec matching the TCGA CRC table: mean class probability, per-class max over slides."""
    return FeatureSpec(classes=list(classes), tme_stats=["mean"], combine="max", mil=False, source="table")
