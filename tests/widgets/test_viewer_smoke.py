"""Smoke tests of the real viewer: the sample slide shows, and a model loads after the GL canvas exists."""

import os
import subprocess
import sys

import numpy as np
import pytest

from napari_pathomics.widgets import layer_registry

pytestmark = pytest.mark.slow


@pytest.mark.viewer
def test_open_sample_in_viewer(make_napari_viewer, sample_slide_path):
    viewer = make_napari_viewer(show=True)
    img = layer_registry.add_slide(viewer, sample_slide_path)
    assert img.multiscale
    np.testing.assert_allclose(img.scale, (0.499, 0.499))
    shot = viewer.screenshot(canvas_only=True, flash=False)
    assert shot[..., :3].mean() > 50


@pytest.mark.viewer
def test_model_loads_after_the_gl_canvas_exists(make_napari_viewer):
    """timm/torch imported after napari's OpenGL canvas must not crash (triton vs Mesa LLVM)."""
    make_napari_viewer()  # ensures the Xvfb display for the child too
    code = (
        "import napari_pathomics.widgets.analyze_widget, napari;"
        "v = napari.Viewer(show=False);"
        "from napari_pathomics.bundle import Bundle;"
        "from napari_pathomics.resources import DEFAULT_BUNDLE;"
        "from napari_pathomics.inference.backbones import build_model;"
        "build_model(Bundle.load(DEFAULT_BUNDLE)); print('ok'); v.close()"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ), timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "ok" in r.stdout
