"""The dihedral views: distinct, closed sets, and each undone exactly."""

from __future__ import annotations

import numpy as np
import pytest

from napari_pathomics.dihedral import VIEW_COUNTS, dihedral_view, dihedral_views, undo_dihedral_view

torch = pytest.importorskip("torch")


def test_the_eight_views_are_distinct_and_each_is_undone() -> None:
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)  # not square: turns swap H, W
    views = dihedral_views(x, 8)
    assert len({(tuple(v.shape), v.numpy().tobytes()) for v in views}) == 8
    for i, v in enumerate(views):
        assert torch.equal(undo_dihedral_view(v, i), x)
    assert tuple(dihedral_view(x, 4).shape) == (2, 3, 5, 4)


@pytest.mark.parametrize("n", VIEW_COUNTS)
def test_each_count_is_a_closed_set_of_views(n: int) -> None:
    x = torch.from_numpy(np.random.default_rng(0).random((1, 1, 6, 6)).astype(np.float32))
    keys = {v.numpy().tobytes() for v in dihedral_views(x, n)}
    for i in range(n):  # every view of every view is again one of the set
        assert {dihedral_view(v, i).numpy().tobytes() for v in dihedral_views(x, n)} <= keys


def test_other_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="views must be one of"):
        dihedral_views(torch.zeros(1, 1, 2, 2), 3)
