"""Slide access: one small protocol over OpenSlide (any vendor format, DICOM folders) and an
in-memory `ArraySlide` for tests. Nothing here ever holds a whole slide: regions are read on
demand and thumbnails are built band by band from the smallest level that is large enough.

Frames: `*_level0` are level-0 pixel coordinates; `thumb` is the thumbnail frame, whose pixel
(i, j) covers level-0 [j * downsample, (j + 1) * downsample) horizontally.
"""

from __future__ import annotations

import math
import os
import re
import threading
import unicodedata
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from lymph.data.errors import SlideError

MPP_RANGE = (0.05, 20.0)
"""Plausible microns per pixel; outside it (e.g. 352.8 from a 72-dpi TIFF) mpp is unknown."""

SLIDE_SUFFIXES = frozenset({
    ".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".svslide", ".bif",
    ".dcm", ".czi", ".isyntax", ".png", ".jpg", ".jpeg", ".bmp", ".gif",
})
"""File suffixes treated as slide candidates; everything else (xml, csv, licences) is skipped
unless OpenSlide itself recognises the file. Images such as .png are candidates so that a stray
picture in a slide folder is reported, not silently ignored."""

MULTI_SUFFIXES = (".ome.tiff", ".ome.tif")
"""Suffixes of two parts: `x.ome.tif` is slide `x`, not `x.ome`."""

NOT_SLIDE_ENDINGS = ("_mask", "_tumor_map")
"""Stem endings (case-insensitive) of TIFFs that are never slides: annotation masks
(`S_mask.tif`, `S_Mask.tif`) and lymph's own probability maps (`S_tumor_map.tif`)."""

_NOT_SLIDE_SUFFIXES = frozenset({
    ".xml", ".json", ".geojson", ".csv", ".txt", ".md", ".py", ".log", ".pt", ".html", ".yaml",
    ".yml", ".toml", ".zip", ".gz",
})
"""Suffixes never handed to OpenSlide's format detection (annotations, tables, notes)."""

_MAX_ID_BYTES = 200
_UNSAFE_ID_CHARS = re.compile(r'[/\\:*?"<>|\s]')

_THUMB_BAND_BYTES = 64 << 20


@runtime_checkable
class SlideReader(Protocol):
    """What the stages read a slide through: `OpenSlideReader` (files) and `ArraySlide`
    (in-memory, for tests) both implement all of it, so stage functions take either."""

    path: Path
    dimensions: tuple[int, int]
    level_count: int
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    mpp: float | None
    vendor: str | None
    properties: dict[str, str]
    warnings: list[str]

    def read_region(self, location_level0: tuple[int, int], level: int,
                    size: tuple[int, int], *, out: np.ndarray | None = None) -> np.ndarray: ...

    def thumbnail(self, max_size: int) -> tuple[np.ndarray, float]: ...

    def close(self) -> None: ...

    def __enter__(self) -> SlideReader: ...

    def __exit__(self, *exc: object) -> None: ...


def _check_out(out: np.ndarray | None, w: int, h: int) -> np.ndarray:
    """`out` if it is a uint8 (h, w, 3) buffer, a new one when None; ValueError otherwise."""
    if out is None:
        return np.empty((h, w, 3), np.uint8)
    if out.shape != (h, w, 3) or out.dtype != np.uint8:
        raise ValueError(f"out must be uint8 {(h, w, 3)}, got {out.dtype} {out.shape}")
    return out


def plausible_mpp(value: object) -> float | None:
    """`value` as float if it is a plausible microns-per-pixel, else None."""
    try:
        mpp = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    if not math.isfinite(mpp) or not MPP_RANGE[0] <= mpp <= MPP_RANGE[1]:
        return None
    return mpp


