"""The signature's nuclear family: frozen in the spec, same numbers in fit and score, old specs unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _cells_helpers import tile_results

from napari_pathomics.cli import main
from napari_pathomics.errors import SignatureError
from napari_pathomics.resources import DEFAULT_BUNDLE
from napari_pathomics.scoring import slide_tiles
from napari_pathomics.signature import FeatureSpec, Signature, SlideTiles


def _slide(n: int, density: np.ndarray, nc: np.ndarray, sid: str = "") -> SlideTiles:
    probs = np.full((n, 2), 0.5)
    return SlideTiles(probs, ("A", "B"), slide_id=sid, nuclear={"density_mm2": density, "nc_ratio_mean": nc})


def test_nuclear_features_are_pooled_tile_statistics() -> None:
    spec = FeatureSpec(
        ["A", "B"], tme_stats=["mean"], nuclear=["density_mm2", "nc_ratio_mean"], nuclear_stats=["mean", "q50", "q90"]
    )
    s1 = _slide(3, np.array([1000.0, 2000.0, np.nan]), np.array([0.2, 0.3, 0.4]))
    s2 = _slide(2, np.array([3000.0, 4000.0]), np.array([np.nan, 0.6]))
    f = spec.transform([s1, s2])
    assert f["nuc_mean_density_mm2"] == 2500.0  # NaN tiles (no value) are ignored, slides pooled
    assert f["nuc_q50_density_mm2"] == 2500.0
    assert f["nuc_q90_density_mm2"] == pytest.approx(np.percentile([1000, 2000, 3000, 4000], 90))
    assert f["nuc_mean_nc_ratio_mean"] == pytest.approx(0.375)
    assert list(f)[-6:] == spec.nuclear_names
    assert f["tme_mean_A"] == 0.5  # the other families' numbers are unchanged by the new one


def test_spec_json_round_trip_and_old_specs_unchanged() -> None:
    spec = FeatureSpec(["A", "B"], nuclear=["density_mm2"], nuclear_stats=["mean", "q10"])
    back = FeatureSpec.from_json(json.loads(json.dumps(spec.to_json())))
    assert back.nuclear == ["density_mm2"] and back.nuclear_stats == ["mean", "q10"]
    assert back.feature_names == spec.feature_names
    old = FeatureSpec(["A", "B"], tme_stats=["mean"], combine="max")
    assert "nuclear" not in old.to_json()  # signatures written before stay byte-identical
    assert FeatureSpec.from_json(old.to_json()).nuclear is None
    # the bundled TCGA signature still loads and scores without nuclei
    sig = Signature.from_json(DEFAULT_BUNDLE / "signature.json")
    assert sig.feature_spec is not None and not sig.feature_spec.nuclear
    nuc_only = FeatureSpec([], tme_stats=[], nuclear=["density_mm2"])
    assert nuc_only.feature_names == [f"nuc_{s}_density_mm2" for s in ("mean", "q10", "q50", "q90")]


def test_missing_or_empty_nuclear_values_are_signature_errors() -> None:
    spec = FeatureSpec(["A", "B"], nuclear=["density_mm2"])
    with pytest.raises(SignatureError, match="no nuclei were computed"):
        spec.transform(SlideTiles(np.full((2, 2), 0.5), ("A", "B")))
    with pytest.raises(SignatureError, match="lacks nuclear measures"):
        spec.transform(SlideTiles(np.full((2, 2), 0.5), ("A", "B"), nuclear={"x": np.ones(2)}))
    with pytest.raises(SignatureError, match="no tile has a value"):
        spec.transform(_slide(2, np.array([np.nan, np.nan]), np.ones(2)))
    with pytest.raises(SignatureError, match="do not match"):
        spec.transform(_slide(2, np.ones(3), np.ones(2)))
    with pytest.raises(SignatureError, match="statistics"):
        FeatureSpec(["A"], nuclear=["density_mm2"], nuclear_stats=["q99.9x"])


def test_slide_tiles_keeps_the_done_tiles_nuclear_values() -> None:
    res = tile_results(np.ones((2, 2), bool))
    res.status[1] = 0  # pending
    st = slide_tiles(res, "s", nuclear={"density_mm2": np.array([1.0, 2.0, 3.0, 4.0])})
    assert st.nuclear["density_mm2"].tolist() == [1.0, 3.0, 4.0]  # type: ignore[index]


def test_build_signature_with_nuclear_columns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A table whose hazard rises with nuclear density: the spec freezes the family, the fit uses it."""
    rng = np.random.default_rng(0)
    n = 160
    dens = rng.normal(3000, 800, n)
    nc = rng.normal(0.3, 0.05, n)
    lp = (dens - 3000) / 800 * 1.2
    t = rng.exponential(30 * np.exp(-lp))
    c = rng.uniform(20, 80, n)
    df = pd.DataFrame({"ID": [f"P{i}" for i in range(n)], "time": np.minimum(t, c), "event": (t <= c).astype(int)})
    for stat, f in (("mean", 1.0), ("q10", 0.7), ("q50", 1.0), ("q90", 1.3)):
        df[f"nuc_{stat}_density_mm2"] = dens * f + rng.normal(0, 50, n)
        df[f"nuc_{stat}_nc_ratio_mean"] = nc * f + rng.normal(0, 0.01, n)
    table = tmp_path / "nuc.csv"
    df.to_csv(table, index=False)
    out = tmp_path / "sig.json"
    rc = main(
        [
            "build-signature",
            str(table),
            "--time",
            "time",
            "--event",
            "event",
            "--id",
            "ID",
            "--nuclear-measures",
            "density_mm2,nc_ratio_mean",
            "--out",
            str(out),
            "--no-cv",
            "--permutations",
            "20",
            "--json",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    sig = Signature.from_json(out)
    assert sig.feature_spec is not None and sig.feature_spec.nuclear == ["density_mm2", "nc_ratio_mean"]
    assert any(f.startswith("nuc_") and "density" in f for f in sig.features)
    # scoring recomputes the same features from tiles: a patient of dense tiles is high risk
    hi = sig.score(sig.feature_spec.transform(_slide(4, np.full(4, 5000.0), np.full(4, 0.3))))
    lo = sig.score(sig.feature_spec.transform(_slide(4, np.full(4, 1500.0), np.full(4, 0.3))))
    assert hi.risk > lo.risk
    capsys.readouterr()
    rc = main(
        [
            "build-signature",
            str(table),
            "--time",
            "time",
            "--event",
            "event",
            "--nuclear-measures",
            "area",
            "--out",
            str(tmp_path / "x.json"),
        ]
    )
    assert rc == SignatureError.exit_code and "missing nuclear columns" in capsys.readouterr().err


@pytest.mark.slow
def test_a_bundle_with_a_nuclear_signature_scores_a_slide(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Frozen-spec discipline end to end: build-signature → bundle → score_patient recomputes nuclei."""
    import shutil

    from napari_pathomics.bundle import Bundle
    from napari_pathomics.resources import SAMPLE_SLIDE
    from napari_pathomics.scoring import nuclear_tile_values, score_patient

    rng = np.random.default_rng(1)
    n = 120
    dens = rng.normal(3000, 800, n)
    t = rng.exponential(30 * np.exp(-(dens - 3000) / 800))
    df = pd.DataFrame({"time": np.minimum(t, 60.0), "event": (t <= 60.0).astype(int)})
    for stat in ("mean", "q10", "q50", "q90"):
        df[f"nuc_{stat}_density_mm2"] = dens * {"mean": 1.0, "q10": 0.6, "q50": 1.0, "q90": 1.4}[stat] + rng.normal(
            0, 60, n
        )
    df.to_csv(tmp_path / "t.csv", index=False)
    bundle_dir = tmp_path / "bundle"
    shutil.copytree(DEFAULT_BUNDLE, bundle_dir)
    rc = main(
        [
            "build-signature",
            str(tmp_path / "t.csv"),
            "--time",
            "time",
            "--event",
            "event",
            "--nuclear-measures",
            "density_mm2",
            "--bundle",
            str(bundle_dir),
            "--no-cv",
            "--permutations",
            "20",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    bundle = Bundle.load(bundle_dir)
    ps = score_patient([SAMPLE_SLIDE], bundle, device="cpu")
    assert any(k.startswith("nuc_") for k in ps.features)
    res = ps.results[0]
    vals = nuclear_tile_values(SAMPLE_SLIDE, res)  # the same cached nuclei, the same numbers
    d = vals["density_mm2"][res.status == 1]
    assert ps.features["nuc_mean_density_mm2"] == pytest.approx(float(np.nanmean(d)))
    again = score_patient([SAMPLE_SLIDE], bundle, device="cpu")
    assert again.risk == ps.risk
