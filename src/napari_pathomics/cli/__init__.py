"""The ``pathomics`` command line: one entry point, subcommands registered per area.

Each ``cli/<area>.py`` module exposes ``register(subparsers)``; handlers return an exit code.
Handlers import the stage they drive when they run, so a quick command such as ``pathomics
info`` does not load torch, dask or matplotlib. User errors (``PathomicsError``) become one line
on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import PathomicsError
from . import app, cohort, infer, model, score, signature, slide

#: Modules that contribute subcommands, in help order.
COMMAND_MODULES = (slide, model, infer, signature, score, cohort, app)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pathomics",
        description="Whole-slide H&E pathomics: slides, tiles, inference, signatures.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
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
