"""The bundle file format: a folder (or zip) of a JSON manifest, safetensors weights and sha256s.

No torch here: building and running the model is ``inference``'s job.
"""

from ..lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "MANIFEST_NAME": "archive",
        "Bundle": "manifest",
        "validate_bundle": "manifest",
        "SUPPORTED_SCHEMA_VERSIONS": "schema",
        "attach_file": "write",
        "staged_bundle": "write",
        "write_bundle": "write",
    },
)
