"""The case report cannot run anything a bundle, a file name or a patient id carries (stored XSS).

A hostile bundle once put ``<script>document.title="PWNED"</script>`` into the report through the
cutoff's ``min_group`` / ``n_high`` / ``n_low``, which were inserted as text unescaped. Now:

* number fields that hold text are refused when the signature loads (its JSON Schema);
* every string a bundle, a slide file name, an ROI or the user supplies is rendered escaped: the
  parsed HTML holds no ``<script>``, no element or attribute from the hostile values, and every
  image is an embedded PNG;
* the page's Content-Security-Policy forbids scripts, so even an escape slip could not run;
* opened in a headless Chromium, the report keeps its own title (skipped, with the reason, without one);
* the cohort analysis page (analyze-benefit/-interaction) shows hostile column and level names as text.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from shapely.geometry import box

from _bundles import make_bundle
from _slides import small_slide
from napari_pathomics.bundle import Bundle
from napari_pathomics.cli import main as cli_main
from napari_pathomics.errors import SignatureError
from napari_pathomics.resources import DEFAULT_BUNDLE
from napari_pathomics.scoring import load_signature, score_patient
from napari_pathomics.scoring.report import render_report_html, write_report_html
from napari_pathomics.wsi.annotations import Annotation

SCRIPT = '<script>document.title="PWNED"</script>'
IMG = "<img src=x onerror=document.title='PWNED'>"  # no '/': also a valid file name
BREAK = '"><svg onload=document.title=1>'
FRAME = "<iframe srcdoc='<script>parent.document.title=1</script>'></iframe>"  # the user's stated cancer type
HOSTILE = (SCRIPT, IMG, BREAK)


class _Page(HTMLParser):
    """Every element and attribute of a page, and its text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    handle_startendtag = handle_starttag

    def handle_data(self, data):
        self.text.append(data)


def _parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    page.close()
    return page


def _hostile_signature() -> dict:
    sig = json.loads((DEFAULT_BUNDLE / "signature.json").read_text())
    sig["name"] = SCRIPT
    sig["description"] = IMG + BREAK
    sig["cutoff"]["method"] = SCRIPT + BREAK
    sig["cutoff"]["rule"] = IMG
    sig["cancer_type"] = BREAK + SCRIPT  # shown beside the case's own cancer type
    sig["feature_spec"]["classes"] = [{"ADI": SCRIPT, "LYM": IMG}.get(c, c) for c in sig["feature_spec"]["classes"]]
    return sig


@pytest.fixture
def hostile_bundle(tmp_path: Path) -> Bundle:
    """A bundle whose names, class names and signature strings are all markup."""
    b = make_bundle(tmp_path / "bundle", signature=_hostile_signature())
    man = json.loads((b.path / "manifest.json").read_text())
    man["name"] = SCRIPT
    man["version"] = BREAK
    for c in man["model"]["classes"]:
        c["name"] = {"ADI": SCRIPT, "LYM": IMG}.get(c["name"], c["name"])
        c["description"] = BREAK
    (b.path / "manifest.json").write_text(json.dumps(man))
    return Bundle.load(b.path)


def _assert_inert(html: str) -> None:
    page = _parse(html)
    names = {t for t, _ in page.tags}
    assert "script" not in names and "svg" not in names and "iframe" not in names, names
    for tag, attrs in page.tags:
        assert not any(k.startswith("on") for k in attrs), (tag, attrs)
        if tag == "img":
            assert (attrs.get("src") or "").startswith("data:image/png;base64,"), attrs
    # the hostile values are there, as text
    text = "".join(page.text)
    for h in HOSTILE:
        assert h in text, h
    csp = [
        a.get("content", "")
        for t, a in page.tags
        if t == "meta" and (a.get("http-equiv") or "").lower() == "content-security-policy"
    ]
    assert len(csp) == 1
    policy = {d.split()[0]: d.split()[1:] for d in csp[0].split(";") if d.strip()}
    assert policy.get("default-src") == ["'none'"] and "script-src" not in policy, csp  # no script of any origin


def test_hostile_strings_are_rendered_as_text(tmp_path: Path, hostile_bundle: Bundle) -> None:
    slide = small_slide(tmp_path / f"{IMG}.svs")
    roi = [Annotation(box(64, 64, 1200, 900), name=SCRIPT, classification=BREAK)]
    ps = score_patient([slide], hostile_bundle, patient_id=SCRIPT + IMG, rois=[roi], device="cpu", case_type=FRAME)
    sig = load_signature(hostile_bundle)
    out = write_report_html(ps, tmp_path / "case.html", signature=sig)
    html = out.read_text()
    _assert_inert(html)
    text = "".join(_parse(html).text)
    assert f"{IMG}.svs" in text  # the file name is shown, inert
    assert FRAME in text and BREAK + SCRIPT in text  # the stated and the signature's cancer types too


def test_report_of_the_same_bundle_without_a_signature_argument_is_inert(tmp_path, hostile_bundle) -> None:
    slide = small_slide(tmp_path / "s.svs")
    ps = score_patient([slide], hostile_bundle, patient_id=BREAK + SCRIPT + IMG, device="cpu")
    _assert_inert(render_report_html(ps, slides_images=[None]))  # loads the signature from the bundle


