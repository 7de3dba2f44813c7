"""What every command shares: JSON printing and the options several commands take."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..provenance import json_default


def print_json(obj: Any) -> None:
    """Print JSON the same way in every command (sorted keys, no NaN)."""
    print(json.dumps(obj, indent=2, sort_keys=True, allow_nan=False, default=json_default))


def add_slide_mpp_option(parser: argparse.ArgumentParser) -> None:
    """``--slide-mpp``: the pixel size for slides that do not record it (shared by commands)."""
    parser.add_argument("--slide-mpp", type=float, default=None, metavar="UM_PER_PX",
                        help="level-0 µm/px of the slide when the file does not record it")


def args_dict(args: argparse.Namespace) -> dict[str, Any]:
    """The parsed options as plain JSON values (for run records)."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "handler"}
