"""napari-pathomics: whole-slide H&E pathomics, Qt-free core plus napari widgets."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
