"""Cohort tables: ``patient_id, slide_path[, roi_path]`` CSVs, validated before any work starts.

A user's mistake in a table of hundreds of slides must surface in one line before a cluster
spends an hour on it: missing columns, empty cells, duplicated rows, one slide listed under two
patients, and slide/ROI files that do not exist all raise :class:`CohortError` naming the CSV
line. Relative paths are resolved against the CSV's folder (so a cohort folder can move).
A patient may have several slides (several rows). Extra columns are kept (outcomes may live in
the same table).

Missing files: by default an error (fail fast); with ``allow_missing=True`` the rows are kept
with ``exists=False`` so that ``score-cohort --allow-missing`` reports them as failed slides in
``run.json`` and scores the rest.
"""

from __future__ import annotations

import csv
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CohortError

REQUIRED_COLUMNS = ("patient_id", "slide_path")
OPTIONAL_COLUMNS = ("roi_path",)


@dataclass(frozen=True)
class CohortRow:
    """One slide of one patient."""

    patient_id: str
    slide_path: Path
    roi_path: Path | None
    line: int  # CSV line number (header = 1), for messages
    exists: bool = True
    extra: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def key(self) -> str:
        """Stable, file-system-safe id of this slide in outputs: ``<patient>__<stem>_<hash8>``."""
        digest = hashlib.sha1(str(self.slide_path).encode("utf-8")).hexdigest()[:8]
        return f"{_safe(self.patient_id)}__{_safe(self.slide_path.stem)}_{digest}"

    def to_json(self) -> dict[str, Any]:
        return {
            "patient_id": self.patient_id,
            "slide_path": str(self.slide_path),
            "roi_path": str(self.roi_path) if self.roi_path else None,
            "key": self.key,
            "line": self.line,
        }


def _safe(text: str, limit: int = 40) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")[:limit] or "x"


@dataclass
class CohortTable:
    """Validated rows of a cohort CSV."""

    path: Path
    rows: list[CohortRow]
    columns: list[str]

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def patients(self) -> list[str]:
        """Patient ids in first-seen order."""
        seen: dict[str, None] = {}
        for r in self.rows:
            seen.setdefault(r.patient_id, None)
        return list(seen)

    def by_patient(self) -> dict[str, list[CohortRow]]:
        out: dict[str, list[CohortRow]] = {}
        for r in self.rows:
            out.setdefault(r.patient_id, []).append(r)
        return out

    @property
    def missing(self) -> list[CohortRow]:
        return [r for r in self.rows if not r.exists]


def _resolve(base: Path, text: str) -> Path:
    p = Path(text).expanduser()
    return (p if p.is_absolute() else base / p).resolve()


def _identity(path: Path) -> Any:
    """What makes two paths one slide: the file itself (device, inode: hard links and bind
    mounts too) when it exists, else the resolved path."""
    try:
        st = path.stat()
    except OSError:
        return path
    return (st.st_dev, st.st_ino)


def _via(ident: Any, slide: Path, rows: list[CohortRow], line: int) -> str:
    """Say when the earlier row names the same file by another path (a hard link, say)."""
    first = next((r.slide_path for r in rows if r.line == line), slide)
    return f", the same file as {first.name} (a hard link or another path to it)" if first != slide else ""


def read_cohort(path: str | Path, *, allow_missing: bool = False) -> CohortTable:
    """Read and validate a cohort CSV (or TSV by extension); CohortError on the first problem."""
    path = Path(path)
    if not path.is_file():
        raise CohortError(f"no such cohort table: {path}")
    delim = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh, delimiter=delim)
            lines = list(reader)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise CohortError(f"{path.name}: not a readable CSV ({exc})") from None
    lines = [ln for ln in lines if any(c.strip() for c in ln)]
    if not lines:
        raise CohortError(f"{path.name} is empty")
    header = [h.strip() for h in lines[0]]
    missing_cols = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing_cols:
        raise CohortError(
            f"{path.name}: missing column(s) {missing_cols}; have {header[:12]} "
            f"(a cohort table needs patient_id, slide_path and optionally roi_path)"
        )
    dup_cols = sorted({h for h in header if header.count(h) > 1})
    if dup_cols:
        raise CohortError(f"{path.name}: duplicate column names {dup_cols}")
    if len(lines) == 1:
        raise CohortError(f"{path.name} has a header but no rows")
    ix = {h: i for i, h in enumerate(header)}
    base = path.parent.resolve()
    rows: list[CohortRow] = []
    seen_rows: dict[tuple[str, Any], int] = {}
    seen_slides: dict[Any, tuple[str, int]] = {}
    for n, cells in enumerate(lines[1:], start=2):
        if len(cells) != len(header):
            raise CohortError(f"{path.name} line {n}: {len(cells)} cells for {len(header)} columns")
        get = {h: cells[i].strip() for h, i in ix.items()}
        pid, sp = get["patient_id"], get["slide_path"]
        if not pid:
            raise CohortError(f"{path.name} line {n}: empty patient_id")
        if not sp:
            raise CohortError(f"{path.name} line {n}: empty slide_path for patient {pid!r}")
        roi_text = get.get("roi_path", "")
        for column, text in (("slide_path", sp), ("roi_path", roi_text)):
            if "\x00" in text:  # no file system takes it; pathlib would raise ValueError
                raise CohortError(f"{path.name} line {n}: {column} holds a NUL character")
        slide = _resolve(base, sp)
        roi = _resolve(base, roi_text) if roi_text else None
        ident = _identity(slide)
        if (pid, ident) in seen_rows:
            raise CohortError(
                f"{path.name} line {n}: duplicate row (patient {pid!r}, slide {sp!r}) "
                f"already on line {seen_rows[(pid, ident)]}{_via(ident, slide, rows, seen_rows[(pid, ident)])}"
            )
        if ident in seen_slides:
            other, ln = seen_slides[ident]
            raise CohortError(
                f"{path.name} line {n}: slide {sp!r} is listed for patient {pid!r} and for "
                f"patient {other!r} (line {ln}){_via(ident, slide, rows, ln)}"
            )
        seen_rows[(pid, ident)] = n
        seen_slides[ident] = (pid, n)
        exists = slide.is_file() and (roi is None or roi.is_file())
        extra = {h: v for h, v in get.items() if h not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS}
        rows.append(CohortRow(pid, slide, roi, n, exists, extra))
    gone = [r for r in rows if not r.exists]
    if gone and not allow_missing:
        r = gone[0]
        what = f"slide {r.slide_path}" if not r.slide_path.is_file() else f"ROI file {r.roi_path}"
        more = f" (and {len(gone) - 1} more missing)" if len(gone) > 1 else ""
        raise CohortError(
            f"{path.name} line {r.line}: {what} does not exist{more}; "
            f"fix the paths or pass --allow-missing to score the others"
        )
    return CohortTable(path.resolve(), rows, header)
