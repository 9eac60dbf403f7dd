"""Blending into the map: Hann windows without seams or offset, the band accumulator, and
margin tiles that write every cell once."""

from __future__ import annotations

import numpy as np
import pytest

from lymph.model.predict.blend import BandAccumulator, BlendSink, CropSink, hann_weights
from lymph.model.predict.grid import plan_grid


def test_hann_weights_sum_to_one_at_half_overlap() -> None:
    w = hann_weights(64)
    assert w.min() > 0
    one_d = np.sqrt(np.diag(w))
    np.testing.assert_allclose(one_d[:32] + one_d[32:], 1.0, rtol=1e-6)


@pytest.mark.parametrize("stride", [32, 48, 64])
def test_blending_has_no_seams_and_no_offset(stride: int) -> None:
    """Windows that see a global ramp p(x, y) blend back into that ramp, cell for cell."""
    grid = plan_grid(
        (300, 200), 1.0, level=0, patch_size=64, multiple=4, stride=stride, map_downsample=8
    )
    acc = BandAccumulator(grid, hann_weights(grid.window))
    yy, xx = np.mgrid[0:400, 0:400].astype(np.float32)
    ramp = 0.2 + 0.6 * (xx + 2 * yy) / 1200
    rows: list[np.ndarray] = []
    for y in grid.ys_lvl:
        first, done = acc.finish(y // grid.cell)
        rows.append(done)
        for x in grid.xs_lvl:
            acc.add(ramp[y : y + grid.window, x : x + grid.window], x, y)
    rows.append(acc.finish(grid.map_height)[1])
    blended = np.concatenate(rows) / 255.0
    assert blended.shape == (grid.map_height, grid.map_width)
    cells = ramp[: grid.map_height * 8, : grid.map_width * 8]
    expected = cells.reshape(grid.map_height, 8, grid.map_width, 8).mean(axis=(1, 3))
    np.testing.assert_allclose(blended, expected, atol=0.6 / 255 + 0.004)


def test_accumulator_leaves_unvisited_cells_at_zero_and_refuses_finished_rows() -> None:
    grid = plan_grid((128, 128), 1.0, level=0, patch_size=64, multiple=4, map_downsample=8)
    acc = BandAccumulator(grid, hann_weights(grid.window))
    acc.add(np.full((64, 64), 0.6, np.float32), 64, 0)
    first, rows = acc.finish(8)
    assert first == 0 and rows.shape == (8, 16)
    assert (rows[:, :8] == 0).all() and (rows[:, 8:] == 153).all()
    with pytest.raises(ValueError, match="already finished"):
        acc.add(np.zeros((64, 64), np.float32), 0, 0)


def test_accumulator_skips_rows_no_window_reached() -> None:
    grid = plan_grid((128, 256), 1.0, level=0, patch_size=64, multiple=4, map_downsample=8)
    acc = BandAccumulator(grid, hann_weights(grid.window))
    first, rows = acc.finish(16)  # nothing held: closed, nothing to return, nothing allocated
    assert first == 0 and rows.shape == (0, 16) and acc.num.shape[0] == 0
    acc.add(np.full((64, 64), 0.6, np.float32), 0, 128)
    first, rows = acc.finish(grid.map_height)
    assert first == 16 and rows.shape == (8, 16) and (rows[:, :8] == 153).all()


def test_crop_tiles_write_every_cell_once_without_offset() -> None:
    """Tiles that see a global ramp write back that ramp's cell means, edges included."""
    grid = plan_grid((300, 200), 1.0, level=0, patch_size=64, multiple=4, map_downsample=8,
                     overlap="margin")
    assert grid.margin == 8 and grid.stride == 48
    yy, xx = np.mgrid[0:400, 0:400].astype(np.float32)
    ramp = 0.2 + 0.6 * (xx + 2 * yy) / 1200
    out = np.zeros((grid.map_height, grid.map_width), np.uint8)
    sink = CropSink(grid, out)
    for y in grid.ys_lvl:
        for x in grid.xs_lvl:
            tx, ty = grid.tile_origin(x, y)
            sink.add(ramp[ty : ty + grid.window, tx : tx + grid.window], x, y)
    assert (out > 0).all()  # every cell written (the ramp is at least 0.2 everywhere)
    cells = ramp[: grid.map_height * 8, : grid.map_width * 8]
    expected = cells.reshape(grid.map_height, 8, grid.map_width, 8).mean(axis=(1, 3))
    np.testing.assert_allclose(out / 255.0, expected, atol=0.5 / 255 + 1e-6)


def test_crop_tiles_trimmed_to_a_window_write_it_and_zero_the_rest() -> None:
    """A trimmed window (``origin``) covers part of its tile's centre: the covered cells get the
    window's values, the rest 0, as if the full tile had been 0 outside the window."""
    grid = plan_grid((300, 200), 1.0, level=0, patch_size=64, multiple=4, map_downsample=8,
                     overlap="margin")
    yy, xx = np.mgrid[0:400, 0:400].astype(np.float32)
    ramp = 0.2 + 0.6 * (xx + 2 * yy) / 1200
    trimmed = np.zeros((grid.map_height, grid.map_width), np.uint8)
    padded = np.zeros_like(trimmed)
    rng = np.random.default_rng(0)
    for y in grid.ys_lvl:
        for x in grid.xs_lvl:
            tx, ty = grid.tile_origin(x, y)
            wx, wy = tx + 8 * int(rng.integers(0, 3)), ty + 8 * int(rng.integers(0, 3))
            w, h = 8 * int(rng.integers(2, 5)), 8 * int(rng.integers(2, 5))
            window = ramp[wy : wy + h, wx : wx + w]
            CropSink(grid, trimmed).add(window, x, y, (wx, wy))
            full = np.zeros((grid.window, grid.window), np.float32)
            full[wy - ty : wy - ty + h, wx - tx : wx - tx + w] = window
            CropSink(grid, padded).add(full, x, y)
    np.testing.assert_array_equal(trimmed, padded)
    assert (trimmed == 0).any() and (trimmed > 0).any()


def test_blend_windows_refuse_a_trimmed_origin() -> None:
    grid = plan_grid((128, 256), 1.0, level=0, patch_size=64, multiple=4, map_downsample=8)
    sink = BlendSink(grid, np.zeros((grid.map_height, grid.map_width), np.uint8))
    with pytest.raises(ValueError, match="blend windows are never trimmed"):
        sink.add(np.zeros((64, 64), np.float32), 0, 0, (8, 0))
