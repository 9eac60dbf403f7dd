"""Whole-slide tumor maps: tissue-only tiled inference without seams, with memory flat in the
slide's size; lesion detections and a slide score from the map.

Frames. ``level`` is the slide level the model runs at (the checkpoint's, ``store.level``);
``*_lvl`` are pixels of that level. The map is a grid of ``cell`` x ``cell`` level pixels: its
downsample vs level 0 is ``map_downsample = cell * level_downsample`` (16 by default), so map
pixel (i, j) covers level-0 ``[j * map_downsample, (j + 1) * map_downsample)``.

Tiling (``overlap``). ``"auto"`` (the default) is ``"margin"`` for a model whose output is
window-independent (``model.config.norm`` "batch", the default since issue 12, in eval mode, or
"none") and ``"half"`` for a GroupNorm model, whose maps margin tiles would move (each window is
normalised by its own statistics: 0.032 mean abs difference measured). ``"margin"``: tiles of
``window`` level pixels whose ``margin`` (4.5% of the window, at least one map cell) is cut off
each side; each tile's centre (``stride = window - 2 * margin``) is averaged over map cells and
written as it is, so every map cell comes from exactly one tile and each pixel is computed about
1.2 times. Tiles at the slide's edges shift inwards to hold real tissue rather than glass. For a
window-independent model tiles grow to ``BIG_TILE`` (1,024 px), fewer borders and less overhead;
for a GroupNorm model (``--overlap margin`` asked for) the window stays the training patch size
rounded up to a multiple of both the model's multiple and ``2 * cell``. ``"half"``: the tiling
before issue 12 (bench/bench_predict.py's baseline): windows every ``stride`` pixels (half a
window), weighted by a separable Hann window ``sin^2(pi (i + 1/2) / window)`` (which sums to one
at half-window overlap: no seams), summed cell by cell into the map and divided by the summed
weights; every pixel computed 4 times. Windows whose footprint holds no tissue (thumbnail tissue
mask) are skipped, and the finished map is zeroed outside the tissue mask (grown by two
thumbnail pixels): border windows are partly glass, which training never shows the model.

Coarse to fine (``screen``): the same tiles first run at ``screen`` times the level's
downsample (read from the nearest pyramid level, box-resized); full resolution runs only on the
tiles whose centre meets a cell where the screen's probability reaches ``screen_threshold``,
grown by ``screen_margin`` map cells; the other cells keep the screen's (low) values.

Speed. torch runs with every core this process may use on CPU (``threads``; divided among
``workers``), in ``torch.inference_mode`` and channels_last memory format (measured faster on
CPU with oneDNN convolutions); batches hold ``batch_size`` training-size windows' worth of
pixels. ``torch.compile`` was measured (CPU, torch 2.13): 56 s to compile and no faster per
window, so it is not used; ONNX Runtime is not a dependency.

Memory. ``"half"`` windows are processed in rows; only the map rows a pending window can still
touch are held in float (a band of ``(window + stride) / cell`` map rows); finished rows go
straight into the uint8 map; ``"margin"`` tiles write the uint8 map directly. The map is
``1 / map_downsample^2`` of the slide (39 MB at 100,000 x 100,000 px and downsample 16) and is
needed whole for lesion detection, which labels only the bounding box of the pixels above the
threshold; the slide score's blur runs in bands. A reader thread prefetches the next batch of
windows while the model runs. Peak RSS on a 100,000 x 100,000 slide: see bench/bench_predict.py.

Outputs for slide ``S`` in ``out``: ``S_tumor_map.tif`` (pyramidal uint8 0-255, mpp = slide mpp
x map_downsample), ``S_overlay.png``, ``S.csv`` / ``S.geojson`` / ``S.xml`` (detections: 8-
connected regions of map >= threshold, confidence = the region's maximum, located at that
maximum), and ``S``'s row in ``scores.csv`` (the maximum of the map after a Gaussian blur of
sigma 1 map pixel: a single hot map pixel does not make a slide positive).
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import queue
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from lymph.data.errors import CheckpointError, ConfigError, SlideError
from lymph.data.exports import Detection, write_asap_xml, write_camelyon_csv, write_geojson
from lymph.data.io import OutputManifest
from lymph.model.overlay import draw_overlay, overlay_title, truth_on_thumb
from lymph.model.precision import check_precision
from lymph.model.precision import describe as describe_precision
from lymph.model.predict_pipeline import SinkThread
from lymph.model.scale import scale_for_predict

MAP_DOWNSAMPLE = 16.0
THRESHOLD = 0.5
SMOOTH_SIGMA_PX = 1.0
THUMB_SIZE = 2048
TISSUE_MARGIN_THUMB = 2  # thumbnail px the tissue mask grows by before it masks the map
SCORES_CSV = "scores.csv"
OVERLAPS = ("auto", "margin", "half")
MARGIN_FRACTION = 0.045  # default margin per side: redundancy (T / (T - 2m))^2 near 1.2
BIG_TILE = 1024  # default tile (level px) for models whose output is window-independent
WINDOW_FREE_NORMS = ("batch", "none")  # eval-mode BatchNorm or no norm: no window statistics


# --- settings ------------------------------------------------------------------------------------


def check_stride(stride: int | None, window: int | None) -> None:
    """ConfigError when windows ``stride`` apart would leave gaps between windows of ``window``
    px (the one place this rule lives; None: not known yet)."""
    if window is not None and stride is not None and stride > window:
        raise ConfigError(
            f"stride {stride} > window {window} would leave gaps between windows; "
            "use a stride of at most the window (half of it blends best)"
        )


@dataclass(frozen=True)
class PredictConfig:
    """Everything ``lymph predict`` needs; every setting is validated here and only here.

    slides: a slide file or folder (only ``run`` needs it); level: slide level (default: the
    checkpoint's ``store.level``); window, stride: in pixels of that level (defaults: the
    training patch size rounded up, half of it); map_downsample: the map's target downsample vs
    level 0; threshold: detection threshold on probabilities; workers/scheduler: slides in
    parallel (dask) as in extraction; threads: torch CPU threads per slide (default: the cores
    divided among the workers); read_threads: threads reading windows ahead of the model, per
    slide (default: 1 on CPU, where the model is the bottleneck and more threads only contend
    with torch's; up to 8 on a GPU); max_windows: infer only that many tissue windows, a
    contiguous run from the middle of the tissue (a quick look, or a benchmark on a budget; the
    rest of the map is 0); progress: progress bars; write_score: merge each slide's row into
    ``out/scores.csv`` as it finishes (``predict_slides`` writes all rows at the end instead);
    force: overwrite files in ``out`` that lymph did not write (see
    ``lymph.data.io.OutputManifest``; without it such a file stops the run before any work).
    """

    checkpoint: Path
    out: Path
    slides: Path | None = None
    level: int | None = None
    window: int | None = None
    stride: int | None = None
    tta: bool = False
    batch_size: int = 8
    device: str = "auto"
    map_downsample: float = MAP_DOWNSAMPLE
    threshold: float = THRESHOLD
    workers: int = 1
    scheduler: str | None = None
    threads: int | None = None
    read_threads: int | None = None
    thumb_size: int = THUMB_SIZE
    max_windows: int | None = None
    progress: bool = True
    write_score: bool = True
    force: bool = False
    overlap: str = "auto"
    margin: int | None = None
    channels_last: bool = True
    screen: int | None = None
    screen_threshold: float = 0.1
    screen_margin: int | None = None
    precision: str = "auto"  # lymph.model.precision: bf16 autocast on CUDA and AMX CPUs
    mpp: float | None = None  # microns per level-0 pixel of slides that record none

    def __post_init__(self) -> None:
        check_precision(self.precision)
        if self.mpp is not None and (isinstance(self.mpp, bool) or not (
                isinstance(self.mpp, int | float) and self.mpp > 0)):
            raise ConfigError(f"mpp must be a number > 0 (microns per level-0 pixel), got "
                              f"{self.mpp!r}; e.g. --mpp 0.25 for a 40x scan")
        object.__setattr__(self, "checkpoint", Path(self.checkpoint))
        object.__setattr__(self, "out", Path(self.out))
        if self.slides is not None:
            object.__setattr__(self, "slides", Path(self.slides))
        for name in ("level", "window", "stride", "threads", "max_windows", "margin", "screen",
                     "screen_margin"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ConfigError(f"{name} must be an integer or None, got {value!r}")
        if self.level is not None and self.level < 0:
            raise ConfigError(f"level must be >= 0, got {self.level}")
        if self.window is not None and self.window < 16:
            raise ConfigError(f"window must be >= 16 px, got {self.window}; e.g. --window 320")
        if self.stride is not None and self.stride < 1:
            raise ConfigError(f"stride must be >= 1 px, got {self.stride}; e.g. half the window")
        check_stride(self.stride, self.window)
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        from lymph.model.bounds import check_predict_options

        check_predict_options(self.window, self.batch_size)
        if not 1.0 <= float(self.map_downsample) <= 1024.0:
            raise ConfigError(
                f"map_downsample must be within 1..1024, got {self.map_downsample}; e.g. 16"
            )
        if not 0.0 < float(self.threshold) < 1.0:
            raise ConfigError(f"threshold must be within (0, 1), got {self.threshold}")
        if self.workers < 1:
            raise ConfigError(f"workers must be >= 1, got {self.workers}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be >= 1, got {self.threads}")
        rt = self.read_threads
        if rt is not None and (isinstance(rt, bool) or not isinstance(rt, int) or rt < 1):
            raise ConfigError(f"read_threads must be an integer >= 1, got {self.read_threads!r}")
        if self.thumb_size < 64:
            raise ConfigError(f"thumb_size must be >= 64, got {self.thumb_size}")
        if self.max_windows is not None and self.max_windows < 1:
            raise ConfigError(f"max_windows must be >= 1 or None, got {self.max_windows}")
        self._check_tiling()

    def _check_tiling(self) -> None:
        if self.overlap not in OVERLAPS:
            raise ConfigError(f"overlap must be one of {OVERLAPS}, got {self.overlap!r}")
        if self.overlap in ("auto", "margin") and self.stride is not None:
            raise ConfigError(
                f"stride {self.stride} sets the step of --overlap half: pass --overlap half with "
                f"it (with --overlap {self.overlap} the step is the window minus twice --margin)"
            )
        if self.overlap == "half" and (self.margin is not None or self.screen is not None):
            raise ConfigError("--margin and --screen apply to --overlap margin, not half")
        if self.margin is not None and self.margin < 0:
            raise ConfigError(f"margin must be >= 0 px, got {self.margin}")
        if self.screen is not None and self.screen < 2:
            raise ConfigError(f"screen must be a downsample factor >= 2, got {self.screen}; "
                              "e.g. --screen 4")
        if not 0.0 < float(self.screen_threshold) < 1.0:
            raise ConfigError(
                f"screen_threshold must be within (0, 1), got {self.screen_threshold}"
            )
        if self.screen_margin is not None and self.screen_margin < 0:
            raise ConfigError(f"screen_margin must be >= 0 map px, got {self.screen_margin}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("checkpoint", "out", "slides"):
            d[key] = None if d[key] is None else str(d[key])
        return d


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


def hann_weights(window: int) -> np.ndarray:
    """Separable (window, window) float32 weights ``sin^2(pi (i + 1/2) / window)``: positive
    everywhere, and at half-window overlap the shifted copies sum to one."""
    i = np.arange(window, dtype=np.float64)
    w1 = np.sin(np.pi * (i + 0.5) / window) ** 2
    return np.outer(w1, w1).astype(np.float32)


def block_sum(values: np.ndarray, cell: int) -> np.ndarray:
    """Sum ``cell`` x ``cell`` blocks of the last two axes (multiples of ``cell``)."""
    *lead, h, w = values.shape
    return values.reshape(*lead, h // cell, cell, w // cell, cell).sum(axis=(-3, -1))


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


# --- blending in bands ---------------------------------------------------------------------------


class BandAccumulator:
    """Weighted sums of window probabilities at map resolution, for the rows still open.

    ``add`` takes one window's (window, window) probabilities at level origin (x_lvl, y_lvl);
    ``finish(upto_row)`` turns map rows below ``upto_row`` into uint8 (0 where no window fell)
    and returns them with their first row index. Memory: the open rows only.
    """

    def __init__(self, grid: Grid, weights: np.ndarray) -> None:
        self.grid = grid
        self.weights = weights
        self.weight_cells = block_sum(weights.astype(np.float64), grid.cell).astype(np.float32)
        cols = grid.xs_lvl[-1] // grid.cell + grid.window_cells if grid.xs_lvl else 1
        self.width = max(cols, grid.map_width)
        self.row0 = 0  # map row of buffer row 0
        self.num = np.zeros((0, self.width), np.float32)
        self.den = np.zeros((0, self.width), np.float32)

    def _ensure(self, rows: int) -> None:
        if self.num.shape[0] < rows:
            grow = rows - self.num.shape[0]
            self.num = np.concatenate([self.num, np.zeros((grow, self.width), np.float32)])
            self.den = np.concatenate([self.den, np.zeros((grow, self.width), np.float32)])

    def add(self, probs: np.ndarray, x_lvl: int, y_lvl: int) -> None:
        g = self.grid
        r = y_lvl // g.cell - self.row0
        c = x_lvl // g.cell
        if r < 0:
            raise ValueError(f"window at y={y_lvl} touches map rows already finished")
        k = g.window_cells
        self._ensure(r + k)
        self.num[r : r + k, c : c + k] += block_sum(probs * self.weights, g.cell)
        self.den[r : r + k, c : c + k] += self.weight_cells

    def finish(self, upto_row: int) -> tuple[int, np.ndarray]:
        """Close the map rows below ``upto_row``: returns (first row, uint8 rows) for the rows
        that hold window sums; closed rows past those are 0 and not returned."""
        g = self.grid
        upto_row = min(upto_row, g.map_height)
        n = max(0, upto_row - self.row0)
        held = min(n, self.num.shape[0])
        out = np.zeros((held, g.map_width), np.uint8)
        for a in range(0, held, 256):  # bounded temporaries
            b = min(held, a + 256)
            num, den = self.num[a:b, : g.map_width], self.den[a:b, : g.map_width]
            seen = den > 0
            out[a:b][seen] = np.clip(np.rint(num[seen] / den[seen] * 255), 0, 255).astype(np.uint8)
        first = self.row0
        self.num = self.num[held:].copy()
        self.den = self.den[held:].copy()
        self.row0 += n
        return first, out


class CropSink:
    """Writes crop-mode tiles straight into the uint8 map: each tile's centre (its margin cut
    off), averaged over map cells. Every map cell has one tile's centre: nothing to blend, no
    band to hold. ``covered`` (optional bool map) records the cells written."""

    def __init__(self, grid: Grid, prob_map: np.ndarray, covered: np.ndarray | None = None):
        self.grid = grid
        self.map = prob_map
        self.covered = covered

    def add(self, probs: np.ndarray, x_lvl: int, y_lvl: int) -> None:
        g = self.grid
        tx, ty = g.tile_origin(x_lvl, y_lvl)
        ox, oy = x_lvl - tx, y_lvl - ty
        centre = probs[oy : oy + g.stride, ox : ox + g.stride].astype(np.float64)
        cells = block_sum(centre, g.cell) / (g.cell * g.cell)
        r, c = y_lvl // g.cell, x_lvl // g.cell
        h, w = min(cells.shape[0], g.map_height - r), min(cells.shape[1], g.map_width - c)
        self.map[r : r + h, c : c + w] = np.clip(np.rint(cells[:h, :w] * 255), 0, 255)
        if self.covered is not None:
            self.covered[r : r + h, c : c + w] = True

    def emit(self, upto_row: int) -> None:
        """Nothing to close: cells are final when written."""


class BlendSink:
    """Hann-blended windows (``overlap="half"``) through a BandAccumulator into the map."""

    def __init__(self, grid: Grid, prob_map: np.ndarray):
        self.acc = BandAccumulator(grid, hann_weights(grid.window))
        self.map = prob_map

    def add(self, probs: np.ndarray, x_lvl: int, y_lvl: int) -> None:
        self.acc.add(probs, x_lvl, y_lvl)

    def emit(self, upto_row: int) -> None:
        first, rows = self.acc.finish(upto_row)
        if rows.shape[0]:
            self.map[first : first + rows.shape[0]] = rows


# --- detections and scores -----------------------------------------------------------------------


def mask_to_tissue(
    prob_map: np.ndarray, tissue_thumb: np.ndarray, *, thumb_downsample: float,
    map_downsample: float, margin_thumb: int = 2,
) -> np.ndarray:
    """Zero the map (map frame) wherever the thumbnail tissue mask (thumb frame, grown by
    `margin_thumb` thumbnail pixels) holds no tissue, in place; returns the map.

    Windows at the tissue border are partly glass, which the model never saw in training (patches
    are drawn inside tissue): blended, they leave spurious probability on the background. Lesions
    lie in tissue, so masking costs nothing and removes those false positives, as the CAMELYON16
    pipelines (e.g. Liu et al.) restrict predictions to tissue.
    """
    from lymph.data.tissue import dilate

    tissue = dilate(np.asarray(tissue_thumb, bool), margin_thumb) if margin_thumb else \
        np.asarray(tissue_thumb, bool)
    h, w = prob_map.shape[:2]
    scale = map_downsample / thumb_downsample
    rows = np.minimum(((np.arange(h) + 0.5) * scale).astype(np.int64), tissue.shape[0] - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * scale).astype(np.int64), tissue.shape[1] - 1)
    band = 1024
    for y0 in range(0, h, band):
        inside = tissue[np.ix_(rows[y0:y0 + band], cols)]
        prob_map[y0:y0 + band][~inside] = 0
    return prob_map


def detect_lesions(
    prob_map: np.ndarray,
    *,
    map_downsample: float,
    threshold: float = THRESHOLD,
    mpp: float | None = None,
) -> list[Detection]:
    """Detections from a uint8 (0-255) map: 8-connected regions of ``map >= threshold``; the
    confidence is the region's maximum and its location that maximum's map pixel centre in
    level-0 integers (the first in raster order on ties); the outline is the region's outer
    boundary (contourpy, at 0.5 between inside and outside pixel centres). Labels are computed
    only inside the bounding box of the pixels above the threshold, and every statistic inside
    each region's own box, so memory follows the detections, not the map."""
    from scipy import ndimage

    level = max(1, int(math.ceil(threshold * 255 - 1e-9)))
    mask = prob_map >= level
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return []
    cols = np.flatnonzero(mask.any(axis=0))
    r_off, c_off = int(rows[0]), int(cols[0])
    crop = (slice(r_off, int(rows[-1]) + 1), slice(c_off, int(cols[-1]) + 1))
    labels, _ = ndimage.label(mask[crop], structure=np.ones((3, 3), bool))
    values = prob_map[crop]
    del mask
    px_um2 = (mpp * map_downsample) ** 2 if mpp else None
    out = []
    for i, box in enumerate(ndimage.find_objects(labels), 1):
        if box is None:
            continue
        region = labels[box] == i
        inside = np.where(region, values[box], 0)
        row, col = np.unravel_index(int(np.argmax(inside)), inside.shape)
        top, left = r_off + box[0].start, c_off + box[1].start
        area = int(region.sum())
        out.append(
            Detection(
                confidence=float(inside[row, col]) / 255.0,
                x_level0=int((left + col + 0.5) * map_downsample),
                y_level0=int((top + row + 0.5) * map_downsample),
                outline_level0=_outline(region, top, left, map_downsample),
                area_um2=area * px_um2 if px_um2 else None,
                extra={"area_map_px": float(area)},
            )
        )
    return out


