import subprocess
import sys

import npe2


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


def test_core_imports_without_qt_or_napari():
    code = ("import sys, napari_pathomics.cli as c; c.build_parser();"
            "import napari_pathomics.slide, napari_pathomics.tiling, napari_pathomics.annotations,"
            " napari_pathomics.layers, napari_pathomics.model.engine, napari_pathomics.signature;"
            "bad=[m for m in sys.modules if m.split('.')[0] in ('napari','qtpy','PyQt6','vispy')];"
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
