"""Patch models: bundles (manifest + safetensors), preprocessing, training and classification.

Qt-free. Heavy imports (torch, timm) happen inside the functions that need them where possible.
"""

from __future__ import annotations

from .bundle import Bundle, attach_file, validate_bundle, write_bundle

__all__ = ["Bundle", "attach_file", "validate_bundle", "write_bundle"]
