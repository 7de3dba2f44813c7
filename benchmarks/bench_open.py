"""Opening a case: first frame of the plugin's reader against a ten-line tiffslide → dask reader.

Every figure comes from a fresh process (nothing warm but the OS file cache), runs interleaved,
median of ``--repeats``:

* reader: ``viewer.open(slide, plugin="napari-pathomics")`` → first rendered frame, against the
  ten-line reader below in the same environment, called directly and registered as an npe2
  reader opened through ``viewer.open`` (all in a viewer that is already up);
* cold start: process start → first frame of ``pathomics view SLIDE`` (docks and all), against
  bare napari's process start → first frame of an empty viewer.

Run under Xvfb: ``xvfb-run -a .venv/bin/python benchmarks/bench_open.py [--slide S] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import big_slide  # noqa: E402

#: Child programs. Each prints one JSON line; ``T0`` is the parent's wall clock at spawn.
_PROBE = '''
import time
DRAWN = []

def watch(viewer):
    """Note the wall clock of the first frame the canvas renders with a layer in it."""
    events = viewer.window._qt_viewer.canvas._scene_canvas.events
    events.draw.connect(lambda e: DRAWN.append(time.time()) if len(viewer.layers) and not DRAWN else None)

def first_frame(viewer, t_start):
    """Seconds from ``t_start`` to that first frame (forcing one if none came yet), and how much is painted."""
    shot = viewer.screenshot(canvas_only=True, flash=False)
    t = DRAWN[0] if DRAWN else time.time()
    return t - t_start, float((shot[..., :3].sum(-1) > 0).mean())
'''

READER = (
    _PROBE
    + """
import json, sys, time
import napari
from qtpy.QtWidgets import QApplication
viewer = napari.Viewer(show=True)
QApplication.processEvents()
watch(viewer)
path, mode = sys.argv[1], sys.argv[2]
if mode == "raw-open":
    from npe2 import DynamicPlugin

    ten_line = DynamicPlugin("ten-line")

    @ten_line.contribute.reader(filename_patterns=["*.svs", "*.tif", "*.tiff"])
    def get_reader(path):
        def read(path):
            import dask.array as da
            import tiffslide
            ts = tiffslide.TiffSlide(path)
            levels = [da.from_zarr(ts.zarr_group[str(i)]) for i in range(ts.level_count)]
            mpp = float(ts.properties["tiffslide.mpp-x"])
            return [(levels, {"multiscale": True, "rgb": True, "scale": (mpp, mpp), "units": ("um", "um")}, "image")]
        return read

    ten_line.register()
t0 = time.time()
if mode == "plugin":
    viewer.open(path, plugin="napari-pathomics")
elif mode == "raw-open":  # the same ten lines as an npe2 reader, through viewer.open like the plugin
    viewer.open(path, plugin="ten-line")
else:  # the ten-line reader
    import dask.array as da
    import tiffslide
    ts = tiffslide.TiffSlide(path)
    levels = [da.from_zarr(ts.zarr_group[str(i)]) for i in range(ts.level_count)]
    mpp = float(ts.properties["tiffslide.mpp-x"])
    viewer.add_image(levels, multiscale=True, rgb=True, scale=(mpp, mpp), units=("um", "um"), name=path)
seconds, painted = first_frame(viewer, t0)
print(json.dumps({"seconds": seconds, "painted": painted}))
"""
)

COLD = (
    _PROBE
    + """
import json, os, sys, time
t_spawn = float(os.environ["T0"])
import napari
mode = sys.argv[2]
result = {}

def probe():
    viewer = napari.current_viewer()
    seconds, painted = first_frame(viewer, t_spawn)  # the docks and slide are built: this is their first frame
    result.update(seconds=seconds, painted=painted)

if mode == "view":
    napari.run = probe  # the command's event loop: measure its first frame instead of blocking
    from napari_pathomics.cli import main
    main(["view", sys.argv[1]])
else:  # bare napari: an empty viewer
    napari.Viewer(show=True)
    probe()
print(json.dumps(result))
"""
)


def run_child(program: str, slide: Path, mode: str) -> dict:
    import os

    env = dict(os.environ, T0=repr(time.time()))
    out = subprocess.run(
        [sys.executable, "-c", program, str(slide), mode], capture_output=True, text=True, env=env, timeout=600
    )
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{mode} failed ({out.returncode}): {out.stderr[-2000:]}")
    return json.loads(lines[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slide", type=Path, default=None, help="slide to open (default: the generated 32 768² SVS)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    slide = args.slide or big_slide()
    cases = [
        ("reader", READER, "plugin"),
        ("reader", READER, "raw"),
        ("reader", READER, "raw-open"),
        ("cold", COLD, "view"),
        ("cold", COLD, "bare"),
    ]
    times: dict[str, list[float]] = {mode: [] for _, _, mode in cases}
    for _ in range(args.repeats):  # interleaved: a slow moment of the machine hits every case alike
        for _, program, mode in cases:
            r = run_child(program, slide, mode)
            if mode != "bare" and r["painted"] < 0.05:
                raise RuntimeError(f"{mode}: the first frame is empty")
            times[mode].append(r["seconds"])

    def fmt(mode: str) -> str:
        return f"median {statistics.median(times[mode]):.2f} s ({', '.join(f'{t:.2f}' for t in times[mode])})"

    print(f"slide: {slide.name}")
    print(f"viewer.open → first frame, plugin reader:     {fmt('plugin')}")
    print(f"viewer.open → first frame, ten-line reader:   {fmt('raw')}")
    ratio = statistics.median(times["plugin"]) / statistics.median(times["raw"])
    print(f"  plugin / ten-line: {ratio:.2f} (goal ≤ 1.0)")
    print(f"viewer.open → first frame, ten-line reader as an npe2 plugin: {fmt('raw-open')}")
    ratio = statistics.median(times["plugin"]) / statistics.median(times["raw-open"])
    print(f"  plugin / ten-line plugin (both through viewer.open): {ratio:.2f}")
    print(f"process start → first frame, pathomics view:  {fmt('view')}")
    print(f"process start → first frame, bare napari:     {fmt('bare')}")
    print("  pathomics view: the application window with the slide drawn (its ROIs and the docks follow); goal < 4 s")


if __name__ == "__main__":
    main()
