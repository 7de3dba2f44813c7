"""The npe2 plugin manifest: valid, registered, and every command points at a real object."""

import npe2
import pytest

pytestmark = pytest.mark.slow


def test_manifest_is_valid_and_registered():
    pm = npe2.PluginManager.instance()
    pm.discover()
    mf = pm.get_manifest("napari-pathomics")
    assert {w.display_name for w in mf.contributions.widgets} >= {"Slide", "ROIs, tissue and tiles", "Analyze", "Score"}
    assert mf.contributions.readers and mf.contributions.writers and mf.contributions.sample_data
    for cmd in mf.contributions.commands:
        module, attr = cmd.python_name.split(":")
        mod = __import__(module, fromlist=[attr])
        assert hasattr(mod, attr), cmd.python_name
