"""Deep Zoom tiles of a slide and of its tumor map, and a size-bounded LRU cache of encoded tiles.

Frames. A Deep Zoom pyramid of a ``width`` x ``height`` image has levels ``0..max_level`` with
``max_level = ceil(log2(max(width, height)))``; level ``L`` is the image at downsample
``2 ** (max_level - L)`` (sides rounded up), cut into ``TILE`` x ``TILE`` tiles, no overlap, edge
tiles cropped (the DZI convention OpenSeadragon reads). A tile is read from the slide level
whose downsample is the largest one at most the tile's (``data.slides.best_level``), through
lymph's own reader (``data.slides.OpenSlideReader``: direct TIFF tile decoding, else
OpenSlide), and box-resized when that level is not the tile's own scale.

The tumor map (``S_tumor_map.tif``, uint8 probability x 255) has its own pyramid at its own
size; the viewer places it over the slide at ``map_downsample`` level-0 pixels per map pixel.
Its tiles are colour-mapped (matplotlib's ``inferno``) RGBA PNGs, transparent below the
threshold (one of ``THRESHOLDS``, in percent, so that a static export can hold every one).
"""

from __future__ import annotations

import io
import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from lymph.data.slides import best_level

TILE = 256
JPEG_QUALITY = 85
THRESHOLDS = tuple(range(0, 100, 10))
"""Map thresholds in percent the viewer offers (0: every pixel above 0 is shown)."""
COLORMAP = "inferno"
MAX_READ_PIXELS = 4096 * 4096
"""The most slide-level pixels one tile may read (a slide without a pyramid level near the
tile's scale is refused at that zoom rather than read whole)."""


class TileError(ValueError):
    """A tile request outside the pyramid (level, column or row out of range)."""


