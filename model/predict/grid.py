"""Where the windows go: the tiling of one slide level and how it falls on the map, and which
windows hold tissue.

Frames. ``level`` is the slide level the model runs at (the checkpoint's, ``store.level``);
``*_lvl`` are pixels of that level. The map is a grid of ``cell`` x ``cell`` level pixels: its
downsample vs level 0 is ``map_downsample = cell * level_downsample`` (16 by default), so map
pixel (i, j) covers level-0 ``[j * map_downsample, (j + 1) * map_downsample)``.

Tiling (``overlap``). ``"margin"``: tiles of ``window`` level pixels whose ``margin`` (4.5% of
the window, at least one map cell) is cut off each side; each tile's centre (``stride = window -
2 * margin``) is averaged over map cells and written as it is, so every map cell comes from
exactly one tile and each pixel is computed about 1.2 times. Tiles at the slide's edges shift
inwards to hold real tissue rather than glass. For a window-independent model tiles grow to
``BIG_TILE`` (1,024 px, ``fitted_tile``), fewer borders and less overhead; for a GroupNorm model
(``--overlap margin`` asked for) the window stays the training patch size rounded up to a
multiple of both the model's multiple and ``2 * cell``. ``"half"``: the tiling before issue 12
(bench/bench_predict.py's baseline): windows every ``stride`` pixels (half a window), Hann-
blended (``blend.py``); every pixel computed 4 times. Windows whose footprint holds no tissue
(thumbnail tissue mask) are skipped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lymph.data.errors import ConfigError
from lymph.model.predict.config import BIG_TILE, MAP_DOWNSAMPLE, MARGIN_FRACTION, check_stride


@dataclass(frozen=True)
class Grid:
    """Where the windows go and how they fall on the map (see the module doc for frames)."""

    level: int
    level_downsample: float
    width_lvl: int
    height_lvl: int
    window: int
    stride: int
    cell: int
    xs_lvl: tuple[int, ...]  # window origins (blend) or kept-region origins (crop), k * stride
    ys_lvl: tuple[int, ...]
    mode: str = "blend"  # "blend": Hann-weighted windows; "crop": tiles whose margin is cut off
    margin: int = 0  # crop: level px cut off each side of a tile; stride = window - 2 * margin

    @property
    def footprint(self) -> int:
        """Level px of map a window writes: the whole window (blend), its centre (crop)."""
        return self.stride if self.mode == "crop" else self.window

    def tile_origin(self, x_lvl: int, y_lvl: int) -> tuple[int, int]:
        """Where the window whose map footprint starts at (x_lvl, y_lvl) is read. Crop tiles
        start ``margin`` before their centre, shifted inwards at the slide's edges (more real
        context than glass) while still holding their whole centre."""
        if self.mode != "crop":
            return x_lvl, y_lvl

        def one(o: int, length: int) -> int:
            return max(0, o - 2 * self.margin, min(o - self.margin, length - self.window))

        return one(x_lvl, self.width_lvl), one(y_lvl, self.height_lvl)

    @property
    def map_downsample(self) -> float:
        return self.cell * self.level_downsample

    @property
    def map_width(self) -> int:
        return -(-self.width_lvl // self.cell)

    @property
    def map_height(self) -> int:
        return -(-self.height_lvl // self.cell)

    @property
    def window_cells(self) -> int:
        return self.window // self.cell


def _origins(length: int, window: int, stride: int) -> tuple[int, ...]:
    """0, stride, ... until a window reaches ``length`` (the last may overhang the edge)."""
    n = max(0, -(-(length - window) // stride)) + 1
    return tuple(i * stride for i in range(n))


def plan_grid(
    level_dims: tuple[int, int],
    level_downsample: float,
    *,
    level: int,
    patch_size: int,
    multiple: int,
    window: int | None = None,
    stride: int | None = None,
    map_downsample: float = MAP_DOWNSAMPLE,
    overlap: str = "half",
    margin: int | None = None,
) -> Grid:
    """Window size, stride and map cell for one slide level.

    ``cell = round(map_downsample / level_downsample)`` (at least 1). The window defaults to
    ``patch_size`` rounded up to a multiple of ``lcm(multiple, 2 * cell)``; a given window is
    rounded up to a multiple of ``lcm(multiple, cell)``. ``overlap="half"``: Hann-blended
    windows, the stride (default half the window) rounded to a multiple of ``cell``; ConfigError
    when it exceeds the window. ``overlap="margin"``: tiles whose ``margin`` (default
    ``MARGIN_FRACTION`` of the window, at least a cell; rounded to cells) is cut off each side,
    the rest written as it is: stride = window - 2 * margin.
    """
    if overlap == "margin":
        return _plan_crop_grid(level_dims, level_downsample, level=level, patch_size=patch_size,
                               multiple=multiple, window=window, map_downsample=map_downsample,
                               margin=margin)
    cell = max(1, round(map_downsample / level_downsample))
    if window is None:
        unit = math.lcm(multiple, 2 * cell)
        window = -(-patch_size // unit) * unit
    else:
        unit = math.lcm(multiple, cell)
        window = -(-window // unit) * unit
    if stride is None:
        stride = window // 2
    check_stride(stride, window)
    stride = max(cell, round(stride / cell) * cell)
    w, h = int(level_dims[0]), int(level_dims[1])
    return Grid(
        level=level,
        level_downsample=float(level_downsample),
        width_lvl=w,
        height_lvl=h,
        window=window,
        stride=stride,
        cell=cell,
        xs_lvl=_origins(w, window, stride),
        ys_lvl=_origins(h, window, stride),
    )


def _plan_crop_grid(
    level_dims: tuple[int, int], level_downsample: float, *, level: int, patch_size: int,
    multiple: int, window: int | None, map_downsample: float, margin: int | None,
) -> Grid:
    cell = max(1, round(map_downsample / level_downsample))
    unit = math.lcm(multiple, cell) if window is not None else math.lcm(multiple, 2 * cell)
    window = -(-(window or patch_size) // unit) * unit
    widest = (window - cell) // 2 // cell * cell  # keeps a centre of at least one cell
    if margin is None:
        margin = min(widest, max(cell, round(MARGIN_FRACTION * window / cell) * cell))
    else:
        margin = round(margin / cell) * cell
        if margin > widest:
            raise ConfigError(
                f"margin {margin} px leaves no centre of the {window} px tiles; use at most "
                f"{max(0, widest)} px (or a larger --window)"
            )
    stride = window - 2 * margin
    w, h = int(level_dims[0]), int(level_dims[1])
    return Grid(
        level=level, level_downsample=float(level_downsample), width_lvl=w, height_lvl=h,
        window=window, stride=stride, cell=cell,
        xs_lvl=tuple(range(0, max(w, 1), stride)), ys_lvl=tuple(range(0, max(h, 1), stride)),
        mode="crop", margin=margin,
    )


def fitted_tile(level_dims: tuple[int, int], patch_size: int, *, big: int = BIG_TILE) -> int:
    """The large tile for a window-independent model: at most ``big`` px, shrunk so that the
    fewest tiles cover the level's longer side without running far past it (a 1,536 px level
    takes two ~850 px tiles, not two of 1,024); never below the training patch."""
    centre = 1.0 - 2.0 * MARGIN_FRACTION
    longest = max(int(level_dims[0]), int(level_dims[1]), 1)
    n = math.ceil(longest / (big * centre))
    return max(patch_size, min(big, math.ceil(longest / n / centre)))


def summed_area(mask: np.ndarray) -> np.ndarray:
    """The zero-padded summed-area table of a boolean mask: any box's count in four lookups."""
    integral = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), np.int64)
    integral[1:, 1:] = mask.cumsum(0).cumsum(1)
    return integral


