"""Semi-synthetic virtual patients: real labelled tissue tiles, known composition, known hazard.

Each patient gets a pyramidal Aperio SVS at 0.5 µm/px assembled as a mosaic of the vendored
NCT-CRC-HE tiles (224 px = 112 µm = one cell of the tile lattice anchored at level-0 (0, 0), so
every model tile covers exactly one source tile and the truth is checkable tile by tile). Each
cell is a randomly cropped (scale 0.8–1), rotated (k·90°), flipped and slightly colour-jittered
copy of a source tile of its class, so repeats are not identical.

Per patient, a tissue composition is drawn from a Dirichlet over the eight tissue classes; BACK
(glass/background) is not tissue: it only appears as a ragged margin of border cells and is
excluded from the composition and the hazard. Classes are laid out in contiguous regions (ranks
of a smooth random field), as tissue is. The survival time follows a Weibull proportional-hazards
model whose log-hazard is linear in the realised tissue fractions (default: more stroma and
necrosis/debris -> higher hazard, more lymphocytes -> lower), with independent censoring
(uniform administrative end of follow-up and exponential drop-out). Everything is seeded per
patient (``default_rng([seed, i])``), so patient *i* is the same whatever the cohort size.

Outputs in ``OUT_DIR``: ``slides/<id>.svs``, ``cohort.csv`` (``patient_id, slide_path`` with
paths relative to the CSV), ``outcomes.csv`` (``patient_id, time, event, true_log_hazard,
true_<CLS>...``; time in months) and ``cohort.json`` (all parameters, for provenance).

Clinical interplay (optional, ``marker_hr`` / ``treatment_hr``): every patient also gets a
CA19-9-like marker (log-normal, median ``marker_cutoff`` U/mL, so half are "high") and a
treatment flag (a coin with probability ``treatment_share``: randomised *in the simulation*,
which real data never are). The true risk group is the image log-hazard above the cohort-average
one (that of the Dirichlet-mean composition). A high marker multiplies the hazard by
``marker_hr`` in the low-risk group only, and treatment multiplies it by ``treatment_hr`` in the
high-risk group only, as in the seed study. Setting both to 1 gives a null cohort with the same
columns. These draws use their own random stream, so the image part of patient *i* and, without
planted effects, its outcome are the same as in a cohort without them. ``table_only`` skips the
slides (fast: the interplay tests and benchmark need only the per-patient table).
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from ..atomic import atomic_write_json, atomic_write_text
from ..errors import CohortError
from ..outputs import check_output_dir
from ..resources import NCT_TILES_DIR
from ..signature import concordance
from ..units import DEFAULT_MPP, DEFAULT_TILE_PX
from ..wsi.images import IMAGE_SUFFIXES, ImageError, read_rgb
from ..wsi.synthetic import write_slide

CLASSES: tuple[str, ...] = ("ADI", "BACK", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM")
TISSUE_CLASSES: tuple[str, ...] = tuple(c for c in CLASSES if c != "BACK")
TILE_PX = DEFAULT_TILE_PX
MPP = DEFAULT_MPP
#: log-hazard per unit tissue fraction (a patient with 30 % more stroma has exp(0.3·4) ≈ 3.3× hazard)
DEFAULT_HAZARD: dict[str, float] = {"STR": 4.0, "DEB": 3.0, "TUM": 1.0, "LYM": -4.0, "NORM": -1.0}
#: Dirichlet base shares of the tissue classes (scaled by ``concentration``)
DEFAULT_ALPHA: dict[str, float] = {
    "ADI": 0.6,
    "DEB": 0.8,
    "LYM": 1.0,
    "MUC": 0.6,
    "MUS": 0.8,
    "NORM": 0.8,
    "STR": 1.6,
    "TUM": 2.0,
}


@dataclass
class CohortSpec:
    """Parameters of a virtual cohort (all recorded in ``cohort.json``)."""

    patients: int = 20
    seed: int = 0
    tiles_per_side: int = 10
    hazard: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_HAZARD))
    alpha: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_ALPHA))
    concentration: float = 0.6  # multiplies alpha: lower -> more varied compositions
    weibull_shape: float = 1.2
    median_months: float = 30.0  # median survival of a patient with the cohort-average log-hazard
    followup_months: tuple[float, float] = (36.0, 96.0)  # administrative censoring, uniform
    dropout_months: float = 240.0  # mean of the exponential drop-out time
    back_margin: float = 0.5  # probability that a border cell is glass (BACK)
    crop_scale: tuple[float, float] = (0.8, 1.0)
    color_jitter: float = 0.04
    jpeg_quality: int = 85
    tiles_dir: str | None = None  # default: the vendored NCT-CRC-HE tiles
    marker_hr: float | None = None  # HR of a high marker in the true low-risk group (None: no marker column)
    treatment_hr: float | None = None  # HR of treated vs untreated in the true high-risk group (None: no column)
    marker_cutoff: float = 37.0  # U/mL: the marker's median, and what "high" means
    marker_sd: float = 1.0  # SD of log(marker)
    treatment_share: float = 0.5

    @property
    def clinical(self) -> bool:
        """Whether patients carry the marker and treatment columns."""
        return self.marker_hr is not None or self.treatment_hr is not None

    def validate(self) -> None:
        if self.patients < 1:
            raise CohortError(f"--patients must be ≥ 1, got {self.patients}")
        if not 2 <= self.tiles_per_side <= 200:
            raise CohortError(f"--tiles-per-side must be within 2..200, got {self.tiles_per_side}")
        bad = sorted(set(self.hazard) - set(TISSUE_CLASSES))
        if bad:
            raise CohortError(f"hazard names unknown tissue classes {bad} (tissue classes: {list(TISSUE_CLASSES)})")
        if any(self.alpha.get(c, 0.0) <= 0 for c in TISSUE_CLASSES) or self.concentration <= 0:
            raise CohortError("Dirichlet alpha must be > 0 for every tissue class")
        if self.weibull_shape <= 0 or self.median_months <= 0:
            raise CohortError("Weibull shape and median must be > 0")
        for what, hr in (("--marker-hr", self.marker_hr), ("--treatment-hr", self.treatment_hr)):
            if hr is not None and not (math.isfinite(hr) and hr > 0):
                raise CohortError(f"{what} must be a hazard ratio > 0, got {hr}")
        if not 0 < self.treatment_share < 1:
            raise CohortError(f"treatment share must be within (0, 1), got {self.treatment_share}")
        if self.marker_cutoff <= 0 or self.marker_sd <= 0:
            raise CohortError("the marker's cutoff and SD must be > 0")


# ---------------------------------------------------------------------------------------------
# source tiles
def load_source_tiles(
    tiles_dir: str | Path | None = None, classes: Sequence[str] = CLASSES
) -> dict[str, list[np.ndarray]]:
    """RGB uint8 tiles per class from a folder-per-class directory, resized to 224 px."""
    root = Path(tiles_dir) if tiles_dir else NCT_TILES_DIR
    out: dict[str, list[np.ndarray]] = {}
    for c in classes:
        folder = root / c
        files = sorted(p for p in folder.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        tiles = []
        for p in files:
            try:
                img = read_rgb(p)
            except ImageError:
                continue
            if img.shape[:2] != (TILE_PX, TILE_PX):
                img = cv2.resize(img, (TILE_PX, TILE_PX), interpolation=cv2.INTER_AREA)
            tiles.append(img)
        if not tiles:
            raise CohortError(f"no readable tiles for class {c} in {folder}")
        out[c] = tiles
    return out


def augment_tile(
    tile: np.ndarray, rng: np.random.Generator, crop_scale: tuple[float, float] = (0.8, 1.0), color_jitter: float = 0.04
) -> np.ndarray:
    """Random crop (rescaled back to 224 px), k·90° rotation, flip and per-channel gain."""
    h = tile.shape[0]
    s = int(round(h * rng.uniform(*crop_scale)))
    y0, x0 = (int(rng.integers(0, h - s + 1)) for _ in range(2))
    out = tile[y0 : y0 + s, x0 : x0 + s]
    if s != TILE_PX:
        out = cv2.resize(out, (TILE_PX, TILE_PX), interpolation=cv2.INTER_LINEAR)
    out = np.rot90(out, int(rng.integers(0, 4)))
    if rng.random() < 0.5:
        out = out[:, ::-1]
    if color_jitter > 0:
        gain = 1.0 + rng.uniform(-color_jitter, color_jitter, size=3)
        out = np.clip(out.astype(np.float32) * gain, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(out)


# ---------------------------------------------------------------------------------------------
# one patient
@dataclass
class VirtualPatient:
    """The truth about one virtual patient (what ``outcomes.csv`` records)."""

    patient_id: str
    labels: np.ndarray  # (K, K) class index into CLASSES per lattice cell (row, col)
    composition: dict[str, float]  # realised tissue fractions (BACK excluded), sums to 1
    log_hazard: float  # the image part (what a pathomics signature can recover)
    time: float
    event: int
    clinical: dict[str, Any] | None = None  # marker, treatment, true risk group, total log-hazard

    def row(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "patient_id": self.patient_id,
            "time": round(self.time, 4),
            "event": self.event,
            "true_log_hazard": round(self.log_hazard, 6),
        }
        d.update({f"true_{c}": round(self.composition[c], 6) for c in TISSUE_CLASSES})
        d["n_tissue_cells"] = int(np.count_nonzero(self.labels != CLASSES.index("BACK")))
        if self.clinical is not None:
            d.update(self.clinical)
        return d


def _layout(rng: np.random.Generator, k: int, fractions: np.ndarray, back_margin: float) -> np.ndarray:
    """Cell labels: ragged glass margin, then tissue classes in contiguous regions of a smooth field."""
    labels = np.full((k, k), -1, dtype=np.int64)
    border = np.zeros((k, k), dtype=bool)
    border[0, :] = border[-1, :] = border[:, 0] = border[:, -1] = True
    glass = border & (rng.random((k, k)) < back_margin)
    labels[glass] = CLASSES.index("BACK")
    tissue_cells = np.flatnonzero(~glass.ravel())
    n = tissue_cells.size
    # counts by largest remainder so realised fractions are as close as possible to the draw
    raw = fractions * n
    counts = np.floor(raw).astype(int)
    rest = n - counts.sum()
    if rest > 0:
        counts[np.argsort(-(raw - counts), kind="stable")[:rest]] += 1
    field_ = cv2.GaussianBlur(rng.standard_normal((k, k)).astype(np.float32), (0, 0), sigmaX=max(1.0, k / 6))
    order = tissue_cells[np.argsort(field_.ravel()[tissue_cells], kind="stable")]
    class_order = rng.permutation(len(TISSUE_CLASSES))
    pos = 0
    flat = labels.ravel()
    for j in class_order:
        flat[order[pos : pos + counts[j]]] = CLASSES.index(TISSUE_CLASSES[j])
        pos += counts[j]
    return flat.reshape(k, k)


def mean_log_hazard(spec: CohortSpec) -> float:
    """The image log-hazard of the Dirichlet-mean composition: the cohort average, the true risk split."""
    a = np.array([spec.alpha[c] for c in TISSUE_CLASSES], dtype=float)
    mean_frac = a / a.sum()
    return float(sum(spec.hazard.get(c, 0.0) * f for c, f in zip(TISSUE_CLASSES, mean_frac)))


def _weibull_scale(spec: CohortSpec) -> float:
    """Baseline scale so that a patient at the mean log-hazard (Dirichlet mean) has the target median."""
    lp0 = mean_log_hazard(spec)
    # S(t) = exp(-(t/λ)^k · e^lp) = 0.5  ->  λ = median / (ln2 · e^-lp)^(1/k)
    return spec.median_months / (math.log(2.0) * math.exp(-lp0)) ** (1.0 / spec.weibull_shape)


def draw_patient(spec: CohortSpec, index: int) -> VirtualPatient:
    """Composition, layout, hazard and outcome of patient ``index`` (no pixels)."""
    rng = np.random.default_rng([spec.seed, index])
    alpha = np.array([spec.alpha[c] for c in TISSUE_CLASSES], dtype=float) * spec.concentration
    frac = rng.dirichlet(alpha)
    labels = _layout(rng, spec.tiles_per_side, frac, spec.back_margin)
    tissue = labels[labels != CLASSES.index("BACK")]
    comp = {c: float(np.mean(tissue == CLASSES.index(c))) for c in TISSUE_CLASSES}
    lp = float(sum(spec.hazard.get(c, 0.0) * comp[c] for c in TISSUE_CLASSES))
    lam, k = _weibull_scale(spec), spec.weibull_shape
    u = rng.random()
    total, clinical = lp, None
    if spec.clinical:
        crng = np.random.default_rng([spec.seed, index, 2])  # own stream: the image draw stays the same
        marker = float(np.exp(math.log(spec.marker_cutoff) + spec.marker_sd * crng.standard_normal()))
        treated = int(crng.random() < spec.treatment_share)
        high = lp > mean_log_hazard(spec)
        if not high and spec.marker_hr is not None and marker > spec.marker_cutoff:
            total += math.log(spec.marker_hr)
        if high and spec.treatment_hr is not None and treated:
            total += math.log(spec.treatment_hr)
        clinical = {
            "marker": round(marker, 3),
            "treatment": treated,
            "true_high_risk": int(high),
            "true_total_log_hazard": round(total, 6),
        }
    t_event = lam * (-math.log(max(u, 1e-300)) * math.exp(-total)) ** (1.0 / k)
    t_admin = rng.uniform(*spec.followup_months)
    t_drop = rng.exponential(spec.dropout_months)
    c = min(t_admin, t_drop)
    event = int(t_event <= c)
    return VirtualPatient(f"P{index + 1:04d}", labels, comp, lp, float(min(t_event, c)), event, clinical)


def render_patient(
    labels: np.ndarray, tiles: Mapping[str, list[np.ndarray]], rng: np.random.Generator, spec: CohortSpec
) -> np.ndarray:
    """The level-0 RGB mosaic: one augmented source tile per lattice cell."""
    k = labels.shape[0]
    img = np.empty((k * TILE_PX, k * TILE_PX, 3), dtype=np.uint8)
    for r in range(k):
        for c in range(k):
            cls = CLASSES[int(labels[r, c])]
            src = tiles[cls][int(rng.integers(0, len(tiles[cls])))]
            jitter = 0.0 if cls == "BACK" else spec.color_jitter
            img[r * TILE_PX : (r + 1) * TILE_PX, c * TILE_PX : (c + 1) * TILE_PX] = augment_tile(
                src, rng, spec.crop_scale, jitter
            )
    return img


def write_patient_slide(
    path: str | Path, patient: VirtualPatient, tiles: Mapping[str, list[np.ndarray]], spec: CohortSpec, index: int
) -> Path:
    """Render and write one patient's SVS (pixels seeded independently of the outcome draw)."""
    rng = np.random.default_rng([spec.seed, index, 1])
    img = render_patient(patient.labels, tiles, rng, spec)
    return write_slide(path, img, mpp=MPP, fmt="svs", tile=256)


