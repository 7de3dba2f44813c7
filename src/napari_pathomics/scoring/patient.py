"""Score one patient (one or more slides) against a bundle's signature, headless and Qt-free.

Two halves: :func:`score_slide`, the per-slide step (ROIs clipped, the slide analysed through
``inference.analyze_slide`` unless complete results are given, nuclei where the signature needs
them), and the patient pooling (features and score through ``scoring.tiles.score_tiles``, the
call ``score-cohort``'s ``patients.csv`` makes too; with clinical values, the combined score of
``scoring.combined``). Inference runs only where results are missing; the engine's cache (slide
fingerprint × bundle id × grid key) makes a second scoring instant and identical.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..bundle import Bundle
from ..cells.methods import NucleiMethod
from ..errors import CancelledError, SignatureError, TilingError
from ..inference.analyze import analyze_slide
from ..inference.engine import Engine
from ..inference.head import ClassHead
from ..provenance import (
    FINGERPRINT_METHOD,
    bundle_record,
    now_iso,
    strict_json,
    versions,
)
from ..results import BACKGROUND, DONE, FAILED, PENDING, TileResults
from ..signature import Signature, SignatureScore
from ..wsi.annotations import Annotation, clip_annotations
from ..wsi.slide import Slide, open_slide
from .combined import CombinedResult, clinical_signature_for, combined_score
from .context import case_context, slide_cancer_type
from .engine_cache import shared_engine
from .tiles import (
    NucleiChoice,
    composition,
    load_signature,
    nuclear_tile_values,
    nuclei_method,
    nuclei_model_warning,
    score_tiles,
    slide_tiles,
)

__all__ = [
    "PatientScore",
    "SlideSummary",
    "score_patient",
    "score_slide",
    "ordinal",
    "REPORT_KIND",
    "DISCLAIMER",
    "disclaimer",
]

REPORT_KIND = "pathomics-patient-score"
STATUS_CODES = (DONE, FAILED, BACKGROUND, PENDING)
REPORT_VERSION = 1


def disclaimer(cancer_type: str | None = None) -> str:
    """The research-use statement, naming the cancer the signature was derived from where it is recorded."""
    origin = f"was derived from {cancer_type}" if cancer_type else "was derived from one research cohort"
    return f"Research use only: the signature {origin}; it is not a clinical test and must not guide patient care."


#: The statement for the bundled (TCGA colorectal) signature.
DISCLAIMER = disclaimer("colorectal cancer (TCGA)")

Progress = Callable[[str, float], None]


# ---------------------------------------------------------------------------------------------
@dataclass
class SlideSummary:
    """What one slide contributed to the score (serialised in the report)."""

    path: str
    fingerprint: str  # provenance.file_fingerprint (= Slide.file_hash, the cache key)
    sha256: str | None  # full-content sha256 (the fingerprint; kept under its own key for readers)
    size_bytes: int
    width: int
    height: int
    mpp: list[float]
    n_tiles: int
    n_done: int
    n_failed: int
    n_background: int
    n_pending: int
    composition: dict[str, float]  # class -> mean probability over this slide's DONE tiles
    n_rois: int | None
    used: bool  # False when the slide had no DONE tile and was left out of the features
    from_cache: bool
    grid_key: str | None = None
    unreadable_mm2: float = 0.0  # area of the slide that could not be decoded (its tiles failed)
    tile_um: float | None = None  # side of one tile in µm (scored area = n_done × tile_um²)
    roi_mm2: float | None = None  # area of the ROIs (clipped to the slide), None when all tissue was scored
    tissue_metadata: str | None = None  # a tissue / diagnosis the slide's metadata records, if any
    mpp_source: str | None = None  # Slide.mpp_source: "file", or "user" when the user set the µm/px

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "fingerprint": self.fingerprint,
            "fingerprint_method": FINGERPRINT_METHOD,
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "width": self.width,
            "height": self.height,
            "mpp": self.mpp,
            "tiles": {
                "total": self.n_tiles,
                "done": self.n_done,
                "failed": self.n_failed,
                "background": self.n_background,
                "pending": self.n_pending,
            },
            "composition": dict(self.composition),
            "n_rois": self.n_rois,
            "used": self.used,
            "from_cache": self.from_cache,
            "grid_key": self.grid_key,
            "unreadable_mm2": self.unreadable_mm2,
            "tile_um": self.tile_um,
            "roi_mm2": self.roi_mm2,
            "tissue_metadata": self.tissue_metadata,
            "mpp_source": self.mpp_source,
        }


@dataclass
class PatientScore:
    """One patient's score with everything needed to reproduce and report it."""

    patient_id: str
    score: SignatureScore
    features: dict[str, float]
    composition: dict[str, float]  # class -> mean probability over all DONE tiles of the patient
    class_names: list[str]
    class_colors: list[str]
    slides: list[SlideSummary]
    bundle: dict[str, Any]  # name, version, id, path, file_hashes
    signature: dict[str, Any]  # name + headline metrics (Signature.summary())
    versions: dict[str, str]
    started: str
    finished: str
    duration_s: float
    warnings: list[str] = field(default_factory=list)
    #: the score in context (scoring.context.case_context): area scored, validated evidence, the
    #: group as it may be said, composition without background, cancer-type check
    context: dict[str, Any] = field(default_factory=dict)
    #: the combined (pathomics + clinical) score when clinical values were given (scoring.combined)
    clinical: CombinedResult | None = None
    #: the nuclei method behind the nuclear features (name, licence, key); None when none were used
    nuclei_model: dict[str, Any] | None = None
    # not serialised: what the report needs to draw overviews, and the widget to show layers
    results: list[TileResults | None] = field(default_factory=list, repr=False, compare=False)
    rois: list[list[Annotation] | None] = field(default_factory=list, repr=False, compare=False)
    slide_objects: list[Any] = field(default_factory=list, repr=False, compare=False)

    @property
    def disclaimer(self) -> str:
        """The research-use statement for this score's signature."""
        return disclaimer(((self.context or {}).get("cancer_type") or {}).get("signature"))

    @property
    def risk(self) -> float:
        return self.score.risk

    @property
    def group(self) -> str:
        return self.score.group

    @property
    def percentile(self) -> float:
        return self.score.percentile

    def to_json(self) -> dict[str, Any]:
        """All numbers as plain JSON (no NaN): what ``--json`` prints and the JSON report holds."""
        sc = self.score
        return {
            "kind": REPORT_KIND,
            "schema_version": REPORT_VERSION,
            "patient_id": self.patient_id,
            "risk": sc.risk,
            "percentile": sc.percentile,
            "group": sc.group,
            "cutoff": sc.cutoff,
            "survival": dict(sc.survival_at),
            "time_unit": sc.time_unit,
            "survival_curve": {"times": list(sc.curve_times), "survival": list(sc.curve_survival)},
            "features": dict(self.features),
            "composition": dict(self.composition),
            "classes": [{"name": n, "color": c} for n, c in zip(self.class_names, self.class_colors)],
            "slides": [s.to_json() for s in self.slides],
            "bundle": dict(self.bundle),
            "signature": dict(self.signature),
            "versions": dict(self.versions),
            "warnings": list(self.warnings),
            "started": self.started,
            "finished": self.finished,
            "duration_s": self.duration_s,
            "disclaimer": self.disclaimer,
            "context": dict(self.context),
            "nuclei_model": dict(self.nuclei_model) if self.nuclei_model is not None else None,
            **({"clinical": dict(self.clinical)} if self.clinical is not None else {}),
        }


# ---------------------------------------------------------------------------------------------
def ordinal(n: float) -> str:
    """'83rd', '11th', '2nd': percentiles read as a pathologist says them."""
    k = int(round(n))
    suffix = "th" if 10 <= k % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")
    return f"{k}{suffix}"


def _check_len(name: str, items: Sequence[Any] | None, n: int) -> list[Any]:
    if items is None:
        return [None] * n
    items = list(items)
    if len(items) != n:
        raise SignatureError(f"{name}: got {len(items)} entries for {n} slide(s); give one per slide, in order")
    return items


# ---------------------------------------------------------------------------------------------
@dataclass
class _ScoredSlide:
    """What one slide gives the patient: its summary, its results (None: no tile planned), its nuclei."""

    summary: SlideSummary
    results: TileResults | None
    rois: list[Annotation] | None
    nuclear: dict[str, np.ndarray] | None = None


@dataclass
class _Run:
    """How the slides of one patient are run (the engine options shared by all of them)."""

    bundle: Bundle
    device: str
    batch_size: int
    amp: str
    tta: str
    cache_dir: str | Path | None
    use_cache: bool
    cancel: threading.Event | None
    class_head: ClassHead | None
    nuclei: NucleiMethod | None = None  # the nuclei method, when the signature has nuclear features
    engine: Engine | None = None

    def get_engine(self) -> Engine:
        if self.engine is None:
            # no tta argument for the plain engine: the same cached engine as callers that pass none
            tta: dict[str, Any] = {"tta": self.tta} if self.tta != "none" else {}
            engine, _ = shared_engine(self.bundle, device=self.device, batch_size=self.batch_size, amp=self.amp, **tta)
            self.engine = engine.with_class_head(self.class_head) if self.class_head is not None else engine
        return self.engine


