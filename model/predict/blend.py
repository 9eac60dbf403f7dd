"""Window probabilities into the map: the Hann-blended half-window tiling (``BlendSink`` over a
``BandAccumulator``) and margin tiles written straight in (``CropSink``).

``"half"`` windows are weighted by a separable Hann window ``sin^2(pi (i + 1/2) / window)``
(which sums to one at half-window overlap: no seams), summed cell by cell into the map and
divided by the summed weights. Memory: windows are processed in rows; only the map rows a
pending window can still touch are held in float (a band of ``(window + stride) / cell`` map
rows); finished rows go straight into the uint8 map; ``"margin"`` tiles write the uint8 map
directly.
"""

from __future__ import annotations

import numpy as np

from lymph.model.predict.grid import Grid


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
    band to hold."""

    def __init__(self, grid: Grid, prob_map: np.ndarray):
        self.grid = grid
        self.map = prob_map

    def add(self, probs: np.ndarray, x_lvl: int, y_lvl: int,
            origin: tuple[int, int] | None = None) -> None:
        """The tile whose centre starts at (``x_lvl``, ``y_lvl``); ``probs`` starts at
        ``origin`` (level frame; None: the full tile's origin). A trimmed window covers only
        part of its centre: the rest has no tissue and is written as 0."""
        g = self.grid
        ox, oy = origin if origin is not None else g.tile_origin(x_lvl, y_lvl)
        centre = np.zeros((g.stride, g.stride), np.float64)
        # the part of the centre the window covers, in the centre's and the window's frames
        x0, y0 = max(x_lvl, ox), max(y_lvl, oy)
        x1 = min(x_lvl + g.stride, ox + probs.shape[1])
        y1 = min(y_lvl + g.stride, oy + probs.shape[0])
        if x1 > x0 and y1 > y0:
            centre[y0 - y_lvl : y1 - y_lvl, x0 - x_lvl : x1 - x_lvl] = (
                probs[y0 - oy : y1 - oy, x0 - ox : x1 - ox])
        cells = block_sum(centre, g.cell) / (g.cell * g.cell)
        r, c = y_lvl // g.cell, x_lvl // g.cell
        h, w = min(cells.shape[0], g.map_height - r), min(cells.shape[1], g.map_width - c)
        self.map[r : r + h, c : c + w] = np.clip(np.rint(cells[:h, :w] * 255), 0, 255)

    def emit(self, upto_row: int) -> None:
        """Nothing to close: cells are final when written."""


class BlendSink:
    """Hann-blended windows (``overlap="half"``) through a BandAccumulator into the map."""

    def __init__(self, grid: Grid, prob_map: np.ndarray):
        self.acc = BandAccumulator(grid, hann_weights(grid.window))
        self.map = prob_map

    def add(self, probs: np.ndarray, x_lvl: int, y_lvl: int,
            origin: tuple[int, int] | None = None) -> None:
        """A blend window starts where its map footprint does (``origin``: never trimmed)."""
        if origin is not None and origin != (x_lvl, y_lvl):
            raise ValueError(f"blend windows are never trimmed: window at {origin}, "
                             f"tile at {(x_lvl, y_lvl)}")
        self.acc.add(probs, x_lvl, y_lvl)

    def emit(self, upto_row: int) -> None:
        first, rows = self.acc.finish(upto_row)
        if rows.shape[0]:
            self.map[first : first + rows.shape[0]] = rows

