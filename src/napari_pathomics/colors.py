"""Colour conversions between the forms the project meets: '#rrggbb', RGB triples, QuPath ints.

QuPath writes colours as ``[r, g, b]`` lists or as one packed (signed) int; napari and the
report use hex strings or floats in 0..1.
"""

from __future__ import annotations

from typing import Any

import numpy as np

GREY: tuple[int, int, int] = (128, 128, 128)


def hex_to_rgb(color: str, default: tuple[int, int, int] = GREY) -> tuple[int, int, int]:
    """'#rrggbb' (or 'rrggbb') → (r, g, b) ints; ``default`` for anything unreadable."""
    c = str(color).lstrip("#")
    try:
        if len(c) < 6:
            raise ValueError(c)
        return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)
    except ValueError:
        return default


def rgb_to_hex(rgb: Any) -> str:
    """(r, g, b) ints → '#rrggbb'."""
    r, g, b = (int(v) for v in list(rgb)[:3])
    return f"#{r:02x}{g:02x}{b:02x}"


def qupath_color(value: Any, default: tuple[int, int, int]) -> tuple[int, int, int]:
    """A QuPath colour (``[r, g, b]`` of 0..255 or a packed signed int) as RGB ints."""
    try:
        if isinstance(value, (list, tuple)) and len(value) >= 3:
            return tuple(int(max(0, min(255, c))) for c in value[:3])  # type: ignore[return-value]
        if isinstance(value, int) and not isinstance(value, bool):
            v = value & 0xFFFFFF
            return (v >> 16) & 255, (v >> 8) & 255, v & 255
    except (TypeError, ValueError, OverflowError):  # e.g. ["red", "x", "y"] or NaN: not a colour
        pass
    return default


def napari_color(color: Any, default: tuple[int, int, int]) -> tuple[int, int, int]:
    """A napari colour (RGBA floats in 0..1, or 0..255 values) as RGB ints."""
    try:
        arr = np.asarray(color, dtype=float).ravel()
    except (TypeError, ValueError):
        return default
    if arr.size < 3 or not np.all(np.isfinite(arr[:3])):
        return default
    if arr[:3].max() <= 1.0:
        arr = arr * 255
    return tuple(int(round(v)) for v in arr[:3])  # type: ignore[return-value]


def hex_to_rgba(color: str, alpha: float = 1.0) -> tuple[float, float, float, float]:
    """'#rrggbb' → (r, g, b, a) floats in 0..1 (napari colormaps, matplotlib)."""
    r, g, b = hex_to_rgb(color)
    return r / 255, g / 255, b / 255, float(alpha)
