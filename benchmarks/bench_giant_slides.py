"""``pathomics info`` / ``tiles`` on slides whose header declares a giant size: wall time, CPU time, peak RSS.

Planning must be bounded by what a file stores, not by what its header declares. The hostile
files are generated with tifffile (``tests/_slides.declared_giant_tiff`` and ``sparse_huge_slide``):
one level of 1 000 000 × 250 000 px, 200 000² and 60 000², a two-level 100 000² pyramid (one
glass tile each, the rest empty), and a 200 000² slide holding a 1 mm H&E patch. Each command
runs in a fresh process. CPU seconds (user + system) stand for the wall time of an idle machine.
Figures: docs/benchmarks.md.

Run: ``.venv/bin/python benchmarks/bench_giant_slides.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).parent))
from _slides import declared_giant_tiff, sparse_huge_slide  # noqa: E402
from common import BENCH_DIR  # noqa: E402

SLIDES = {
    "1e6 x 2.5e5, one level": dict(width=1_000_000, height=250_000, tile=4096),
    "200 000², one level": dict(width=200_000, height=200_000, tile=512),
    "60 000², one level": dict(width=60_000, height=60_000, tile=256),
    "100 000², two levels": dict(width=100_000, height=100_000, tile=512, levels=2),
}


def run(args: list[str]) -> tuple[int, float, float, float]:
    """(exit code, wall s, CPU s, peak RSS in MB) of the CLI in a fresh process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    t = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "napari_pathomics.cli", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    cpu = usage.ru_utime + usage.ru_stime
    return os.waitstatus_to_exitcode(status), time.perf_counter() - t, cpu, usage.ru_maxrss / 1024


def main() -> None:
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    print(f"# load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    files = {
        name: declared_giant_tiff(BENCH_DIR / f"giant-{i}.svs", **kw) for i, (name, kw) in enumerate(SLIDES.items())
    }
    files["200 000² with a 1 mm H&E patch"] = sparse_huge_slide(BENCH_DIR / "giant-patch.svs")
    print(f"{'slide':34s} {'MB':>6s} {'command':8s} {'rc':>3s} {'wall s':>7s} {'CPU s':>6s} {'RSS MB':>7s}")
    for name, path in files.items():
        for cmd in ("info", "tiles"):
            rc, secs, cpu, rss = run([cmd, str(path)])
            print(f"{name:34s} {path.stat().st_size / 1e6:6.2f} {cmd:8s} {rc:3d} {secs:7.1f} {cpu:6.1f} {rss:7.0f}")
    rc, secs, cpu, rss = run(["--help"])
    print(f"{'(baseline: pathomics --help)':34s} {'':6s} {'':8s} {rc:3d} {secs:7.1f} {cpu:6.1f} {rss:7.0f}")


if __name__ == "__main__":
    main()