def _outline(region: np.ndarray, top: int, left: int, downsample: float) -> np.ndarray | None:
    """The longest boundary of a bool region whose pixel (0, 0) is map pixel (top, left), in
    level-0 coordinates."""
    import contourpy

    padded = np.pad(region.astype(np.float64), 1)
    lines = contourpy.contour_generator(z=padded, line_type="Separate").lines(0.5)
    if not lines:
        return None
    ring = max(lines, key=len)
    if len(ring) > 1 and np.array_equal(ring[0], ring[-1]):
        ring = ring[:-1]
    if len(ring) < 3:
        return None
    # contour x, y are column, row of the padded crop; level 0 of a pixel centre: (j + 0.5) * ds
    x = (ring[:, 0] - 1 + left + 0.5) * downsample
    y = (ring[:, 1] - 1 + top + 0.5) * downsample
    return np.stack([x, y], axis=1)


def slide_probability(
    prob_map: np.ndarray, *, sigma: float = SMOOTH_SIGMA_PX, band: int = 1024
) -> float:
    """The slide's tumor probability: the maximum of the map after a Gaussian blur of ``sigma``
    map pixels (0..1). Blurred in bands of rows with enough overlap to be exact, so memory stays
    a few bands of float32 whatever the map's size."""
    from scipy import ndimage

    if prob_map.size == 0:
        return 0.0
    pad = int(4.0 * sigma + 0.5) + 1  # gaussian_filter's default truncate is 4 sigma
    h = prob_map.shape[0]
    best = 0.0
    for r0 in range(0, h, band):
        a, b = max(0, r0 - pad), min(h, r0 + band + pad)
        chunk = prob_map[a:b]
        if not chunk.any():
            continue
        smooth = ndimage.gaussian_filter(chunk, sigma, output=np.float32, mode="constant")
        if a > 0 or b < h:  # rows at a band edge inside the map: keep only the exact centre
            smooth = smooth[r0 - a : r0 - a + min(band, h - r0)]
        best = max(best, float(smooth.max()))
    return float(np.clip(best / 255.0, 0.0, 1.0))


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """torch's CPU threads set to ``threads`` for the block, and restored after it."""
    import torch

    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def update_scores(
    out_dir: Path, scores: dict[str, float], *, manifest: OutputManifest | None = None
) -> Path:
    """Merge ``{slide: probability}`` into ``out_dir/scores.csv`` (header ``slide,probability``,
    rows sorted by slide; other slides' rows kept), atomically and under a lock; with a
    ``manifest``, only a scores.csv lymph wrote is merged into (OutputError otherwise)."""
    import io

    from lymph.data.io import atomic_write_text, file_lock

    out_dir = Path(out_dir)
    path = out_dir / SCORES_CSV
    writing = manifest.writing(path) if manifest is not None else contextlib.nullcontext(path)
    with file_lock(out_dir / f".{SCORES_CSV}.lock"), writing:
        rows: dict[str, str] = {}
        if path.is_file():
            with path.open(newline="") as fh:
                for row in csv.reader(fh):
                    if len(row) >= 2 and row[0] != "slide":
                        rows[row[0]] = row[1]
        rows.update({k: f"{v:.6f}" for k, v in scores.items()})
        buf = io.StringIO(newline="")
        writer = csv.writer(buf)
        writer.writerow(["slide", "probability"])
        for name in sorted(rows):
            writer.writerow([name, rows[name]])
        atomic_write_text(path, buf.getvalue())
    return path


