"""Virtual-patient generator, and cohort-table validation on its slides (fast: no model)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from napari_pathomics.cohort.generator import (
    CLASSES,
    TILE_PX,
    CohortSpec,
    draw_patient,
    load_source_tiles,
    make_cohort,
    render_patient,
)
from napari_pathomics.cohort.table import read_cohort
from napari_pathomics.errors import CohortError
from napari_pathomics.wsi.slide import open_slide


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("cohort")
    return out, make_cohort(out, CohortSpec(patients=4, seed=3, tiles_per_side=5))


def test_outputs_and_slide_geometry(cohort: tuple[Path, dict]) -> None:
    import pandas as pd

    out, summary = cohort
    table = read_cohort(out / "cohort.csv")
    assert table.patients == ["P0001", "P0002", "P0003", "P0004"]
    oc = pd.read_csv(out / "outcomes.csv")
    assert set(oc["event"]) <= {0, 1} and (oc["time"] > 0).all()
    comp = oc[[c for c in oc.columns if c.startswith("true_") and c != "true_log_hazard"]]
    assert np.allclose(comp.sum(axis=1), 1.0, atol=1e-5)
    with open_slide(table.rows[0].slide_path) as s:
        assert s.dimensions == (5 * TILE_PX, 5 * TILE_PX)
        assert s.mpp == (0.5, 0.5)
        assert s.level_count >= 2


def test_truth_is_consistent_and_seeded() -> None:
    spec = CohortSpec(patients=10, seed=7, tiles_per_side=8)
    p = draw_patient(spec, 2)
    assert draw_patient(CohortSpec(patients=500, seed=7, tiles_per_side=8), 2).time == p.time  # independent of N
    back = CLASSES.index("BACK")
    inner = p.labels[1:-1, 1:-1]
    assert not (inner == back).any()  # glass only on the border
    tissue = p.labels[p.labels != back]
    for c, f in p.composition.items():
        assert f == pytest.approx(np.mean(tissue == CLASSES.index(c)))
    lp = sum(spec.hazard.get(c, 0.0) * f for c, f in p.composition.items())
    assert p.log_hazard == pytest.approx(lp)


def test_mosaic_cells_are_whole_tiles_of_their_class() -> None:
    """Without crop/jitter every 224-px lattice cell is a rotated/flipped source tile of its label."""
    spec = CohortSpec(patients=1, seed=1, tiles_per_side=4, crop_scale=(1.0, 1.0), color_jitter=0.0)
    tiles = load_source_tiles()
    p = draw_patient(spec, 0)
    img = render_patient(p.labels, tiles, np.random.default_rng(0), spec)

    def variants(t: np.ndarray) -> list[bytes]:
        out = []
        for k in range(4):
            r = np.rot90(t, k)
            out += [np.ascontiguousarray(r).tobytes(), np.ascontiguousarray(r[:, ::-1]).tobytes()]
        return out

    for r in range(4):
        for c in range(4):
            cell = np.ascontiguousarray(img[r * TILE_PX : (r + 1) * TILE_PX, c * TILE_PX : (c + 1) * TILE_PX]).tobytes()
            cls = CLASSES[int(p.labels[r, c])]
            assert any(cell in variants(t) for t in tiles[cls]), (r, c, cls)


def test_generation_is_deterministic(tmp_path: Path, cohort: tuple[Path, dict]) -> None:
    out, _ = cohort
    again = make_cohort(tmp_path, CohortSpec(patients=1, seed=3, tiles_per_side=5))
    a = hashlib.sha256((out / "slides" / "P0001.svs").read_bytes()).hexdigest()
    b = hashlib.sha256((tmp_path / "slides" / "P0001.svs").read_bytes()).hexdigest()
    assert a == b and again["patients"] == 1


# ---------------------------------------------------------------------------------------------
def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_table_errors(tmp_path: Path, cohort: tuple[Path, dict]) -> None:
    out, _ = cohort
    s1, s2 = out / "slides" / "P0001.svs", out / "slides" / "P0002.svs"
    cases = {
        "patient,slide\nA,x.svs\n": "missing column",
        f"patient_id,slide_path\nA,{s1}\nA,{s1}\n": "duplicate row",
        f"patient_id,slide_path\nA,{s1}\nB,{s1}\n": "listed for patient",
        f"patient_id,slide_path\nA,{s1}\nB,{tmp_path / 'nope.svs'}\n": "does not exist",
        f"patient_id,slide_path\n,{s1}\n": "empty patient_id",
        "patient_id,slide_path\n": "no rows",
    }
    for i, (text, msg) in enumerate(cases.items()):
        with pytest.raises(CohortError, match=msg):
            read_cohort(_write(tmp_path / f"t{i}.csv", text))
    ok = read_cohort(_write(tmp_path / "ok.csv", f"patient_id,slide_path,roi_path\nA,{s1},\nA,{s2},\n"))
    assert ok.by_patient() == {"A": ok.rows} and len({r.key for r in ok.rows}) == 2
    t = read_cohort(_write(tmp_path / "miss.csv", f"patient_id,slide_path\nA,{s1}\nB,gone.svs\n"), allow_missing=True)
    assert [r.exists for r in t.rows] == [True, False]


def test_planted_marker_and_treatment_leave_the_image_draw_alone() -> None:
    """Marker/treatment use their own stream: without effects the outcome is the plain cohort's;
    planted effects change the hazard only of the patients they are planted in."""
    from napari_pathomics.cohort.generator import mean_log_hazard

    plain = CohortSpec(patients=60, seed=4, tiles_per_side=6)
    null = CohortSpec(patients=60, seed=4, tiles_per_side=6, marker_hr=1.0, treatment_hr=1.0)
    planted = CohortSpec(patients=60, seed=4, tiles_per_side=6, marker_hr=3.0, treatment_hr=0.5)
    lp0 = mean_log_hazard(plain)
    changed = 0
    for i in range(60):
        a, b, c = draw_patient(plain, i), draw_patient(null, i), draw_patient(planted, i)
        assert a.clinical is None and a.time == b.time and a.event == b.event and a.log_hazard == c.log_hazard
        assert b.clinical["marker"] == c.clinical["marker"] and b.clinical["treatment"] == c.clinical["treatment"]
        high = c.log_hazard > lp0
        assert c.clinical["true_high_risk"] == int(high)
        expect = (
            c.log_hazard
            + (np.log(3.0) if (not high and c.clinical["marker"] > 37) else 0.0)
            + (np.log(0.5) if (high and c.clinical["treatment"]) else 0.0)
        )
        assert c.clinical["true_total_log_hazard"] == pytest.approx(expect, abs=1e-5)
        changed += expect != c.log_hazard
        if expect == c.log_hazard:
            assert c.time == b.time
    assert 10 < changed < 50
    row = draw_patient(planted, 0).row()
    assert {"marker", "treatment", "true_high_risk", "true_total_log_hazard"} <= set(row)


def test_table_only_cohort_writes_no_slides(tmp_path) -> None:
    from napari_pathomics.cli import main

    rc = main(["make-cohort", str(tmp_path / "t"), "--patients", "30", "--null-effects", "--table-only", "--quiet"])
    assert rc == 0
    assert (tmp_path / "t" / "outcomes.csv").is_file() and not (tmp_path / "t" / "slides").exists()
    assert not (tmp_path / "t" / "cohort.csv").exists()
    head = (tmp_path / "t" / "outcomes.csv").read_text().splitlines()[0]
    assert "marker" in head and "treatment" in head
    assert main(["make-cohort", str(tmp_path / "u"), "--null-effects", "--marker-hr", "2", "--table-only"]) == 9