def mpp_from_properties(props: dict[str, str], *, source: str = "slide") -> float | None:
    """Microns per pixel from OpenSlide properties: `openslide.mpp-x`, else the TIFF resolution
    tags. Missing or implausible values give None and a warning (extraction works in pixels)."""
    raw = props.get("openslide.mpp-x")
    if raw is None:
        unit = props.get("tiff.ResolutionUnit", "").lower()
        res = props.get("tiff.XResolution")
        per_um = {"centimeter": 1e4, "inch": 25400.0}.get(unit)
        if res is not None and per_um is not None:
            try:
                raw = str(per_um / float(res))
            except (ValueError, ZeroDivisionError):
                raw = None
    if raw is None:
        warnings.warn(f"{source}: no microns-per-pixel in the metadata; mpp recorded as None",
                      stacklevel=2)
        return None
    mpp = plausible_mpp(raw)
    if mpp is None:
        warnings.warn(f"{source}: implausible microns-per-pixel {raw} (outside "
                      f"{MPP_RANGE[0]}-{MPP_RANGE[1]} um/px); mpp recorded as None", stacklevel=2)
    return mpp


def _best_level(downsamples: Sequence[float], downsample: float) -> int:
    """The highest level whose downsample is at most `downsample` (1e-3 slack)."""
    best = 0
    for i, d in enumerate(downsamples):
        if d <= downsample * (1 + 1e-3):
            best = i
    return best