def _slide_results(
    slide: Slide,
    rois: list[Annotation] | None,
    given: TileResults | None,
    how: _Run,
    report: Progress,
    base: float,
    span: float,
    warnings: list[str],
) -> tuple[TileResults | None, bool, str | None, float]:
    """Results of one slide: the given ones when usable, else the per-slide step's run.

    Returns (results, from_cache, grid key, unreadable mm²); results are None when the plan has
    no tile (the step's TilingError becomes a warning: the slide is left out of the score).
    """
    name, bundle_id = slide.path.name, how.bundle.bundle_id
    if given is not None and (given.meta.get("bundle_id") not in (None, bundle_id) or not given.complete):
        why = "another bundle" if given.meta.get("bundle_id") not in (None, bundle_id) else "incomplete"
        warnings.append(f"{name}: the given results were {why}; recomputed with {how.bundle.name}")
        given = None
    if given is not None:
        return given, False, given.meta.get("grid_key"), 0.0
    report(f"{name}: planning tiles", base)
    try:
        step = analyze_slide(
            slide, how.get_engine(), rois, cache_dir=how.cache_dir, use_cache=how.use_cache, cancel=how.cancel
        )
    except TilingError as exc:
        warnings.append(f"{exc}; left out of the score")
        return None, False, None, 0.0
    report(f"{name}: inference on {len(step.grid)} tiles", base)
    for upd in step:
        report(f"{name}: {upd.done}/{upd.total} tiles", base + upd.fraction * span)
    res = step.results
    if not res.complete:
        raise CancelledError(
            f"scoring cancelled during inference on {name} ({res.n_done}/{len(res)} tiles; a rerun resumes from the cache)"
        )
    return res, step.from_cache, step.grid.key(), step.unreadable_mm2


def _summary(
    slide: Slide,
    res: TileResults | None,
    rois: list[Annotation] | None,
    from_cache: bool,
    grid_key: str | None,
    unreadable: float,
    warnings: list[str],
) -> SlideSummary:
    """One slide's contribution as the report shows it; a slide without a classified tile is said."""
    name = slide.path.name
    n = len(res) if res is not None else 0
    counts = {code: int(np.count_nonzero(res.status == code)) if res is not None else 0 for code in STATUS_CODES}
    used = counts[DONE] > 0
    if res is not None and not used:
        warnings.append(
            f"{name}: none of its {n} tiles could be classified "
            f"({counts[BACKGROUND]} background, {counts[FAILED]} failed); left out of the score"
        )
    elif used and (counts[FAILED] or unreadable):
        warnings.append(
            f"{name}: {counts[FAILED]} of {n} tiles failed to decode and were left out"
            + (f" ({unreadable:.3g} mm² of the slide is unreadable)" if unreadable else "")
        )
    path = Path(slide.path)
    mpp_xy = tuple(float(v) for v in slide.mpp) if slide.has_mpp else None
    tile_um = (
        (res.meta.get("tile_um") or (res.tile_size_l0 * mpp_xy[0] if mpp_xy else None)) if res is not None else None
    )
    roi_mm2 = float(sum(a.geometry.area for a in rois)) * mpp_xy[0] * mpp_xy[1] / 1e6 if rois and mpp_xy else None
    return SlideSummary(
        path=str(path),
        fingerprint=(fp := slide.file_hash()),
        sha256=fp,
        size_bytes=path.stat().st_size,
        width=slide.width,
        height=slide.height,
        mpp=[float(v) for v in slide.mpp] if slide.has_mpp else [],
        n_tiles=n,
        n_done=counts[DONE],
        n_failed=counts[FAILED],
        n_background=counts[BACKGROUND],
        n_pending=counts[PENDING],
        composition=composition(res.probs[res.status == DONE], res.class_names) if res is not None else {},
        n_rois=len(rois) if rois else None,
        used=used,
        from_cache=from_cache,
        grid_key=grid_key,
        unreadable_mm2=unreadable,
        tile_um=float(tile_um) if tile_um else None,
        roi_mm2=roi_mm2,
        tissue_metadata=slide_cancer_type(getattr(slide, "properties", {}) or {}),
        mpp_source=getattr(slide, "mpp_source", None),
    )


