"""The `SlideReader` protocol every stage reads slides through, what any reader shares
(band-by-band thumbnails from the best level, microns per pixel from metadata), and the
in-memory `ArraySlide` for tests.

Frames: `*_level0` are level-0 pixel coordinates; `thumb` is the thumbnail frame, whose pixel
(i, j) covers level-0 [j * downsample, (j + 1) * downsample) horizontally.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from lymph.data.errors import SlideError

MPP_RANGE = (0.05, 20.0)
"""Plausible microns per pixel; outside it (e.g. 352.8 from a 72-dpi TIFF) mpp is unknown."""


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


def check_out(out: np.ndarray | None, w: int, h: int) -> np.ndarray:
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


def best_level(downsamples: Sequence[float], downsample: float) -> int:
    """The highest level whose downsample is at most `downsample` (1e-3 slack)."""
    best = 0
    for i, d in enumerate(downsamples):
        if d <= downsample * (1 + 1e-3):
            best = i
    return best


def thumbnail_from_levels(slide: SlideReader, max_size: int) -> tuple[np.ndarray, float]:
    from PIL import Image

    if max_size < 1:
        raise ValueError(f"thumbnail max_size must be >= 1, got {max_size}")
    w0, h0 = slide.dimensions
    downsample = max(w0, h0) / max_size
    if downsample <= 1:
        downsample = 1.0
    tw, th = max(1, round(w0 / downsample)), max(1, round(h0 / downsample))
    level = best_level(slide.level_downsamples, downsample)
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
        out = check_out(out, w, h)
        out[...] = 255
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + w, arr.shape[1]), min(y + h, arr.shape[0])
        if x1 > x0 and y1 > y0:
            out[y0 - y:y1 - y, x0 - x:x1 - x] = arr[y0:y1, x0:x1]
        return out

    def thumbnail(self, max_size: int) -> tuple[np.ndarray, float]:
        return thumbnail_from_levels(self, max_size)

    def close(self) -> None:
        pass

    def __enter__(self) -> ArraySlide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ArraySlide({str(self.path)!r}, {self.dimensions})"
