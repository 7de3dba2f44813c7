"""The dihedral symmetries of an image tensor, for test-time augmentation.

The 8 views of an (..., H, W) tensor, always in this order: itself, mirrored left-right, mirrored
up-down, both (turned 180°), then the same four of its transpose (the 90° and 270° turns and the
two diagonal mirrors). The first 2, 4 or 8 views are each closed under composition, so a mean over
them is itself symmetric. Works on any tensor with ``flip`` and ``transpose`` (torch's), so this
module imports nothing heavy.
"""

from __future__ import annotations

from typing import Any

__all__ = ["VIEW_COUNTS", "dihedral_view", "dihedral_views", "undo_dihedral_view"]

#: How many views a mean may take: a closed set each.
VIEW_COUNTS = (1, 2, 4, 8)
_FLIP_DIMS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))


def _flip(x: Any, i: int) -> Any:
    dims = _FLIP_DIMS[i % 4]
    return x.flip(dims) if dims else x


def dihedral_view(x: Any, i: int) -> Any:
    """View ``i`` (0–7) of ``x``."""
    return _flip(x.transpose(-2, -1) if i >= 4 else x, i)


def undo_dihedral_view(y: Any, i: int) -> Any:
    """``y`` computed on view ``i`` brought back to the original's orientation."""
    y = _flip(y, i)
    return y.transpose(-2, -1) if i >= 4 else y


def dihedral_views(x: Any, n: int) -> list[Any]:
    """The first ``n`` views of ``x`` (``n`` in ``VIEW_COUNTS``)."""
    if n not in VIEW_COUNTS:
        raise ValueError(f"views must be one of {VIEW_COUNTS}, got {n!r}")
    return [dihedral_view(x, i) for i in range(n)]
