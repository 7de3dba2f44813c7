"""Macenko normalisation speed on the vendored 224 px tiles (prints ms per tile).

Run: python benchmarks/bench_stain.py
"""

from __future__ import annotations

import time

import numpy as np
from PIL import Image

from napari_pathomics import resources
from napari_pathomics.inference.stain import MacenkoNormalizer


def main() -> None:
    files = sorted(p for p in resources.NCT_TILES_DIR.rglob("*") if p.suffix in (".png", ".tif"))
    tiles = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in files])
    norm = MacenkoNormalizer.from_reference_file()
    norm.normalize(tiles[:4])
    reps = 5
    t0 = time.perf_counter()
    for _ in range(reps):
        for t in tiles:
            norm.normalize(t)
    single = (time.perf_counter() - t0) / (reps * len(tiles)) * 1e3
    batch = np.concatenate([tiles] * 2)[:64]
    t0 = time.perf_counter()
    for _ in range(reps):
        _, fb = norm.normalize(batch)
    batched = (time.perf_counter() - t0) / (reps * len(batch)) * 1e3
    print(
        f"tiles: {len(tiles)} of {tiles.shape[1]}x{tiles.shape[2]} px; fallback {int(fb.sum())}/{len(batch)} in the batch"
    )
    print(f"one tile at a time: {single:.2f} ms/tile")
    print(f"batch of {len(batch)}:        {batched:.2f} ms/tile")


if __name__ == "__main__":
    main()
