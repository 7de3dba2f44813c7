"""The per-slide step: one function plans every slide run, and an empty plan is one TilingError everywhere."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
from shapely.geometry import box

from _bundles import tiny_bundle
from _slides import small_slide
from napari_pathomics.cli import main
from napari_pathomics.cohort._task import ScoreOptions, score_slide
from napari_pathomics.errors import TilingError
from napari_pathomics.inference import analyze
from napari_pathomics.inference.analyze import analyze_slide, plan_slide
from napari_pathomics.inference.embed import extract_slide
from napari_pathomics.inference.engine import Engine
from napari_pathomics.scoring import score_patient
from napari_pathomics.wsi.annotations import Annotation
from napari_pathomics.wsi.slide import open_slide
from napari_pathomics.wsi.synthetic import write_slide

SRC = Path(analyze.__file__).parents[1]
#: Modules that plan a model's tiles without running them: the ROI dock's preview, ``pathomics
#: tiles`` and nuclei (their own tile size); everything that runs the engine on a slide goes
#: through ``inference.analyze``.
PLAN_ONLY = {"wsi/tiling.py", "cli/slide.py", "cli/nuclei.py", "widgets/roi_widget.py", "widgets/cells_panel.py"}


def _calls(path: Path, names: set[str]) -> bool:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
            if name in names:
                return True
    return False


def test_only_the_per_slide_step_plans_a_run() -> None:
    """No module but ``inference/analyze.py`` plans tiles for a bundle; the five callers use it."""
    planners = {
        str(p.relative_to(SRC)) for p in SRC.rglob("*.py") if _calls(p, {"plan_for_bundle", "plan_tiles"})
    } - PLAN_ONLY
    assert planners == {"inference/analyze.py"}
    callers = {str(p.relative_to(SRC)) for p in SRC.rglob("*.py") if _calls(p, {"analyze_slide"})}
    assert {
        "scoring/patient.py",
        "cohort/_task.py",
        "cli/infer.py",
        "inference/embed.py",
        "widgets/analyze_widget.py",
    } <= callers


def test_an_empty_plan_is_the_same_tiling_error_in_every_caller(tmp_path, capsys) -> None:
    """A slide of glass: ``infer``, ``score``, a cohort slide and the embedding pass all refuse it alike."""
    b = tiny_bundle(tmp_path / "b")
    glass = write_slide(tmp_path / "glass.svs", np.full((1024, 1536, 3), 243, np.uint8), mpp=0.5)
    words = "no 112 µm tile of glass.svs lies inside its tissue: nothing to analyse"
    with open_slide(glass) as s, pytest.raises(TilingError) as direct:
        plan_slide(s, b)
    assert words in str(direct.value)

    assert (
        main(["infer", str(glass), "--bundle", str(b.path), "--out", str(tmp_path / "o"), "--quiet"])
        == TilingError.exit_code
    )
    assert words in capsys.readouterr().err

    engine = Engine(b, device="cpu", amp="fp32", num_threads=1)
    with pytest.raises(TilingError, match=words):
        extract_slide(engine, glass)

    opts = ScoreOptions(bundle=str(b.path), bundle_id=b.bundle_id)
    rec = score_slide({"key": "g", "patient_id": "P", "slide_path": str(glass)}, vars(opts), str(tmp_path / "c"))
    assert rec["status"] == "failed" and words in rec["error"]


def test_score_leaves_an_unplannable_slide_out_with_the_same_words(tmp_path, sig_bundle) -> None:
    s = small_slide(tmp_path / "a.svs")
    tiny = [Annotation(box(0, 0, 5, 5))]
    with pytest.raises(TilingError, match="of a.svs lies inside its ROIs and tissue: nothing to analyse"):
        score_patient([s], sig_bundle, rois=[tiny], device="cpu")


def test_the_step_runs_what_the_engine_runs(tmp_path) -> None:
    """The step's results are the engine's on the same plan; ``TileResults.grid`` gives that plan back."""
    b = tiny_bundle(tmp_path / "b")
    engine = Engine(b, device="cpu", amp="fp32", num_threads=1)
    with open_slide(small_slide(tmp_path / "s.svs", mpp=0.5)) as s:
        step = analyze_slide(s, engine, use_cache=False)
        assert step.from_cache  # nothing run yet
        res = step.run_all()
        assert not step.from_cache and res.complete and len(res) == len(step.grid) > 0
        by_hand = engine.run_all(s, plan_slide(s, b), use_cache=False)
        np.testing.assert_array_equal(res.probs, by_hand.probs)
        again = res.grid(s)
        assert again.key() == step.grid.key() == res.meta["grid_key"]
