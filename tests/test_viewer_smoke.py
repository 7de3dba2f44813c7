import numpy as np
import pytest

from napari_pathomics.widgets import session


@pytest.mark.viewer
def test_open_sample_in_viewer(make_napari_viewer, sample_slide_path):
    viewer = make_napari_viewer(show=True)
    img = session.add_slide(viewer, sample_slide_path)
    assert img.multiscale
    np.testing.assert_allclose(img.scale, (0.499, 0.499))
    shot = viewer.screenshot(canvas_only=True, flash=False)
    assert shot[..., :3].mean() > 50
