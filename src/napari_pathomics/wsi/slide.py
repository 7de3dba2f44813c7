"""Open whole-slide images lazily through tiffslide, in physical units.

A ``Slide`` exposes every pyramid level as a dask array over tiffslide's zarr store (nothing
loads a whole level), the pixel size in µm (or a clear error when the file does not record
one), the vendor metadata and associated images, and ``read_tile``: a region given in level-0
pixels resampled to a target µm/px from the best pyramid level. Slides that ship a single
level get a lazily computed pyramid so that zoomed-out views do not read level 0 at full size.

The file itself is read through a small :class:`SlideReader` protocol (tiffslide implements
it), so another reader can stand behind ``Slide`` without touching anything above it.
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import dask.array as da
import numpy as np

from ..errors import MissingMppError, RegionError, SlideError
from ..provenance import file_fingerprint

#: File extensions offered to napari's reader (everything tiffslide reads).
SLIDE_EXTENSIONS: tuple[str, ...] = (
    ".svs",
    ".tif",
    ".tiff",
    ".ndpi",
    ".scn",
    ".bif",
    ".ome.tif",
    ".ome.tiff",
    ".qptiff",
)

#: Chunk side of the dask levels. Bigger than a file tile so a view needs few tasks; reads
#: inside a chunk are one zarr slice (tiffslide decodes only the tiles it touches).
VIEW_CHUNK = 1024

#: Largest level 0 accepted: a 75 × 25 mm slide at 0.1 µm/px is 750 000 × 250 000 px.
MAX_SIDE = 1_000_000
MAX_PIXELS = 250_000_000_000

#: A synthesized level is added while the coarsest one is longer than this.
PYRAMID_MIN_SIDE = 1024

#: Largest file tile (chunk) accepted, 8192² px (192 MB decoded); scanners write 240–4096 px tiles.
MAX_TILE_PX = 1 << 26
#: An overview reads its source level whole while that region is at most this many px (~200 MB).
OVERVIEW_DIRECT_PX = 64_000_000
#: Beyond that it decodes file tiles one by one, at most this many px of them (a few seconds): a
#: spread subset when the stored tiles hold more, the rest reported unsampled (``unsampled_boxes``).
OVERVIEW_DECODE_PX = 256_000_000


def _resize(img: np.ndarray, w: int, h: int, area: bool = True) -> np.ndarray:
    """``img`` at w × h: area-averaged, or bilinear (``area=False``, for enlarging)."""
    import cv2  # heavy (~30 ms): loaded on the first resize, not when a slide opens

    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if area else cv2.INTER_LINEAR)


class SlideReader(Protocol):
    """What ``Slide`` needs from a whole-slide file reader (tiffslide's ``TiffSlide`` has it)."""

    @property
    def properties(self) -> Mapping[str, Any]: ...
    @property
    def level_dimensions(self) -> Sequence[tuple[int, int]]: ...
    @property
    def level_downsamples(self) -> Sequence[float]: ...
    @property
    def associated_images(self) -> Mapping[str, Any]: ...  # name -> PIL image
    @property
    def zarr_group(self) -> Any: ...  # level index as str -> array-like (y, x, c)

    def close(self) -> None: ...


def open_reader(path: Path) -> SlideReader:
    """The reader for a slide file (tiffslide for every TIFF-based format)."""
    import tiffslide  # heavy (zarr, fsspec): imported on first open

    return tiffslide.TiffSlide(path)


@dataclass(frozen=True)
class LevelInfo:
    """One pyramid level: its size in px, its downsample, and whether the file stores it."""

    width: int
    height: int
    downsample: float
    stored: bool


def _to_float(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) and f > 0 else None


class Slide:
    """A whole-slide image opened lazily; geometry in level-0 pixels, units in µm."""

    def __init__(self, path: str | Path, mpp: float | tuple[float, float] | None = None) -> None:
        self.path = Path(path).expanduser()
        self._reader = self._open_reader(self.path)
        props = self._reader.properties
        self.properties: dict[str, Any] = dict(props)
        self._mpp_override = self._parse_override(mpp)
        self._file_mpp = (_to_float(props.get("tiffslide.mpp-x")), _to_float(props.get("tiffslide.mpp-y")))
        if self._file_mpp[0] is None:
            self._file_mpp = _ome_mpp(props.get("tiff.ImageDescription"))
        stored = [
            LevelInfo(int(w), int(h), float(d), True)
            for (w, h), d in zip(self._reader.level_dimensions, self._reader.level_downsamples)
        ]
        self._zarr = self._reader.zarr_group
        try:
            arrays = [self._zarr[str(i)] for i in range(len(stored))]
        except Exception as exc:  # noqa: BLE001 - tiffslide/zarr raise many kinds
            raise SlideError(f"cannot read the pyramid of {self.path.name}: {exc}") from exc
        self._stored_arrays = arrays
        self.levels_info: list[LevelInfo] = list(stored)
        self._levels: list[da.Array] | None = None
        self._safe_levels: list[_SafeLevel] = []
        self._unsampled: list[tuple[float, float, float, float]] = []
        self._failed_boxes: list[tuple[float, float, float, float]] = []
        self._closed = False
        try:
            self._check_pyramid()
        except SlideError:
            self.close()
            raise

    def _check_pyramid(self) -> None:
        """Refuse files whose declared geometry or codec cannot be what they hold.

        Level sizes must shrink by one factor in x and y (a patched/lying size breaks that), and
        the first and last tile of every level must decode (catches truncated files, unknown
        codecs and sizes far beyond the tile data) — two tile decodes per level, milliseconds.
        """
        name = self.path.name
        if self.width <= 0 or self.height <= 0:
            raise SlideError(f"{name}: the slide reports an empty level 0")
        if max(self.width, self.height) > MAX_SIDE or self.width * self.height > MAX_PIXELS:
            raise SlideError(
                f"{name}: level 0 claims {self.width} x {self.height} px, beyond any scanned slide "
                f"(limit {MAX_SIDE} px a side, {MAX_PIXELS / 1e9:g} Gpx): a corrupt or hostile header"
            )
        shape = tuple(self._stored_arrays[0].shape)
        if len(shape) != 3 or shape[2] not in (3, 4):  # greyscale/multiplex: the viewer and engine need RGB
            ch = shape[2] if len(shape) == 3 else 1
            raise SlideError(f"{name}: {ch} channel(s) per pixel; only RGB brightfield slides are supported")
        for i, arr in enumerate(self._stored_arrays):
            th, tw = _chunk_shape(arr)
            if th * tw > MAX_TILE_PX:
                raise SlideError(
                    f"{name}: level {i} is stored in tiles of {tw} x {th} px, beyond any scanner's "
                    f"(limit {MAX_TILE_PX // 2**20} Mpx a tile): a corrupt or hostile header"
                )
        for i, lv in enumerate(self.levels_info[1:], start=1):
            prev = self.levels_info[i - 1]
            if lv.width <= 0 or lv.height <= 0 or lv.width > prev.width or lv.height > prev.height:
                raise SlideError(
                    f"{name}: level {i} is {lv.width}x{lv.height} px, not smaller than level {i - 1} "
                    f"({prev.width}x{prev.height}): the pyramid's sizes are inconsistent"
                )
            dx, dy = self.width / lv.width, self.height / lv.height
            # integer halvings round each side separately: allow a pixel of slack
            tol = max(0.02, 2.0 / min(lv.width, lv.height))
            if abs(dx - dy) / max(dx, dy) > tol:
                raise SlideError(
                    f"{name}: level {i} is {lv.width}x{lv.height} px but level 0 is "
                    f"{self.width}x{self.height}: the pyramid's sizes are inconsistent"
                )
        for i, lv in enumerate(self.levels_info):
            arr = self._stored_arrays[i]
            for y, x in ((0, 0), (lv.height - 1, lv.width - 1)):
                try:
                    np.asarray(arr[y : y + 1, x : x + 1])
                except Exception as exc:  # noqa: BLE001 - codec/IO errors of every kind
                    raise SlideError(
                        f"{name}: level {i} cannot be decoded at ({x}, {y}) "
                        f"(truncated file, unsupported compression or wrong size): {exc}"
                    ) from exc

    # ------------------------------------------------------------------ opening
    @staticmethod
    def _open_reader(path: Path) -> SlideReader:
        if not path.exists():
            raise SlideError(f"slide not found: {path}")
        if path.is_dir():
            raise SlideError(f"{path} is a folder, not a slide file")
        if path.stat().st_size == 0:
            raise SlideError(f"{path.name} is empty (0 bytes)")
        try:
            reader = open_reader(path)
        except Exception as exc:  # noqa: BLE001 - tifffile raises anything on broken files
            raise SlideError(
                f"cannot open {path.name} as a whole-slide image "
                f"(corrupt, truncated or not a supported TIFF-based format): {exc}"
            ) from exc
        try:
            dims = reader.level_dimensions
            if not dims:
                raise SlideError(f"{path.name} contains no image")
        except SlideError:
            reader.close()
            raise
        except Exception as exc:  # noqa: BLE001
            reader.close()
            raise SlideError(f"cannot read the levels of {path.name}: {exc}") from exc
        return reader

    @staticmethod
    def _parse_override(mpp: float | tuple[float, float] | None) -> tuple[float, float] | None:
        if mpp is None:
            return None
        mx, my = (mpp, mpp) if np.isscalar(mpp) else mpp  # type: ignore[misc]
        fx, fy = _to_float(mx), _to_float(my)
        if fx is None or fy is None:
            raise MissingMppError(f"invalid µm/px override {mpp!r}: give a positive number")
        return fx, fy

    def close(self) -> None:
        """Release the file handle (idempotent)."""
        if not self._closed:
            self._closed = True
            self._reader.close()

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Slide({str(self.path)!r}, {self.width}x{self.height}, levels={self.level_count})"

    # ------------------------------------------------------------------ metadata
    @property
    def width(self) -> int:
        return self.levels_info[0].width

    @property
    def height(self) -> int:
        return self.levels_info[0].height

    @property
    def dimensions(self) -> tuple[int, int]:
        return self.width, self.height

    @property
    def stored_level_count(self) -> int:
        return len(self._stored_arrays)

    @property
    def level_count(self) -> int:
        """Number of levels shown, synthesized ones included."""
        self.levels  # noqa: B018 - builds levels_info for synthesized levels
        return len(self.levels_info)

    @property
    def level_dimensions(self) -> list[tuple[int, int]]:
        self.levels  # noqa: B018
        return [(lv.width, lv.height) for lv in self.levels_info]

    @property
    def level_downsamples(self) -> list[float]:
        self.levels  # noqa: B018
        return [lv.downsample for lv in self.levels_info]

    @property
    def vendor(self) -> str | None:
        return self.properties.get("tiffslide.vendor")

    @property
    def objective_power(self) -> float | None:
        return _to_float(self.properties.get("tiffslide.objective-power"))

    @property
    def mpp_x(self) -> float | None:
        return self._mpp_override[0] if self._mpp_override else self._file_mpp[0]

    @property
    def mpp_y(self) -> float | None:
        return self._mpp_override[1] if self._mpp_override else self._file_mpp[1]

    @property
    def has_mpp(self) -> bool:
        return self.mpp_x is not None and self.mpp_y is not None

    @property
    def mpp(self) -> tuple[float, float]:
        """(µm/px in x, in y) at level 0; raises ``MissingMppError`` when unknown."""
        if self.mpp_x is None or self.mpp_y is None:
            raise MissingMppError(
                f"{self.path.name} does not record its pixel size (µm/px); "
                "give one with --slide-mpp (CLI) or in the Slide widget"
            )
        return self.mpp_x, self.mpp_y

    @property
    def mpp_source(self) -> str | None:
        """Where the µm/px comes from: ``"file"``, ``"user"`` (given when opening or with ``set_mpp``; the
        score, its JSON and the report say so) or None when unknown."""
        if self._mpp_override:
            return "user"
        return "file" if self._file_mpp[0] else None

    def set_mpp(self, mpp: float | tuple[float, float] | None) -> None:
        """Override the pixel size (a slide without µm/px, or a wrong one in the file)."""
        self._mpp_override = self._parse_override(mpp)

    @property
    def associated_image_names(self) -> list[str]:
        try:
            return sorted(self._reader.associated_images.keys())
        except Exception:  # noqa: BLE001 - a broken label page must not break the slide
            return []

    def associated_image(self, name: str) -> np.ndarray:
        """An associated image (label, macro, thumbnail) as RGB uint8."""
        try:
            img = self._reader.associated_images[name]
        except KeyError:
            raise SlideError(f"{self.path.name} has no associated image {name!r}") from None
        return np.asarray(img.convert("RGB"))

    def overview(self, downsample: float) -> np.ndarray:
        """The whole slide at ``downsample`` (level-0 px per output px), read from the closest
        finer level, synthesized ones included, so even single-level slides stay cheap.

        What it decodes is bounded whatever size the file declares: beyond ``OVERVIEW_DIRECT_PX``
        of source level it goes tile by tile (``overview_window``)."""
        h, w = int(np.ceil(self.height / downsample)), int(np.ceil(self.width / downsample))
        if self._source_px((0, h), (0, w), downsample) > OVERVIEW_DIRECT_PX:
            return self.overview_window((0, h), (0, w), downsample)
        self.levels  # noqa: B018 - builds synthesized levels
        best = self.best_level(downsample, stored_only=False)
        arr = np.asarray(self.levels[best])
        if arr.shape[:2] == (h, w):
            return arr
        return _resize(arr, w, h)

    def _source_px(self, rows: tuple[int, int], cols: tuple[int, int], downsample: float) -> float:
        """Px of the best stored level under overview px ``rows`` × ``cols`` (what reading them decodes)."""
        ds = self.levels_info[self.best_level(downsample)].downsample
        return (rows[1] - rows[0]) * (cols[1] - cols[0]) * (downsample / ds) ** 2

    def unsampled_boxes(self) -> list[tuple[float, float, float, float]]:
        """Level-0 boxes (x0, y0, x1, y1) of stored file tiles an overview skipped to stay within budget."""
        return list(self._unsampled)

    def overview_window(self, rows: tuple[int, int], cols: tuple[int, int], downsample: float) -> np.ndarray:
        """Overview px ``rows`` × ``cols`` (at ``downsample`` level-0 px each) read from the best stored level."""
        (r0, r1), (c0, c1) = rows, cols
        h, w = max(1, r1 - r0), max(1, c1 - c0)
        if self._source_px((r0, r0 + h), (c0, c0 + w), downsample) > OVERVIEW_DIRECT_PX:
            return self._tilewise_overview((r0, r0 + h), (c0, c0 + w), downsample)
        level = self.best_level(downsample)
        ds = self.levels_info[level].downsample
        x, y = int(c0 * downsample), int(r0 * downsample)
        side_w = max(1, int(round(w * downsample / ds)))
        side_h = max(1, int(round(h * downsample / ds)))
        region = self.read_region((x, y), level, (side_w, side_h))
        if region.shape[:2] == (h, w):
            return region
        return _resize(region, w, h)

    def _tilewise_overview(self, rows: tuple[int, int], cols: tuple[int, int], downsample: float) -> np.ndarray:
        """An overview window decoded one file tile at a time, within ``OVERVIEW_DECODE_PX``.

        Empty file tiles (no bytes stored) are not decoded: they read as the file's fill (black).
        Unsampled tiles are drawn white (they count as tissue through ``unsampled_boxes``).
        When the stored tiles hold more px than the budget, an evenly spread subset is decoded;
        the others are left white and their boxes remembered (``unsampled_boxes``) so planning
        keeps them as tissue instead of losing them. Memory: one tile plus the output.
        """
        level = self.best_level(downsample)
        arr, lv = self._stored_arrays[level], self.levels_info[level]
        f = downsample / lv.downsample  # level px per overview px
        out = np.full((rows[1] - rows[0], cols[1] - cols[0], 3), 255, dtype=np.uint8)
        th, tw = _chunk_shape(arr)
        y0, y1 = min(lv.height, int(rows[0] * f)), min(lv.height, int(math.ceil(rows[1] * f)))
        x0, x1 = min(lv.width, int(cols[0] * f)), min(lv.width, int(math.ceil(cols[1] * f)))
        tr, tc = (y0 // th, -(-y1 // th)), (x0 // tw, -(-x1 // tw))
        empty = _empty_chunks(self._reader, level, (-(-lv.height // th), -(-lv.width // tw)))
        if empty is not None:  # what the file leaves empty reads as its fill; only the rest is decoded
            out[:] = getattr(arr, "fill_value", 0) or 0
            todo = np.argwhere(~empty[tr[0] : tr[1], tc[0] : tc[1]]) + (tr[0], tc[0])
        else:
            todo = np.argwhere(np.ones((tr[1] - tr[0], tc[1] - tc[0]), bool)) + (tr[0], tc[0])
        step = max(1, math.ceil(len(todo) * th * tw / OVERVIEW_DECODE_PX))
        if step > 1:
            warnings.warn(
                f"{self.path.name}: level {level} stores {len(todo)} tiles of {tw}x{th} px here; tissue "
                f"is detected on 1 in {step} of them and the others are kept as tissue",
                RuntimeWarning,
                stacklevel=3,
            )
        for k, (r, c) in enumerate(todo):
            view, src, box = self._tile_view(out, (int(r), int(c)), (th, tw), lv, f, rows, cols)
            if view.size == 0:
                continue
            if k % step:
                view[:] = 255
                self._unsampled.append(box)
                continue
            try:
                px = np.ascontiguousarray(np.asarray(arr[src])[..., :3])
            except Exception:  # noqa: BLE001 - decoder errors of every kind: grey, and reported
                view[:] = 128
                self._failed_boxes.append(box)
                continue
            view[:] = px if px.shape[:2] == view.shape[:2] else _resize(px, view.shape[1], view.shape[0])
        return out

    @staticmethod
    def _tile_view(
        out: np.ndarray,
        tile: tuple[int, int],
        shape: tuple[int, int],
        lv: LevelInfo,
        f: float,
        rows: tuple[int, int],
        cols: tuple[int, int],
    ) -> tuple[np.ndarray, tuple[slice, slice], tuple[float, float, float, float]]:
        """The overview px of file tile ``tile`` (those whose top-left falls in it), the level px
        they cover, and the tile's level-0 box."""
        (r, c), (th, tw) = tile, shape
        ty0, tx0 = r * th, c * tw
        ty1, tx1 = min(lv.height, ty0 + th), min(lv.width, tx0 + tw)
        oy0, oy1 = max(rows[0], math.ceil(ty0 / f)), min(rows[1], math.ceil(ty1 / f))
        ox0, ox1 = max(cols[0], math.ceil(tx0 / f)), min(cols[1], math.ceil(tx1 / f))
        view = out[max(0, oy0 - rows[0]) : max(0, oy1 - rows[0]), max(0, ox0 - cols[0]) : max(0, ox1 - cols[0])]
        src = (
            slice(max(ty0, int(oy0 * f)), max(max(ty0, int(oy0 * f)) + 1, min(ty1, math.ceil(oy1 * f)))),
            slice(max(tx0, int(ox0 * f)), max(max(tx0, int(ox0 * f)) + 1, min(tx1, math.ceil(ox1 * f)))),
        )
        d = lv.downsample
        return view, src, (tx0 * d, ty0 * d, tx1 * d, ty1 * d)

    def thumbnail(self, max_side: int = 1024) -> np.ndarray:
        """A small RGB overview whose longer side is ``max_side`` px (or the slide's, if smaller)."""
        return self.overview(max(1.0, max(self.width, self.height) / max_side))

    def info(self) -> dict[str, Any]:
        """The facts a pathologist checks first; the keys of ``pathomics info --json``."""
        return {
            "path": str(self.path),
            "vendor": self.vendor,
            "width": self.width,
            "height": self.height,
            "level_count": self.stored_level_count,
            "level_dimensions": [[lv.width, lv.height] for lv in self.levels_info if lv.stored],
            "level_downsamples": [lv.downsample for lv in self.levels_info if lv.stored],
            "mpp_x": self.mpp_x,
            "mpp_y": self.mpp_y,
            "mpp_source": self.mpp_source,
            "objective_power": self.objective_power,
            "associated_images": self.associated_image_names,
            "file_size": self.path.stat().st_size,
        }

    def file_hash(self) -> str:
        """The slide's content fingerprint (``provenance.file_fingerprint``): caches and reports key on it."""
        try:
            return file_fingerprint(self.path)
        except OSError as exc:
            raise SlideError(f"{self.path.name} can no longer be read (moved or deleted?): {exc}") from exc

    # ------------------------------------------------------------------ pixels
    @property
    def levels(self) -> list[da.Array]:
        """Every level as a lazy (y, x, 3) uint8 dask array, synthesized levels appended."""
        if self._levels is None:
            levels = []
            st = self.path.stat()
            self._safe_levels = [_SafeLevel(arr, self.path.name, i) for i, arr in enumerate(self._stored_arrays)]
            for i, (arr, safe) in enumerate(zip(self._stored_arrays, self._safe_levels)):
                chunks = (min(VIEW_CHUNK, arr.shape[0]), min(VIEW_CHUNK, arr.shape[1]), arr.shape[2])
                name = (
                    f"pathomics-{hashlib.sha1(f'{self.path}|{st.st_size}|{st.st_mtime_ns}'.encode()).hexdigest()}-{i}"
                )
                levels.append(
                    da.from_array(safe, chunks=chunks, name=name, asarray=True, fancy=False, lock=False)[..., :3]
                )
            infos = list(self.levels_info[: len(levels)])
            while max(levels[-1].shape[:2]) > PYRAMID_MIN_SIDE and min(levels[-1].shape[:2]) >= 4:
                levels.append(_halve_lazily(levels[-1]))
                h, w = levels[-1].shape[:2]
                infos.append(LevelInfo(w, h, self.width / w, False))
            self._levels = levels
            self.levels_info = infos
        return self._levels

    def unreadable_boxes(self) -> list[tuple[float, float, float, float]]:
        """Level-0 boxes (x0, y0, x1, y1) of the file tiles that failed to decode so far."""
        out = list(self._failed_boxes)
        for lv in self._safe_levels:
            ds = self.levels_info[lv._level].downsample
            th, tw = lv.tile
            out += [
                (c * tw * ds, r * th * ds, min((c + 1) * tw, lv.shape[1]) * ds, min((r + 1) * th, lv.shape[0]) * ds)
                for r, c in sorted(lv.bad)
            ]
        return out

    def best_level(self, downsample: float, stored_only: bool = True) -> int:
        """Coarsest level whose downsample is ≤ ``downsample`` (1 % tolerance): the cheapest read
        that still has the resolution asked for."""
        best = 0
        for i, lv in enumerate(self.levels_info):
            if (lv.stored or not stored_only) and lv.downsample <= downsample * 1.01:
                best = i
        return best

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """Read ``size`` = (w, h) px at ``level`` starting at level-0 ``location`` = (x, y).

        Same convention as openslide/tiffslide. Parts outside the slide read as white (glass).
        """
        if not 0 <= level < self.stored_level_count:
            raise RegionError(f"level {level} does not exist (0..{self.stored_level_count - 1})")
        lv = self.levels_info[level]
        x0 = int(math.floor(location[0] / lv.downsample))
        y0 = int(math.floor(location[1] / lv.downsample))
        w, h = int(size[0]), int(size[1])
        if w <= 0 or h <= 0:
            raise RegionError(f"region size must be positive, got {w}x{h}")
        out = np.full((h, w, 3), 255, dtype=np.uint8)
        sx0, sy0 = max(0, x0), max(0, y0)
        sx1, sy1 = min(lv.width, x0 + w), min(lv.height, y0 + h)
        if sx1 <= sx0 or sy1 <= sy0:
            return out
        try:
            block = self._stored_arrays[level][sy0:sy1, sx0:sx1]
        except Exception as exc:  # noqa: BLE001 - decoder errors of all kinds
            raise RegionError(
                f"{self.path.name}: failed to decode region x={x0} y={y0} {w}x{h} at level {level}: {exc}"
            ) from exc
        out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = np.asarray(block)[..., :3]
        return out

    def read_tile(self, origin: tuple[int, int], size_l0: float, out_px: int) -> np.ndarray:
        """A square tile covering ``size_l0`` level-0 px from ``origin``, resampled to ``out_px``.

        Reads from the coarsest stored level that still has at least the requested resolution,
        so a 0.5 µm/px tile of a 0.25 µm/px slide reads level 1 when the file has it.
        """
        ds_target = size_l0 / out_px
        level = self.best_level(ds_target)
        lv = self.levels_info[level]
        side = max(1, int(round(size_l0 / lv.downsample)))
        region = self.read_region(origin, level, (side, side))
        if side != out_px:
            region = _resize(region, out_px, out_px, area=side > out_px)
        return region

    def read_tile_at_mpp(self, origin: tuple[int, int], tile_um: float, mpp: float) -> np.ndarray:
        """A tile ``tile_um`` µm wide at ``mpp`` µm/px (the physical-units form of ``read_tile``)."""
        out_px = int(round(tile_um / mpp))
        return self.read_tile(origin, tile_um / self.mpp[0], out_px)


class _SafeLevel:
    """A stored level for viewing: a file tile that fails to decode shows as grey, not a crash.

    napari reads chunks while rendering, where an exception would break the canvas; the engine
    reads through ``Slide.read_region`` instead, which reports failures per tile. A view chunk
    spans several file tiles: when it fails, its file tiles are read one by one and only those
    that fail are grey, and remembered (``bad``: file-tile (row, col)) so their area is reported.
    """

    def __init__(self, arr: Any, name: str, level: int) -> None:
        self._arr = arr
        self.shape = tuple(arr.shape)
        self.dtype = np.dtype(arr.dtype)
        self.ndim = len(self.shape)
        self._name = name
        self._level = level
        chunks = getattr(arr, "chunks", None) or self.shape
        self.tile = (int(chunks[0]), int(chunks[1]))
        self.bad: set[tuple[int, int]] = set()

    def __getitem__(self, key: Any) -> np.ndarray:
        try:
            return np.asarray(self._arr[key])
        except Exception:  # noqa: BLE001 - decoder errors of every kind: retried tile by tile
            pass
        keys = key if isinstance(key, tuple) else (key,)
        ys, xs = (
            keys[i].indices(self.shape[i]) if i < len(keys) and isinstance(keys[i], slice) else (0, self.shape[i], 1)
            for i in (0, 1)
        )
        rest = keys[2] if len(keys) > 2 else slice(None)
        out = np.full((len(range(*ys)), len(range(*xs))) + np.empty(self.shape[2:])[rest].shape, 128, self.dtype)
        th, tw = self.tile
        first = not self.bad
        for r in range(ys[0] // th, (ys[1] - 1) // th + 1):
            for c in range(xs[0] // tw, (xs[1] - 1) // tw + 1):
                y0, y1 = max(ys[0], r * th), min(ys[1], (r + 1) * th)
                x0, x1 = max(xs[0], c * tw), min(xs[1], (c + 1) * tw)
                try:
                    out[y0 - ys[0] : y1 - ys[0], x0 - xs[0] : x1 - xs[0]] = np.asarray(self._arr[y0:y1, x0:x1])[
                        ..., rest
                    ]
                except Exception:  # noqa: BLE001
                    self.bad.add((r, c))
        if first and self.bad:
            warnings.warn(
                f"{self._name}: level {self._level} has undecodable tiles; they are shown grey and "
                "left out of tissue detection",
                RuntimeWarning,
                stacklevel=2,
            )
        return out

    @property
    def failures(self) -> int:
        return len(self.bad)


_OME_UNITS_TO_UM = {"µm": 1.0, "um": 1.0, "micron": 1.0, "nm": 1e-3, "mm": 1e3, "cm": 1e4, "m": 1e6}


def _ome_mpp(description: Any) -> tuple[float | None, float | None]:
    """PhysicalSizeX/Y from OME-XML, which tiffslide does not read (only resolution tags)."""
    if not isinstance(description, str) or "<OME" not in description:
        return None, None
    try:
        root = ET.fromstring(description)
    except ET.ParseError:
        return None, None
    pixels = next((el for el in root.iter() if el.tag.endswith("Pixels")), None)
    if pixels is None:
        return None, None
    out = []
    for axis in ("X", "Y"):
        value = _to_float(pixels.get(f"PhysicalSize{axis}"))
        factor = _OME_UNITS_TO_UM.get(pixels.get(f"PhysicalSize{axis}Unit", "µm"))
        out.append(value * factor if value is not None and factor is not None else None)
    return out[0], out[1]


def _halve_lazily(level: da.Array) -> da.Array:
    """A 2× area-averaged level computed chunk by chunk only when viewed."""
    h, w = level.shape[:2]
    # every chunk is even (VIEW_CHUNK, or the even trimmed remainder), so no coarsen window
    # straddles a chunk border
    trimmed = level[: h - h % 2, : w - w % 2]
    halved = da.coarsen(np.mean, trimmed, {0: 2, 1: 2}, trim_excess=True)
    return halved.round().astype(np.uint8).rechunk((VIEW_CHUNK, VIEW_CHUNK, 3))


def open_slide(path: str | Path, mpp: float | tuple[float, float] | None = None) -> Slide:
    """Open a slide; the one entry point the CLI, engine and widgets use."""
    return Slide(path, mpp=mpp)


def is_slide_path(path: str | os.PathLike[str]) -> bool:
    """Whether napari should offer this file to our reader (by extension only; cheap)."""
    name = str(path).lower()
    return name.endswith(SLIDE_EXTENSIONS)


def _chunk_shape(arr: Any) -> tuple[int, int]:
    """(rows, cols) of one stored chunk (file tile or strip) of a level array."""
    chunks = getattr(arr, "chunks", None) or arr.shape
    return int(chunks[0]), int(chunks[1])


def _empty_chunks(reader: Any, level: int, grid: tuple[int, int]) -> np.ndarray | None:
    """Bool (rows, cols) of the file tiles of ``level`` that store no bytes, from the TIFF's tile
    byte counts (None when the reader is not tiffslide or the layout is not one plane of tiles)."""
    try:
        series = reader.ts_tifffile.series[int(reader.properties.get("tiffslide.series-index", 0))]
        counts = np.asarray(series.levels[level].pages[0].databytecounts)
    except Exception:  # noqa: BLE001 - another reader, or a layout tifffile describes otherwise
        return None
    if counts.size != grid[0] * grid[1]:
        return None
    return (counts == 0).reshape(grid)
