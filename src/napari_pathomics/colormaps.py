"""The colours a pathologist reads maps in, one definition for the viewer and the report.

Continuous maps are perceptual matplotlib colormaps sampled into control points, so napari and
matplotlib draw the same colours; values below a threshold (and cells without a tile) are
transparent so the slide shows through. Class palettes are chosen to stand apart from the pinks
and purples of H&E (eosin, haematoxylin); one is safe for colour-blind readers (Okabe & Ito 2008).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np


@dataclass(frozen=True)
class MapSpec:
    """A continuous map: the matplotlib colormap, the part of it used, and what its values mean."""

    cmap: str
    title: str
    units: str
    start: float = 0.0  # the part of the colormap below this is skipped (too close to H&E or to white)
    #: until the user moves the threshold, values in the lowest this share of the range are transparent, so a
    #: map whose values are mostly near zero shows its peaks over the slide instead of one colour over the ROI
    transparent_below: float = 0.0


#: Continuous result maps (patch risk, the activation maps, uncertainty).
MAPS: dict[str, MapSpec] = {
    "risk": MapSpec("cividis", "patch risk", "0–1, share of high-risk tissue"),
    "cam": MapSpec("viridis", "activation", "Grad-CAM activation, arbitrary units", start=0.12, transparent_below=0.1),
    "uncertainty": MapSpec("YlOrBr", "uncertainty", "1 − top-class probability", start=0.2, transparent_below=0.1),
}
#: Alpha of the drawn part of a continuous map (the slide stays visible beneath).
MAP_ALPHA = 0.85
_SAMPLES = 16


@cache
def ramp(kind: str, n: int = _SAMPLES) -> np.ndarray:
    """``n`` RGBA colours (floats 0..1) along map ``kind``."""
    from matplotlib import colormaps  # heavy (~0.3 s): only when a map is drawn

    spec = MAPS[kind]
    return np.asarray(colormaps[spec.cmap](np.linspace(spec.start, 1.0, n)), dtype=np.float64)


def mpl_colormap(kind: str) -> Any:
    """The matplotlib colormap of ``kind`` (the report draws with it)."""
    from matplotlib.colors import ListedColormap  # heavy, as above

    return ListedColormap(ramp(kind, 256), name=f"pathomics_{kind}")


def napari_colormap(kind: str, fraction: float = 0.0, alpha: float = MAP_ALPHA) -> dict[str, Any]:
    """A napari colormap dict: transparent up to ``fraction`` of the contrast range, then the ramp.

    The lowest 1 % is always transparent: cells without a tile carry a value below the range.
    """
    t = float(np.clip(fraction, 0.01, 0.99))
    colors = ramp(kind).copy()
    colors[:, 3] = alpha
    controls = [0.0, t, *np.linspace(t + 1e-4, 1.0, len(colors))]
    rgba = [[0, 0, 0, 0], [0, 0, 0, 0], *colors.tolist()]
    return {
        "name": f"{MAPS[kind].cmap} from {t:.2f}" + ("" if alpha == MAP_ALPHA else f" α{alpha:.2f}"),
        "colors": rgba,
        "controls": controls,
    }


def robust_limits(
    values: np.ndarray, lo_pct: float = 1.0, hi_pct: float = 99.0, floor: float | None = None
) -> tuple[float, float]:
    """Contrast limits from the finite values' percentiles (``floor`` pins the lower one, e.g. 0)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return (0.0 if floor is None else floor), 1.0
    lo = float(np.percentile(v, lo_pct)) if floor is None else float(floor)
    hi = float(np.percentile(v, hi_pct))
    if hi <= lo:
        hi = float(v.max()) if v.max() > lo else lo + (abs(lo) * 0.1 or 1.0)
    return lo, hi


# ---------------------------------------------------------------------------------------------
# class palettes
#: Colours for the NCT-CRC-HE tissue classes (and their common synonyms), far from H&E's hues.
CONTRAST_PALETTE: dict[str, str] = {
    "TUM": "#e6194b",
    "STR": "#ff9f1c",
    "LYM": "#00b4d8",
    "MUS": "#2e7d32",
    "NORM": "#b5e61d",
    "ADI": "#ffe119",
    "DEB": "#6d4c41",
    "MUC": "#1d3ed6",
    "BACK": "#000000",
}
#: Okabe–Ito colours (its reddish purple, an H&E hue, replaced by Tol's indigo), the most read classes most distinct.
COLORBLIND_PALETTE: dict[str, str] = {
    "TUM": "#D55E00",
    "STR": "#E69F00",
    "LYM": "#0072B2",
    "MUS": "#009E73",
    "NORM": "#56B4E9",
    "ADI": "#F0E442",
    "DEB": "#000000",
    "MUC": "#332288",
    "BACK": "#999999",
}
#: Colours for classes with other names, in order of use.
_SPARE = {
    "contrast": [
        "#e6194b",
        "#00b4d8",
        "#ff9f1c",
        "#2e7d32",
        "#1d3ed6",
        "#ffe119",
        "#6d4c41",
        "#b5e61d",
        "#000000",
        "#4a148c",
        "#008080",
        "#808000",
    ],
    "colour-blind safe": [
        "#D55E00",
        "#0072B2",
        "#E69F00",
        "#009E73",
        "#56B4E9",
        "#F0E442",
        "#000000",
        "#332288",
        "#999999",
    ],
}
_SYNONYMS = {
    "TUMOR": "TUM",
    "TUMOUR": "TUM",
    "STROMA": "STR",
    "LYMPHOCYTES": "LYM",
    "IMMUNE": "LYM",
    "MUSCLE": "MUS",
    "NORMAL": "NORM",
    "ADIPOSE": "ADI",
    "FAT": "ADI",
    "DEBRIS": "DEB",
    "NECROSIS": "DEB",
    "MUCUS": "MUC",
    "BACKGROUND": "BACK",
}
PALETTES = ("contrast", "colour-blind safe", "bundle")


def _canonical(name: str) -> str:
    key = str(name).strip().upper()
    return _SYNONYMS.get(key, key)


def class_palette(names: list[str], bundle_colors: list[str], scheme: str = "contrast") -> list[str]:
    """Display colours of the classes ``names`` under ``scheme`` ('bundle': the bundle's own)."""
    if scheme == "bundle":
        return list(bundle_colors)
    table = COLORBLIND_PALETTE if scheme == "colour-blind safe" else CONTRAST_PALETTE
    out: list[str | None] = [table.get(_canonical(n)) for n in names]
    spare = [c for c in _SPARE["colour-blind safe" if scheme == "colour-blind safe" else "contrast"] if c not in out]
    for i, c in enumerate(out):
        if c is None:
            out[i] = spare.pop(0) if spare else (bundle_colors[i] if i < len(bundle_colors) else "#808080")
    return [str(c) for c in out]