# --- one slide -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SlideResult:
    """What ``predict_slide`` wrote and measured for one slide."""

    slide: str
    path: Path
    probability: float
    n_detections: int
    map_path: Path
    overlay_path: Path
    csv_path: Path
    geojson_path: Path
    xml_path: Path
    map_downsample: float
    map_size: tuple[int, int]  # (width, height)
    level: int
    window: int
    stride: int
    n_windows: int  # windows inferred (at full resolution)
    n_tissue_windows: int  # windows holding tissue (more than n_windows only with max_windows)
    n_windows_total: int  # windows of the whole level
    tissue_mpx: float  # level-0 Mpx of tissue under the inferred windows' stride cells
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    overlap: str = "half"  # "half": Hann-blended windows; "margin": centre-cropped tiles
    margin: int = 0  # level px cut off each side of a tile (overlap "margin")
    n_screen_windows: int = 0  # coarse-to-fine: windows of the screening pass
    scale: str = ""  # the level or resampling chosen for the training mpp (model/scale.py)
    slide_tissue_mpx: float = 0.0  # level-0 Mpx of the slide's whole thumbnail tissue mask

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, Path):
                d[k] = str(v)
        return d


def slide_name(slide_path: Path) -> str:
    """``S`` of the output files: the slide's id (``lymph.data.slides.slide_id``)."""
    from lymph.data.slides import slide_id

    return slide_id(slide_path)


