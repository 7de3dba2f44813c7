"""The frozen :class:`Signature`: everything needed to score a patient, rebuilt from JSON.

No pickle and no lifelines at score time: the survival model is arrays behind the small
:class:`SurvivalModel` protocol (:class:`~napari_pathomics.signature.cox.FrozenCox` is the one
implementation today), the cutoff a number, the reference cohort sorted risks and Kaplan–Meier
curves.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib.resources import files
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from jsonschema import Draft202012Validator

from ..atomic import atomic_write_text
from ..errors import ClinicalError, SignatureError
from ._evaluate import percentile
from ._values import MAX_PATCH_RISK_WEIGHT, size_problems, value_problems
from .clinical import ClinicalSpec
from .cox import FrozenCox
from .features import FeatureSpec

SIGNATURE_KIND = "pathomics-signature"
SCHEMA_VERSION = 1


class SurvivalModel(Protocol):
    """What a signature needs of its fitted model: covariates and their weights, a risk, survival curves."""

    covariates: list[str]
    beta: np.ndarray  # one coefficient per covariate (on the model's own scale)
    penalizer: float

    def risk(self, X: Any) -> np.ndarray:
        """Linear predictor (log relative hazard) per subject."""
        ...

    def survival(self, risk: np.ndarray | float, times: Sequence[float] | np.ndarray | None = None) -> np.ndarray:
        """S(t | risk): rows = times, columns = subjects."""
        ...

    def to_json(self) -> dict[str, Any]: ...


#: Survival-model kinds a signature may carry, by the key its JSON stores them under.
SURVIVAL_MODELS: dict[str, Callable[[Mapping[str, Any]], SurvivalModel]] = {"cox": FrozenCox.from_json}


@dataclass(frozen=True)
class SignatureScore:
    """One patient's score against a signature (all plain floats; JSON via ``to_json``)."""

    risk: float
    percentile: float
    group: str
    cutoff: float
    survival_at: dict[str, float]
    curve_times: list[float]
    curve_survival: list[float]
    time_unit: str
    features: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "risk": self.risk,
            "percentile": self.percentile,
            "group": self.group,
            "cutoff": self.cutoff,
            "survival_at": dict(self.survival_at),
            "curve": {"times": list(self.curve_times), "survival": list(self.curve_survival)},
            "time_unit": self.time_unit,
            "features": dict(self.features),
        }


@lru_cache(maxsize=1)
def _validator() -> Draft202012Validator:
    res = files("napari_pathomics") / "schemas" / "signature-v1.json"
    return Draft202012Validator(json.loads(res.read_text(encoding="utf-8")))


def _non_finite(obj: Any, path: str = "") -> str | None:
    if isinstance(obj, float) and not math.isfinite(obj):
        return path or "<top level>"
    items = obj.items() if isinstance(obj, Mapping) else enumerate(obj) if isinstance(obj, list) else ()
    for k, v in items:
        where = _non_finite(v, f"{path}.{k}" if path else str(k))
        if where:
            return where
    return None


def signature_problems(data: Mapping[str, Any]) -> list[str]:
    """One line per way a signature document cannot score: sizes, schema, finite numbers, values, names.

    The one check of a signature's content, shared by every reader (``Signature``) and by
    ``validate-bundle``, so a signature that validates never fails scoring on a value.
    """
    if not isinstance(data, Mapping):
        return ["<top level>: a signature must be a JSON object"]
    sizes = size_problems(data)
    if sizes:
        return sizes
    out = []
    for err in sorted(_validator().iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path]):
        where = ".".join(str(p) for p in err.absolute_path) or "<top level>"
        msg = err.message if len(err.message) <= 200 else err.message[:197] + "..."
        out.append(f"{where}: {msg}")
    non_finite = _non_finite(data)
    if non_finite:
        out.append(f"{non_finite}: NaN or infinite number")
    if out:
        return out
    return value_problems(data) + _name_problems(data)


