"""The ``pathomics`` command line: one entry point, subcommands registered per area.

Each ``cli/<area>.py`` module exposes ``register(subparsers)``; handlers return an exit code.
User errors (``PathomicsError``) become one line on stderr and a non-zero exit, never a
traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Any, Sequence

from ..errors import PathomicsError
from ..provenance import json_default

#: Modules under ``napari_pathomics.cli`` that contribute subcommands, in help order.
COMMAND_MODULES: tuple[str, ...] = (
    "slide_cmds", "model_cmds", "infer_cmds", "signature_cmds", "score_cmds", "cohort_cmds", "app_cmds",
)


def print_json(obj: Any) -> None:
    """Print JSON the same way in every command (sorted keys, no NaN)."""
    print(json.dumps(obj, indent=2, sort_keys=True, allow_nan=False, default=json_default))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pathomics",
        description="Whole-slide H&E pathomics: slides, tiles, inference, signatures.",
    )
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:  # an area not built yet
            if exc.name == f"{__name__}.{name}":
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    import logging

    # tifffile logs "invalid page offset" & co. for damaged files; our typed error says it once
    logging.getLogger("tifffile").setLevel(logging.CRITICAL)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except PathomicsError as err:
        print(f"pathomics {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"pathomics {args.command}: interrupted", file=sys.stderr)
        return 130
    except (OSError, ValueError) as err:
        # OS-level failures (permissions, disk full) are the user's environment, not a bug.
        print(f"pathomics {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