# ---------------------------------------------------------------------------------------------
def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def draw_table(spec: CohortSpec) -> list[dict[str, Any]]:
    """Every patient's ``outcomes.csv`` row, without drawing a pixel (fast)."""
    spec.validate()
    return [draw_patient(spec, i).row() for i in range(spec.patients)]


def make_cohort(
    out_dir: str | Path,
    spec: CohortSpec | None = None,
    *,
    progress: bool = False,
    table_only: bool = False,
    **overrides: Any,
) -> dict[str, Any]:
    """Generate a virtual cohort in ``out_dir``; returns a summary (paths, event rate, oracle C).

    Existing slides with the same name are overwritten (generation is deterministic). With
    ``table_only`` only ``outcomes.csv`` and ``cohort.json`` are written (no slides, no cohort.csv).
    """
    spec = spec or CohortSpec()
    for k, v in overrides.items():
        if not hasattr(spec, k):
            raise CohortError(f"unknown cohort parameter {k!r}")
        setattr(spec, k, v)
    spec.validate()
    out = Path(out_dir)
    writes = [("outcomes.csv", "CSV table"), ("cohort.json", "JSON")]
    if not table_only:
        writes.append(("cohort.csv", "CSV table"))
        check_output_dir(out / "slides", [])  # a file named "slides" is not replaced by the folder
    check_output_dir(out, writes)  # never a file (a slide, a table) as the folder, nor files of other kinds in it
    (out / "slides" if not table_only else out).mkdir(parents=True, exist_ok=True)
    tiles = load_source_tiles(spec.tiles_dir) if not table_only else {}
    patients: list[VirtualPatient] = []
    it = range(spec.patients)
    bar = None
    if progress:
        bar = tqdm(total=spec.patients, unit="patient", desc="make-cohort", file=sys.stderr, disable=None)
    cohort_rows, outcome_rows = [], []
    for i in it:
        p = draw_patient(spec, i)
        rel = Path("slides") / f"{p.patient_id}.svs"
        if not table_only:
            write_patient_slide(out / rel, p, tiles, spec, i)
        patients.append(p)
        cohort_rows.append({"patient_id": p.patient_id, "slide_path": rel.as_posix()})
        outcome_rows.append(p.row())
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if not table_only:
        _write_csv(out / "cohort.csv", cohort_rows)
    _write_csv(out / "outcomes.csv", outcome_rows)
    t = np.array([p.time for p in patients])
    e = np.array([p.event for p in patients])
    lp = np.array([p.log_hazard for p in patients])
    summary = {
        "out": str(out),
        "patients": spec.patients,
        "events": int(e.sum()),
        "event_rate": float(e.mean()),
        "median_time_months": float(np.median(t)),
        "oracle_c_index": _finite_or_none(oracle_c_index(t, e, lp)) if e.sum() > 0 and spec.patients > 1 else None,
        "log_hazard_sd": float(lp.std()),
        "cohort_csv": None if table_only else str(out / "cohort.csv"),
        "outcomes_csv": str(out / "outcomes.csv"),
    }
    if spec.clinical:
        summary["planted"] = {
            "marker_hr_in_low_risk": spec.marker_hr,
            "treatment_hr_in_high_risk": spec.treatment_hr,
            "marker_cutoff": spec.marker_cutoff,
            "true_high_risk": int(sum(p.clinical["true_high_risk"] for p in patients if p.clinical)),
        }
    meta = {
        "kind": "pathomics-virtual-cohort",
        "version": 1,
        "spec": asdict(spec),
        "classes": list(CLASSES),
        "tile_px": TILE_PX,
        "mpp": MPP,
        "tile_um": TILE_PX * MPP,
        "time_unit": "months",
        "weibull_scale_months": _weibull_scale(spec),
        "hazard_model": "h(t|x) = (k/λ)(t/λ)^(k-1) · exp(Σ_c hazard[c] · fraction_c); fractions over tissue cells"
        + (
            "; + log(marker_hr) if marker > marker_cutoff and true log-hazard <= its cohort "
            "average, + log(treatment_hr) if treated and above it"
            if spec.clinical
            else ""
        ),
        "summary": summary,
    }
    atomic_write_json(out / "cohort.json", json.loads(json.dumps(meta, default=list)))
    return summary


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


def oracle_c_index(time: np.ndarray, event: np.ndarray, log_hazard: np.ndarray) -> float:
    """Harrell's C of the true log-hazard (higher hazard -> shorter time): the best achievable."""
    try:
        return concordance(time, log_hazard, event)
    except ZeroDivisionError:  # no comparable pair (tiny cohorts)
        return float("nan")
