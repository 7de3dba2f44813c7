"""The versioned JSON schemas of bundle manifests (shipped as package data, loaded once)."""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files
from typing import Any

from jsonschema import Draft202012Validator

__all__ = ["SUPPORTED_SCHEMA_VERSIONS", "load_schema", "schema_problems", "model_args_problems"]

#: Manifest schema versions this code reads, oldest first; the last one is written.
SUPPORTED_SCHEMA_VERSIONS: tuple[str, ...] = ("1.0",)
_SCHEMA_FILES = {"1.0": "bundle-v1.json"}


@cache
def load_schema(version: str = "1.0") -> dict[str, Any]:
    """The JSON schema of one manifest version (KeyError if unsupported)."""
    res = files("napari_pathomics") / "schemas" / _SCHEMA_FILES[version]
    return json.loads(res.read_text(encoding="utf-8"))


def schema_problems(manifest: dict, version: str = "1.0") -> list[str]:
    """One line per schema violation, with the JSON path of the offending value."""
    validator = Draft202012Validator(load_schema(version))
    out: list[str] = []
    for err in sorted(validator.iter_errors(manifest), key=lambda e: [str(p) for p in e.absolute_path]):
        where = ".".join(str(p) for p in err.absolute_path) or "<top level>"
        msg = err.message
        if len(msg) > 200:
            msg = msg[:197] + "..."
        out.append(f"manifest.json: {where}: {msg}")
    return out


def model_args_problems(model_args: Any, version: str = "1.0") -> list[str]:
    """``schema_problems`` of a manifest's ``model.model_args`` alone (e.g. before an import builds the model)."""
    schema = load_schema(version)
    sub = {"$defs": schema["$defs"], **schema["properties"]["model"]["properties"]["model_args"]}
    out = []
    for err in sorted(
        Draft202012Validator(sub).iter_errors(model_args), key=lambda e: [str(p) for p in e.absolute_path]
    ):
        where = ".".join(["model.model_args", *(str(p) for p in err.absolute_path)])
        msg = err.message if len(err.message) <= 200 else err.message[:197] + "..."
        out.append(f"{where}: {msg}")
    return out
