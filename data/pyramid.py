"""Write tiled, pyramidal TIFF files that OpenSlide opens, with memory flat in the image size.

The caller supplies level 0 as a callable that returns one *tile row* at a time (a strip of
`tile` rows, the full width). Level-0 tiles are encoded and streamed into the TIFF as they come;
each strip is also averaged down into every lower level on the fly. Lower-level tiles are encoded
as soon as a whole tile row of that level exists and their encoded bytes are spooled to a
temporary file next to the output; once level 0 is written, the lower-level pages are written
from the spool. At no point is a whole level held in memory, except the last (smallest) one,
which is under `min_size` px on its long side by construction.

Two layouts:

* ``"generic"``: successive top-level pages (level 0, then ``subfiletype=1`` reduced pages),
  resolution in CENTIMETER so that OpenSlide's ``generic-tiff`` backend reports ``mpp``.
* ``"aperio"``: the Aperio SVS layout: level 0 with an ``Aperio Image Library ... |MPP = ..``
  description, a stripped thumbnail page, the tiled lower levels, then ``label`` and ``macro``
  stripped pages. OpenSlide reports vendor ``aperio``, ``mpp`` and objective power.

Tiles are 8-bit, RGB (JPEG as YCbCr 4:2:0, or deflate) or single channel (deflate, or JPEG).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import imagecodecs
import numpy as np
import tifffile

from lymph.data.errors import ConfigError

RowSource = Callable[[int], np.ndarray]
"""``rows(tile_row_index) -> uint8 array (h, width[, channels])`` with h == tile (h smaller only
for the last tile row, h == height - index * tile)."""

COMPRESSIONS = ("jpeg", "deflate")
LAYOUTS = ("generic", "aperio")
DOWNSAMPLE_MODES = ("mean", "majority")
APERIO_SOFTWARE = "Aperio Image Library v12.0.15"

# An image whose pages would exceed this many bytes uncompressed is written as BigTIFF. The
# classic TIFF limit is 4 GiB of *file*; the uncompressed size bounds the file from above (JPEG
# and deflate of 8-bit images never grow beyond a few bytes per tile), with room for headers.
_BIGTIFF_THRESHOLD = 2**32 - 2**26


@dataclass(frozen=True)
class PyramidInfo:
    """What `write_pyramidal_tiff` wrote."""

    path: Path
    level_dimensions: tuple[tuple[int, int], ...]  # (width, height) of each level
    downsamples: tuple[int, ...]
    layout: str
    compression: str
    bigtiff: bool
    file_bytes: int


def pyramid_dimensions(
    width: int, height: int, *, factor: int = 2, min_size: int = 2048
) -> list[tuple[int, int]]:
    """Level sizes (width, height): level 0, then each `factor` times smaller (rounded up) until
    the long side is under `min_size`."""
    if width < 1 or height < 1:
        raise ConfigError(f"image size must be positive, got {width}x{height}")
    if factor not in (2, 4):
        raise ConfigError(f"pyramid factor must be 2 or 4, got {factor}")
    dims = [(width, height)]
    while max(dims[-1]) >= min_size:
        w, h = dims[-1]
        dims.append((-(-w // factor), -(-h // factor)))
    return dims


def downsample_block(block: np.ndarray, factor: int, *, mode: str = "mean") -> np.ndarray:
    """Average `factor` x `factor` pixel blocks of a uint8 (h, w[, c]) array whose h and w are
    multiples of `factor`. mode "majority" returns 255 where the mean is >= 128 else 0 (for
    binary 0/255 masks)."""
    h, w = block.shape[:2]
    if h % factor or w % factor:
        raise ConfigError(f"block {h}x{w} is not a multiple of the factor {factor}")
    rest = block.shape[2:]
    summed = block.reshape(h // factor, factor, w // factor, factor, *rest).sum(
        axis=(1, 3), dtype=np.uint32
    )
    n = factor * factor
    if mode == "majority":
        return np.where(summed * 2 >= 255 * n, 255, 0).astype(np.uint8)
    return ((summed + n // 2) // n).astype(np.uint8)


def _pad_to(block: np.ndarray, height: int, width: int) -> np.ndarray:
    """Edge-replicate a (h, w, ...) block up to (height, width, ...)."""
    h, w = block.shape[:2]
    if h == height and w == width:
        return block
    pad = [(0, height - h), (0, width - w)] + [(0, 0)] * (block.ndim - 2)
    return np.pad(block, pad, mode="edge")


class _Encoder:
    """Encodes tiles exactly as tifffile would for the same write() arguments."""

    def __init__(self, compression: str, quality: int, channels: int) -> None:
        self.compression = compression
        self.quality = quality
        self.channels = channels

    def __call__(self, tile: np.ndarray) -> bytes:
        tile = np.ascontiguousarray(tile)
        if self.compression == "jpeg":
            if self.channels == 3:
                return bytes(
                    imagecodecs.jpeg_encode(
                        tile,
                        level=self.quality,
                        colorspace="RGB",
                        outcolorspace="YCBCR",
                        subsampling=(2, 2),
                    )
                )
            return bytes(imagecodecs.jpeg_encode(tile[..., 0], level=self.quality))
        return bytes(imagecodecs.zlib_encode(tile, level=6))  # type: ignore[arg-type]  # any buffer

    def write_args(self) -> dict:
        """tifffile.write arguments that describe tiles made by this encoder."""
        if self.compression == "jpeg":
            if self.channels == 3:
                return {
                    "photometric": "rgb",
                    "compression": "jpeg",
                    "subsampling": (2, 2),
                }
            return {"photometric": "minisblack", "compression": "jpeg"}
        return {
            "photometric": "rgb" if self.channels == 3 else "minisblack",
            "compression": "adobe_deflate",
        }


class _Level:
    """One lower pyramid level being built from the rows of the level above."""

    def __init__(
        self,
        index: int,
        width: int,
        height: int,
        *,
        factor: int,
        tile: int,
        channels: int,
        mode: str,
    ) -> None:
        self.index = index
        self.width = width
        self.height = height
        self.factor = factor
        self.tile = tile
        self.channels = channels
        self.mode = mode
        self.rows_in = np.zeros((0, width * factor, channels), np.uint8)  # pending parent rows
        self.rows_out = np.zeros((0, width, channels), np.uint8)  # pending rows of this level
        self.rows_done = 0  # rows of this level made so far
        self.tiles: list[tuple[int, int]] = []  # (offset, length) of encoded tiles in the spool
        self.raw: list[np.ndarray] | None = None  # whole level kept (only for the last level)

    def feed(self, parent_rows: np.ndarray, *, last: bool) -> np.ndarray:
        """Take rows of the parent level (full parent width); return the rows of this level
        completed by them."""
        parent_rows = _pad_to(parent_rows, parent_rows.shape[0], self.width * self.factor)
        self.rows_in = np.concatenate([self.rows_in, parent_rows], axis=0)
        usable = (self.rows_in.shape[0] // self.factor) * self.factor
        if last and usable < self.rows_in.shape[0]:
            target = -(-self.rows_in.shape[0] // self.factor) * self.factor
            self.rows_in = _pad_to(self.rows_in, target, self.rows_in.shape[1])
            usable = target
        block, self.rows_in = self.rows_in[:usable], self.rows_in[usable:]
        if usable == 0:
            return np.zeros((0, self.width, self.channels), np.uint8)
        out = downsample_block(block, self.factor, mode=self.mode)
        out = out[: self.height - self.rows_done]
        self.rows_done += out.shape[0]
        return out


def _tiles_of_row(row: np.ndarray, tile: int) -> list[np.ndarray]:
    """Split a strip (h <= tile, width, c) into padded tile x tile tiles, left to right."""
    h, w = row.shape[:2]
    row = _pad_to(row, tile, -(-w // tile) * tile)
    return [row[:, x : x + tile] for x in range(0, row.shape[1], tile)]


def _as_strip(rows: np.ndarray, channels: int) -> np.ndarray:
    rows = np.asarray(rows)
    if rows.ndim == 2:
        rows = rows[..., None]
    if rows.dtype != np.uint8:
        raise ConfigError(f"rows must be uint8, got {rows.dtype}")
    if rows.shape[2] != channels:
        raise ConfigError(f"rows have {rows.shape[2]} channels, expected {channels}")
    return rows


def _aperio_description(
    width: int, height: int, *, tile: int, quality: int, mpp: float | None, extra: dict
) -> str:
    fields = [f"AppMag = {extra.get('AppMag', 40)}"]
    if mpp is not None:
        fields.append(f"MPP = {mpp:.4f}".rstrip("0").rstrip("."))
    for key, value in extra.items():
        if key != "AppMag":
            fields.append(f"{key} = {value}")
    head = (
        f"{APERIO_SOFTWARE} \r\n{width}x{height} [0,0 {width}x{height}] ({tile}x{tile}) "
        f"JPEG/RGB Q={quality}"
    )
    return "|".join([head, *fields])


def _resize_nearest(image: np.ndarray, max_size: int) -> np.ndarray:
    h, w = image.shape[:2]
    scale = min(1.0, max_size / max(h, w))
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    ys = np.minimum((np.arange(nh) + 0.5) / scale, h - 1).astype(np.intp)
    xs = np.minimum((np.arange(nw) + 0.5) / scale, w - 1).astype(np.intp)
    return image[ys][:, xs]


@dataclass(frozen=True)
class _Spec:
    """The validated settings of one pyramid (see ``write_pyramidal_tiff``)."""

    width: int
    height: int
    channels: int
    tile: int
    compression: str
    quality: int
    mpp: float | None
    layout: str
    factor: int
    dims: tuple[tuple[int, int], ...]
    bigtiff: bool

    def shape(self, width: int, height: int) -> tuple[int, ...]:
        return (height, width, self.channels) if self.channels == 3 else (height, width)

    def resolution(self, level: int) -> dict:
        """Resolution tags of ``level`` (none without an mpp)."""
        if self.mpp is None:
            return {}
        px_per_cm = 1e4 / (self.mpp * self.factor**level)
        return {"resolution": (px_per_cm, px_per_cm), "resolutionunit": "CENTIMETER"}

    def aperio_level_description(self, width: int, height: int) -> str:
        return f"{APERIO_SOFTWARE} \r\n{self.width}x{self.height} -> {width}x{height} - |"


def _check_settings(
    *, channels: int, compression: str, layout: str, downsample: str, tile: int, quality: int,
    mpp: float | None,
) -> None:
    """ConfigError for any setting ``write_pyramidal_tiff`` cannot write."""
    if channels not in (1, 3):
        raise ConfigError(f"channels must be 1 or 3, got {channels}")
    if compression not in COMPRESSIONS:
        raise ConfigError(f"compression must be one of {COMPRESSIONS}, got {compression!r}")
    if layout not in LAYOUTS:
        raise ConfigError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if layout == "aperio" and channels != 3:
        raise ConfigError("the aperio layout needs RGB (channels=3)")
    if downsample not in DOWNSAMPLE_MODES:
        raise ConfigError(f"downsample must be one of {DOWNSAMPLE_MODES}, got {downsample!r}")
    if tile < 16 or tile % 16:
        raise ConfigError(f"tile must be a positive multiple of 16, got {tile}")
    if not 1 <= quality <= 100:
        raise ConfigError(f"quality must be in 1..100, got {quality}")
    if mpp is not None and not mpp > 0:
        raise ConfigError(f"mpp must be positive, got {mpp}")


class _Builder:
    """Streams level 0 and builds the lower levels from it, spooling their encoded tiles."""

    def __init__(self, spec: _Spec, rows: RowSource, *, downsample: str, workers: int,
                 spool: BinaryIO, progress: Callable[[int], None] | None) -> None:
        self.spec = spec
        self.rows = rows
        self.spool = spool
        self.progress = progress
        self.encoder = _Encoder(spec.compression, spec.quality, spec.channels)
        self.levels = [
            _Level(i, w, h, factor=spec.factor, tile=spec.tile, channels=spec.channels,
                   mode=downsample)
            for i, (w, h) in enumerate(spec.dims)
            if i > 0
        ]
        self.last_raw: list[np.ndarray] = []  # the smallest level, kept whole
        self.pool = ThreadPoolExecutor(max_workers=workers) if workers > 1 else None

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()

    def encode_all(self, tiles: list[np.ndarray]) -> list[bytes]:
        if self.pool is None:
            return [self.encoder(t) for t in tiles]
        return list(self.pool.map(self.encoder, tiles))

    def push_down(self, rows_parent: np.ndarray, depth: int, *, last: bool) -> None:
        """Feed rows of level depth-1 into level depth (index into ``levels``)."""
        if depth > len(self.levels):
            return
        lvl = self.levels[depth - 1]
        out = lvl.feed(rows_parent, last=last)
        if out.shape[0]:
            lvl.rows_out = np.concatenate([lvl.rows_out, out], axis=0)
        if depth == len(self.levels) and out.shape[0]:
            self.last_raw.append(out)
        tile = self.spec.tile
        while lvl.rows_out.shape[0] >= tile or (last and lvl.rows_out.shape[0]):
            strip, lvl.rows_out = lvl.rows_out[:tile], lvl.rows_out[tile:]
            for data in self.encode_all(_tiles_of_row(strip, tile)):
                offset = self.spool.tell()
                self.spool.write(data)
                lvl.tiles.append((offset, len(data)))
        self.push_down(out, depth + 1, last=last)

    def level0_tiles(self) -> Iterator[bytes]:
        spec, tile = self.spec, self.spec.tile
        n_rows0 = -(-spec.height // tile)
        for i in range(n_rows0):
            h = min(tile, spec.height - i * tile)
            strip = _as_strip(self.rows(i), spec.channels)
            if strip.shape[:2] != (h, spec.width):
                raise ConfigError(
                    f"rows({i}) returned {strip.shape[:2]}, expected ({h}, {spec.width})"
                )
            if not self.levels:
                self.last_raw.append(strip)
            encoded = self.encode_all(_tiles_of_row(strip, tile))
            # tifffile stops pulling after the last tile: finish this row's work first
            self.push_down(strip, 1, last=i == n_rows0 - 1)
            if self.progress is not None:
                self.progress(h)
            yield from encoded

    def spooled_tiles(self, lvl: _Level) -> Iterator[bytes]:
        for offset, length in lvl.tiles:
            self.spool.seek(offset)
            yield self.spool.read(length)


def _write_pages(tif: tifffile.TiffWriter, b: _Builder, *, thumbnail_size: int,
                 label: np.ndarray | None, macro: np.ndarray | None,
                 aperio_fields: dict | None) -> None:
    """Level 0, the Aperio thumbnail, the lower levels and the Aperio associated images."""
    spec = b.spec
    aperio = spec.layout == "aperio"
    common = {"dtype": np.uint8, "tile": (spec.tile, spec.tile), "metadata": None,
              **b.encoder.write_args()}
    description0 = None
    if aperio:
        description0 = _aperio_description(
            spec.width, spec.height, tile=spec.tile, quality=spec.quality, mpp=spec.mpp,
            extra=dict(aperio_fields or {}),
        )
    tif.write(b.level0_tiles(), shape=spec.shape(spec.width, spec.height),
              description=description0, subfiletype=0, **spec.resolution(0), **common)
    smallest = np.concatenate(b.last_raw, axis=0)
    if aperio:
        thumb = _resize_nearest(smallest, thumbnail_size)
        tif.write(thumb, photometric="rgb", compression="jpeg", compressionargs={"level": 90},
                  rowsperstrip=16, metadata=None,
                  description=spec.aperio_level_description(thumb.shape[1], thumb.shape[0]))
    for lvl in b.levels:
        desc = spec.aperio_level_description(lvl.width, lvl.height) if aperio else None
        tif.write(b.spooled_tiles(lvl), shape=spec.shape(lvl.width, lvl.height),
                  description=desc, subfiletype=0 if aperio else 1,
                  **spec.resolution(lvl.index), **common)
    if aperio:
        _write_aperio_associated(tif, smallest, label=label, macro=macro)


def _write_aperio_associated(tif: tifffile.TiffWriter, smallest: np.ndarray, *,
                             label: np.ndarray | None, macro: np.ndarray | None) -> None:
    """The Aperio ``label`` and ``macro`` stripped pages (made up from the image if None)."""
    if label is None:
        label = np.full((300, 300, 3), 235, np.uint8)
    if macro is None:
        macro = np.full((300, 900, 3), 200, np.uint8)
        m = _resize_nearest(smallest, 280)
        macro[10 : 10 + m.shape[0], 600 - m.shape[1] : 600] = m[:280, :590]
    tif.write(np.ascontiguousarray(label, dtype=np.uint8), photometric="rgb",
              compression="lzw", rowsperstrip=16, subfiletype=1, metadata=None,
              description=f"{APERIO_SOFTWARE}\nlabel {label.shape[1]}x{label.shape[0]}")
    tif.write(np.ascontiguousarray(macro, dtype=np.uint8), photometric="rgb",
              compression="jpeg", compressionargs={"level": 90}, rowsperstrip=16,
              subfiletype=9, metadata=None,
              description=f"{APERIO_SOFTWARE}\nmacro {macro.shape[1]}x{macro.shape[0]}")


def write_pyramidal_tiff(
    path: str | Path, rows: RowSource, *, width: int, height: int, channels: int = 3,
    tile: int = 256, compression: str = "jpeg", quality: int = 90, mpp: float | None = None,
    layout: str = "generic", factor: int = 2, min_size: int = 2048, downsample: str = "mean",
    aperio_fields: dict | None = None, label: np.ndarray | None = None,
    macro: np.ndarray | None = None, thumbnail_size: int = 1024, bigtiff: bool | None = None,
    workers: int = 1, progress: Callable[[int], None] | None = None,
) -> PyramidInfo:
    """Write a tiled pyramidal TIFF from level-0 tile rows; memory stays flat in the size.

    Args:
        path: output file, written atomically (``lymph.data.io.atomic_path``): a reader never
            sees half a pyramid, and a failed write leaves the old file, if any, as it was.
        rows: ``rows(i)`` returns tile row i of level 0, uint8 (h, width[, channels]), h =
            min(tile, height - i * tile). Called once per i, in order.
        width, height: level-0 size in pixels.
        channels: 3 (RGB) or 1.
        compression: "jpeg" (RGB as YCbCr 4:2:0) or "deflate" (lossless).
        quality: JPEG quality (1-100).
        mpp: microns per level-0 pixel, recorded as the resolution (generic) or ``MPP`` (aperio).
        layout: "generic" (OpenSlide generic-tiff) or "aperio" (SVS).
        factor: 2 or 4, the downsample between levels. Levels go down until the long side is
            under `min_size`.
        downsample: "mean" (images) or "majority" (0/255 masks stay 0/255).
        aperio_fields: extra ``key = value`` fields for the Aperio description (AppMag, ...).
        label, macro: uint8 RGB images for the Aperio label and macro pages (made up if None).
        bigtiff: force BigTIFF on/off; None picks BigTIFF when the data could exceed 4 GiB.
        workers: threads encoding tiles.
        progress: called with the number of level-0 rows finished after each tile row.
    """
    from lymph.data.io import atomic_path

    path = Path(path)
    _check_settings(channels=channels, compression=compression, layout=layout,
                    downsample=downsample, tile=tile, quality=quality, mpp=mpp)
    dims = pyramid_dimensions(width, height, factor=factor, min_size=min_size)
    if bigtiff is None:
        bigtiff = sum(w * h for w, h in dims) * channels > _BIGTIFF_THRESHOLD
    spec = _Spec(width=width, height=height, channels=channels, tile=tile,
                 compression=compression, quality=quality, mpp=mpp, layout=layout,
                 factor=factor, dims=tuple(dims), bigtiff=bool(bigtiff))
    with atomic_path(path) as part, tempfile.TemporaryFile(
        dir=path.parent, prefix=".pyramid-spool-"
    ) as spool:
        builder = _Builder(spec, rows, downsample=downsample, workers=max(1, workers),
                           spool=spool, progress=progress)
        try:
            with tifffile.TiffWriter(part, bigtiff=spec.bigtiff) as tif:
                _write_pages(tif, builder, thumbnail_size=thumbnail_size, label=label,
                             macro=macro, aperio_fields=aperio_fields)
        finally:
            builder.close()
    return PyramidInfo(path=path, level_dimensions=tuple(dims),
                       downsamples=tuple(factor**i for i in range(len(dims))), layout=layout,
                       compression=compression, bigtiff=bool(bigtiff),
                       file_bytes=path.stat().st_size)
