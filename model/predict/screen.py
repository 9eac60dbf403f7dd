"""Coarse to fine (``--screen``): the same tiles first run at ``screen`` times the level's
downsample (read from the nearest pyramid level, box-resized); full resolution runs only on the
tiles whose centre meets a cell where the screen's probability reaches ``screen_threshold``,
grown by ``screen_margin`` map cells; the other cells keep the screen's (low) values.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from lymph.data.errors import ConfigError
from lymph.model.predict.config import TISSUE_MARGIN_THUMB, PredictConfig
from lymph.model.predict.grid import plan_grid, summed_area, tissue_windows
from lymph.model.predict.pipeline import infer_map
from lymph.model.predict.plan import LoadedModel, TilePlan, resolve_read_threads


class DownsampledView:
    """A one-level SlideReader view of ``reader`` at level-0 downsample ``downsample``: regions
    are read at the finest pyramid level at most that coarse and box-resized when the pyramid
    lacks that exact downsample."""

    def __init__(self, reader: Any, downsample: float) -> None:
        from lymph.data.slides import _best_level

        self.reader = reader
        self.path = Path(reader.path)
        self.mpp = reader.mpp
        self.base = _best_level(reader.level_downsamples, downsample)
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


def screen_map(reader: Any, loaded: LoadedModel, plan: TilePlan, config: PredictConfig,
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
                       read_threads=resolve_read_threads(config, loaded.device),
                       channels_last=config.channels_last, precision=config.precision)
    timings["screen"] = sum(inner.get(k, 0.0) for k in ("read_wait", "model", "blend"))
    out = np.zeros((fine.map_height, fine.map_width), np.uint8)
    h, w = min(out.shape[0], coarse.shape[0]), min(out.shape[1], coarse.shape[1])
    out[:h, :w] = coarse[:h, :w]
    return out, len(origins)


def refine_plan(plan: TilePlan, screen: np.ndarray, config: PredictConfig) -> TilePlan:
    """The fine pass's windows: those whose map footprint meets a cell where the screen's
    probability reaches ``screen_threshold``, grown by ``screen_margin`` map cells (default
    half a window)."""
    from lymph.data.tissue import dilate

    g = plan.grid
    grow = config.screen_margin if config.screen_margin is not None else g.window // g.cell // 2
    hot = screen >= max(1, math.ceil(config.screen_threshold * 255 - 1e-9))
    hot = dilate(hot, grow) if grow else hot
    integral = summed_area(hot)
    k = g.footprint // g.cell
    kept = []
    for x, y in plan.origins:
        r0, c0 = min(y // g.cell, hot.shape[0]), min(x // g.cell, hot.shape[1])
        r1, c1 = min(r0 + k, hot.shape[0]), min(c0 + k, hot.shape[1])
        if integral[r1, c1] - integral[r0, c1] - integral[r1, c0] + integral[r0, c0] > 0:
            kept.append((x, y))
    return replace(plan, origins=kept)

