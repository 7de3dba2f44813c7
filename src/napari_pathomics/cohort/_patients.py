"""``patients.csv``: each patient's features, risk, percentile, group and survival, through scoring.

Every number comes from ``scoring.score_tiles`` on the slides' saved results, the same call
``pathomics score`` makes, so a patient scored in a cohort and alone gets the same risk.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from ..atomic import atomic_write_text
from ..bundle import Bundle
from ..cells.methods import NucleiMethod
from ..errors import PathomicsError
from ..results import TileResults
from ..scoring import load_signature, nuclear_tile_values, nuclei_method, score_tiles, slide_tiles, tile_features
from ..signature import Signature
from ..tables import safe_cell
from ._task import RESULTS_NAME, one_line, patient_feature_spec, slide_dir
from .table import CohortTable

__all__ = ["write_patient_table"]


def write_patient_table(
    out: Path,
    table: CohortTable,
    records: dict[str, dict[str, Any]],
    bundle: Bundle,
    nuclei: NucleiMethod | None = None,
) -> dict[str, Any]:
    """Write ``out/patients.csv``; returns a summary for ``run.json``.

    ``nuclei`` is the nuclei method of nuclear features (None: the default); the summary names it
    (with its licence) when the features use nuclei.
    """
    sig: Signature | None = load_signature(bundle) if bundle.signature_path is not None else None
    spec = sig.feature_spec if sig is not None else patient_feature_spec(bundle)
    assert spec is not None
    method = nuclei_method(nuclei) if spec.nuclear else None
    rows = []
    for pid, prow in table.by_patient().items():
        ok = [r for r in prow if records.get(r.key, {}).get("status") in ("done", "skipped")]
        base: dict[str, Any] = {"patient_id": pid, "n_slides": len(prow), "n_slides_scored": len(ok)}
        if not ok:
            rows.append({**base, "status": "failed", "error": "no slide of this patient could be scored"})
            continue
        try:
            tiles = []
            for r in ok:
                res = TileResults.load(slide_dir(out, r.key) / RESULTS_NAME)
                # a signature with nuclear features gets them through the nuclei cache, like ``score``
                tiles.append(
                    slide_tiles(res, r.key, nuclear=nuclear_tile_values(r.slide_path, res, spec, method=method))
                )
            base["n_tiles"] = int(sum(t.probs.shape[0] for t in tiles))
            entry = {
                **base,
                "status": "ok" if len(ok) == len(prow) else f"partial ({len(ok)}/{len(prow)} slides)",
                "error": "",
            }
            if sig is not None:
                feats, sc = score_tiles(sig, tiles)
                entry.update({"risk": sc.risk, "percentile": sc.percentile, "group": sc.group, "cutoff": sc.cutoff})
                entry.update({f"survival_{h}{sig.time_unit}": v for h, v in sc.survival_at.items()})
            else:
                feats = tile_features(spec, tiles)
            entry.update(feats)
            rows.append(entry)
        except PathomicsError as exc:
            rows.append({**base, "status": "failed", "error": one_line(exc)})
    df = pd.DataFrame(rows).map(safe_cell)
    atomic_write_text(out / "patients.csv", df.to_csv(index=False))
    return {
        "path": str(out / "patients.csv"),
        "patients": len(rows),
        "scored": int(sum(1 for r in rows if "risk" in r)),
        "failed": int(sum(1 for r in rows if r.get("status") == "failed")),
        "signature": sig.name if sig is not None else None,
        "time_unit": sig.time_unit if sig is not None else None,
        "feature_spec": spec.to_json(),
        "nuclei_model": method.describe() if method is not None else None,
    }
