"""Real slides for the tests: small synthetic SVS pyramids and a corpus of broken slides (no files shipped)."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import tifffile

from napari_pathomics.wsi.synthetic import synthetic_he, write_slide


def textured_he(h: int, w: int, seed: int = 0) -> np.ndarray:
    """H&E-like texture everywhere (varied hue so Macenko can estimate most tiles)."""
    import cv2

    img = synthetic_he(h, w, seed=seed, tissue_fraction=1.0)
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, 18, size=(h // 8, w // 8, 3)).astype(np.float32)
    noise = cv2.resize(noise, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)


def small_slide(path: Path, h: int = 1024, w: int = 1536, seed: int = 1, mpp: float = 0.25) -> Path:
    """A real JPEG-tiled SVS pyramid (1024 × 1536 at 0.25 µm/px → 96 tiles of 32 µm)."""
    return write_slide(path, synthetic_he(h, w, seed=seed), mpp=mpp)


def open_fds() -> int:
    """Open file descriptors of this process (for the handle-leak checks)."""
    return len(os.listdir("/proc/self/fd"))


def _patch_tag(data: bytes, src: Path, tag: str, value: int, page: int = 0) -> bytes:
    with tifffile.TiffFile(src) as t:
        tg = t.pages[page].tags[tag]
        off, dtype = tg.valueoffset, tg.dtype
    out = bytearray(data)
    fmt = "<H" if int(dtype) == 3 else "<I"
    out[off : off + struct.calcsize(fmt)] = struct.pack(fmt, value)
    return bytes(out)


def make_corpus(folder: Path) -> dict[str, Path]:
    """name -> path of every broken (or merely unusual) slide, generated from a valid synthetic SVS."""
    folder.mkdir(parents=True, exist_ok=True)
    img = synthetic_he(1024, 1536, seed=7)
    good = write_slide(folder / "good.svs", img, mpp=0.5, min_size=256)
    data = good.read_bytes()
    files: dict[str, bytes] = {
        "zero.svs": b"",
        "random.svs": np.random.default_rng(0).bytes(50_000),
        "trunc-header.svs": data[:64],
        "trunc-10pct.svs": data[: len(data) // 10],
        "trunc-50pct.svs": data[: len(data) // 2],
        "trunc-90pct.svs": data[: len(data) * 9 // 10],
        "lying-level-size.svs": _patch_tag(data, good, "ImageWidth", 5000),
        "huge-declared.svs": _patch_tag(data, good, "ImageLength", 4_000_000),
        "unknown-compression.svs": _patch_tag(data, good, "Compression", 50999),
    }
    out = {"good.svs": good}
    for name, blob in files.items():
        p = folder / name
        p.write_bytes(blob)
        out[name] = p
    striped = folder / "striped.tif"
    tifffile.imwrite(striped, img, photometric="rgb", rowsperstrip=64, metadata=None)
    out["striped.tif"] = striped
    out["no-mpp.tif"] = write_slide(folder / "no-mpp.tif", img, mpp=None, fmt="tiff", min_size=256)
    odd = folder / "slides é" / "Ça va.svs"
    odd.parent.mkdir(exist_ok=True)
    odd.write_bytes(data)
    out["odd path"] = odd
    return out


def sparse_huge_slide(
    path: Path,
    side: int = 200_000,
    patch_at: tuple[int, int] = (100_352, 100_352),
    patch: int = 2048,
    mpp: float = 0.5,
    tile: int = 512,
) -> Path:
    """A real one-level SVS of ``side``² px whose only stored tiles are an H&E patch at ``patch_at`` (y, x).

    Every other tile is empty (byte count 0, read as black): a few MB on disk, written in well
    under a second, yet a slide as large as any scanner's.
    """
    img = synthetic_he(patch, patch, seed=3, tissue_fraction=1.0)
    n = -(-side // tile)
    r0, c0, k = patch_at[0] // tile, patch_at[1] // tile, patch // tile

    def tiles():
        for r in range(n):
            for c in range(n):
                if r0 <= r < r0 + k and c0 <= c < c0 + k:
                    yield img[(r - r0) * tile : (r - r0 + 1) * tile, (c - c0) * tile : (c - c0 + 1) * tile]
                elif r == c == 0:  # tifffile takes the dtype from the first tile: make it one of glass
                    yield np.full((tile, tile, 3), 243, np.uint8)
                else:
                    yield None

    desc = f"Aperio Image Library v12.0.0 \n{side}x{side} ({tile}x{tile}) JPEG/RGB Q=85|AppMag = 20|MPP = {mpp:.6f}"
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        tw.write(
            tiles(),
            shape=(side, side, 3),
            dtype=np.uint8,
            tile=(tile, tile),
            photometric="rgb",
            compression="jpeg",
            description=desc,
            metadata=None,
            subfiletype=0,
        )
    return path


def declared_giant_tiff(
    path: Path,
    width: int,
    height: int,
    tile: int = 4096,
    levels: int = 1,
    mpp: float = 0.5,
    level_sizes: list[tuple[int, int]] | None = None,
) -> Path:
    """A hostile SVS that declares ``width`` × ``height`` px but stores one glass tile per level.

    Every other tile is empty (byte count 0): a file of a few hundred KB whatever size it
    declares. ``level_sizes`` (w, h per level) overrides the halving pyramid, to make one that lies.
    """
    sizes = level_sizes or [(max(1, width >> i), max(1, height >> i)) for i in range(levels)]
    desc = f"Aperio Image Library v12.0.0 \n{width}x{height} ({tile}x{tile}) JPEG/RGB Q=85|AppMag = 20|MPP = {mpp:.6f}"
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        for i, (w, h) in enumerate(sizes):
            n = -(-h // tile) * -(-w // tile)

            def tiles(n: int = n):
                yield np.full((tile, tile, 3), 243, np.uint8)  # tifffile takes the dtype from the first tile
                yield from (None for _ in range(n - 1))

            tw.write(
                tiles(),
                shape=(h, w, 3),
                dtype=np.uint8,
                tile=(tile, tile),
                photometric="rgb",
                compression="jpeg",
                description=desc if i == 0 else None,
                metadata=None,
                subfiletype=0,
            )
    return path
