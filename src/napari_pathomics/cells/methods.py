"""The nuclei methods behind one choice: the default, ``classical``, ``otsu``, shipped and user models.

Every consumer (``pathomics nuclei``, the Nuclei panel, slide runs for the per-tile density and
N:C layers, ``score`` / ``train-signature`` nuclear features) resolves its method here, with
:func:`resolve_method`, so they all use the same default. A method segments one RGB region into
a :class:`~napari_pathomics.cells.nuclei.Segmentation` and says what it is (name, licence) for
outputs, reports and JSON.

Names: ``classical`` (``cells.nuclei``: adaptive haematoxylin contrast + watershed), ``otsu``
(``cells._otsu``: the plain baseline), the shipped learned models by name (``resources.NUCLEI_MODELS``:
``monuseg``, CC BY-NC-SA 4.0, opt-in only), or a path to a model folder a user trained.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..errors import NucleiError
from ..resources import NUCLEI_MODELS
from ..wsi.tissue import stained_pixels
from ._otsu import segment_otsu
from .learned import segment_learned
from .model_folder import NucleiModel, load_model_folder
from .nuclei import MAX_MPP, NucleiParams, Segmentation, check_he, segment_nuclei
from .stain import StainVectors, haematoxylin, slide_stain

__all__ = [
    "NucleiMethod",
    "resolve_method",
    "method_spec",
    "same_method",
    "DEFAULT_METHOD",
    "method_names",
    "Classical",
    "Otsu",
    "Learned",
]

#: The default everywhere: the best shipped method on the 13 instance-labelled MoNuSeg training
#: images that may be a default (``monuseg`` is non-commercial and opt-in), never one below the
#: Otsu baseline (figures: docs/benchmarks.md, bench_nuclei).
DEFAULT_METHOD = "otsu"
#: The licence of the classical paths (this package's own code).
LICENCE = "BSD-3-Clause (napari-pathomics)"


class NucleiMethod(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def key(self) -> str: ...

    def describe(self) -> dict[str, Any]: ...

    def segment(
        self,
        rgb: np.ndarray,
        mpp: float,
        *,
        stain: StainVectors | None = None,
        reference_threshold: float | None = None,
        check: bool = True,
        cancel: Any = None,
    ) -> Segmentation: ...


def _check(rgb: np.ndarray, mpp: float, check: bool) -> np.ndarray:
    if not (isinstance(mpp, (int, float)) and math.isfinite(mpp) and mpp > 0):
        raise NucleiError(f"µm/px must be a positive number, got {mpp!r}")
    if mpp > MAX_MPP:
        raise NucleiError(f"{mpp:g} µm/px is too coarse to segment nuclei (needs ≤ {MAX_MPP:g} µm/px)")
    arr = np.asarray(rgb)
    if check:
        check_he(arr)
    elif arr.ndim != 3 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise NucleiError(f"expected an RGB uint8 image, got shape {arr.shape} {arr.dtype}")
    return arr


def _wrap(
    arr: np.ndarray, labels: np.ndarray, mpp: float, stain: StainVectors, thr: float, **info: Any
) -> Segmentation:
    return Segmentation(
        labels=labels.astype(np.int32, copy=False),
        h=haematoxylin(arr, stain),
        stained=stained_pixels(arr),
        mpp=float(mpp),
        threshold=float(thr),
        stain=stain,
        info=dict(info),
    )


@dataclass(frozen=True)
class Classical:
    """``cells.nuclei``: the adaptive classical path."""

    params: NucleiParams = field(default_factory=NucleiParams)
    name: str = "classical"

    @property
    def key(self) -> str:
        return "classical"

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": "classical", "licence": LICENCE, "key": self.key}

    def segment(self, rgb, mpp, *, stain=None, reference_threshold=None, check=True, cancel=None) -> Segmentation:
        return segment_nuclei(
            rgb, mpp, stain=stain, params=self.params, reference_threshold=reference_threshold, check=check
        )


@dataclass(frozen=True)
class Otsu:
    """``cells._otsu``: the plain haematoxylin Otsu + distance-transform watershed baseline."""

    name: str = "otsu"

    @property
    def key(self) -> str:
        return "otsu"

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": "classical", "licence": LICENCE, "key": self.key}

    def segment(self, rgb, mpp, *, stain=None, reference_threshold=None, check=True, cancel=None) -> Segmentation:
        arr = _check(rgb, mpp, check)
        stain = stain or slide_stain(arr)
        labels = segment_otsu(arr, float(mpp))
        return _wrap(arr, labels, mpp, stain, float("nan"), method="otsu")


@dataclass(frozen=True)
class Learned:
    """A learned model folder (``cells.model_folder``): the U-Net at the model's µm/px."""

    model: NucleiModel

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def key(self) -> str:
        return f"learned-{self.model.key}"

    def describe(self) -> dict[str, Any]:
        return {**self.model.describe(), "key": self.key}

    def segment(self, rgb, mpp, *, stain=None, reference_threshold=None, check=True, cancel=None) -> Segmentation:
        arr = _check(rgb, mpp, check)
        labels = self.labels(arr, float(mpp), cancel=cancel)
        stain = stain or slide_stain(arr)
        return _wrap(arr, labels, mpp, stain, self.model.post.foreground, method=self.name)

    def labels(self, rgb: np.ndarray, mpp: float, cancel: Any = None) -> np.ndarray:
        """Instance labels on ``rgb``'s own grid."""
        m = self.model
        return segment_learned(m.network(), rgb, mpp, m.mpp, m.post, m.normaliser(), cancel=cancel)


def method_names() -> list[str]:
    """The names a user can choose (shipped models that are present, and the classical paths)."""
    return [n for n in NUCLEI_MODELS if (NUCLEI_MODELS[n] / "manifest.json").is_file()] + ["otsu", "classical"]


def resolve_method(spec: str | Path | None = None) -> NucleiMethod:
    """The method named by ``spec``: None → the default; a name; or a model folder path."""
    spec = DEFAULT_METHOD if spec is None or str(spec) == "" else spec
    s = str(spec)
    if s == "classical":
        return Classical()
    if s == "otsu":
        return Otsu()
    if s in NUCLEI_MODELS:
        return Learned(load_model_folder(NUCLEI_MODELS[s]))
    p = Path(s).expanduser()
    if p.is_dir():
        return Learned(load_model_folder(p))
    raise NucleiError(f"nuclei model {s!r}: neither a model folder nor one of {', '.join(method_names())}")


def method_spec(method: NucleiMethod) -> str:
    """What :func:`resolve_method` turns back into ``method`` in another process (a dask worker):
    its name for the classical paths and shipped models, the model folder's absolute path otherwise."""
    if isinstance(method, Learned):
        path = method.model.path
        for name, folder in NUCLEI_MODELS.items():
            if folder.resolve() == path:
                return name
        return str(path)
    return method.name


def same_method(recorded: dict[str, Any] | None, method: NucleiMethod) -> bool:
    """Whether ``recorded`` (a ``describe()`` saved with features) names ``method``: by the key that
    identifies a method's output where both have one, else by name. Nothing recorded: True."""
    if not recorded:
        return True
    if recorded.get("key"):
        return str(recorded["key"]) == method.key
    return str(recorded.get("name")) == method.name
