"""The ``pathomics`` command line: one entry point, subcommands registered per area.

Each ``cli/<area>.py`` module exposes ``register(subparsers)``; handlers return an exit code.
Handlers import the stage they drive when they run, so a quick command such as ``pathomics
info`` does not load torch, dask or matplotlib. User errors (``PathomicsError``) become one line
on stderr and a non-zero exit, never a traceback; anything else that escapes a command becomes
one line too, with the traceback written to a log file for a bug report.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path

from .. import __version__
from ..errors import PathomicsError
from ..resources import log_dir
from . import adapt, app, clinical, cohort, infer, model, nuclei, regions, score, signature, slide, train_nuclei
from .common import OneLineParser

#: Modules that contribute subcommands, in help order.
COMMAND_MODULES = (slide, model, infer, adapt, nuclei, train_nuclei, regions, signature, clinical, score, cohort, app)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
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
    warnings.formatwarning = lambda message, *_a, **_k: f"pathomics {args.command}: warning: {message}\n"
    try:
        return int(args.handler(args) or 0)
    except PathomicsError as err:
        print(f"pathomics {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"pathomics {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as err:
        # OS-level failures (permissions, disk full) are the user's environment, not a bug.
        log = _log_traceback(args.command)
        print(f"pathomics {args.command}: error: {_one_line(err)}{_see(log)}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - the next unforeseen input still gets one readable line
        log = _log_traceback(args.command)
        print(
            f"pathomics {args.command}: internal error: {type(err).__name__}: {_one_line(err)}{_see(log)}",
            file=sys.stderr,
        )
        return INTERNAL_ERROR_EXIT


#: Exit code of an unexpected failure (BSD's EX_SOFTWARE).
INTERNAL_ERROR_EXIT = 70


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text[:500] if text else type(err).__name__


def _see(log: Path | None) -> str:
    return f" (traceback in {log})" if log is not None else ""


def _log_traceback(command: str) -> Path | None:
    """Write the current exception's traceback to a log file for a bug report; its path, or None."""
    try:
        folder = log_dir()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"pathomics-{command}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
        path.write_text(
            f"pathomics {__version__} {command}\nargv: {sys.argv!r}\n\n{traceback.format_exc()}", encoding="utf-8"
        )
        return path
    except OSError:
        return None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