def _checkpoint_geometry(ckpt: dict, path: Path, level: int | None) -> tuple[int, int]:
    """The level and patch size the checkpoint was trained at (``level`` overrides the level);
    CheckpointError for a pretraining checkpoint or one that records neither."""
    config = ckpt.get("config") or {}
    if config.get("stage") == "pretrain":
        raise CheckpointError(
            f"checkpoint {path} is a pretraining checkpoint (stage 'pretrain'): its segmentation "
            "head is untrained, so its maps would mean nothing; use a fine-tuned checkpoint "
            f"(lymph train --stage finetune --init {path}, then its best.pt or last.pt)"
        )
    store = config.get("store") or {}
    lvl = level if level is not None else store.get("level")
    patch = store.get("patch_size")
    if lvl is None:
        raise CheckpointError(
            f"checkpoint {path} records no store level (config.store.level); pass --level"
        )
    if patch is None:
        raise CheckpointError(
            f"checkpoint {path} records no patch size (config.store.patch_size); pass --window"
        )
    return int(lvl), int(patch)


def _check_memory(ckpt: dict, config: PredictConfig, patch_size: int) -> None:
    """One batch of windows must fit in memory (`bounds.check_predict_memory`), checked before
    any slide is read."""
    from lymph.model.bounds import check_predict_memory

    model = (ckpt.get("config") or {}).get("model") or {}
    width, depth = model.get("base_width", 32), model.get("depth", 4)
    if isinstance(width, int) and isinstance(depth, int):
        check_predict_memory(window=config.window or patch_size, batch_size=config.batch_size,
                             base_width=width, depth=depth, device=str(config.device))