def score_slide(
    slide: Slide,
    sig: Signature,
    how: _Run,
    *,
    rois: list[Annotation] | None = None,
    given: TileResults | None = None,
    report: Progress,
    base: float = 0.0,
    span: float = 1.0,
    warnings: list[str],
) -> _ScoredSlide:
    """The per-slide half of :func:`score_patient`: ROIs clipped, results (given or run), nuclei."""
    name = slide.path.name
    if rois:
        clipped = clip_annotations(rois, slide.dimensions, source=f"ROIs of {name}")
        rois = clipped.annotations
        warnings.extend(f"{name}: {w}" for w in clipped.warnings)
    res, from_cache, grid_key, unreadable = _slide_results(slide, rois, given, how, report, base, span, warnings)
    summary = _summary(slide, res, rois, from_cache, grid_key, unreadable, warnings)
    nuclear = None
    if summary.used and res is not None and sig.feature_spec is not None and sig.feature_spec.nuclear:
        report(f"{name}: nuclei on {summary.n_done} tiles", base + 0.9 * span)
        nuclear = nuclear_tile_values(
            slide, res, sig.feature_spec, cancel=how.cancel, use_cache=how.use_cache, method=how.nuclei
        )
    return _ScoredSlide(summary, res, rois or None, nuclear)


def _pool(
    scored: Sequence[_ScoredSlide], sig: Signature, warnings: list[str]
) -> tuple[dict[str, float], SignatureScore, dict[str, float], list[str], list[str]]:
    """The patient half of :func:`score_patient`: features and score from the used slides' tiles.

    TilingError when no slide had a tile to run at all (the per-slide rule, for the patient);
    SignatureError when tiles ran but none of them could be classified.
    """
    used = [s for s in scored if s.summary.used]
    if not used:
        detail = "; ".join(w for w in warnings if "left out of the score" in w)
        if all(s.results is None for s in scored):
            raise TilingError(f"cannot score patient: no slide has a tile to analyse ({detail})")
        raise SignatureError(f"cannot score patient: no slide has a classified tile in its ROIs ({detail})")
    tiles = [slide_tiles(s.results, Path(s.summary.path).name, nuclear=s.nuclear) for s in used]
    features, sc = score_tiles(sig, tiles)
    names = list(tiles[0].class_names)
    colors = list(used[0].results.class_colors)  # type: ignore[union-attr]
    return features, sc, composition(np.concatenate([t.probs for t in tiles]), names), names, colors