def _thumbnail_from_levels(slide: SlideReader, max_size: int) -> tuple[np.ndarray, float]:
    from PIL import Image

    if max_size < 1:
        raise ValueError(f"thumbnail max_size must be >= 1, got {max_size}")
    w0, h0 = slide.dimensions
    downsample = max(w0, h0) / max_size
    if downsample <= 1:
        downsample = 1.0
    tw, th = max(1, round(w0 / downsample)), max(1, round(h0 / downsample))
    level = _best_level(slide.level_downsamples, downsample)
    lw, lh = slide.level_dimensions[level]
    ds_level = slide.level_downsamples[level]
    scale = downsample / ds_level  # level pixels per thumb pixel
    rows_per_band = max(1, int(_THUMB_BAND_BYTES // max(1, lw * 4 * scale)))
    out = np.empty((th, tw, 3), np.uint8)
    for t0 in range(0, th, rows_per_band):
        t1 = min(th, t0 + rows_per_band)
        r0, r1 = round(t0 * scale), min(lh, max(round(t0 * scale) + 1, round(t1 * scale)))
        band = slide.read_region((0, round(r0 * ds_level)), level, (lw, r1 - r0))
        if band.shape[:2] == (t1 - t0, tw):
            out[t0:t1] = band
        else:
            img = Image.fromarray(band).resize((tw, t1 - t0), Image.Resampling.BOX)
            out[t0:t1] = np.asarray(img)
    return out, w0 / tw


class TiffTiles:
    """Direct tile reads for TIFF-based slides (generic TIFF, Aperio SVS): the tile bytes are
    read with `os.pread` and decoded by tifffile/imagecodecs, skipping OpenSlide's per-tile
    pipeline (measured here: ~2.7x faster than `read_region` for random 300 px patches).

    Used only where it gives OpenSlide's exact pixels: a level is served only after its first
    region read both ways compared equal; any difference, decode error, missing tile, or region
    not wholly inside the level sends that read (and for differences, the level for good) back to
    OpenSlide. Decoded tiles are kept in a small FIFO cache (at most `cache_tiles`); reads from
    several threads are safe.
    """

    SUPPORTED_COMPRESSIONS = frozenset({1, 5, 7, 8, 32946})  # none, LZW, JPEG, deflate
    SUPPORTED_PHOTOMETRIC = frozenset({1, 2, 6})  # minisblack, RGB, YCbCr

    def __init__(self, path: Path, level_dimensions: Sequence[tuple[int, int]], *,
                 cache_tiles: int = 64) -> None:
        import os

        import tifffile

        self._tif = tifffile.TiffFile(str(path))
        self._fd = os.open(str(path), os.O_RDONLY)
        self.pages: dict[int, object] = {}
        for level, dims in enumerate(level_dimensions):
            matches = [p for p in self._tif.pages
                       if getattr(p, "is_tiled", False) and (p.imagewidth, p.imagelength) == dims]
            if len(matches) == 1 and self._supported(matches[0]):
                self.pages[level] = matches[0]
        self.verified: dict[int, bool] = {}
        self._cache: dict[tuple[int, int], np.ndarray] = {}
        self._cache_tiles = max(1, cache_tiles)
        self._lock = threading.Lock()

    @classmethod
    def _supported(cls, page: object) -> bool:
        p = page
        return (int(p.compression) in cls.SUPPORTED_COMPRESSIONS  # type: ignore[attr-defined]
                and int(p.photometric) in cls.SUPPORTED_PHOTOMETRIC  # type: ignore[attr-defined]
                and p.bitspersample == 8 and p.samplesperpixel in (1, 3)  # type: ignore
                and int(p.planarconfig) == 1 and p.imagedepth == 1  # type: ignore
                and len(p.dataoffsets) == len(p.databytecounts))  # type: ignore[attr-defined]

    def usable(self, level: int) -> bool:
        return level in self.pages and self.verified.get(level, True)

    def _tile(self, level: int, index: int) -> np.ndarray | None:
        import os

        key = (level, index)
        with self._lock:
            tile = self._cache.get(key)
        if tile is not None:
            return tile
        page = self.pages[level]
        count = int(page.databytecounts[index])  # type: ignore[attr-defined]
        if count == 0:
            return None
        data = os.pread(self._fd, count, int(page.dataoffsets[index]))  # type: ignore
        seg, _, _ = page.decode(data, index, jpegtables=page.jpegtables)  # type: ignore
        tile = np.asarray(seg)[0]
        with self._lock:  # readers may share a slide across threads (predict does)
            while len(self._cache) >= self._cache_tiles:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = tile
        return tile

    def read(self, level: int, x: int, y: int, w: int, h: int,
             out: np.ndarray) -> bool:
        """Fill `out` (h, w, 3) with level pixels [y, y + h) x [x, x + w); False (out untouched
        or partly written) when this read must go to OpenSlide."""
        page = self.pages[level]
        iw, ih = page.imagewidth, page.imagelength  # type: ignore[attr-defined]
        if x < 0 or y < 0 or x + w > iw or y + h > ih or w <= 0 or h <= 0:
            return False
        tw, th = page.tilewidth, page.tilelength  # type: ignore[attr-defined]
        across = -(-iw // tw)
        for ty in range(y // th, (y + h - 1) // th + 1):
            for tx in range(x // tw, (x + w - 1) // tw + 1):
                try:
                    tile = self._tile(level, ty * across + tx)
                except Exception:  # any decoder trouble: let OpenSlide read (and report) it
                    return False
                if tile is None:
                    return False
                x0, y0 = max(x, tx * tw), max(y, ty * th)
                x1, y1 = min(x + w, (tx + 1) * tw), min(y + h, (ty + 1) * th)
                src = tile[y0 - ty * th:y1 - ty * th, x0 - tx * tw:x1 - tx * tw]
                out[y0 - y:y1 - y, x0 - x:x1 - x] = src if src.shape[2] == 3 else src[..., :1]
        return True

    def close(self) -> None:
        import os

        os.close(self._fd)
        self._tif.close()
        self._cache.clear()


class OpenSlideReader:
    """A slide read through OpenSlide. Regions come back as RGB uint8, transparent pixels
    (outside the scanned area) composited over the slide's background colour (white)."""

    def __init__(self, path: str | Path, *, direct_tiles: bool = True) -> None:
        import openslide

        self.path = Path(path)
        open_path = self.path
        if self.path.is_dir():  # a DICOM series folder: OpenSlide opens any one of its files
            dcms = sorted(p for p in self.path.iterdir() if p.suffix.lower() == ".dcm")
            if not dcms:
                raise SlideError(f"{self.path}: a folder without .dcm files is not a slide; "
                                 "pass a slide file or a DICOM series folder")
            open_path = dcms[0]
        try:
            self._osr = openslide.OpenSlide(str(open_path))
        except (openslide.OpenSlideError, OSError, ValueError) as exc:
            cause = str(exc) or type(exc).__name__
            raise SlideError(f"{self.path}: cannot open as a slide ({type(exc).__name__}: "
                             f"{cause}); check the file is a complete whole-slide image in a "
                             "format OpenSlide reads, or move it out of the slide folder") from exc
        osr = self._osr
        self.dimensions = tuple(osr.dimensions)
        self.level_count = osr.level_count
        self.level_dimensions = tuple(tuple(d) for d in osr.level_dimensions)
        self.level_downsamples = tuple(float(d) for d in osr.level_downsamples)
        self.properties = dict(osr.properties)
        self.vendor = self.properties.get("openslide.vendor")
        bg = self.properties.get("openslide.background-color", "FFFFFF")
        try:
            self._background = np.array([int(bg[i:i + 2], 16) for i in (0, 2, 4)], np.uint8)
        except ValueError:
            self._background = np.array([255, 255, 255], np.uint8)
        self._tiles: TiffTiles | None = None
        if direct_tiles and self.vendor in ("generic-tiff", "aperio"):
            try:
                self._tiles = TiffTiles(open_path, self.level_dimensions)
            except Exception:  # not parseable by tifffile: OpenSlide alone reads it
                self._tiles = None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            self.mpp = mpp_from_properties(self.properties, source=str(self.path))
        self.warnings = [str(w.message) for w in caught]
        for message in self.warnings:
            warnings.warn(message, stacklevel=2)

    def read_region(self, location_level0: tuple[int, int], level: int,
                    size: tuple[int, int], *, out: np.ndarray | None = None) -> np.ndarray:
        """RGB uint8 (h, w, 3) of `level` pixels from level-0 `location_level0`, written into
        `out` when given. Pixels equal OpenSlide's `read_region` (TIFF tiles may be decoded
        directly, see TiffTiles); transparent ones are composited over the background."""
        x0, y0 = int(location_level0[0]), int(location_level0[1])
        w, h = int(size[0]), int(size[1])
        if not 0 <= level < self.level_count:
            raise SlideError(f"{self.path}: level {level} out of range 0..{self.level_count - 1}")
        out = _check_out(out, w, h)
        tiles = self._tiles
        if tiles is not None and tiles.usable(level):
            ds = self.level_downsamples[level]
            xl, yl = x0 / ds, y0 / ds
            if xl == int(xl) and yl == int(yl) and tiles.read(level, int(xl), int(yl), w, h, out):
                if level in tiles.verified:
                    return out
                # first read of this level: compare (up to 512 x 512 of) it with OpenSlide
                vw, vh = min(w, 512), min(h, 512)
                ref = self._openslide_region(x0, y0, level, vw, vh,
                                             np.empty((vh, vw, 3), np.uint8))
                tiles.verified[level] = bool(np.array_equal(ref, out[:vh, :vw]))
                if tiles.verified[level]:
                    return out
                warnings.warn(f"{self.path}: direct tile decoding of level {level} differs "
                              "from OpenSlide; reading through OpenSlide", stacklevel=2)
        return self._openslide_region(x0, y0, level, w, h, out)

    def _openslide_region(self, x0: int, y0: int, level: int, w: int, h: int,
                          out: np.ndarray) -> np.ndarray:
        """openslide_read_region straight into a numpy buffer (premultiplied ARGB), no PIL."""
        import ctypes
        import sys

        import openslide
        from openslide import lowlevel

        if w == 0 or h == 0:
            return out
        buf = np.empty((h, w), np.uint32)
        try:
            lowlevel._read_region(self._osr._osr, buf.ctypes.data_as(
                ctypes.POINTER(ctypes.c_uint32)), x0, y0, level, w, h)
        except (openslide.OpenSlideError, OSError, ValueError) as exc:
            raise SlideError(f"{self.path}: cannot read region at {(x0, y0)} level {level} "
                             f"size {(w, h)} ({type(exc).__name__}: {exc}); the file's pixel "
                             "data is corrupt or unsupported") from exc
        argb = buf.view(np.uint8).reshape(h, w, 4)
        if sys.byteorder == "little":  # bytes B, G, R, A
            rgb, alpha = argb[..., 2::-1], argb[..., 3]
        else:  # bytes A, R, G, B
            rgb, alpha = argb[..., 1:], argb[..., 0]
        if alpha.min() < 255:  # premultiplied: composite over the background colour
            a = alpha[..., None].astype(np.uint16)
            out[...] = np.minimum(rgb + (self._background * (255 - a) + 127) // 255, 255)
        else:
            out[...] = rgb
        return out

    def thumbnail(self, max_size: int) -> tuple[np.ndarray, float]:
        return _thumbnail_from_levels(self, max_size)

    def close(self) -> None:
        if self._tiles is not None:
            self._tiles.close()
        self._osr.close()

    def __enter__(self) -> OpenSlideReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"OpenSlideReader({str(self.path)!r}, {self.dimensions})"


class ArraySlide:
    """An in-memory slide, mainly for tests: level 0 is `rgb`; lower levels are box-downsampled
    by the given integer factors. A complete `SlideReader` (regions outside are white, like
    OpenSlide's background), so every stage function that takes a reader takes it."""

    vendor: str | None = "array"

    def __init__(self, rgb: np.ndarray, *, downsamples: Sequence[int] = (1,),
                 mpp: float | None = 0.25, path: str | Path = "<array>") -> None:
        rgb = np.asarray(rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise SlideError(f"{path}: ArraySlide needs uint8 (H, W, 3), got {rgb.dtype} "
                             f"{rgb.shape}")
        if not downsamples or downsamples[0] != 1:
            raise SlideError(f"{path}: level downsamples must start with 1, got {downsamples}")
        if any(int(d) != d or d < 1 for d in downsamples):
            raise SlideError(f"{path}: level downsamples must be integers >= 1, got "
                             f"{downsamples}")
        if mpp is not None and plausible_mpp(mpp) is None:
            raise SlideError(f"{path}: mpp {mpp} is outside the plausible range "
                             f"{MPP_RANGE[0]}-{MPP_RANGE[1]} um/px; pass None when unknown")
        self.path = Path(path)
        self.mpp = mpp
        self.properties: dict[str, str] = {}
        if mpp is not None:
            self.properties["openslide.mpp-x"] = self.properties["openslide.mpp-y"] = str(mpp)
        self.warnings: list[str] = []
        self._levels = []
        for d in (int(d) for d in downsamples):
            h, w = rgb.shape[0] // d, rgb.shape[1] // d
            if h < 1 or w < 1:
                raise SlideError(f"{path}: downsample {d} leaves no pixel of a "
                                 f"{rgb.shape[1]}x{rgb.shape[0]} image")
            lev = rgb[: h * d, : w * d].reshape(h, d, w, d, 3).mean(axis=(1, 3))
            self._levels.append(np.round(lev).astype(np.uint8) if d > 1 else rgb)
        self.level_count = len(self._levels)
        self.level_dimensions = tuple((a.shape[1], a.shape[0]) for a in self._levels)
        self.dimensions = self.level_dimensions[0]
        self.level_downsamples = tuple(float(d) for d in downsamples)

    def read_region(self, location_level0: tuple[int, int], level: int,
                    size: tuple[int, int], *, out: np.ndarray | None = None) -> np.ndarray:
        if not 0 <= level < self.level_count:
            raise SlideError(f"{self.path}: level {level} out of range 0..{self.level_count - 1}")
        arr = self._levels[level]
        d = self.level_downsamples[level]
        x, y = int(location_level0[0] // d), int(location_level0[1] // d)
        w, h = int(size[0]), int(size[1])
        out = _check_out(out, w, h)
        out[...] = 255
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + w, arr.shape[1]), min(y + h, arr.shape[0])
        if x1 > x0 and y1 > y0:
            out[y0 - y:y1 - y, x0 - x:x1 - x] = arr[y0:y1, x0:x1]
        return out

    def thumbnail(self, max_size: int) -> tuple[np.ndarray, float]:
        return _thumbnail_from_levels(self, max_size)

    def close(self) -> None:
        pass

    def __enter__(self) -> ArraySlide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ArraySlide({str(self.path)!r}, {self.dimensions})"


def open_slide(path: str | Path, *, direct_tiles: bool = True) -> OpenSlideReader:
    """Open a slide file (any format OpenSlide reads) or a DICOM series folder.

    `direct_tiles=False` reads every pixel through OpenSlide (see TiffTiles). Raises SlideError
    naming the file and the cause when it is missing or not a readable slide.
    """
    path = Path(path)
    if not path.exists():
        raise SlideError(f"{path}: no such slide file; check the path")
    return OpenSlideReader(path, direct_tiles=direct_tiles)


# --- slide identity and discovery ----------------------------------------------------------
#
# The one home of "which files are slides, and what is each one called". A slide's id names its
# zarr group in the store, its output files (`S.csv`, `S_tumor_map.tif`), its row in the labels
# CSV and in scores.csv; everything matches ids made by `slide_id`.


def safe_id(name: str) -> str:
    """`name` made safe as one file name and one zarr group name, and nothing more: Unicode
    letters are kept (NFC-normalized); path separators, whitespace, control and format
    characters and the characters Windows forbids (`:*?"<>|`) become `_`; runs of dots become
    `_`; leading and trailing dots and underscores go (no hidden files, no `..`, no zarr-reserved
    `__` prefix). Idempotent. SlideError when nothing usable is left or the id is too long."""
    text = unicodedata.normalize("NFC", str(name))
    text = "".join("_" if unicodedata.category(c)[0] == "C" else c for c in text)
    text = _UNSAFE_ID_CHARS.sub("_", text)
    text = re.sub(r"\.{2,}", "_", text).strip("._")
    if not text:
        raise SlideError(f"slide name {name!r} leaves no usable id after removing unsafe "
                         "characters (path separators, control characters, dots); rename the "
                         "file")
    if len(text.encode("utf-8")) > _MAX_ID_BYTES:
        raise SlideError(f"slide name {name[:40]!r}... gives an id of "
                         f"{len(text.encode('utf-8'))} bytes, over {_MAX_ID_BYTES} (file "
                         "systems allow 255 with the output suffixes); rename the file shorter")
    return text


def strip_slide_suffix(name: str) -> str:
    """`name` without its slide suffix: `x.ome.tif` -> `x`, `tumor_001.TIF` -> `tumor_001`;
    a name without one (`Test_001`, `a.b`) is returned unchanged."""
    low = name.lower()
    for suffix in MULTI_SUFFIXES:
        if low.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    dot = name.rfind(".")
    if dot > 0 and low[dot:] in SLIDE_SUFFIXES:
        return name[:dot]
    return name


def _dicom_series_name(folder: Path) -> str:
    """The name of the DICOM series in `folder`: the common prefix of its `.dcm` file stems
    (`boxes_0.dcm`, `boxes_1.dcm` -> `boxes`), else the folder's name."""
    try:
        stems = sorted(e.name[:-4] for e in os.scandir(folder)
                       if e.name.lower().endswith(".dcm") and not e.name.startswith("."))
    except OSError:
        stems = []
    return _common_prefix(stems).rstrip("_-. ") or folder.resolve().name


def slide_id(path: str | Path) -> str:
    """The id of the slide at `path` (or of a slide named `path` in a CSV): its name without the
    slide suffix, made safe by `safe_id`. `x.ome.tif` -> `x`; `CMU-1 small.svs` -> `CMU-1_small`;
    `腫瘍.tif` -> `腫瘍`; a DICOM series, given as its folder or as any of its existing `.dcm`
    files, is named by `_dicom_series_name`. Only directories and existing `.dcm` files are
    looked at on disk; everything else is decided by the name alone."""
    p = Path(path)
    if p.suffix.lower() == ".dcm" and _on_disk(p, "file"):
        return safe_id(_dicom_series_name(p.parent))
    if p.name and not p.name.lower().endswith(".zarr") and _on_disk(p, "dir"):
        return safe_id(_dicom_series_name(p))
    return safe_id(strip_slide_suffix(p.name or str(path)))


def _on_disk(path: Path, kind: str) -> bool:
    """`path.is_file()` / `is_dir()`, False for names no file system takes (too long, NUL)."""
    try:
        return path.is_file() if kind == "file" else path.is_dir()
    except (OSError, ValueError):
        return False


def is_mask_path(path: str | Path) -> bool:
    """`S_mask.tif`, `S_Mask.tiff` (an annotation mask) or `S_tumor_map.tif` (lymph's map)."""
    stem = strip_slide_suffix(Path(path).name).lower()
    return stem != Path(path).name.lower() and stem.endswith(NOT_SLIDE_ENDINGS)


def is_slide_path(path: str | Path) -> bool:
    """Whether a file in a slide folder is a slide candidate (opened, and reported if it fails):
    a slide suffix or a file OpenSlide detects; masks, maps, hidden files and tables never."""
    p = Path(path)
    if p.name.startswith(".") or is_mask_path(p):
        return False
    suffix = p.suffix.lower()
    if suffix in SLIDE_SUFFIXES:
        return True
    if suffix in _NOT_SLIDE_SUFFIXES or not _on_disk(p, "file"):
        return False
    import openslide

    try:
        return openslide.OpenSlide.detect_format(str(p)) is not None
    except Exception:  # unreadable: not a slide candidate (permissions are reported on open)
        return False


@dataclass(frozen=True)
class FoundSlide:
    """One slide found by `discover_slides`. `id`: unique within the discovery (see there);
    `path`: what to open (a DICOM series: its first `.dcm` file; OpenSlide finds the rest);
    `name`: the slide's name relative to the searched folder, `/`-separated (a DICOM series:
    `sub/<series>.dcm`); `files`: every file of the slide."""

    id: str
    path: Path
    name: str
    files: tuple[Path, ...]


@dataclass(frozen=True)
class SlideProblem:
    """A slide that cannot take part: `path` (the file, or the first of the colliding files)
    and a one-line `message` naming the file(s) and the fix. Callers list these as failed."""

    path: Path
    message: str


@dataclass(frozen=True)
class Discovery:
    """The result of `discover_slides`: the usable `slides` (sorted by name) and the `problems`
    (dangling links, id collisions, unusable names), which the batch reports as failed slides
    while the other slides go on."""

    root: Path
    slides: tuple[FoundSlide, ...]
    problems: tuple[SlideProblem, ...] = ()

    def __len__(self) -> int:
        return len(self.slides)

    def __iter__(self) -> Iterator[FoundSlide]:
        return iter(self.slides)

    @property
    def paths(self) -> list[Path]:
        return [s.path for s in self.slides]

    def failed(self) -> list[tuple[str, str]]:
        """The problems as (source, "file: cause") pairs, the form batch summaries list."""
        return [(str(p.path), p.message) for p in self.problems]


def discover_slides(path: str | Path) -> Discovery:
    """The slides under `path`: a folder (searched recursively, hidden and `*.zarr` folders
    skipped), or one slide file or DICOM series folder.

    Candidates are decided by `is_slide_path`. The `.dcm` files of one folder are ONE DICOM
    slide. Ids are `slide_id(path)`; where two slides' ids collide (case-insensitively, since
    stores and outputs may live on case-insensitive disks), both take their name with the suffix
    (`boxes.tiff`, `boxes.dcm` -> `boxes_tiff`, `boxes_dcm`), then their relative path
    (`a/x.tif`, `b/x.tif` -> `a_x_tif`, `b_x_tif`); slides still colliding after that
    (`tumor 001.tif` beside `tumor_001.tif`) are problems naming every file involved. Dangling
    symlinks with a slide suffix are problems too. SlideError when `path` does not exist.
    """
    root = Path(path)
    if not root.exists():
        kind = "dangling symlink" if root.is_symlink() else "no such slide file or folder"
        raise SlideError(f"{root}: {kind}; pass the folder that holds the slides (or one slide)")
    if root.is_file() or (root.is_dir() and _is_dicom_folder(root)):
        files = tuple(sorted(root.glob("*.dcm"))) if root.is_dir() else (root,)
        found = [(root.name, files[0] if root.is_dir() else root, files)]
        return _assign_ids(root.parent, found, [])
    found, problems = _walk(root)
    return _assign_ids(root, found, problems)


def _is_dicom_folder(folder: Path) -> bool:
    """A folder whose visible files are all `.dcm` (a DICOM series given on its own)."""
    files = [e for e in os.scandir(folder) if not e.name.startswith(".")]
    return bool(files) and all(e.is_file() and e.name.lower().endswith(".dcm") for e in files)


_Found = tuple[str, Path, tuple[Path, ...]]  # (relative name, path to open, all files)


def _walk(root: Path) -> tuple[list[_Found], list[SlideProblem]]:
    """Candidate slides under `root` (sorted) and the dangling links among them."""
    found: list[_Found] = []
    problems: list[SlideProblem] = []
    dicom: dict[Path, list[Path]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames
                             if not d.startswith(".") and not d.lower().endswith(".zarr"))
        folder = Path(dirpath)
        for fname in sorted(filenames):
            p = folder / fname
            rel = p.relative_to(root).as_posix()
            if fname.startswith("."):
                continue
            if p.is_symlink() and not p.exists():
                if Path(fname).suffix.lower() in SLIDE_SUFFIXES:
                    problems.append(SlideProblem(p, f"{p}: dangling symlink to "
                                                    f"{os.readlink(p)}; fix or remove the link"))
                continue
            if fname.lower().endswith(".dcm"):
                dicom.setdefault(folder, []).append(p)
            elif is_slide_path(p):
                found.append((rel, p, (p,)))
    for folder, files in dicom.items():
        rel_folder = folder.relative_to(root).as_posix()
        name = f"{_dicom_series_name(folder)}.dcm"
        found.append((name if rel_folder == "." else f"{rel_folder}/{name}", files[0],
                      tuple(files)))
    return sorted(found), problems


def _id_candidates(name: str, path: Path) -> list[str]:
    """Ids of one slide, most preferred first: its `slide_id`, its name with the suffix, its
    relative path."""
    base = name.rsplit("/", 1)[-1]
    return [slide_id(path), safe_id(base.replace(".", "_")),
            safe_id(name.replace("/", "_").replace(".", "_"))]


def _assign_ids(root: Path, found: list[_Found], problems: list[SlideProblem]) -> Discovery:
    """Unique ids for `found` (see `discover_slides`); unusable names and collisions become
    problems."""
    cands: list[tuple[_Found, list[str]]] = []
    for item in found:
        try:
            cands.append((item, _id_candidates(item[0], item[1])))
        except SlideError as exc:
            problems.append(SlideProblem(item[1], str(exc)))
    ids = [c[0] for _, c in cands]
    for level in (1, 2):
        counts: dict[str, int] = {}
        for i in ids:
            counts[i.casefold()] = counts.get(i.casefold(), 0) + 1
        ids = [c[level] if counts[i.casefold()] > 1 else i
               for (_, c), i in zip(cands, ids, strict=True)]
    groups: dict[str, list[int]] = {}
    for k, i in enumerate(ids):
        groups.setdefault(i.casefold(), []).append(k)
    slides: list[FoundSlide] = []
    for k, ((name, path, files), _) in enumerate(cands):
        same = groups[ids[k].casefold()]
        if len(same) > 1:
            others = ", ".join(str(cands[j][0][1]) for j in same)
            problems.append(SlideProblem(path, f"{path}: slide id {ids[k]!r} is also the id of "
                                         f"another slide ({others}); rename one of them"))
        else:
            slides.append(FoundSlide(ids[k], path, name, files))
    return Discovery(root, tuple(sorted(slides, key=lambda s: s.name)), tuple(problems))


def _common_prefix(names: Sequence[str]) -> str:
    if not names:
        return ""
    first, last = min(names), max(names)
    i = 0
    while i < min(len(first), len(last)) and first[i] == last[i]:
        i += 1
    return first[:i] if len(names) > 1 else first