@pytest.mark.parametrize("field", ["min_group", "n_high", "n_low", "p_value", "cutoff"])
def test_numbers_holding_markup_are_refused_when_the_signature_loads(
    tmp_path: Path, field: str, capsys: pytest.CaptureFixture
) -> None:
    sig = copy.deepcopy(json.loads((DEFAULT_BUNDLE / "signature.json").read_text()))
    sig["cutoff"][field] = SCRIPT
    b = make_bundle(tmp_path / "bundle", signature=sig)
    with pytest.raises(SignatureError) as info:
        load_signature(b)
    assert f"cutoff.{field}" in str(info.value) and "\n" not in str(info.value)
    # and through the CLI: one line, exit 8, no report written
    slide = small_slide(tmp_path / "s.svs", h=256, w=256)
    report = tmp_path / "r.html"
    assert cli_main(["score", str(slide), "--bundle", str(b.path), "--report", str(report), "--quiet"]) == 8
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0] and not report.exists(), err


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome", "headless_shell"):
        if path := shutil.which(name):
            return path
    return None


class _Title(HTMLParser):
    """The text of a page's <title> (what ``document.title`` reads), whitespace collapsed."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.inside = False
        self.parts: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.inside = self.inside or tag == "title"

    def handle_endtag(self, tag):
        self.inside = self.inside and tag != "title"

    def handle_data(self, data):
        if self.inside:
            self.parts.append(data)


def _title(html: str) -> str:
    page = _Title()
    page.feed(html)
    page.close()
    return " ".join("".join(page.parts).split())


def test_the_report_keeps_its_own_title_in_chromium(tmp_path: Path, hostile_bundle: Bundle) -> None:
    """Opened in a headless Chromium, the rendered DOM's title is the report's own (escaped) title: no
    script of the hostile values ran (each would set ``document.title``)."""
    exe = _chromium()
    if exe is None:
        pytest.skip("no Chromium here (apt-get install chromium): the parsed-HTML checks above still hold")
    slide = small_slide(tmp_path / f"{IMG}.svs")
    ps = score_patient([slide], hostile_bundle, patient_id=SCRIPT + IMG, device="cpu", case_type=FRAME)
    out = write_report_html(ps, tmp_path / "case.html", signature=load_signature(hostile_bundle))
    expected = _title(out.read_text())
    assert expected == " ".join(f"Pathomics case report — {SCRIPT + IMG}".split())
    r = subprocess.run(
        [
            exe,
            "--headless",
            "--no-sandbox",  # runs as root in CI containers
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            "--virtual-time-budget=3000",
            "--dump-dom",
            out.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert _title(r.stdout) == expected, (_title(r.stdout), r.stderr[-2000:])
    assert not any(t == "script" for t, _ in _parse(r.stdout).tags)


def test_cohort_analysis_page_renders_hostile_column_and_level_names_as_text(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """``analyze-benefit`` / ``analyze-interaction`` pages: the treatment column's name, its levels and
    the subgroup columns come from the user's table and are shown as inert text."""
    import pandas as pd

    from napari_pathomics.cohort.generator import TISSUE_CLASSES, CohortSpec, draw_table

    train = pd.DataFrame(draw_table(CohortSpec(patients=200, seed=99, marker_hr=1.0, treatment_hr=1.0)))
    train.to_csv(tmp_path / "train.csv", index=False)
    sig = tmp_path / "sig.json"
    feats = ",".join(f"true_{c}" for c in TISSUE_CLASSES)
    assert (
        cli_main(
            [
                "build-signature",
                str(tmp_path / "train.csv"),
                "--time",
                "time",
                "--event",
                "event",
                "--features",
                feats,
                "--no-cv",
                "--permutations",
                "0",
                "--time-unit",
                "months",
                "--out",
                str(sig),
            ]
        )
        == 0
    )
    test = pd.DataFrame(draw_table(CohortSpec(patients=300, seed=1, marker_hr=4.0, treatment_hr=0.33)))
    test = test.rename(columns={"treatment": SCRIPT, "true_TUM": BREAK})
    test[SCRIPT] = test[SCRIPT].map({0: "untreated", 1: IMG})
    test.to_csv(tmp_path / "test.csv", index=False)
    capsys.readouterr()
    rc = cli_main(
        [
            "analyze-benefit",
            str(tmp_path / "test.csv"),
            "--signature",
            str(sig),
            "--treatment",
            SCRIPT,
            "--treated",
            IMG,
            "--subgroups",
            BREAK,
            "--out",
            str(tmp_path / "b"),
        ]
    )
    assert rc == 0, capsys.readouterr().err
    page = _parse((tmp_path / "b" / "benefit.html").read_text())
    names = {t for t, _ in page.tags}
    assert "script" not in names and "svg" not in names, names
    for tag, attrs in page.tags:
        assert not any(k.startswith("on") for k in attrs), (tag, attrs)
        if tag == "img":
            assert (attrs.get("src") or "").startswith("data:image/png;base64,"), attrs
    text = "".join(page.text)
    assert SCRIPT in text and IMG in text and BREAK in text, "the hostile names are shown, as text"
    csp = [
        a.get("content", "")
        for t, a in page.tags
        if t == "meta" and (a.get("http-equiv") or "").lower() == "content-security-policy"
    ]
    assert len(csp) == 1 and "default-src 'none'" in csp[0] and "script-src" not in csp[0]