def tissue_windows(
    grid: Grid, tissue_thumb: np.ndarray, thumb_downsample: float
) -> list[tuple[int, int]]:
    """Window origins (x_lvl, y_lvl), row by row, whose footprint (``grid.footprint``) holds
    tissue in the thumbnail mask (a window counts when any thumbnail pixel it overlaps is
    tissue)."""
    mask = np.asarray(tissue_thumb, bool)
    integral = summed_area(mask)
    scale = grid.level_downsample / thumb_downsample  # thumb px per level px

    def spans(origins: tuple[int, ...], limit: int) -> tuple[np.ndarray, np.ndarray]:
        o = np.asarray(origins, np.float64)
        lo = np.clip(np.floor(o * scale), 0, limit).astype(np.int64)
        hi = np.clip(np.ceil((o + grid.footprint) * scale), 0, limit).astype(np.int64)
        return lo, np.minimum(np.maximum(hi, lo + 1), limit)

    r0, r1 = spans(grid.ys_lvl, mask.shape[0])
    c0, c1 = spans(grid.xs_lvl, mask.shape[1])
    counts = (
        integral[np.ix_(r1, c1)]
        - integral[np.ix_(r0, c1)]
        - integral[np.ix_(r1, c0)]
        + integral[np.ix_(r0, c0)]
    )
    rows, cols = np.nonzero(counts > 0)  # row-major order
    return [(grid.xs_lvl[c], grid.ys_lvl[r]) for r, c in zip(rows, cols, strict=True)]


