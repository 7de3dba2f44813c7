"""Outputs that never destroy inputs: every writer checks its target here first.

A report, an export or an output folder must not land on a slide, an ROI file, a bundle or a
table the command was given, nor replace an existing file of another kind (a slide, a zip, a
bundle's manifest). Replacing a file of the same kind (re-exporting a report) is allowed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from .errors import PathomicsError

__all__ = ["OutputError", "check_output", "check_output_dir", "file_kind"]

#: File kinds by extension; what an existing file is, and what a writer means to write.
_KIND_BY_SUFFIX = {
    ".html": "HTML report",
    ".htm": "HTML report",
    ".json": "JSON",
    ".geojson": "GeoJSON",
    ".csv": "CSV table",
    ".tsv": "CSV table",
    ".npz": "results file",
    ".png": "image",
    ".zip": "zip archive",
    ".safetensors": "weights file",
}
_SLIDE_SUFFIXES = (".svs", ".tif", ".tiff", ".ndpi", ".scn", ".bif", ".qptiff", ".mrxs", ".vms", ".jpg", ".jpeg")


class OutputError(PathomicsError):
    """An output would overwrite an input or a file of another kind."""

    exit_code = 15


def _sniff(path: Path) -> str | None:
    """What a file's first bytes say it is (None when they say nothing we know)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError:
        return None
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "slide (TIFF)"
    if head[:4] == b"PK\x03\x04":
        return "zip archive"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "image"
    if head[:2] == b"\xff\xd8":
        return "image"
    return None


def file_kind(path: str | Path) -> str:
    """The kind of an existing file, by content first, then by name."""
    p = Path(path)
    sniffed = _sniff(p)
    if sniffed == "zip archive" and p.suffix.lower() == ".npz":
        return "results file"  # numpy's .npz is a zip: a rerun may replace its own results
    if sniffed is not None:
        return sniffed
    name = p.name.lower()
    if name.endswith(_SLIDE_SUFFIXES):
        return "slide (TIFF)"
    if name == "manifest.json" or (p.parent / "manifest.json").is_file():
        return "bundle file"
    return _KIND_BY_SUFFIX.get(p.suffix.lower(), "file")


def _same(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output(path: str | Path, kind: str, inputs: Iterable[str | Path | None] = ()) -> Path:
    """``path`` if a ``kind`` file may be written there; OutputError in one line otherwise.

    ``kind`` is one of the kinds :func:`file_kind` names (e.g. "HTML report", "JSON", "GeoJSON").
    """
    p = Path(path).expanduser()
    for inp in inputs:
        if inp is not None and (_same(p, Path(inp)) or p.resolve() == Path(inp).expanduser().resolve()):
            raise OutputError(f"{p} is an input of this command; refusing to overwrite it (choose another name)")
    if p.is_dir():
        raise OutputError(f"{p} is a folder; give a file name for the {kind}")
    if p.exists():
        have = file_kind(p)
        if have != kind:
            raise OutputError(f"{p} exists and is a {have}, not a {kind}; refusing to overwrite it")
    return p


def check_output_dir(
    path: str | Path, writes: Iterable[tuple[str, str]], inputs: Iterable[str | Path | None] = ()
) -> Path:
    """``path`` if it may become (or receive) the output folder writing ``(name, kind)`` files.

    A folder holding a bundle manifest never receives files (writers of whole bundles pass no ``writes``).
    """
    p = Path(path).expanduser()
    ins = [Path(i).expanduser() for i in inputs if i is not None]
    if p.exists() and not p.is_dir():
        raise OutputError(f"{p} exists and is a {file_kind(p)}, not a folder; refusing to overwrite it")
    for inp in ins:
        if _same(p, inp):
            raise OutputError(f"{p} is an input of this command; choose another output folder")
    writes = list(writes)
    if writes and (p / "manifest.json").is_file():  # files written into a bundle would change it
        raise OutputError(f"{p} is a model bundle (it holds manifest.json); choose another output folder")
    for name, kind in writes:
        check_output(p / name, kind, ins)
    return p
