"""Tumor mask TIFFs (`S_mask.tif`): `open_mask` gives a `SlideReader` over one, OpenSlide
for tiled TIFFs and `StripTiffMask` for the strip TIFFs OpenSlide refuses."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from lymph.data.errors import AnnotationError, SlideError
from lymph.data.slides import SlideReader, open_slide, thumbnail_from_levels

MAX_STRIP_BYTES = 256 << 20
"""A compressed strip is decoded whole; one larger than this is refused (with the command that
rewrites the mask tiled) instead of filling memory."""


class StripTiffMask:
    """A mask TIFF that is not tiled (strips, as many tools write masks), which OpenSlide
    refuses: read with tifffile a few strips at a time, so memory stays bounded by the strips a
    region touches (uncompressed strips are read row by row). A `SlideReader` of one level;
    pixels outside the image read 0 (not tumor); the first sample (or the max over colour
    samples) is the mask value, returned in all three channels."""

    vendor: str | None = "strip-tiff"
    mpp: float | None = None

    def __init__(self, path: str | Path, *, cache_strips: int = 8) -> None:
        import tifffile

        self.path = Path(path)
        try:
            self._tif = tifffile.TiffFile(str(self.path))
            page = self._tif.pages.first
        except Exception as exc:  # tifffile raises many kinds on damaged files
            raise AnnotationError(f"mask {self.path}: not a readable TIFF ({type(exc).__name__}: "
                                  f"{str(exc)[:80]}); write the mask again") from None
        w, h, spp = int(page.imagewidth), int(page.imagelength), int(page.samplesperpixel)
        if page.is_tiled or (spp > 1 and int(page.planarconfig) != 1) or page.imagedepth != 1:
            self._tif.close()
            raise AnnotationError(f"mask {self.path}: a TIFF layout lymph cannot read by strips "
                                  f"(tiled={page.is_tiled}, planar={int(page.planarconfig)}); "
                                  f"{convert_mask_command(self.path)}")
        self._page, self._spp = page, spp
        self._rps = max(1, min(int(page.rowsperstrip or h), h))
        strips = -(-h // self._rps)
        if not len(page.dataoffsets) == len(page.databytecounts) == strips or w < 1:
            self._tif.close()
            raise AnnotationError(f"mask {self.path}: damaged TIFF ({len(page.dataoffsets)} "
                                  f"strip offsets for {strips} strips of a {w}x{h} image); "
                                  "write the mask again")
        self._raw = (int(page.compression) == 1 and page.bitspersample == 8
                     and np.dtype(page.dtype).itemsize == 1)
        if not self._raw and self._rps * w * spp * np.dtype(page.dtype).itemsize > MAX_STRIP_BYTES:
            self._tif.close()
            raise AnnotationError(f"mask {self.path}: one compressed strip of {self._rps} rows "
                                  f"is over {MAX_STRIP_BYTES / 2 ** 20:g} MiB decoded; "
                                  f"{convert_mask_command(self.path)}")
        self.dimensions = (w, h)
        self.level_count = 1
        self.level_dimensions: tuple[tuple[int, int], ...] = ((w, h),)
        self.level_downsamples: tuple[float, ...] = (1.0,)
        self.properties: dict[str, str] = {}
        self.warnings: list[str] = []
        self._fd = os.open(str(self.path), os.O_RDONLY)
        self._cache: dict[int, np.ndarray] = {}
        self._cache_strips = max(1, cache_strips)

    def _strip(self, index: int) -> np.ndarray:
        """uint8 (rows, width) of strip `index`."""
        strip = self._cache.get(index)
        if strip is not None:
            return strip
        page = self._page
        data = os.pread(self._fd, int(page.databytecounts[index]), int(page.dataoffsets[index]))
        try:
            seg = np.asarray(page.decode(data, index, jpegtables=page.jpegtables)[0])
        except Exception as exc:  # decoder errors of a damaged strip
            raise AnnotationError(f"mask {self.path}: strip {index} cannot be decoded "
                                  f"({type(exc).__name__}: {str(exc)[:80]}); write the mask "
                                  "again") from None
        rows = min(self._rps, self.dimensions[1] - index * self._rps)
        strip = _mask_values(seg.reshape(-1, self.dimensions[0], self._spp)[:rows])
        while len(self._cache) >= self._cache_strips:
            self._cache.pop(next(iter(self._cache)))
        self._cache[index] = strip
        return strip

    def _rows(self, y0: int, y1: int) -> np.ndarray:
        """uint8 (y1 - y0, width) mask rows, 0 <= y0 < y1 <= height."""
        w, spp = self.dimensions[0], self._spp
        if self._raw:  # uncompressed: read just these rows, however large the strips
            out = np.empty((y1 - y0, w), np.uint8)
            y = y0
            while y < y1:
                s, r = divmod(y, self._rps)
                n = min(y1 - y, self._rps - r)
                off = int(self._page.dataoffsets[s]) + r * w * spp
                buf = os.pread(self._fd, n * w * spp, off)
                if len(buf) != n * w * spp:
                    raise AnnotationError(f"mask {self.path}: the file ends inside row "
                                          f"{y + len(buf) // (w * spp)} of {self.dimensions[1]} "
                                          "(truncated copy?); copy or write the mask again")
                out[y - y0:y - y0 + n] = _mask_values(
                    np.frombuffer(buf, np.uint8).reshape(n, w, spp))
                y += n
            return out
        parts = [self._strip(s)[max(y0 - s * self._rps, 0):y1 - s * self._rps]
                 for s in range(y0 // self._rps, (y1 - 1) // self._rps + 1)]
        return np.concatenate(parts)

    def read_region(self, location_level0: tuple[int, int], level: int,
                    size: tuple[int, int], *, out: np.ndarray | None = None) -> np.ndarray:
        if level != 0:
            raise AnnotationError(f"mask {self.path}: level {level} out of range 0..0")
        x, y = int(location_level0[0]), int(location_level0[1])
        w, h = int(size[0]), int(size[1])
        if out is None:
            out = np.empty((h, w, 3), np.uint8)
        out[...] = 0
        iw, ih = self.dimensions
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, iw), min(y + h, ih)
        if x1 > x0 and y1 > y0:
            out[y0 - y:y1 - y, x0 - x:x1 - x] = self._rows(y0, y1)[:, x0:x1, None]
        return out

    def thumbnail(self, max_size: int) -> tuple[np.ndarray, float]:
        return thumbnail_from_levels(self, max_size)

    def close(self) -> None:
        os.close(self._fd)
        self._tif.close()
        self._cache.clear()

    def __enter__(self) -> StripTiffMask:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _mask_values(seg: np.ndarray) -> np.ndarray:
    """uint8 (rows, width) mask values from (rows, width, samples): the first sample of a grey
    mask, the max over the colour samples of an RGB(A) one (alpha ignored)."""
    if seg.shape[-1] >= 3:
        seg = seg[..., :3].max(axis=-1)
    else:
        seg = seg[..., 0]
    if seg.dtype != np.uint8:
        seg = (seg != 0).astype(np.uint8) if seg.dtype == bool else np.minimum(seg, 255).astype(
            np.uint8)
    return seg


def convert_mask_command(path: str | Path) -> str:
    """The exact command that rewrites a mask TIFF tiled (what OpenSlide reads), for messages."""
    p = Path(path)
    tiled = p.with_name(f"{p.stem}.tiled{p.suffix}")
    return (f"rewrite it tiled with `vips tiffsave '{p}' '{tiled}' --tile --tile-width 512 "
            f"--tile-height 512 --compression deflate --bigtiff && mv '{tiled}' '{p}'`")


def open_mask(path: str | Path) -> SlideReader:
    """A `SlideReader` over a mask TIFF: OpenSlide for tiled TIFFs, `StripTiffMask` for strip
    TIFFs OpenSlide refuses. SlideError (OpenSlide's) for anything else."""
    try:
        with warnings.catch_warnings():  # a mask's microns per pixel are never used
            warnings.filterwarnings("ignore", message=".*microns-per-pixel")
            reader = open_slide(path)
        reader.warnings = [w for w in reader.warnings if "microns-per-pixel" not in w]
        return reader
    except SlideError as exc:
        if not _is_strip_tiff(Path(path)):  # a mask, not a slide: say so (not "move it out")
            cause = str(exc.__cause__ or exc).splitlines()[0][:160]
            raise SlideError(f"{path}: cannot read this tumor mask ({cause}); a mask beside a "
                             "slide (S_mask.tif) must be a TIFF that OpenSlide or tifffile "
                             "reads: convert it to TIFF, or rename it if it is not a mask") \
                from None
    return StripTiffMask(path)


def _is_strip_tiff(path: Path) -> bool:
    import tifffile

    try:
        with tifffile.TiffFile(str(path)) as tif:
            return not tif.pages[0].is_tiled
    except Exception:  # not a TIFF at all
        return False
