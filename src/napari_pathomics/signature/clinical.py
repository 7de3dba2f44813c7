"""Clinical covariates in a signature: a typed, validated, frozen encoding.

A user declares covariates as ``COL:TYPE`` (``numeric``, ``ordinal`` or ``categorical``), e.g.
``cleanstage:ordinal,years_to_birth:numeric(years),msi_status:categorical(MSS|MSI-L|MSI-H)``.
Brackets carry the unit of a numeric column, the order of an ordinal one's text levels
(``grade:ordinal(G1<G2<G3)``) or the levels of a categorical one (the first is the reference).

:meth:`ClinicalSpec.fit` checks the columns against a table, applies the missing-value rule
(``refuse``: stop and say where; ``drop``: leave those rows out and record how many and why;
``impute``: fill with the median / mode and record the value) and freezes the encoding:

* numeric: the value itself; the observed range is frozen, a value outside it is refused when
  scoring (a signature says nothing about patients unlike any it was fitted on);
* ordinal: the level's score (the number itself for numeric levels such as stage 1-4, else the
  rank 0, 1, 2... of the declared order);
* categorical: one 0/1 column per non-reference level.

Encoded columns are named ``clin:<col>`` (numeric, ordinal) and ``clin:<col>=<level>``
(categorical), so they cannot collide with image features. The spec round-trips through JSON
and sits in ``signature.json`` under ``clinical``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ClinicalError

TYPES = ("numeric", "ordinal", "categorical")
MISSING_RULES = ("refuse", "drop", "impute")
CLINICAL_KIND = "pathomics-clinical-spec"
PREFIX = "clin:"
#: A categorical level needs this many rows, or its Cox coefficient is noise (merge rare levels).
MIN_LEVEL_ROWS = 5


#: A number as users type it, ASCII only: ``float()`` also takes ``6_4``, Arabic-Indic and
#: full-width digits, which must not silently become 64.
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def to_number(value: Any) -> float:
    """A raw value as a float: numbers as they are, text only when it is a plain ASCII number.

    ValueError otherwise (as ``float()`` raises), so callers keep their messages.
    """
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{value!r} is not a number")
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    text = str(value).strip()
    if not _NUMBER.fullmatch(text):
        raise ValueError(f"{text!r} is not a number")
    return float(text)


def canonical(value: Any) -> str:
    """The text form a level is stored under: numbers as ``%g`` (3, 3.0 and '3' are one level)."""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, float, np.integer, np.floating)):
        return f"{float(value):g}"
    text = str(value).strip()
    try:
        return f"{to_number(text):g}" if math.isfinite(to_number(text)) else text
    except ValueError:
        return text


def shown(value: Any) -> str:
    """A raw value as a message quotes it: numpy scalars as plain numbers (``5``, not ``np.int64(5)``)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return f"{value:g}"
    return repr(value)