def tissue_area_mpx(
    grid: Grid, origins: Sequence[tuple[int, int]], tissue_thumb: np.ndarray,
    thumb_downsample: float,
) -> float:
    """Level-0 megapixels of thumbnail tissue under the stride cells of ``origins``: each
    window is credited with the tissue of the cell it newly covers (its central ``stride``
    square: the kept centre of a crop tile, the middle half of a half-overlap window), counted
    as the thumbnail pixels whose centres fall inside it. Cells do not overlap, so glass and
    repeated pixels are never counted, whatever the tile size."""
    if not origins:
        return 0.0
    mask = np.asarray(tissue_thumb, bool)
    integral = summed_area(mask)
    scale = grid.level_downsample / thumb_downsample  # thumb px per level px
    offset = (grid.footprint - grid.stride) / 2
    o = np.asarray(origins, np.float64) + offset  # cell origins (x, y), level px

    def bounds(start: np.ndarray, end: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray]:
        # thumbnail pixel i is inside when its centre (i + 0.5) lies in [start, end)
        lo = np.clip(np.ceil(start * scale - 0.5), 0, limit).astype(np.int64)
        hi = np.clip(np.ceil(end * scale - 0.5), 0, limit).astype(np.int64)
        return lo, np.maximum(hi, lo)

    x0, x1 = bounds(o[:, 0], np.minimum(o[:, 0] + grid.stride, grid.width_lvl), mask.shape[1])
    y0, y1 = bounds(o[:, 1], np.minimum(o[:, 1] + grid.stride, grid.height_lvl), mask.shape[0])
    counts = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
    return float(counts.sum()) * thumb_downsample**2 / 1e6



Rect = tuple[int, int, int, int]  # (x_lvl, y_lvl, width, height) of a window read


def _trim_axis(t0: int, t1: int, centre: tuple[int, int], tile: tuple[int, int], *,
               scale: float, margin: int, multiple: int) -> tuple[int, int]:
    """One axis of a trimmed tile: thumbnail tissue ``[t0, t1)`` (thumb px) -> level px inside
    the centre ``[c0, c1)``, grown by ``margin`` and to a multiple of ``multiple``, kept inside
    the full tile ``[w0, w0 + window)``. Returns (start, length)."""
    (c0, c1), (w0, window) = centre, tile
    lo = max(c0, math.floor(t0 / scale)) - margin
    hi = min(c1, math.ceil(t1 / scale)) + margin
    lo, hi = max(lo, w0), min(hi, w0 + window)
    length = min(window, -(-(hi - lo) // multiple) * multiple)
    return min(lo, w0 + window - length), length


def trim_tiles(grid: Grid, origins: Sequence[tuple[int, int]], tissue_thumb: np.ndarray,
               thumb_downsample: float, *, multiple: int) -> list[Rect]:
    """Crop mode, window-independent models: for each tile (its centre at ``origins``) the
    smallest window inside it that holds its centre's tissue (the thumbnail mask's bounding
    box) and ``grid.margin`` of context around it, sides a multiple of ``multiple``. Centre
    cells outside it hold no tissue and get probability 0; the rest come out as from the full
    tile, since the model's output does not depend on the window. On a slide's edges and
    around small sections most tiles are mostly glass: this is what brings the inferred pixels
    per tissue pixel towards 1 (issue 23)."""
    if grid.mode != "crop":
        raise ValueError("only crop-mode tiles can be trimmed")
    mask = np.asarray(tissue_thumb, bool)
    scale = grid.level_downsample / thumb_downsample  # thumb px per level px
    rects: list[Rect] = []
    for ox, oy in origins:
        tx, ty = grid.tile_origin(ox, oy)
        cx1, cy1 = min(ox + grid.stride, grid.width_lvl), min(oy + grid.stride, grid.height_lvl)
        r0, r1 = math.floor(oy * scale), max(math.ceil(cy1 * scale), math.floor(oy * scale) + 1)
        c0, c1 = math.floor(ox * scale), max(math.ceil(cx1 * scale), math.floor(ox * scale) + 1)
        sub = mask[r0:r1, c0:c1]
        rows, cols = np.nonzero(sub.any(1))[0], np.nonzero(sub.any(0))[0]
        if not len(rows):
            rects.append((tx, ty, grid.window, grid.window))
            continue
        x, w = _trim_axis(c0 + int(cols[0]), c0 + int(cols[-1]) + 1, (ox, cx1),
                          (tx, grid.window), scale=scale, margin=grid.margin, multiple=multiple)
        y, h = _trim_axis(r0 + int(rows[0]), r0 + int(rows[-1]) + 1, (oy, cy1),
                          (ty, grid.window), scale=scale, margin=grid.margin, multiple=multiple)
        rects.append((x, y, w, h))
    return rects
