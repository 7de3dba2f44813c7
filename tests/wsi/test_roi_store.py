"""ROI autosave: beside the slide when its folder is writable, else in the user data folder; never in the package."""

import os

from shapely.geometry import box

from napari_pathomics.resources import SAMPLE_SLIDE
from napari_pathomics.wsi.annotations import Annotation
from napari_pathomics.wsi.roi_store import autosave_path, load_saved_rois, save_rois, sidecar_path


def test_autosave_beside_slide_or_user_folder(tmp_path, monkeypatch):
    slide = tmp_path / "case.svs"
    slide.write_bytes(b"x")
    anns = [Annotation(box(0, 0, 10, 10))]
    assert save_rois(slide, anns) == sidecar_path(slide)
    assert load_saved_rois(slide).annotations[0].geometry.equals(box(0, 0, 10, 10))
    ro = tmp_path / "ro"
    ro.mkdir()
    slide2 = ro / "case2.svs"
    slide2.write_bytes(b"x")
    ro.chmod(0o555)
    try:
        if os.access(ro, os.W_OK):  # running as root: permissions are not enforced
            monkeypatch.setattr("napari_pathomics.wsi.roi_store._writable", lambda folder: False)
        dest = autosave_path(slide2)
        assert dest.parent != ro
        save_rois(slide2, anns)
        assert load_saved_rois(slide2).annotations[0].geometry.equals(box(0, 0, 10, 10))
        save_rois(slide2, [])
        assert load_saved_rois(slide2).annotations == []
    finally:
        ro.chmod(0o755)


def test_sample_slide_rois_never_written_into_the_package():
    assert autosave_path(SAMPLE_SLIDE).parent != SAMPLE_SLIDE.parent