@dataclass(frozen=True)
class DeepZoom:
    """The Deep Zoom geometry of a ``width`` x ``height`` image."""

    width: int
    height: int
    tile: int = TILE

    def __post_init__(self) -> None:
        if self.width < 1 or self.height < 1:
            raise ValueError(f"a Deep Zoom image needs a positive size, got "
                             f"{self.width}x{self.height}")

    @property
    def max_level(self) -> int:
        return max(0, math.ceil(math.log2(max(self.width, self.height))))

    def level_size(self, level: int) -> tuple[int, int]:
        scale = 2 ** (self.max_level - level)
        return -(-self.width // scale), -(-self.height // scale)

    def grid(self, level: int) -> tuple[int, int]:
        """(columns, rows) of tiles at `level`."""
        w, h = self.level_size(level)
        return -(-w // self.tile), -(-h // self.tile)

    def check(self, level: int, col: int, row: int) -> None:
        """TileError unless (level, col, row) is a tile of this pyramid."""
        if not 0 <= level <= self.max_level:
            raise TileError(f"level {level} is outside 0..{self.max_level}")
        cols, rows = self.grid(level)
        if not (0 <= col < cols and 0 <= row < rows):
            raise TileError(f"tile {col}_{row} is outside the {cols}x{rows} tiles of level "
                            f"{level}")

    def region(self, level: int, col: int, row: int) -> tuple[float, float, float, float,
                                                               int, int]:
        """(x0, y0, x1, y1) in level-0 pixels and the tile's (width, height) in pixels."""
        self.check(level, col, row)
        scale = 2 ** (self.max_level - level)
        w, h = self.level_size(level)
        tx0, ty0 = col * self.tile, row * self.tile
        tw, th = min(self.tile, w - tx0), min(self.tile, h - ty0)
        x0, y0 = tx0 * scale, ty0 * scale
        return (x0, y0, min(self.width, (tx0 + tw) * scale), min(self.height, (ty0 + th) * scale),
                tw, th)

    def n_tiles(self) -> int:
        return sum(c * r for c, r in (self.grid(level) for level in range(self.max_level + 1)))

    def dzi(self, fmt: str) -> str:
        """The DZI XML descriptor (for tools other than lymph's viewer)."""
        return ('<?xml version="1.0" encoding="UTF-8"?>\n'
                '<Image xmlns="http://schemas.microsoft.com/deepzoom/2008" '
                f'Format="{fmt}" Overlap="0" TileSize="{self.tile}">'
                f'<Size Width="{self.width}" Height="{self.height}"/></Image>\n')

    def to_dict(self) -> dict[str, int]:
        return {"width": self.width, "height": self.height, "tile": self.tile,
                "max_level": self.max_level}


def read_tile_pixels(reader: Any, dz: DeepZoom, level: int, col: int, row: int) -> np.ndarray:
    """uint8 (h, w, 3) pixels of one Deep Zoom tile of `reader` (a ``SlideReader``)."""
    from PIL import Image

    x0, y0, x1, y1, tw, th = dz.region(level, col, row)
    scale = 2 ** (dz.max_level - level)
    slevel = best_level(reader.level_downsamples, scale)
    lds = reader.level_downsamples[slevel]
    lw, lh = reader.level_dimensions[slevel]
    lx0, ly0 = int(x0 // lds), int(y0 // lds)
    lx1 = max(lx0 + 1, min(lw, math.ceil(x1 / lds)))
    ly1 = max(ly0 + 1, min(lh, math.ceil(y1 / lds)))
    lx0, ly0 = min(lx0, lw - 1), min(ly0, lh - 1)
    if (lx1 - lx0) * (ly1 - ly0) > MAX_READ_PIXELS:
        raise TileError(f"level {level} would read {lx1 - lx0}x{ly1 - ly0} px: the slide has no "
                        f"pyramid level near downsample {scale}; zoom in")
    pixels = reader.read_region((round(lx0 * lds), round(ly0 * lds)), slevel,
                                (lx1 - lx0, ly1 - ly0))
    if pixels.shape[:2] == (th, tw):
        return pixels
    img = Image.fromarray(pixels).resize((tw, th), Image.Resampling.BOX)
    return np.asarray(img)


def encode_jpeg(pixels: np.ndarray, *, quality: int = JPEG_QUALITY) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


_LUT: np.ndarray | None = None


def colormap_lut() -> np.ndarray:
    """(256, 4) uint8 RGBA of the map colours, value v -> COLORMAP(v / 255), opaque."""
    global _LUT
    if _LUT is None:
        from matplotlib import colormaps

        lut = colormaps[COLORMAP](np.linspace(0, 1, 256))
        _LUT = np.round(lut * 255).astype(np.uint8)
        _LUT.setflags(write=False)
    return _LUT


def threshold_value(threshold_pct: int) -> int:
    """The smallest uint8 map value shown at `threshold_pct` (0 shows every value above 0)."""
    if threshold_pct not in THRESHOLDS:
        raise TileError(f"threshold {threshold_pct} is not one of {THRESHOLDS}")
    return max(1, math.ceil(threshold_pct / 100 * 255))


def colour_map(values: np.ndarray, threshold_pct: int) -> np.ndarray:
    """RGBA uint8 (h, w, 4) of uint8 map values: colour-mapped, transparent below threshold."""
    rgba = colormap_lut()[values]
    rgba[values < threshold_value(threshold_pct), 3] = 0
    return rgba


def encode_png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def slide_tile(reader: Any, dz: DeepZoom, level: int, col: int, row: int) -> bytes:
    """One JPEG tile of a slide."""
    return encode_jpeg(read_tile_pixels(reader, dz, level, col, row))


def map_tile(reader: Any, dz: DeepZoom, level: int, col: int, row: int,
             threshold_pct: int) -> bytes:
    """One RGBA PNG tile of a tumor map (first channel = probability x 255)."""
    threshold_value(threshold_pct)  # TileError before any read
    values = read_tile_pixels(reader, dz, level, col, row)[..., 0]
    return encode_png(colour_map(values, threshold_pct))


class TileCache:
    """A thread-safe LRU cache of encoded tiles, at most `max_bytes` of tile bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max(0, int(max_bytes))
        self._items: OrderedDict[tuple, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get_or_make(self, key: tuple, make: Callable[[], bytes]) -> bytes:
        with self._lock:
            data = self._items.get(key)
            if data is not None:
                self._items.move_to_end(key)
                self.hits += 1
                return data
            self.misses += 1
        data = make()
        if len(data) > self.max_bytes:
            return data
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= len(old)
            self._items[key] = data
            self._bytes += len(data)
            while self._bytes > self.max_bytes:
                _, dropped = self._items.popitem(last=False)
                self._bytes -= len(dropped)
        return data

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)