def is_missing(value: Any) -> bool:
    """None, NaN, empty text or 'NA'-like text (how tables spell a missing value)."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    if isinstance(value, str) and value.strip().lower() in ("", "na", "nan", "n/a", "none", "null", "."):
        return True
    return bool(pd.isna(value)) if not isinstance(value, (str, list, tuple, dict)) else False


@dataclass(frozen=True)
class Declared:
    """One covariate as the user declared it (before seeing the data)."""

    name: str
    type: str
    unit: str = ""
    levels: tuple[str, ...] = ()
    label: str = ""  # what a person reads, e.g. "stage (I–IV)" (default: the column name)


def _split_top(text: str) -> list[str]:
    """Split on commas outside brackets."""
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(0, depth - 1)
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return [s.strip() for s in out if s.strip()]


_ITEM = re.compile(r"^(?P<name>.+?):(?P<type>[A-Za-z]+)(?:\((?P<arg>[^()]*)\))?$")


def parse_clinical(text: str | Sequence[str] | None) -> list[Declared]:
    """``COL:TYPE[(arg)],...`` -> declared covariates; ClinicalError names a bad item."""
    if text is None:
        return []
    items = _split_top(text) if isinstance(text, str) else [s for t in text for s in _split_top(t)]
    out: list[Declared] = []
    for item in items:
        m = _ITEM.match(item)
        if not m:
            raise ClinicalError(f"--clinical item {item!r}: expected COL:TYPE with TYPE one of {', '.join(TYPES)}")
        name, typ, arg = m["name"].strip(), m["type"].lower(), (m["arg"] or "").strip()
        if typ not in TYPES:
            raise ClinicalError(f"--clinical {name}:{m['type']}: TYPE must be one of {', '.join(TYPES)}")
        levels: tuple[str, ...] = ()
        unit = ""
        if typ == "numeric":
            unit = arg
        elif arg:
            sep = "<" if typ == "ordinal" else "|"
            levels = tuple(canonical(s) for s in arg.split(sep) if s.strip())
            if len(set(levels)) != len(levels):
                raise ClinicalError(f"--clinical {name}: a level is listed twice in ({arg})")
        if any(d.name == name for d in out):
            raise ClinicalError(f"--clinical names column {name!r} twice")
        out.append(Declared(name, typ, unit, levels))
    return out


def with_labels(declared: Sequence[Declared], labels: Sequence[str] | None) -> list[Declared]:
    """Declared covariates with ``COL=TEXT`` labels (``--clinical-label``); ClinicalError names a bad one."""
    by_name: dict[str, str] = {}
    for item in labels or []:
        name, sep, text = item.partition("=")
        name, text = name.strip(), text.strip()
        if not sep or not name or not text:
            raise ClinicalError(f"--clinical-label {item!r}: expected COL=TEXT (e.g. 'cleanstage=stage (I–IV)')")
        if name not in {d.name for d in declared}:
            raise ClinicalError(
                f"--clinical-label {name}: not a --clinical column ({', '.join(d.name for d in declared)})"
            )
        by_name[name] = text
    return [replace(d, label=by_name.get(d.name, d.label)) for d in declared]


@dataclass(frozen=True)
class Covariate:
    """One frozen clinical covariate: how a raw value becomes model columns."""

    name: str
    type: str
    unit: str = ""
    levels: tuple[str, ...] = ()  # ordinal: in order; categorical: reference first
    scores: tuple[float, ...] = ()  # ordinal: the number each level is encoded as
    range: tuple[float, float] | None = None  # numeric: observed [min, max] (values outside are refused)
    impute: str | float | None = None  # the value missing training rows got (rule "impute")
    n_missing: int = 0
    label: str = ""  # the human name ("age (years)"); fields show it, with the column name in small print

    @property
    def title(self) -> str:
        """What a person reads: the label, else the column name."""
        return self.label or self.name

    @property
    def reference(self) -> str | None:
        return self.levels[0] if self.type == "categorical" and self.levels else None

    @property
    def columns(self) -> list[str]:
        if self.type == "categorical":
            return [f"{PREFIX}{self.name}={lv}" for lv in self.levels[1:]]
        return [f"{PREFIX}{self.name}"]

    def allowed(self) -> str:
        """The values this covariate accepts, for a field's hint or an error message."""
        if self.type == "numeric" and self.range is not None:
            lo, hi = self.range
            return f"{lo:g}–{hi:g}" + (f" {self.unit}" if self.unit else "")
        return ", ".join(self.levels)

    def encode(self, value: Any) -> list[float]:
        """Model columns of one raw value; ClinicalError names the column and the value."""
        if is_missing(value):
            raise ClinicalError(f"no value for clinical covariate {self.name!r} (allowed: {self.allowed()})")
        if self.type == "numeric":
            try:
                v = to_number(value)
            except (TypeError, ValueError):
                raise ClinicalError(f"clinical covariate {self.name!r} = {shown(value)} is not a number") from None
            if not math.isfinite(v):
                raise ClinicalError(f"clinical covariate {self.name!r} = {shown(value)} is not a finite number")
            lo, hi = self.range if self.range is not None else (-math.inf, math.inf)
            if not lo <= v <= hi:
                raise ClinicalError(
                    f"clinical covariate {self.name!r} = {v:g} is outside the range the signature "
                    f"was fitted on ({self.allowed()})"
                )
            return [v]
        key = canonical(value)
        if key not in self.levels:
            raise ClinicalError(
                f"clinical covariate {self.name!r} = {shown(value)} is not one of the signature's levels "
                f"({self.allowed()})"
            )
        if self.type == "ordinal":
            return [float(self.scores[self.levels.index(key)])]
        return [1.0 if key == lv else 0.0 for lv in self.levels[1:]]

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "unit": self.unit,
            "columns": self.columns,
            "n_missing": self.n_missing,
        }
        if self.type == "numeric":
            d["range"] = list(self.range) if self.range is not None else None
        else:
            d["levels"] = list(self.levels)
        if self.type == "ordinal":
            d["scores"] = list(self.scores)
        if self.type == "categorical":
            d["reference"] = self.reference
        if self.impute is not None:
            d["impute"] = self.impute
        if self.label:
            d["label"] = self.label
        return d

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "Covariate":
        try:
            typ = str(obj["type"])
            if typ not in TYPES:
                raise ClinicalError(f"clinical covariate {obj.get('name')!r}: unknown type {typ!r}")
            rng = obj.get("range")
            cov = cls(
                name=str(obj["name"]),
                type=typ,
                unit=str(obj.get("unit", "")),
                levels=tuple(str(x) for x in obj.get("levels", [])),
                scores=tuple(float(x) for x in obj.get("scores", [])),
                range=(float(rng[0]), float(rng[1])) if rng is not None else None,
                impute=obj.get("impute"),
                n_missing=int(obj.get("n_missing", 0)),
                label=str(obj.get("label", "")),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ClinicalError(f"malformed clinical covariate in signature: {exc}") from None
        if cov.type == "ordinal" and len(cov.scores) != len(cov.levels):
            raise ClinicalError(
                f"malformed clinical covariate {cov.name!r}: {len(cov.levels)} levels, {len(cov.scores)} scores"
            )
        if cov.type == "categorical" and len(cov.levels) < 2:
            raise ClinicalError(f"malformed clinical covariate {cov.name!r}: a categorical needs two levels")
        return cov


@dataclass(frozen=True)
class ClinicalSpec:
    """The frozen clinical part of a signature: covariates in order, and how rows were chosen."""

    covariates: tuple[Covariate, ...]
    missing_rule: str = "refuse"
    rows: Mapping[str, Any] = field(default_factory=dict)  # total, used, excluded reasons (training)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.covariates]

    @property
    def columns(self) -> list[str]:
        return [col for c in self.covariates for col in c.columns]

    def covariate(self, name: str) -> Covariate:
        for c in self.covariates:
            if c.name == name:
                return c
        raise ClinicalError(f"the signature has no clinical covariate {name!r} (it has {', '.join(self.names)})")

    def encode(self, values: Mapping[str, Any]) -> dict[str, float]:
        """One patient's raw values -> encoded model columns (every covariate is needed)."""
        missing = [c.name for c in self.covariates if c.name not in values or is_missing(values[c.name])]
        if missing:
            hints = "; ".join(f"{n}: {self.covariate(n).allowed()}" for n in missing)
            raise ClinicalError(f"missing clinical values for {', '.join(missing)} ({hints})")
        out: dict[str, float] = {}
        for c in self.covariates:
            out.update(zip(c.columns, c.encode(values[c.name])))
        return out

    def encode_table(self, table: pd.DataFrame, id_col: str | None = None) -> pd.DataFrame:
        """Encoded columns of every row; ClinicalError names the first bad row (column, value, id)."""
        rows = []
        for i, rec in enumerate(table[self.names].to_dict("records")):
            try:
                rows.append(self.encode(rec))
            except ClinicalError as exc:
                who = (
                    f"patient {shown(table[id_col].iloc[i])}" if id_col and id_col in table.columns else f"row {i + 1}"
                )
                raise ClinicalError(f"{who}: {exc}") from None
        return pd.DataFrame(rows, columns=self.columns, index=table.index).astype(float)

    def describe(self) -> str:
        """'cleanstage (ordinal) + years_to_birth (numeric, years)' for labels."""
        parts = []
        for c in self.covariates:
            parts.append(f"{c.name} ({c.type}{', ' + c.unit if c.unit else ''})")
        return " + ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": CLINICAL_KIND,
            "version": 1,
            "missing": {"rule": self.missing_rule, **dict(self.rows)},
            "covariates": [c.to_json() for c in self.covariates],
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "ClinicalSpec":
        if not isinstance(obj, Mapping) or obj.get("kind") != CLINICAL_KIND:
            raise ClinicalError("malformed clinical spec in signature (kind is not pathomics-clinical-spec)")
        miss = dict(obj.get("missing") or {})
        rule = str(miss.pop("rule", "refuse"))
        covs = tuple(Covariate.from_json(c) for c in obj.get("covariates", []))
        if not covs:
            raise ClinicalError("malformed clinical spec in signature: no covariates")
        return cls(covs, rule, miss)

    # ----------------------------------------------------------------------------- fitting
    @classmethod
    def fit(
        cls, table: pd.DataFrame, declared: Sequence[Declared], missing_rule: str = "refuse", id_col: str | None = None
    ) -> tuple["ClinicalSpec", np.ndarray]:
        """Check the declared columns, apply the missing rule and freeze the encoding.

        Returns the spec and a boolean mask of the rows to fit on. Nothing is dropped unless
        the rule says so, and then the spec's ``rows`` records how many rows and why.
        """
        if missing_rule not in MISSING_RULES:
            raise ClinicalError(f"--clinical-missing must be one of {', '.join(MISSING_RULES)}, got {missing_rule!r}")
        if not declared:
            raise ClinicalError("no clinical covariates declared")
        absent = [d.name for d in declared if d.name not in table.columns]
        if absent:
            raise ClinicalError(
                f"clinical column {absent[0]!r} is not in the table (columns: "
                f"{', '.join(map(str, list(table.columns)[:30]))})"
            )
        n = len(table)

        def who(i: int) -> str:
            return f"patient {shown(table[id_col].iloc[i])}" if id_col and id_col in table.columns else f"row {i + 1}"

        miss = {d.name: np.array([is_missing(v) for v in table[d.name].tolist()], bool) for d in declared}
        if missing_rule == "refuse":
            for d in declared:
                if miss[d.name].any():
                    first = int(np.flatnonzero(miss[d.name])[0])
                    raise ClinicalError(
                        f"clinical column {d.name!r} has {int(miss[d.name].sum())} missing values (first: {who(first)}); "
                        "fill them, or pass --clinical-missing drop (rows left out and counted) or impute"
                    )
        used = np.ones(n, bool)
        if missing_rule == "drop":
            for d in declared:
                used &= ~miss[d.name]
        excluded = {f"missing {d.name}": int(miss[d.name].sum()) for d in declared if miss[d.name].any()}
        covs = []
        for d in declared:
            covs.append(_freeze(d, table[d.name].tolist(), miss[d.name], used, missing_rule, who))
        ex_idx = np.flatnonzero(~used)
        rows: dict[str, Any] = {
            "total": n,
            "used": int(used.sum()),
            "excluded": excluded,
            "n_excluded": int((~used).sum()),
        }
        if id_col and id_col in table.columns and ex_idx.size:
            rows["excluded_ids"] = [str(table[id_col].iloc[i]) for i in ex_idx[:1000]]
        if missing_rule == "impute" and excluded:
            rows["imputed"] = {f"{c.name}": c.impute for c in covs if c.impute is not None}
        return cls(tuple(covs), missing_rule, rows), used


def _freeze(d: Declared, values: list[Any], miss: np.ndarray, used: np.ndarray, rule: str, who: Any) -> Covariate:
    """Type-check one column on the rows it is fitted on and freeze its encoding."""
    idx = [i for i in range(len(values)) if used[i] and not miss[i]]
    if not idx:
        raise ClinicalError(f"clinical column {d.name!r} has no values")
    n_missing = int(miss[used].sum()) if rule == "impute" else int(miss.sum())
    if d.type == "numeric":
        nums = []
        for i in idx:
            try:
                v = to_number(values[i])
            except (TypeError, ValueError):
                raise ClinicalError(
                    f"clinical column {d.name!r} is declared numeric but {who(i)} holds {values[i]!r}"
                ) from None
            if not math.isfinite(v):
                raise ClinicalError(f"clinical column {d.name!r}: {who(i)} holds {values[i]!r} (not finite)")
            nums.append(v)
        arr = np.asarray(nums)
        if np.ptp(arr) == 0:
            raise ClinicalError(f"clinical column {d.name!r} has one value only ({arr[0]:g}); it cannot be a covariate")
        imp = float(np.median(arr)) if rule == "impute" and miss[used].any() else None
        return Covariate(
            d.name,
            "numeric",
            d.unit,
            range=(float(arr.min()), float(arr.max())),
            impute=imp,
            n_missing=n_missing,
            label=d.label,
        )
    keys = [canonical(values[i]) for i in idx]
    present = set(keys)
    if d.levels:
        unknown = [(i, k) for i, k in zip(idx, keys) if k not in d.levels]
        if unknown:
            i, k = unknown[0]
            raise ClinicalError(
                f"clinical column {d.name!r}: {who(i)} holds {values[i]!r}, not one of the declared "
                f"levels ({', '.join(d.levels)})"
            )
        levels = tuple(lv for lv in d.levels if lv in present) if d.type == "categorical" else d.levels
    elif d.type == "ordinal":
        try:
            nums = sorted({to_number(k) for k in keys})
        except ValueError:
            texts = sorted(present)[:6]
            raise ClinicalError(
                f"ordinal column {d.name!r} has text levels ({', '.join(texts)}); give their order, "
                f"e.g. {d.name}:ordinal({'<'.join(texts[:3])})"
            ) from None
        levels = tuple(f"{v:g}" for v in nums)
    else:
        counts = pd.Series(keys).value_counts()
        levels = tuple(sorted(counts.index, key=lambda k: (-int(counts[k]), k)))
    if len(present) < 2:
        raise ClinicalError(
            f"clinical column {d.name!r} has one level only ({next(iter(present))!r}); it cannot be a covariate"
        )
    if d.type == "categorical":
        counts = pd.Series(keys).value_counts()
        rare = [lv for lv in levels if int(counts.get(lv, 0)) < MIN_LEVEL_ROWS]
        if rare:
            raise ClinicalError(
                f"clinical column {d.name!r}: level {rare[0]!r} has only {int(counts.get(rare[0], 0))} "
                f"rows (< {MIN_LEVEL_ROWS}); merge it with another level or leave it out"
            )
    scores: tuple[float, ...] = ()
    if d.type == "ordinal":
        try:
            scores = tuple(float(lv) for lv in levels) if not d.levels else tuple(float(i) for i in range(len(levels)))
        except ValueError:
            scores = tuple(float(i) for i in range(len(levels)))
    fill: str | None = None
    if rule == "impute" and miss[used].any():
        if d.type == "ordinal":
            med = float(np.median([scores[levels.index(k)] for k in keys]))
            fill = levels[int(np.argmin([abs(s - med) for s in scores]))]
        else:
            counts = pd.Series(keys).value_counts()
            fill = max(levels, key=lambda k: (int(counts.get(k, 0)), -levels.index(k)))  # the mode
    return Covariate(d.name, d.type, "", levels, scores, None, fill, n_missing, label=d.label)


def fill_imputed(table: pd.DataFrame, spec: ClinicalSpec) -> pd.DataFrame:
    """The table with missing clinical values replaced by the spec's recorded imputation values."""
    out = table.copy()
    for c in spec.covariates:
        if c.impute is None:
            continue
        col = out[c.name].astype(object)
        out[c.name] = [c.impute if is_missing(v) else v for v in col.tolist()]
    return out
