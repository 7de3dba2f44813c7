"""Multi-file outputs are written as one set: a failure half-way leaves the previous complete set.

On a full disk ``infer --out`` once left the new slide's ``tiles.csv``/``tiles.geojson`` beside the
previous slide's ``results.npz``/``run.json``, and a failed second rename in ``build-signature
--bundle B`` left a bundle that failed its own hash check. Here the OS-level failure points are
patched (``os.replace`` raising on its n-th call into the output, ``os.fsync`` raising ENOSPC)
around real writers: ``atomic_write_set`` itself, ``infer --out``, a ``score-cohort`` slide folder,
``build-signature --bundle`` (``attach_file``) and a staged bundle replacing an older one.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from _bundles import tiny_bundle
from _signature_sim import simulate_cox
from _slides import small_slide
from napari_pathomics import atomic
from napari_pathomics.atomic import atomic_write_set
from napari_pathomics.bundle import Bundle, staged_bundle, validate_bundle, write_bundle
from napari_pathomics.cli import main as cli_main
from napari_pathomics.cohort._task import DONE_NAME, slide_dir
from napari_pathomics.cohort.batch import score_cohort
from napari_pathomics.cohort.table import read_cohort
from napari_pathomics.resources import DEFAULT_BUNDLE


def _fail_replace(monkeypatch: pytest.MonkeyPatch, under: Path, nth: int) -> list[str]:
    """``os.replace`` raises EIO on its ``nth`` call whose target lies under ``under`` (others succeed)."""
    real, calls, root = os.replace, [], under.resolve()

    def replace(src, dst, *a, **kw):
        if Path(dst).resolve().is_relative_to(root):
            calls.append(str(dst))
            if len(calls) == nth:
                raise OSError(errno.EIO, "simulated I/O error during rename")
        return real(src, dst, *a, **kw)

    monkeypatch.setattr(os, "replace", replace)
    return calls


def _visible(folder: Path) -> dict[str, str]:
    """sha256 of every file a reader sees (hidden temp/backup files excluded)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


# ---- the helper ------------------------------------------------------------------------------
OLD = {"a.csv": b"old a", "b.json": b"old b", "c.npz": b"old c"}
NEW = {"a.csv": b"new a", "b.json": b"new b", "c.npz": b"new c", "d.txt": b"new d"}


@pytest.mark.parametrize("keep_previous", [False, True])
@pytest.mark.parametrize("nth", range(1, 8))
def test_a_failed_rename_puts_the_previous_set_back(tmp_path, monkeypatch, nth: int, keep_previous: bool) -> None:
    atomic_write_set(tmp_path, OLD)
    before = _visible(tmp_path)
    _fail_replace(monkeypatch, tmp_path, nth)
    with pytest.raises(OSError, match="simulated"):
        atomic_write_set(tmp_path, NEW, keep_previous=keep_previous)
    assert _visible(tmp_path) == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith((".tmp", ".link"))]
    monkeypatch.undo()
    atomic_write_set(tmp_path, NEW, keep_previous=keep_previous)
    assert {k: (tmp_path / k).read_bytes() for k in NEW} == NEW
    backups = {p.name for p in tmp_path.iterdir() if p.name.startswith(".")}
    assert backups == ({f".{k}.previous" for k in OLD} if keep_previous else set()), backups


def test_a_full_disk_while_writing_leaves_the_previous_set(tmp_path, monkeypatch) -> None:
    atomic_write_set(tmp_path, OLD)
    before = _visible(tmp_path)
    real, n = os.fsync, []

    def fsync(fd):
        n.append(fd)
        if len(n) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    with pytest.raises(OSError, match="No space"):
        atomic_write_set(tmp_path, NEW)
    assert _visible(tmp_path) == before and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


# ---- infer --out -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("sets")
    sig = json.loads((DEFAULT_BUNDLE / "signature.json").read_text())
    return {
        "root": root,
        "bundle": tiny_bundle(root / "bundle", signature=sig).path,
        "a": small_slide(root / "a.svs", seed=1),
        "b": small_slide(root / "b.svs", seed=2),
    }