def score_patient(
    slides: Sequence[str | Path | Slide],
    bundle: Bundle,
    *,
    patient_id: str | None = None,
    rois: Sequence[list[Annotation] | None] | None = None,
    results: Sequence[TileResults | None] | None = None,
    device: str = "auto",
    batch_size: int = 32,
    amp: str = "auto",
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    slide_mpp: float | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    case_type: str | None = None,
    class_head: ClassHead | None = None,
    tta: str = "none",
    clinical: Mapping[str, Any] | None = None,
    nuclei_model: NucleiChoice = None,
) -> PatientScore:
    """Score one patient's slides with ``bundle``'s signature; inference runs where needed.

    ``rois[i]`` restricts slide ``i`` to its ROIs, clipped to the slide (``None``: all detected
    tissue); ``results[i]`` reuses results already computed (e.g. by the Analyze dock) when they
    are complete and from this bundle. ``case_type`` is the case's cancer type as the user states
    it (else the slides' metadata is asked), checked against the signature's in
    ``PatientScore.context``. ``class_head`` replaces the bundle's class head (one adapted in the
    viewer and not saved yet; recorded in ``PatientScore.bundle``). ``tta`` is the engine's
    test-time augmentation (``inference.engine.TTA_MODES``; off by default: it did not help, see
    ``docs/benchmarks.md``). ``clinical`` holds the patient's raw clinical values
    (``{"stage": "3", ...}``): the bundle's combined signature then scores them with the image
    features, in ``PatientScore.clinical`` (a bundle without one, or an unknown name, is a
    ClinicalError before any inference; a value outside the frozen encoding one after it). Each
    slide goes through the per-slide step (``inference.analyze_slide``); a slide without a tile
    to run, or without a classified tile, is left out with a warning. If no slide has a tile to
    run that is the step's TilingError; if none has a classified tile, or the bundle has no
    signature, a :class:`SignatureError` says why. ``nuclei_model`` is the nuclei method of a
    signature with nuclear features (a name, a model folder or a resolved method; None: the
    default), resolved before any inference (a bad one is a NucleiError) and named in
    ``PatientScore.nuclei_model``; a signature that records another method gets a warning, and
    one without nuclear features ignores it.
    """
    t0 = time.perf_counter()
    started = now_iso()
    report = progress or (lambda msg, frac: None)
    slides = list(slides)
    if not slides:
        raise SignatureError("no slides to score: give at least one slide of the patient")
    sig = load_signature(bundle)  # before any inference: a bundle that cannot score fails at once
    combined = clinical_signature_for(bundle, sig, clinical)
    roi_list = _check_len("ROIs", rois, len(slides))
    given = _check_len("results", results, len(slides))
    if class_head is not None and any(r is not None for r in given):
        raise SignatureError("give either results or a class head, not both: results carry their own head")
    spec = sig.feature_spec
    uses_nuclei = spec is not None and bool(spec.nuclear)
    method = nuclei_method(nuclei_model) if uses_nuclei or nuclei_model is not None else None
    how = _Run(bundle, device, batch_size, amp, tta, cache_dir, use_cache, cancel, class_head)
    how.nuclei = method if uses_nuclei else None
    n = len(slides)
    warnings: list[str] = []
    if how.nuclei is not None and (shift := nuclei_model_warning(spec, how.nuclei)):
        warnings.append(shift)
    scored: list[_ScoredSlide] = []
    slide_objs: list[Any] = []
    for i, item in enumerate(slides):
        if cancel is not None and cancel.is_set():
            raise CancelledError("scoring cancelled")
        slide = item if isinstance(item, Slide) else open_slide(item, mpp=slide_mpp)
        own = slide is not item
        try:
            scored.append(
                score_slide(
                    slide,
                    sig,
                    how,
                    rois=roi_list[i],
                    given=given[i],
                    report=report,
                    base=i / n,
                    span=1 / n,
                    warnings=warnings,
                )
            )
            slide_objs.append(None if own else slide)
        finally:
            if own:
                slide.close()
    features, sc, comp_all, names, colors = _pool(scored, sig, warnings)
    summaries = [s.summary for s in scored]
    report("done", 1.0)
    ctx = case_context(
        summaries, comp_all, names, sc.group, sig, bundle.manifest, case_type, [s.tissue_metadata for s in summaries]
    )
    ps = PatientScore(
        patient_id=patient_id or Path(summaries[0].path).stem,
        score=sc,
        features=features,
        composition=comp_all,
        class_names=names,
        class_colors=colors,
        slides=summaries,
        signature=strict_json(sig.summary()),
        bundle={
            **bundle_record(bundle),
            **({"tta": tta} if tta != "none" else {}),
            **(
                {
                    "class_head": {
                        "digest": class_head.digest(),
                        "note": "adapted in the viewer and not saved as a bundle",
                    }
                }
                if class_head is not None
                else {}
            ),
        },
        versions=versions(),
        started=started,
        finished=now_iso(),
        duration_s=round(time.perf_counter() - t0, 3),
        warnings=warnings,
        context=ctx,
        nuclei_model=how.nuclei.describe() if how.nuclei is not None else None,
        results=[s.results for s in scored],
        rois=[s.rois for s in scored],
        slide_objects=slide_objs,
    )
    if combined is not None and clinical is not None:
        ps.clinical = combined_score(ps, combined, clinical, sig)
    return ps
