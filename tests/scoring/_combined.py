"""A combined (pathomics + clinical) signature fitted with the real API, put into a test bundle.

Until the default bundle ships its own ``signature_clinical.json``, the Score dock, ``pathomics
score --clinical`` and the report are tested against this one: the default signature's feature
spec (so the image features come from the tiles), three TME features, stage (ordinal 1-4) and
age (numeric, years), and an interplay analysis of a marker carried in the signature.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from napari_pathomics.bundle import Bundle
from napari_pathomics.cli.signature import attach_to_bundle
from napari_pathomics.signature import FeatureSpec, Signature, SignatureFitter
from napari_pathomics.signature.clinical import parse_clinical, with_labels
from napari_pathomics.signature.interplay import analyze_interaction

FEATURES = ["tme_mean_DEB", "tme_mean_MUS", "tme_mean_TUM"]
FAST = {"folds": 3, "n_permutations": 20, "n_bootstrap": 100, "penalizers": (0.01, 0.05)}


def clinical_table(n: int = 240, seed: int = 5) -> pd.DataFrame:
    """TME shares (TUM prognostic), stage 1-4 (strongly), age 35-85 and a CA19-9-like marker
    prognostic only in the low-risk half."""
    rng = np.random.default_rng(seed)
    tum = rng.uniform(0.05, 0.6, n)
    deb = rng.uniform(0.0, 0.2, n)
    mus = rng.uniform(0.0, 0.3, n)
    stage = rng.integers(1, 5, n)
    age = rng.uniform(35, 85, n).round()
    marker = rng.lognormal(3.0, 0.8, n).round(1)
    lp = 3.0 * (tum - 0.3) + 0.7 * (stage - 2.5) + 0.02 * (age - 60) + 0.8 * (marker > 37) * (tum < 0.3)
    t_ev = rng.exponential(1.0 / (0.0008 * np.exp(lp)))
    t_c = rng.exponential(2500.0, n)
    d = pd.DataFrame(
        {
            "pid": [f"P{i:03d}" for i in range(n)],
            "tme_mean_DEB": deb,
            "tme_mean_MUS": mus,
            "tme_mean_TUM": tum,
            "stage": stage.astype(float),
            "age": age,
            "marker": marker,
        }
    )
    d["time"] = np.round(np.minimum(t_ev, t_c), 1) + 1.0
    d["event"] = (t_ev <= t_c).astype(int)
    return d


def fit_combined(spec: FeatureSpec | None, cancer_type: str = "colorectal adenocarcinoma") -> Signature:
    """The combined signature with an interplay analysis of ``marker`` in its ``interplay`` list."""
    d = clinical_table()
    sig = SignatureFitter(**FAST).fit(
        d,
        "time",
        "event",
        FEATURES,
        feature_spec=spec,
        id_col="pid",
        name="test-combined",
        clinical=with_labels(parse_clinical("stage:ordinal,age:numeric(years)"), ["stage=stage (I–IV)"]),
        cancer_type=cancer_type,
    )
    doc = sig.to_json()
    inter = analyze_interaction(sig, d, "marker", time_col="time", event_col="event", cutoff=37)
    doc["interplay"] = [json.loads(json.dumps(inter, default=float))]
    return Signature.from_json(doc)


def add_combined(bundle: Bundle, cancer_type: str = "colorectal adenocarcinoma") -> Bundle:
    """``bundle`` with a combined signature in its clinical slot (returns the reloaded bundle)."""
    image = Signature.from_json(bundle.signature_path)
    attach_to_bundle(fit_combined(image.feature_spec, cancer_type), Path(bundle.path), "clinical")
    return Bundle.load(bundle.path)