@pytest.mark.parametrize("nth", [2, 5, 9])
def test_infer_out_is_one_set(setup, tmp_path, monkeypatch, capsys, nth: int) -> None:
    monkeypatch.setenv("PATHOMICS_LOG_DIR", str(tmp_path / "logs"))
    out = tmp_path / "out"

    def infer(slide: Path) -> int:
        return cli_main(
            [
                "infer",
                str(slide),
                "--bundle",
                str(setup["bundle"]),
                "--out",
                str(out),
                "--device",
                "cpu",
                "--amp",
                "fp32",
                "--quiet",
            ]
        )

    assert infer(setup["a"]) == 0
    first = _visible(out)
    assert set(first) == {"tiles.csv", "tiles.geojson", "results.npz", "results.json", "run.json"}
    capsys.readouterr()
    _fail_replace(monkeypatch, out, nth)
    assert infer(setup["b"]) != 0
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "simulated I/O error" in err[0], err
    assert _visible(out) == first  # slide a's complete set, not a mix of a and b
    monkeypatch.undo()
    assert infer(setup["b"]) == 0
    run = json.loads((out / "run.json").read_text())
    meta = json.loads((out / "results.json").read_text())
    assert run["slide"]["path"].endswith("b.svs") and run["slide"]["hash"] in json.dumps(meta)


# ---- a score-cohort slide folder ---------------------------------------------------------------
def test_cohort_slide_folder_is_one_set(setup, tmp_path, monkeypatch) -> None:
    (tmp_path / "a.svs").write_bytes(setup["a"].read_bytes())
    table = tmp_path / "cohort.csv"
    table.write_text("patient_id,slide_path\nP1,a.svs\n")
    out = tmp_path / "out"
    kw = dict(bundle=setup["bundle"], workers=0, amp="fp32", progress=False)
    assert score_cohort(read_cohort(table), out, **kw)["summary"]["done"] == 1
    d = slide_dir(out, read_cohort(table).rows[0].key)
    first = _visible(d)
    _fail_replace(monkeypatch, d, 3)
    rec = score_cohort(read_cohort(table), out, force=True, **kw)
    assert rec["summary"]["failed"] == 1 and "simulated" in rec["slides"][0]["error"]
    monkeypatch.undo()
    assert not (d / DONE_NAME).exists()  # never trusted as complete
    assert {k: v for k, v in _visible(d).items() if k != DONE_NAME} == {
        k: v for k, v in first.items() if k != DONE_NAME
    }
    rec = score_cohort(read_cohort(table), out, **kw)  # no --force: recomputed because not complete
    assert rec["summary"]["done"] == 1 and (d / DONE_NAME).exists()


# ---- build-signature --bundle (attach_file) and staged bundles ------------------------------------
@pytest.mark.parametrize("nth", [1, 2, 3, 4])
def test_build_signature_into_a_bundle_keeps_a_valid_bundle(setup, tmp_path, monkeypatch, capsys, nth: int) -> None:
    monkeypatch.setenv("PATHOMICS_LOG_DIR", str(tmp_path / "logs"))
    b = tmp_path / "bundle"
    import shutil

    shutil.copytree(setup["bundle"], b)
    old_sig = (b / "signature.json").read_bytes()
    df, _ = simulate_cox(120, np.array([0.8, -0.4]), seed=3, n_noise=0)
    df.to_csv(tmp_path / "t.csv", index=False)
    argv = [
        "build-signature",
        str(tmp_path / "t.csv"),
        "--time",
        "time",
        "--event",
        "event",
        "--features",
        "f0,f1",
        "--no-cv",
        "--permutations",
        "0",
        "--bundle",
        str(b),
    ]
    _fail_replace(monkeypatch, b, nth)
    assert cli_main(argv) != 0
    monkeypatch.undo()
    assert validate_bundle(b) == [] and (b / "signature.json").read_bytes() == old_sig
    assert cli_main(argv) == 0
    capsys.readouterr()
    assert (
        validate_bundle(b) == [] and Bundle.load(b).file_hashes["signature.json"] != hashlib.sha256(old_sig).hexdigest()
    )
    assert (b / ".signature.json.previous").read_bytes() == old_sig  # the previous pair stays recoverable
    prev = json.loads((b / ".manifest.json.previous").read_text())
    assert prev["files"]["signature.json"] == hashlib.sha256(old_sig).hexdigest()


def test_a_staged_bundle_that_fails_to_swap_in_keeps_the_old_one(setup, tmp_path, monkeypatch) -> None:
    import shutil

    out = tmp_path / "bundle"
    shutil.copytree(setup["bundle"], out)
    before = _visible(out)
    man = Bundle.load(out).manifest
    _fail_replace(monkeypatch, tmp_path, 2)  # 1: old bundle moved aside, 2: the new one swapped in
    with pytest.raises(OSError, match="simulated"), staged_bundle(out) as tmp:
        shutil.copy(out / "model.safetensors", tmp / "model.safetensors")
        write_bundle(
            tmp,
            {
                **man,
                "name": "newer",
                "signature": None,
                "files": {"model.safetensors": man["files"]["model.safetensors"]},
            },
        )
    assert _visible(out) == before and Bundle.load(out).name == man["name"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".bundle.")]
