"""Tiling geometry: windows aligned to map cells, margin tiles, and the tissue windows and
tissue area they cover."""

from __future__ import annotations

import numpy as np
import pytest

from lymph.data.errors import ConfigError
from lymph.model.predict.grid import Grid, plan_grid, tissue_area_mpx, tissue_windows, trim_tiles


def test_plan_grid_aligns_windows_to_the_map_cells() -> None:
    g = plan_grid((25000, 20000), 1.0, level=0, patch_size=300, multiple=16)
    assert g.cell == 16 and g.window == 320 and g.stride == 160
    assert g.map_downsample == 16 and (g.map_width, g.map_height) == (1563, 1250)
    assert g.xs_lvl[0] == 0 and g.xs_lvl[-1] + g.window >= 25000
    assert g.xs_lvl[-2] + g.window < 25000
    coarse = plan_grid((3000, 2000), 4.0, level=2, patch_size=300, multiple=16, stride=100)
    assert coarse.cell == 4 and coarse.map_downsample == 16 and coarse.stride == 100
    assert coarse.window % 16 == 0 and coarse.window >= 300
    tiny = plan_grid((50, 40), 1.0, level=0, patch_size=300, multiple=16)
    assert tiny.xs_lvl == (0,) and tiny.ys_lvl == (0,) and tiny.map_width == 4


def test_plan_grid_refuses_a_stride_larger_than_the_window() -> None:
    with pytest.raises(ConfigError, match="stride 400 > window 320"):
        plan_grid((1000, 1000), 1.0, level=0, patch_size=300, multiple=16, stride=400)


def test_tissue_windows_skip_background() -> None:
    grid = plan_grid((1000, 1000), 1.0, level=0, patch_size=64, multiple=4, map_downsample=8)
    thumb = np.zeros((100, 100), bool)
    thumb[0:10, 0:10] = True  # level-0 [0, 100): windows starting at 0, 32, 64 and 96
    origins = tissue_windows(grid, thumb, 10.0)
    assert origins == [(x, y) for y in (0, 32, 64, 96) for x in (0, 32, 64, 96)]
    assert tissue_windows(grid, np.zeros((100, 100), bool), 10.0) == []


def test_tissue_area_counts_tissue_under_stride_cells_once() -> None:
    # half-overlap windows of 64 px every 32 on a 1,000 px level-0 slide; thumbnail at ds 10
    grid = plan_grid((1000, 1000), 1.0, level=0, patch_size=64, multiple=4, map_downsample=8)
    full = np.ones((100, 100), bool)
    every = [(x, y) for y in grid.ys_lvl for x in grid.xs_lvl]
    covered = tissue_area_mpx(grid, every, full, 10.0)
    # the cells tile the slide but for a 16 px border strip (a quarter window each side)
    assert 0.9 < covered <= 1.0
    left = full.copy()
    left[:, 50:] = False  # tissue only in the left half
    assert tissue_area_mpx(grid, every, left, 10.0) == pytest.approx(covered / 2, rel=0.05)
    assert tissue_area_mpx(grid, every, np.zeros((100, 100), bool), 10.0) == 0.0
    assert tissue_area_mpx(grid, [], full, 10.0) == 0.0


def test_tissue_area_does_not_credit_glass_in_big_tiles() -> None:
    # one 1,024 px crop tile over a slide whose tissue is a 100 x 100 px square
    grid = plan_grid((1000, 1000), 1.0, level=0, patch_size=64, multiple=4, map_downsample=8,
                     window=1024, overlap="margin")
    thumb = np.zeros((100, 100), bool)
    thumb[40:50, 40:50] = True
    origins = tissue_windows(grid, thumb, 10.0)
    assert len(origins) == 1
    assert tissue_area_mpx(grid, origins, thumb, 10.0) == pytest.approx(0.01)


