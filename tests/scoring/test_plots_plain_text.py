"""Strings from input reach matplotlib as plain text: a signature, class, marker or level name
like ``$\\undefined$`` is drawn as written instead of breaking the report's figures (mathtext).

The figures are the ones the report and the Score dock draw, rendered with Agg; the whole
``score --report`` path runs once with a signature named that way.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from matplotlib.text import Text

from _bundles import make_bundle
from _slides import small_slide
from napari_pathomics.cli import main as cli_main
from napari_pathomics.resources import DEFAULT_BUNDLE
from napari_pathomics.scoring.plots import (
    composition_figure,
    figure_png,
    forest_figure,
    interplay_figure,
    plain_text,
    survival_figure,
)
from napari_pathomics.signature import Signature

HOSTILE = [r"$\undefined$", r"a$b$c", r"$\frac{1$", r"x\$y$", "$$"]


def _texts(fig) -> list[str]:
    figure_png(fig)  # draws: tick labels exist only once drawn
    return [t.get_text() for t in fig.findobj(Text)]


@pytest.mark.parametrize("name", HOSTILE)
def test_plain_text_keeps_what_is_drawn(name: str) -> None:
    """What the Text holds is the input with ``$`` escaped, which matplotlib draws as the input."""
    t = Text(0, 0, plain_text(name))
    assert t._preprocess_math(t.get_text()) == (name, False)


@pytest.mark.parametrize("name", HOSTILE)
def test_survival_and_composition_figures_draw_hostile_names(name: str) -> None:
    data = json.loads((DEFAULT_BUNDLE / "signature.json").read_text())
    data["name"] = name
    sig = Signature(data)
    sc = sig.score({f: 0.2 for f in sig.features})
    texts = _texts(survival_figure(sig, sc, patient_label=f"patient {name}"))
    assert any(plain_text(name) in t for t in texts)
    comp = composition_figure({name: 0.6, "TUM": 0.4}, {name: "#123456", "TUM": "#654321"}, title=name)
    assert plain_text(name) in _texts(comp)


@pytest.mark.parametrize("name", HOSTILE)
def test_interplay_and_forest_figures_draw_hostile_levels(name: str) -> None:
    sig = json.loads((DEFAULT_BUNDLE / "signature_clinical.json").read_text())
    doc = copy.deepcopy(sig["interplay"][0])
    old = doc["levels"][0]
    doc["levels"][0] = name
    doc["marker"] = name
    for grp in doc["groups"].values():
        grp["km"][name] = grp["km"].pop(old)
        if old in grp["hazard_ratio"]:
            grp["hazard_ratio"][name] = grp["hazard_ratio"].pop(old)
    figure_png(interplay_figure(doc, sig["time_unit"], patient={"group": "low", "level": name}))
    rows = [dict(r, covariate=name, level=name) for r in doc["forest"]]
    figure_png(forest_figure(rows))


def test_score_report_with_a_mathtext_signature_name(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = json.loads((DEFAULT_BUNDLE / "signature.json").read_text())
    data["name"] = r"$\undefined$ signature"
    b = make_bundle(tmp_path / "bundle", signature=data)
    slide = small_slide(tmp_path / "s.svs", h=256, w=256)
    report = tmp_path / "r.html"
    rc = cli_main(["score", str(slide), "--bundle", str(b.path), "--report", str(report), "--device", "cpu", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    assert report.is_file() and r"$\undefined$ signature" in report.read_text()
