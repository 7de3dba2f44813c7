"""Typed errors: every user mistake maps to one class with a one-line message.

The CLI prints ``str(err)`` and exits with ``err.exit_code``; the widgets show it as a
napari notification. Anything that is not a ``PathomicsError`` is a bug and may show a
traceback.
"""

from __future__ import annotations


class PathomicsError(Exception):
    """Base class of all errors caused by the user's input, not by a bug."""

    exit_code: int = 1


class SlideError(PathomicsError):
    """A slide cannot be opened or read (missing, corrupt, not a pyramid TIFF...)."""

    exit_code = 3


class MissingMppError(SlideError):
    """The slide does not record its pixel size and none was given."""

    exit_code = 4


class RegionError(SlideError):
    """A requested region lies outside the slide or failed to decode."""


class AnnotationError(PathomicsError):
    """A GeoJSON/ROI file is malformed, empty or lies off the slide."""

    exit_code = 5


class TilingError(PathomicsError):
    """Tiling parameters are invalid or no tile fits the ROI and tissue."""

    exit_code = 6


class BundleError(PathomicsError):
    """A model/signature bundle is malformed, tampered with or unsafe."""

    exit_code = 7


class SignatureError(PathomicsError):
    """Signature fitting or scoring got unusable data or a bundle without a signature."""

    exit_code = 8


class CohortError(PathomicsError):
    """A cohort table is malformed (missing columns, bad times, unknown slides...)."""

    exit_code = 9


class CancelledError(PathomicsError):
    """The user cancelled a long-running job."""

    exit_code = 130


class InferenceError(PathomicsError):
    """Inference cannot run as asked (device not available, grid planned for other params...)."""

    exit_code = 10


class ResultsError(PathomicsError):
    """A saved results file is unreadable, of another format, or for another slide/bundle/grid."""

    exit_code = 11


class TrainingError(PathomicsError):
    """Training data or arguments are unusable (empty folder, one class, unreadable image...)."""

    exit_code = 12


class PretrainedWeightsError(PathomicsError):
    """The optional ImageNet weights package is missing or does not match the architecture."""

    exit_code = 13


class NucleiError(PathomicsError):
    """Nuclei cannot be segmented as asked (not an H&E image, too coarse, no tissue in the ROIs...)."""

    exit_code = 16


class LabelsError(PathomicsError):
    """Tile labels cannot be used as asked (none, one class only, unknown classes, another slide, off the slide)."""

    exit_code = 17


class ClinicalError(SignatureError):
    """A clinical covariate, marker or treatment column is unusable (missing, wrong type, one level, too few events, a value outside the frozen encoding)."""

    exit_code = 19