def test_margin_tiles_keep_the_training_window_at_redundancy_near_1_2() -> None:
    g = plan_grid((25000, 20000), 1.0, level=0, patch_size=300, multiple=16, overlap="margin")
    assert g.mode == "crop" and g.window == 320 and g.margin == 16 and g.stride == 288
    assert (g.window / g.stride) ** 2 == pytest.approx(1.23, abs=0.01)
    assert g.xs_lvl[0] == 0 and g.xs_lvl[-1] < 25000 <= g.xs_lvl[-1] + g.stride
    assert g.tile_origin(0, 0) == (0, 0)  # at the edge: shifted inwards, centre still inside
    assert g.tile_origin(288, 576) == (272, 560)
    x = g.xs_lvl[-1]
    tx, _ = g.tile_origin(x, 0)
    assert tx <= x and tx + g.window == max(x + g.stride, 25000)  # no more glass than needed
    with pytest.raises(ConfigError, match="margin 160 px leaves no centre"):
        plan_grid((1000, 1000), 1.0, level=0, patch_size=300, multiple=16, overlap="margin",
                  margin=160)


def _crop_grid(size: int = 1000, window: int = 256) -> Grid:
    return plan_grid((size, size), 1.0, level=0, patch_size=window, multiple=16, window=window,
                     overlap="margin")


def test_trimmed_tiles_hold_their_tissue_and_margin_inside_the_tile() -> None:
    g = _crop_grid()
    thumb = np.zeros((250, 250), bool)  # thumbnail at 4 level px per px
    thumb[60:70, 100:105] = True  # a small island: level x 400-420, y 240-280
    origins = tissue_windows(g, thumb, 4.0)
    rects = trim_tiles(g, origins, thumb, 4.0, multiple=16)
    assert len(rects) == len(origins) >= 1
    for (ox, oy), (x, y, w, h) in zip(origins, rects, strict=True):
        tx, ty = g.tile_origin(ox, oy)
        assert w % 16 == 0 and h % 16 == 0 and 16 <= w <= g.window and 16 <= h <= g.window
        assert tx <= x and x + w <= tx + g.window and ty <= y and y + h <= ty + g.window
        # the island's part in this tile's centre, grown by the margin, is inside the rect
        x0, x1 = max(400, ox), min(420, ox + g.stride)
        y0, y1 = max(240, oy), min(280, oy + g.stride)
        if x0 < x1 and y0 < y1:
            assert x <= max(tx, x0 - g.margin) and x + w >= min(tx + g.window, x1 + g.margin)
            assert y <= max(ty, y0 - g.margin) and y + h >= min(ty + g.window, y1 + g.margin)
    assert sum(w * h for *_, w, h in rects) < 0.25 * len(rects) * g.window**2


def test_a_tile_full_of_tissue_is_not_trimmed_but_the_edge_tiles_are() -> None:
    g = _crop_grid()  # 1,000 px: centres at 0, 224, ..., 896; the last centre is 104 px
    thumb = np.ones((250, 250), bool)
    origins = tissue_windows(g, thumb, 4.0)
    rects = trim_tiles(g, origins, thumb, 4.0, multiple=16)
    for (ox, oy), (x, y, w, h) in zip(origins, rects, strict=True):
        if 0 < ox < 896 and 0 < oy < 896:
            assert (x, y, w, h) == (*g.tile_origin(ox, oy), g.window, g.window)
        elif max(ox, oy) == 896:  # the last tile: its 104 px centre and the margins, 136 -> 144
            assert min(w, h) == 144 and max(x, y) == 880
        else:  # the first tile reads no glass before the slide: its centre + one margin
            assert min(w, h) == 240


def test_only_crop_tiles_are_trimmed() -> None:
    g = plan_grid((1000, 1000), 1.0, level=0, patch_size=256, multiple=16, overlap="half")
    with pytest.raises(ValueError, match="only crop-mode tiles can be trimmed"):
        trim_tiles(g, [(0, 0)], np.ones((10, 10), bool), 100.0, multiple=16)
