"""What every record written by the project says about how it was made, as strict JSON.

Run records, reports, bundles and cohort runs all list the same package versions, and all turn
numpy values, paths and non-finite floats into plain JSON (NaN/inf become null: JSON has none).
"""

from __future__ import annotations

import math
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

#: Packages whose versions determine the numbers the project produces.
PACKAGES: tuple[str, ...] = (
    "napari-pathomics", "numpy", "torch", "torchvision", "timm", "grad-cam", "safetensors", "tiffslide",
    "tifffile", "imagecodecs", "opencv-python-headless", "lifelines", "pandas", "scipy", "dask", "distributed",
)


def versions() -> dict[str, str]:
    """Python, platform and the installed versions of ``PACKAGES`` (read from metadata, no imports)."""
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def json_default(obj: Any) -> Any:
    """``json.dumps(default=...)`` for numpy scalars/arrays and paths."""
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def strict_json(obj: Any) -> Any:
    """A copy that ``json.dumps(..., allow_nan=False)`` accepts: numpy → Python, NaN/inf → None."""
    if isinstance(obj, dict):
        return {str(k): strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return strict_json(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj
