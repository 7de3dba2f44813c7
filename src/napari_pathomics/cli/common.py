"""What every command shares: JSON printing and the options several commands take."""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from ..provenance import json_default, strict_json


def progress_bar(total: int, *, quiet: bool = False, **kwargs: Any) -> Any:
    """A tqdm bar on stderr, shown only when stderr is a terminal (piped output keeps result lines only);
    ``None`` when ``quiet``."""
    if quiet:
        return None
    from tqdm import tqdm

    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(total=total, file=sys.stderr, disable=not sys.stderr.isatty(), **kwargs)


def print_json(obj: Any) -> None:
    """Print JSON the same way in every command (sorted keys; a NaN or infinite number is null)."""
    print(json.dumps(strict_json(obj), indent=2, sort_keys=True, allow_nan=False, default=json_default))


def add_tta_option(parser: argparse.ArgumentParser) -> None:
    """``--tta``: the engine's test-time augmentation (``inference.engine.TTA_MODES``; not imported here, to keep
    the command line's start light)."""
    parser.add_argument(
        "--tta",
        choices=("none", "flips", "d4"),
        default="none",
        help="test-time augmentation: features averaged over 4 flipped views (about 3x the model "
        "time) or the 8 flips and 90° turns (d4, about 6x); default none",
    )


def add_slide_mpp_option(parser: argparse.ArgumentParser) -> None:
    """``--slide-mpp``: the pixel size for slides that do not record it (shared by commands)."""
    parser.add_argument(
        "--slide-mpp",
        type=MPP,
        default=None,
        metavar="UM_PER_PX",
        help="level-0 µm/px of the slide when the file does not record it",
    )


def add_nuclei_model_option(parser: argparse.ArgumentParser, *, for_features: bool = False) -> None:
    """``--nuclei-model``: one option, one meaning, wherever nuclei are segmented (``for_features``:
    a command whose nuclei feed a signature's nuclear features, and only when it has them)."""
    parser.add_argument(
        "--nuclei-model",
        default=None,
        metavar="NAME|DIR",
        help="nuclei method: the shipped model monuseg (CC BY-NC-SA 4.0, non-commercial, opt-in), a model folder "
        "from train-nuclei, 'otsu' (plain baseline) or 'classical' (default: the best shipped method)"
        + ("; used for nuclear features only (no effect when there are none)" if for_features else ""),
    )


def nuclei_model_note(given: str | None, used: dict[str, Any] | None) -> str | None:
    """A short note when ``--nuclei-model`` was given but no nuclear feature needed nuclei."""
    if given is None or used is not None:
        return None
    return f"note: no nuclear features here; --nuclei-model {given} has no effect"


def args_dict(args: argparse.Namespace) -> dict[str, Any]:
    """The parsed options as plain JSON values (for run records)."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "handler"}


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad option in one line (and exit code 2), like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def bounded(
    kind: type, lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False
) -> Callable[[str], Any]:
    """An argparse ``type=`` that parses ``kind`` and refuses values outside [lo, hi] (or open ends)."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if lo is not None and (value < lo or (lo_open and value == lo)):
            raise argparse.ArgumentTypeError(f"must be {'>' if lo_open else '≥'} {lo:g}, got {text}")
        if hi is not None and (value > hi or (hi_open and value == hi)):
            raise argparse.ArgumentTypeError(f"must be {'<' if hi_open else '≤'} {hi:g}, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


#: The option types every command shares.
POSITIVE_INT = bounded(int, 1)
COUNT = bounded(int, 0)
SEED = bounded(int, 0, 2**32 - 1)
#: Most threads accepted: past 4 × the cores they only contend (1024 exhausted the thread limit).
MAX_THREADS = max(8, 4 * (os.cpu_count() or 1))
THREADS = bounded(int, 1, MAX_THREADS)
BATCH = bounded(int, 1, 4096)
FRACTION = bounded(float, 0.0, 1.0)
POSITIVE = bounded(float, 0.0, lo_open=True)
MPP = bounded(float, 0.01, 100.0)
TILE_UM = bounded(float, 1.0, 10_000.0)

_SCHEDULER = re.compile(r"(?:(?:tcp|tls|ucx|ws|wss)://)?(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9._-]*):([0-9]{1,5})")


def SCHEDULER(text: str) -> str:  # noqa: N802 - an argparse type, named like the others
    """A dask scheduler address, ``[tcp|tls|ucx|ws|wss://]host:port`` with a port in 1..65535."""
    m = _SCHEDULER.fullmatch(text.strip())
    if m is None or not 1 <= int(m.group(1)) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a scheduler address like tcp://10.0.0.5:8786")
    return text.strip()