def _batches(
    reader: Any,
    grid: Grid,
    origins: Sequence[tuple[int, int]],
    batch_size: int,
    *,
    read_threads: int = 1,
) -> Iterator[tuple[list[tuple[int, int]], np.ndarray, float]]:
    """Batches of (origins, uint8 windows (n, W, W, 3), seconds spent reading). With
    ``read_threads`` > 1 the windows of a batch are read in parallel (OpenSlide is thread-safe
    and releases the GIL while decoding)."""
    from concurrent.futures import ThreadPoolExecutor

    ds = grid.level_downsample
    size = (grid.window, grid.window)

    def read(origin: tuple[int, int]) -> np.ndarray:
        x, y = grid.tile_origin(*origin)
        return reader.read_region((int(round(x * ds)), int(round(y * ds))), grid.level, size)

    pool = ThreadPoolExecutor(read_threads) if read_threads > 1 else None
    try:
        for start in range(0, len(origins), batch_size):
            chunk = list(origins[start : start + batch_size])
            t0 = time.perf_counter()
            tiles = list(pool.map(read, chunk)) if pool is not None else [read(o) for o in chunk]
            yield chunk, np.stack(tiles), time.perf_counter() - t0
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _prefetch(iterator: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """Run ``iterator`` in a thread, ``depth`` items ahead (OpenSlide and torch release the GIL);
    its exceptions are re-raised here."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def work() -> None:
        try:
            for item in iterator:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as exc:  # handed to the consumer
            q.put(exc)

    thread = threading.Thread(target=work, daemon=True, name="lymph-predict-read")
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


def infer_map(
    reader: Any,
    model: Any,
    grid: Grid,
    origins: Sequence[tuple[int, int]],
    *,
    device: Any = "cpu",
    batch_size: int = 8,
    tta: bool = False,
    progress: bool = True,
    read_threads: int = 1,
    timings: dict[str, float] | None = None,
    channels_last: bool = False,
    covered: np.ndarray | None = None,
    precision: str = "auto",
) -> np.ndarray:
    """The uint8 (map_height, map_width) probability map of ``reader`` from the windows at
    ``origins`` (row-major, as ``tissue_windows`` returns them): Hann-blended (grid mode
    "blend") or centre-cropped ("crop"; ``covered`` then marks the cells written)."""
    from lymph.data.progress import progress_bar
    from lymph.model.infer import predict_probs

    timings = timings if timings is not None else {}
    for key in ("read", "read_wait", "model", "blend"):
        timings.setdefault(key, 0.0)
    prob_map = np.zeros((grid.map_height, grid.map_width), np.uint8)
    sink = CropSink(grid, prob_map, covered) if grid.mode == "crop" else BlendSink(grid, prob_map)
    bar = progress_bar(total=len(origins), desc=f"{Path(reader.path).name}", unit="win",
                       enabled=progress, leave=False)
    done = 0
    blend = SinkThread(sink)  # blending on its own thread (model/predict_pipeline.py)
    try:
        stream = _prefetch(_batches(reader, grid, origins, batch_size, read_threads=read_threads))
        while True:
            t0 = time.perf_counter()
            try:
                chunk, images, read_s = next(stream)
            except StopIteration:
                break
            timings["read_wait"] += time.perf_counter() - t0
            timings["read"] += read_s
            t0 = time.perf_counter()
            probs = predict_probs(model, images, device=device, batch_size=batch_size, tta=tta,
                                  channels_last=channels_last, precision=precision)
            timings["model"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            done += len(chunk)
            bar.update(len(chunk))
            # map rows above the next pending window's top are final
            blend.put(chunk, probs, origins[done][1] // grid.cell if done < len(origins) else None)
            timings["blend"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        blend.put([], np.zeros((0,)), grid.map_height)  # the rest of the map is final
        blend.close()
        timings["blend"] += time.perf_counter() - t0
    finally:
        blend.abort()
        bar.close()
    # "blend": what the loop waited for blending; "blend_busy": the blend thread's own time
    timings["blend_busy"] = timings.get("blend_busy", 0.0) + blend.busy
    return prob_map


# --- one slide: plan tiles -> infer -> post-process -> export ------------------------------------


@dataclass(frozen=True)
class LoadedModel:
    """The checkpoint's model on its device, with the geometry it was trained at."""

    model: Any
    ckpt: dict
    device: Any
    level: int
    patch_size: int


@dataclass(frozen=True)
class SlidePlan:
    """Where one slide's windows go: the pure plan ``infer_map`` executes."""

    name: str
    grid: Grid
    thumb: np.ndarray
    thumb_downsample: float
    tissue: np.ndarray
    origins: list[tuple[int, int]]
    n_tissue_windows: int
    mpp: float | None


@dataclass(frozen=True)
class SlideMaps:
    """What post-processing makes of the raw map: the masked map, detections and the score."""

    prob_map: np.ndarray
    detections: list[Detection]
    probability: float


def load_for_predict(config: PredictConfig) -> LoadedModel:
    """The checkpoint's model on the configured device (CheckpointError for a bad one)."""
    from lymph.model.checkpoint import load_model
    from lymph.model.infer import resolve_device

    dev = resolve_device(config.device)
    model, ckpt = load_model(config.checkpoint, device=dev)
    lvl, patch = _checkpoint_geometry(ckpt, config.checkpoint, config.level)
    return LoadedModel(model=model, ckpt=ckpt, device=dev, level=lvl, patch_size=patch)


def window_independent(model: Any) -> bool:
    """Whether the model's output at a pixel is independent of the window it is computed in:
    eval-mode BatchNorm or no norm (``model.config.norm``); GroupNorm (the default, and the
    assumption when a model does not say) normalises each window by its own statistics."""
    from lymph.model.unet import unwrap

    norm = getattr(getattr(unwrap(model), "config", None), "norm", "group")
    return norm in WINDOW_FREE_NORMS


def resolve_overlap(config: PredictConfig, model: Any) -> str:
    """The tiling of ``overlap="auto"``: margin tiles for a window-independent model (or when
    --margin or --screen asks for them), else the half-window blend, which keeps a GroupNorm
    model's maps what they were (margin tiles moved them by 0.032 mean abs; issue 12)."""
    if config.overlap != "auto":
        return config.overlap
    if window_independent(model) or config.margin is not None or config.screen is not None:
        return "margin"
    return "half"


def fitted_tile(level_dims: tuple[int, int], patch_size: int, *, big: int = BIG_TILE) -> int:
    """The large tile for a window-independent model: at most ``big`` px, shrunk so that the
    fewest tiles cover the level's longer side without running far past it (a 1,536 px level
    takes two ~850 px tiles, not two of 1,024); never below the training patch."""
    centre = 1.0 - 2.0 * MARGIN_FRACTION
    longest = max(int(level_dims[0]), int(level_dims[1]), 1)
    n = math.ceil(longest / (big * centre))
    return max(patch_size, min(big, math.ceil(longest / n / centre)))


def plan_slide(reader: Any, config: PredictConfig, loaded: LoadedModel) -> SlidePlan:
    """Grid, thumbnail, tissue mask and the tissue windows to infer (``max_windows`` of them
    from the middle when set). Crop tiles keep the training window for GroupNorm models and
    grow to ``BIG_TILE`` for window-independent ones. ConfigError when the slide lacks the
    level."""
    from lymph.data.tissue import dilate, tissue_mask

    lvl = loaded.level
    if lvl >= reader.level_count:
        raise ConfigError(
            f"{reader.path}: level {lvl} does not exist (the slide has levels "
            f"0..{reader.level_count - 1}); pass --level with an existing level"
        )
    window = config.window
    overlap = resolve_overlap(config, loaded.model)
    if overlap == "margin" and window is None and window_independent(loaded.model):
        window = fitted_tile(reader.level_dimensions[lvl], loaded.patch_size)
    grid = plan_grid(
        reader.level_dimensions[lvl],
        reader.level_downsamples[lvl],
        level=lvl,
        patch_size=window or loaded.patch_size,
        multiple=loaded.model.multiple,
        window=window,
        stride=config.stride,
        map_downsample=config.map_downsample,
        overlap=overlap,
        margin=config.margin,
    )
    thumb, thumb_ds = reader.thumbnail(config.thumb_size)
    tissue = tissue_mask(thumb)
    # crop tiles write only their centre: select those whose centre meets the cells the final
    # tissue mask (grown by mask_to_tissue's margin) keeps
    select = dilate(tissue, TISSUE_MARGIN_THUMB) if grid.mode == "crop" else tissue
    origins = tissue_windows(grid, select, thumb_ds)
    n_tissue = len(origins)
    cap = config.max_windows
    if cap is not None and cap < len(origins):
        start = max(0, len(origins) // 2 - cap // 2)
        origins = origins[start : start + cap]
    return SlidePlan(name=slide_name(Path(reader.path)), grid=grid, thumb=thumb,
                     thumb_downsample=thumb_ds, tissue=tissue, origins=origins,
                     n_tissue_windows=n_tissue, mpp=reader.mpp)


# --- coarse-to-fine ------------------------------------------------------------------------------


class DownsampledView:
    """A one-level SlideReader view of ``reader`` at level-0 downsample ``downsample``: regions
    are read at the finest pyramid level at most that coarse and box-resized when the pyramid
    lacks that exact downsample."""

    def __init__(self, reader: Any, downsample: float) -> None:
        from lymph.data.slides import best_level

        self.reader = reader
        self.path = Path(reader.path)
        self.mpp = reader.mpp
        self.base = best_level(reader.level_downsamples, downsample)
        w0, h0 = reader.dimensions
        self.dimensions = (max(1, int(w0 // downsample)), max(1, int(h0 // downsample)))
        self.level_count = 1
        self.level_dimensions = (self.dimensions,)
        self.level_downsamples = (float(downsample),)

    def read_region(self, location_level0: tuple[int, int], level: int,
                    size: tuple[int, int]) -> np.ndarray:
        from PIL import Image

        ds, base_ds = self.level_downsamples[0], self.reader.level_downsamples[self.base]
        if abs(base_ds - ds) <= 1e-3 * ds:
            return self.reader.read_region(location_level0, self.base, size)
        f = ds / base_ds
        big = self.reader.read_region(location_level0, self.base,
                                      (math.ceil(size[0] * f), math.ceil(size[1] * f)))
        return np.asarray(Image.fromarray(big).resize(tuple(size), Image.Resampling.BOX))


def screen_map(reader: Any, loaded: LoadedModel, plan: SlidePlan, config: PredictConfig,
               timings: dict[str, float]) -> tuple[np.ndarray, int]:
    """The coarse pass: the same tiles (window, margin) at ``config.screen`` times the model
    level's downsample, on a map of the fine map's shape; returns it and its window count.
    ConfigError when the factor is too coarse for the map's downsample."""
    fine = plan.grid
    ds = fine.level_downsample * config.screen
    cell = fine.map_downsample / ds
    if cell < 1 or abs(cell - round(cell)) > 1e-6:
        raise ConfigError(
            f"--screen {config.screen}: the map's downsample {fine.map_downsample:g} is not a "
            f"whole multiple of the screen's ({ds:g}); use a smaller --screen or a larger "
            "--map-downsample"
        )
    from lymph.data.tissue import dilate

    view = DownsampledView(reader, ds)
    grid = plan_grid(view.level_dimensions[0], ds, level=0, patch_size=fine.window,
                     multiple=loaded.model.multiple, window=fine.window,
                     map_downsample=fine.map_downsample, overlap="margin", margin=fine.margin)
    origins = tissue_windows(grid, dilate(plan.tissue, TISSUE_MARGIN_THUMB),
                             plan.thumb_downsample)
    inner: dict[str, float] = {}
    coarse = infer_map(view, loaded.model, grid, origins, device=loaded.device,
                       batch_size=config.batch_size, progress=config.progress, timings=inner,
                       read_threads=_read_threads(config, loaded.device),
                       channels_last=config.channels_last, precision=config.precision)
    timings["screen"] = sum(inner.get(k, 0.0) for k in ("read_wait", "model", "blend"))
    out = np.zeros((fine.map_height, fine.map_width), np.uint8)
    h, w = min(out.shape[0], coarse.shape[0]), min(out.shape[1], coarse.shape[1])
    out[:h, :w] = coarse[:h, :w]
    return out, len(origins)


def refine_plan(plan: SlidePlan, screen: np.ndarray, config: PredictConfig) -> SlidePlan:
    """The fine pass's windows: those whose map footprint meets a cell where the screen's
    probability reaches ``screen_threshold``, grown by ``screen_margin`` map cells (default
    half a window)."""
    from lymph.data.tissue import dilate

    g = plan.grid
    grow = config.screen_margin if config.screen_margin is not None else g.window // g.cell // 2
    hot = screen >= max(1, math.ceil(config.screen_threshold * 255 - 1e-9))
    hot = dilate(hot, grow) if grow else hot
    integral = np.zeros((hot.shape[0] + 1, hot.shape[1] + 1), np.int64)
    integral[1:, 1:] = hot.cumsum(0).cumsum(1)
    k = g.footprint // g.cell
    kept = []
    for x, y in plan.origins:
        r0, c0 = min(y // g.cell, hot.shape[0]), min(x // g.cell, hot.shape[1])
        r1, c1 = min(r0 + k, hot.shape[0]), min(c0 + k, hot.shape[1])
        if integral[r1, c1] - integral[r0, c1] - integral[r1, c0] + integral[r0, c0] > 0:
            kept.append((x, y))
    return replace(plan, origins=kept)


def postprocess(prob_map: np.ndarray, plan: SlidePlan, *, threshold: float) -> SlideMaps:
    """Zero the map outside tissue, then detections and the slide score from it."""
    map_ds = plan.grid.map_downsample
    mask_to_tissue(prob_map, plan.tissue, thumb_downsample=plan.thumb_downsample,
                   map_downsample=map_ds, margin_thumb=TISSUE_MARGIN_THUMB)
    detections = detect_lesions(prob_map, map_downsample=map_ds, threshold=threshold,
                                mpp=plan.mpp)
    return SlideMaps(prob_map=prob_map, detections=detections,
                     probability=slide_probability(prob_map))


def output_paths(out_dir: Path, name: str) -> dict[str, Path]:
    """Every file ``predict_slide`` writes for slide ``name`` (scores.csv aside)."""
    return {
        "map": out_dir / f"{name}_tumor_map.tif",
        "overlay": out_dir / f"{name}_overlay.png",
        "csv": out_dir / f"{name}.csv",
        "geojson": out_dir / f"{name}.geojson",
        "xml": out_dir / f"{name}.xml",
        "meta": out_dir / f"{name}_predict.json",
    }


def _write_map(path: Path, prob_map: np.ndarray, grid: Grid, mpp: float | None) -> None:
    from lymph.data.pyramid import write_pyramidal_tiff

    tile = 256

    def rows(i: int) -> np.ndarray:
        return prob_map[i * tile : (i + 1) * tile]

    write_pyramidal_tiff(path, rows, width=grid.map_width, height=grid.map_height, channels=1,
                         tile=tile, compression="deflate",
                         mpp=mpp * grid.map_downsample if mpp else None, min_size=512)


def export_slide(plan: SlidePlan, maps: SlideMaps, config: PredictConfig,
                 timings: dict[str, float], *, slide_path: Path | None = None
                 ) -> dict[str, Path]:
    """The map TIFF, detections (CSV, GeoJSON, XML), overlay and, with ``write_score``, the
    slide's row in scores.csv; every file written atomically. Returns the paths by kind."""
    out_dir, name = config.out, plan.name
    paths = output_paths(out_dir, name)
    manifest = OutputManifest(out_dir, force=config.force)
    t0 = time.perf_counter()
    with manifest.writing(paths["map"]):
        _write_map(paths["map"], maps.prob_map, plan.grid, plan.mpp)
    timings["write_map"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    with manifest.writing(paths["csv"]):
        write_camelyon_csv(paths["csv"], maps.detections)
    with manifest.writing(paths["geojson"]):
        write_geojson(paths["geojson"], maps.detections, slide=name)
    with manifest.writing(paths["xml"]):
        write_asap_xml(paths["xml"], maps.detections)
    with manifest.writing(paths["overlay"]):
        truth = truth_on_thumb(slide_path, shape=plan.thumb.shape[:2],
                               thumb_downsample=plan.thumb_downsample)
        draw_overlay(plan.thumb, maps.prob_map, paths["overlay"], truth=truth,
                     title=overlay_title(name, maps, config.threshold))
    if config.write_score:
        update_scores(out_dir, {name: maps.probability}, manifest=manifest)
    timings["write_outputs"] = time.perf_counter() - t0
    return paths


def _write_meta(path: Path, *, reader_path: Path, plan: SlidePlan, loaded: LoadedModel,
                config: PredictConfig, result: SlideResult) -> None:
    from lymph.data.identity import file_identity
    from lymph.data.io import atomic_write_json

    manifest = OutputManifest(config.out, force=config.force)

    grid = plan.grid
    meta = {
        "slide": str(reader_path),
        "checkpoint": str(config.checkpoint.resolve()),  # absolute: the file outlives the cwd
        "checkpoint_step": loaded.ckpt.get("step"),
        "settings": {
            "level": loaded.level,
            "level_downsample": grid.level_downsample,
            "window": grid.window,
            "stride": grid.stride,
            "cell": grid.cell,
            "map_downsample": grid.map_downsample,
            "threshold": config.threshold,
            "tta": config.tta,
            "batch_size": config.batch_size,
            "device": str(loaded.device),
            "thumb_size": config.thumb_size,
            "overlap": "half" if grid.mode == "blend" else "margin",
            "margin": grid.margin,
            "channels_last": config.channels_last,
            "threads": resolve_threads(config, loaded.device),
            "screen": config.screen,
            "screen_threshold": config.screen_threshold if config.screen else None,
            "screen_margin": config.screen_margin,
            "precision": config.precision,
            **describe_precision(config.precision, loaded.device),
            "slide_score": f"max of the map after a Gaussian blur of sigma {SMOOTH_SIGMA_PX} px",
        },
        "mpp": plan.mpp,
        "result": result.to_dict(),
        "source_identity": file_identity(reader_path) if Path(reader_path).exists() else None,
    }
    with manifest.writing(path):
        atomic_write_json(path, meta, indent=2, sort_keys=False)


def _result(plan: SlidePlan, maps: SlideMaps, paths: dict[str, Path], *, reader_path: Path,
            level: int, seconds: float, timings: dict[str, float],
            n_screen_windows: int = 0) -> SlideResult:
    grid = plan.grid
    return SlideResult(
        slide=plan.name,
        path=reader_path,
        probability=maps.probability,
        n_detections=len(maps.detections),
        map_path=paths["map"],
        overlay_path=paths["overlay"],
        csv_path=paths["csv"],
        geojson_path=paths["geojson"],
        xml_path=paths["xml"],
        map_downsample=grid.map_downsample,
        map_size=(grid.map_width, grid.map_height),
        level=level,
        window=grid.window,
        stride=grid.stride,
        n_windows=len(plan.origins),
        n_tissue_windows=plan.n_tissue_windows,
        n_windows_total=len(grid.xs_lvl) * len(grid.ys_lvl),
        tissue_mpx=tissue_area_mpx(grid, plan.origins, plan.tissue, plan.thumb_downsample),
        seconds=seconds,
        timings={k: round(v, 4) for k, v in timings.items()},
        overlap="half" if grid.mode == "blend" else "margin",
        margin=grid.margin,
        n_screen_windows=n_screen_windows,
        slide_tissue_mpx=float(np.count_nonzero(plan.tissue)) * plan.thumb_downsample**2 / 1e6,
    )


@contextlib.contextmanager
def _reader(slide: str | Path | Any) -> Iterator[Any]:
    """An open reader for a path (closed after), or the given SlideReader as it is."""
    from lymph.data.slides import open_slide

    if isinstance(slide, str | os.PathLike):
        with open_slide(slide) as reader:
            yield reader
    else:
        yield slide


def _read_threads(config: PredictConfig, device: Any) -> int:
    if config.read_threads is not None:
        return config.read_threads
    return 1 if device.type == "cpu" else min(8, os.cpu_count() or 1)


def resolve_threads(config: PredictConfig, device: Any) -> int | None:
    """torch CPU threads for one slide: ``config.threads``, else every core this process may
    use on CPU (one slide at a time has the machine; ``predict_slides`` divides the cores among
    ``--workers``); None (torch's own) on an accelerator."""
    if config.threads is not None:
        return config.threads
    if getattr(device, "type", str(device)) != "cpu":
        return None
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _batch_size(config: PredictConfig, grid: Grid, loaded: LoadedModel) -> int:
    """``config.batch_size`` windows of the training size; fewer of large tiles (same pixels)."""
    if grid.window <= 2 * loaded.patch_size:
        return config.batch_size
    return max(1, round(config.batch_size * (loaded.patch_size / grid.window) ** 2))


def infer_slide(reader: Any, loaded: LoadedModel, plan: SlidePlan, config: PredictConfig,
                timings: dict[str, float]) -> tuple[SlidePlan, np.ndarray, int]:
    """The raw map of one slide (before tissue masking). With ``config.screen``, coarse to
    fine: a screening pass at ``screen`` times the downsample, then full resolution only where
    the screen sees tumor (``refine_plan``); the other cells keep the screen's values (all
    below ``screen_threshold``). Returns the plan the fine pass ran, the map and the number of
    screening windows."""
    covered, coarse, n_screen = None, None, 0
    if config.screen is not None:
        coarse, n_screen = screen_map(reader, loaded, plan, config, timings)
        plan = refine_plan(plan, coarse, config)
        covered = np.zeros(coarse.shape, bool)
    prob_map = infer_map(
        reader, loaded.model, plan.grid, plan.origins, device=loaded.device,
        batch_size=_batch_size(config, plan.grid, loaded), tta=config.tta,
        progress=config.progress, timings=timings,
        read_threads=_read_threads(config, loaded.device),
        channels_last=config.channels_last, covered=covered, precision=config.precision,
    )
    if coarse is not None and covered is not None:
        prob_map[~covered] = coarse[~covered]
    return plan, prob_map, n_screen


def predict_slide(slide: str | Path | Any, config: PredictConfig) -> SlideResult:
    """Tumor map, overlay, detections (CSV, GeoJSON, XML) and slide score of one slide.

    ``slide``: a slide path (opened with OpenSlide) or any ``lymph.data.slides.SlideReader``
    (e.g. an in-memory ``ArraySlide``). Plan tiles -> infer -> post-process -> export; torch
    runs with ``config.threads`` CPU threads (restored after). SlideError when the slide cannot
    be opened or read; CheckpointError for a bad checkpoint; ConfigError for a slide level the
    slide lacks or an ``--out`` that is the slide's own folder.
    """
    import torch

    t_start = time.perf_counter()
    out_dir = config.out
    if isinstance(slide, str | os.PathLike) and out_dir.resolve() == Path(slide).resolve().parent:
        raise ConfigError(
            f"--out {out_dir} is the folder of {Path(slide).name}: S.xml there would overwrite "
            "the slide's annotations; write predictions to another folder"
        )
    loaded = load_for_predict(config)
    timings: dict[str, float] = {}
    with _reader(slide) as reader:
        check_outputs(config, [slide_name(Path(reader.path))])
        reader, loaded, scale = scale_for_predict(reader, loaded, config)
        t0 = time.perf_counter()
        plan = plan_slide(reader, config, loaded)
        timings["tissue"] = time.perf_counter() - t0
        with torch.inference_mode(), _torch_threads(resolve_threads(config, loaded.device)):
            plan, prob_map, n_screen = infer_slide(reader, loaded, plan, config, timings)
        maps = postprocess(prob_map, plan, threshold=config.threshold)
        reader_path = Path(reader.path)
    paths = export_slide(plan, maps, config, timings, slide_path=reader_path)
    result = _result(plan, maps, paths, reader_path=reader_path, level=loaded.level,
                     seconds=time.perf_counter() - t_start, timings=timings,
                     n_screen_windows=n_screen)
    result = replace(result, scale=scale)
    _write_meta(paths["meta"], reader_path=reader_path, plan=plan, loaded=loaded,
                config=config, result=result)
    return result


# --- many slides ---------------------------------------------------------------------------------


def find_slides(slides: str | Path) -> tuple[list[Path], list[tuple[str, str]]]:
    """(slides, problems): a slide file (or DICOM folder) as a one-item list, or the slides of a
    folder (masks and lymph's own maps excluded), and the (source, "file: cause") of what
    discovery could not use (a dangling link, an id collision). SlideError when nothing is
    found."""
    from lymph.data.slides import discover_slides

    path = Path(slides)
    if not path.exists():
        raise SlideError(f"{path}: no such slide file or folder; check the path")
    if path.is_file():
        return [path], []
    discovery = discover_slides(path)
    found = discovery.paths
    if not found and discovery.failed():  # e.g. Tumor_002.tif beside tumor_002.tif
        raise SlideError(f"{path}: no slide can be predicted: "
                         + "; ".join(msg for _, msg in discovery.failed()[:3]))
    if not found:
        raise SlideError(f"{path}: no slides in this folder (looked for .svs, .tif, .ndpi, ...)")
    return found, discovery.failed()


def list_slides(slides: str | Path) -> list[Path]:
    """The slides of ``find_slides``; what discovery could not use is warned about."""
    found, problems = find_slides(slides)
    for _, message in problems:  # the batch goes on without them
        warnings.warn(f"skipped: {message}", stacklevel=2)
    return found


def check_outputs(config: PredictConfig, names: Sequence[str]) -> OutputManifest:
    """The manifest of ``config.out``, after checking that ``--out`` is writable and that
    nothing the slides ``names`` would write there (and scores.csv) is a file lymph did not
    write (OutputError naming it, unless ``config.force``)."""
    manifest = OutputManifest(config.out, force=config.force)
    manifest.ensure_writable()
    paths = [p for n in names for p in output_paths(config.out, n).values()]
    manifest.check(*paths, config.out / SCORES_CSV)
    return manifest


def _per_slide_config(config: PredictConfig, *, progress: bool) -> PredictConfig:
    """The config each slide of a batch runs with: torch threads divided among the workers,
    progress bars only in process, scores.csv written once at the end."""
    threads = config.threads
    if threads is None and (config.workers > 1 or config.scheduler):
        threads = max(1, (os.cpu_count() or 1) // config.workers)
    single = config.workers == 1 and config.scheduler is None
    return replace(config, threads=threads, progress=progress and single, write_score=False)


def predict_slides(
    slides: Sequence[str | Path], config: PredictConfig, *, progress: bool = True
) -> list:
    """``predict_slide`` over ``slides`` through ``lymph.data.cluster.map_slides`` (in
    process, or dask workers). A slide that fails is reported in its TaskResult.error and the
    batch goes on; ``scores.csv`` gets the rows of the slides that succeeded. The checkpoint is
    checked once before any slide starts (CheckpointError)."""
    from lymph.data.cluster import map_slides
    from lymph.model.checkpoint import load_checkpoint

    ckpt = load_checkpoint(config.checkpoint)
    _, patch = _checkpoint_geometry(ckpt, config.checkpoint, config.level)
    _check_memory(ckpt, config, patch)
    del ckpt
    items = [Path(s) for s in slides]
    clash = [p for p in items if slide_name(p).casefold() == Path(SCORES_CSV).stem.casefold()]
    items = [p for p in items if p not in clash]  # the batch goes on without them
    folded = [slide_name(p).casefold() for p in items]
    shared = [p for p, n in zip(items, folded, strict=True) if folded.count(n) > 1]
    items = [p for p in items if p not in shared]  # a/x.tif beside b/x.tif: those two fail
    names = [slide_name(p) for p in items]
    manifest = check_outputs(config, names)
    fn = partial(predict_slide, config=_per_slide_config(config, progress=progress))
    results = map_slides(
        fn,
        items,
        workers=config.workers,
        scheduler=config.scheduler,
        desc="predict",
        progress=progress,
    )
    scores = {r.value.slide: r.value.probability for r in results if r.value is not None}
    if scores:
        update_scores(config.out, scores, manifest=manifest)
    return [*results, *_refused(clash, shared)]


def _refused(clash: list[Path], shared: list[Path]) -> list:
    """Failed TaskResults for slides whose outputs would collide: with predict's own
    scores.csv, or with another slide's (the rest of the batch goes on)."""
    from lymph.data.cluster import TaskResult

    out = [TaskResult(item=p, value=None, error=(
        f"{p}: a slide named {slide_name(p)!r} would write its detections over predict's own "
        f"{SCORES_CSV}; rename the slide file")) for p in clash]
    for p in shared:
        key = slide_name(p).casefold()
        others = [str(q) for q in shared if q != p and slide_name(q).casefold() == key]
        out.append(TaskResult(item=p, value=None, error=(
            f"{p}: shares its output name {slide_name(p)!r} with {others}; the outputs would "
            "overwrite each other: predict them into separate --out folders, or rename one")))
    return out


def run(config: PredictConfig) -> list:
    """``lymph predict``: every slide of ``config.slides`` (a file or a folder) into
    ``config.out``; returns one TaskResult per slide (see ``predict_slides``), then one failed
    TaskResult per file discovery could not use."""
    from lymph.data.cluster import TaskResult

    if config.slides is None:
        raise ConfigError("PredictConfig.slides is not set: pass --slides (a slide or a folder)")
    from lymph.data.lock import run_folder_lock
    from lymph.data.store import enclosing_store

    store = enclosing_store(Path(config.out).absolute())
    if store is not None:
        raise ConfigError(f"--out {config.out} is inside the patch store {store}: predict's maps "
                          "would be mixed into the store; choose a folder outside it")
    found, problems = find_slides(config.slides)
    from lymph.data.io import MANIFEST_NAME, remove_idle_locks

    with run_folder_lock(config.out, what="this predict folder"):
        results = predict_slides(found, config, progress=config.progress)
        # every worker is done and no other run can be here: the per-file locks go
        remove_idle_locks(config.out, (f".{SCORES_CSV}.lock", f"{MANIFEST_NAME}.lock"))
    # what discovery could not use is a failed slide of the batch, listed with the others
    return [*results, *(TaskResult(item=src, value=None, error=msg) for src, msg in problems)]