def _name_problems(data: Mapping[str, Any]) -> list[str]:
    """Covariates that nothing computes: each is a feature of the spec or a clinical column."""
    cov = [str(c) for c in data["cox"]["covariates"]]
    if list(data.get("features", cov)) != cov:
        return ["features: differ from the Cox covariates (cox.covariates)"]
    known: set[str] = set()
    spec, clin = data.get("feature_spec"), data.get("clinical")
    for block, doc, names in (
        ("feature_spec", spec, lambda d: FeatureSpec.from_json(d).feature_names),
        ("clinical", clin, lambda d: ClinicalSpec.from_json(d).columns),
    ):
        if not doc:
            continue
        try:
            known |= set(names(doc))
        except (SignatureError, KeyError, TypeError, ValueError) as exc:
            return [f"{block}: unusable ({str(exc)[:200]})"]
    if not spec:
        return []  # a table-only signature: features come from the caller's table, not from tiles
    unknown = [c for c in cov if c not in known]
    if unknown:
        return [f"cox.covariates: unknown feature names {unknown[:5]} (not computed by feature_spec or clinical)"]
    return []


def _read_json(obj: str | Path) -> Any:
    path = Path(obj)
    if path.is_dir():
        path = path / "signature.json"
    if not path.exists():
        raise SignatureError(f"no signature at {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise SignatureError(f"cannot read {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise SignatureError(f"{path} is not valid JSON: {exc}") from exc
    except RecursionError:
        raise SignatureError(f"{path}: JSON nested too deeply") from None


def _class_weights(data: Any) -> dict[str, float]:
    spec = (data.get("patch_risk_weights") if isinstance(data, Mapping) else None) or {}
    if not isinstance(spec, Mapping):
        raise SignatureError("patch_risk_weights must map class names to numbers")
    try:
        weights = {str(k): float(v) for k, v in spec.items()}
    except (TypeError, ValueError):
        raise SignatureError("patch_risk_weights must map class names to numbers") from None
    if not all(math.isfinite(v) and abs(v) <= MAX_PATCH_RISK_WEIGHT for v in weights.values()):
        raise SignatureError(f"patch_risk_weights must be finite numbers within ±{MAX_PATCH_RISK_WEIGHT:g}")
    return weights


def read_patch_risk_weights(path: str | Path) -> dict[str, float]:
    """Only the per-class patch-risk weights of a signature file (may be empty).

    What inference needs of a bundle's signature: a run can show the patch risk even when the
    rest of the signature is not usable for scoring.
    """
    return _class_weights(_read_json(path))


def _horizon_key(h: float) -> str:
    return str(int(h)) if float(h).is_integer() else str(h)


class Signature:
    """A trained prognostic signature. Build with :meth:`from_json`; score with :meth:`score`."""

    def __init__(self, data: Mapping[str, Any]):
        if not isinstance(data, Mapping):
            raise SignatureError("a signature must be a JSON object")
        if data.get("kind") != SIGNATURE_KIND:
            raise SignatureError(f"not a pathomics signature (kind={data.get('kind')!r})")
        if data.get("schema_version") != SCHEMA_VERSION:
            raise SignatureError(
                f"unsupported signature schema_version {data.get('schema_version')!r} (expected {SCHEMA_VERSION})"
            )
        try:
            problems = signature_problems(data)
        except RecursionError:
            problems = ["JSON nested too deeply"]
        if problems:
            more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
            raise SignatureError(f"malformed signature: {problems[0]}{more}")
        self._data = copy.deepcopy(dict(data))
        kind = str(self._data.get("survival_model", "cox"))
        if kind not in SURVIVAL_MODELS:
            raise SignatureError(f"unknown survival model {kind!r} (known: {', '.join(SURVIVAL_MODELS)})")
        try:
            self.cox: SurvivalModel = SURVIVAL_MODELS[kind](self._data[kind])
            self._cutoff = float(self._data["cutoff"]["cutoff"])
            self._ref = np.asarray(self._data["reference"]["risk_sorted"], float)
            self.horizons = [float(h) for h in self._data.get("horizons", [])]
        except (KeyError, TypeError, ValueError) as exc:
            raise SignatureError(f"malformed signature: missing or bad {exc}") from exc
        if list(self._data.get("features", self.cox.covariates)) != self.cox.covariates:
            raise SignatureError("malformed signature: 'features' differ from the Cox covariates")
        spec = self._data.get("feature_spec")
        self._spec = FeatureSpec.from_json(spec) if spec else None
        clin = self._data.get("clinical")
        self._clinical = ClinicalSpec.from_json(clin) if clin else None
        if self._clinical is not None:
            absent = [c for c in self._clinical.columns if c not in self.cox.covariates]
            if absent:
                raise SignatureError(f"malformed signature: clinical columns {absent} are not Cox covariates")

    # --------------------------------------------------------------- I/O
    @classmethod
    def from_json(cls, obj: Mapping[str, Any] | str | Path) -> "Signature":
        """From a dict, a path to a ``signature.json`` or a bundle folder containing one."""
        return cls(_read_json(obj) if isinstance(obj, (str, Path)) else obj)

    def to_json(self) -> dict[str, Any]:
        return copy.deepcopy(self._data)

    def save(self, path: str | Path) -> Path:
        """Write atomically (temp file, then rename)."""
        return atomic_write_text(path, json.dumps(self._data, indent=1, sort_keys=True, allow_nan=False))

    # ------------------------------------------------------------ access
    @property
    def features(self) -> list[str]:
        """Names of the features the score needs (the Cox covariates)."""
        return list(self.cox.covariates)

    @property
    def feature_spec(self) -> FeatureSpec | None:
        """How to compute the features from tile results (``None`` for table-only signatures)."""
        return self._spec

    @property
    def clinical(self) -> ClinicalSpec | None:
        """The frozen clinical covariates (``None`` for a pathomics-only signature)."""
        return self._clinical

    @property
    def image_features(self) -> list[str]:
        """The features computed from tiles (every covariate that is not a clinical column)."""
        clin = set(self._clinical.columns) if self._clinical is not None else set()
        return [c for c in self.features if c not in clin]

    @property
    def evaluation(self) -> dict[str, Any]:
        """The nested-CV comparison (``models.{image,clinical,combined}``...); empty when not run."""
        return copy.deepcopy(self._data.get("evaluation") or {})

    @property
    def cancer_type(self) -> str:
        """The cancer type the signature was derived from ('' when the file does not say)."""
        return str(self._data.get("cancer_type") or "")

    @property
    def nuclei_model(self) -> dict[str, Any] | None:
        """The nuclei method its nuclear features came from (``describe()``), when it uses them and it is recorded."""
        spec = self._spec
        return dict(spec.nuclei_model) if spec is not None and spec.nuclear and spec.nuclei_model else None

    @property
    def coefficients(self) -> dict[str, float]:
        return dict(zip(self.cox.covariates, map(float, self.cox.beta)))

    @property
    def cutoff(self) -> dict[str, Any]:
        return dict(self._data["cutoff"])

    @property
    def metrics(self) -> dict[str, Any]:
        return copy.deepcopy(self._data.get("metrics", {}))

    @property
    def reference_km(self) -> dict[str, Any]:
        """Reference cohort's Kaplan–Meier curves per group: grid, survival, CI, at-risk."""
        return copy.deepcopy(self._data["reference"]["km"])

    @property
    def reference_risks(self) -> np.ndarray:
        return self._ref.copy()

    @property
    def patch_risk_weights(self) -> dict[str, float]:
        """Per-class weights of a tile's probabilities in the signature's risk (may be empty)."""
        return _class_weights(self._data)

    @property
    def time_unit(self) -> str:
        return str(self._data.get("time_unit", "days"))

    @property
    def name(self) -> str:
        return str(self._data.get("name", ""))

    def summary(self) -> dict[str, Any]:
        """Headline figures (for CLI output and the bundle manifest)."""
        m = self._data.get("metrics", {})
        cv = m.get("cv") or {}
        hr = m.get("hazard_ratio_high_vs_low") or {}
        return {
            "name": self.name,
            "covariates": self.coefficients,
            "penalizer": self.cox.penalizer,
            "apparent_c_index": m.get("apparent_c_index"),
            "cv_c_index": cv.get("c_index_mean"),
            "cv_c_index_sd": cv.get("c_index_sd"),
            "cv_hazard_ratio": cv.get("hazard_ratio_out_of_fold"),
            "hazard_ratio": {k: hr.get(k) for k in ("hr", "ci_lower", "ci_upper", "p")},
            "cutoff": self._cutoff,
            "cutoff_p_value": self._data["cutoff"].get("p_value"),
            "cutoff_method": self._data["cutoff"].get("method"),
            "n": self._data["reference"].get("n"),
            "n_events": self._data["reference"].get("n_events"),
            "time_unit": self.time_unit,
            **({"clinical": self._clinical.names, "rows": self._rows()} if self._clinical is not None else {}),
            **({"evaluation": copy.deepcopy(self._data["evaluation"])} if self._data.get("evaluation") else {}),
            **({"cancer_type": self.cancer_type} if self.cancer_type else {}),
        }

    def _rows(self) -> dict[str, Any]:
        """How many training rows were used and why the others were not (clinical signatures)."""
        rows = dict((self._data.get("evaluation") or {}).get("rows") or (self._clinical.rows if self._clinical else {}))
        rows.pop("excluded_ids", None)
        return rows

    def _with_clinical(self, features: Mapping[str, float], clinical: Mapping[str, Any] | None) -> dict[str, Any]:
        """Image features plus the encoded clinical values (ClinicalError names a bad one)."""
        out = dict(features)
        if self._clinical is not None:
            if clinical is None:
                if all(c in out for c in self._clinical.columns):
                    return out  # already encoded (e.g. a table row)
                raise ClinicalError(
                    f"signature {self.name!r} needs clinical values for {', '.join(self._clinical.names)}"
                )
            out.update(self._clinical.encode(clinical))
        return out

    # ------------------------------------------------------------ scoring
    def risk(self, features: Mapping[str, float]) -> float:
        """Linear predictor (log partial hazard) of one patient."""
        vals = {}
        for c in self.features:
            if c not in features:
                missing = [f for f in self.features if f not in features]
                raise SignatureError(f"missing features for signature {self.name!r}: {missing}")
            v = features[c]
            try:
                v = float(v)
            except (TypeError, ValueError) as exc:
                raise SignatureError(f"feature {c!r} is not a number: {v!r}") from exc
            if not math.isfinite(v):
                raise SignatureError(f"feature {c!r} is NaN or infinite")
            vals[c] = v
        return float(self.cox.risk(vals)[0])

    def survival(self, risk: float, times: Any) -> np.ndarray:
        """S(t | risk) at ``times`` (in the signature's time unit)."""
        return self.cox.survival(risk, times)[:, 0]

    def score(self, features: Mapping[str, float], clinical: Mapping[str, Any] | None = None) -> SignatureScore:
        """Risk, percentile in the reference cohort, group, survival at horizons and curve.

        A signature with clinical covariates also needs the patient's raw ``clinical`` values
        (``{"cleanstage": 3, ...}``), encoded with the frozen encoding.
        """
        features = self._with_clinical(features, clinical)
        r = self.risk(features)
        grid = np.asarray(self._data["reference"]["km"]["grid"], float)
        s_h = self.survival(r, self.horizons) if self.horizons else np.array([])
        return SignatureScore(
            risk=r,
            percentile=percentile(r, self._ref),
            group="high" if r > self._cutoff else "low",
            cutoff=self._cutoff,
            survival_at={_horizon_key(h): float(s) for h, s in zip(self.horizons, s_h)},
            curve_times=grid.tolist(),
            curve_survival=self.survival(r, grid).tolist(),
            time_unit=self.time_unit,
            features={c: float(features[c]) for c in self.features},
        )

    def __repr__(self) -> str:
        return f"Signature(name={self.name!r}, features={self.features}, cutoff={self._cutoff:.4g})"
