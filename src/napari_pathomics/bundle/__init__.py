"""The bundle file format: a folder (or zip) of a JSON manifest, safetensors weights and sha256s.

No torch here: building and running the model is ``inference``'s job.
"""

from .archive import MANIFEST_NAME
from .manifest import Bundle, validate_bundle
from .schema import SUPPORTED_SCHEMA_VERSIONS
from .write import attach_file, staged_bundle, write_bundle

__all__ = ["MANIFEST_NAME", "SUPPORTED_SCHEMA_VERSIONS", "Bundle", "attach_file", "staged_bundle", "validate_bundle", "write_bundle"]
