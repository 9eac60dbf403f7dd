"""lymph's truth: lesions merged within 75 um, holes filled, ITCs under 275 um."""

from __future__ import annotations

import numpy as np
import pytest

from lymph.data.errors import ConfigError
from lymph.model.camelyon import EVAL_DOWNSAMPLE, evaluation_mask, itc_labels, major_axis_lengths

UM = 0.243 * EVAL_DOWNSAMPLE  # um per evaluation pixel of a CAMELYON16 slide: 7.776


def square(mask: np.ndarray, row: int, col: int, size: int) -> None:
    mask[row : row + size, col : col + size] = True


def test_lesions_closer_than_75um_merge_and_farther_ones_do_not() -> None:
    near = np.zeros((60, 80), bool)
    square(near, 20, 10, 10)
    square(near, 20, 25, 10)  # 5 px = 39 um apart
    assert evaluation_mask(near, um_per_px=UM).max() == 1
    far = np.zeros((60, 80), bool)
    square(far, 20, 10, 10)
    square(far, 20, 32, 10)  # 12 px = 93 um apart
    labels = evaluation_mask(far, um_per_px=UM)
    assert labels.max() == 2
    # the same gap at a 4x finer pixel size is 23 um: they merge
    assert evaluation_mask(far, um_per_px=UM / 4).max() == 1


def test_growth_is_37_5um_and_holes_are_filled() -> None:
    ring = np.zeros((80, 80), bool)
    square(ring, 10, 10, 60)
    ring[20:60, 20:60] = False  # a 40 px hole: too big to close by growth
    labels = evaluation_mask(ring, um_per_px=UM)
    assert labels.max() == 1
    assert labels[40, 40] == 1  # filled
    one = np.zeros((41, 41), bool)
    one[20, 20] = True
    grown = evaluation_mask(one, um_per_px=UM) > 0
    radius_px = 37.5 / UM  # 4.82
    assert grown[20, 20 + 4] and not grown[20, 20 + 5]
    assert grown.sum() == pytest.approx(np.pi * radius_px**2, rel=0.15)


def test_diagonal_neighbours_are_one_lesion() -> None:
    mask = np.zeros((5, 5), bool)
    mask[1, 1] = mask[2, 2] = True
    labels = evaluation_mask(mask, um_per_px=1000.0)  # growth < 1 px: 8-connectivity decides
    assert labels.max() == 1


def test_major_axis_matches_regionprops_definition() -> None:
    labels = np.zeros((20, 40), np.int32)
    labels[5, 3:16] = 1  # a 13 px line: var = (13^2 - 1) / 12 = 14
    labels[10:15, 20:25] = 2  # a 5 x 5 square: var 2 per axis
    lengths = major_axis_lengths(labels)
    assert lengths[0] == pytest.approx(4 * np.sqrt(14.0))
    assert lengths[1] == pytest.approx(4 * np.sqrt(2.0))
    assert major_axis_lengths(np.zeros((3, 3), np.int32)).size == 0


def test_itc_is_a_region_under_275um() -> None:
    mask = np.zeros((120, 120), bool)
    square(mask, 10, 10, 2)  # 16 um of tumor: grown, about 90 um across
    square(mask, 50, 50, 40)  # 311 um of tumor
    labels = evaluation_mask(mask, um_per_px=UM)
    assert labels.max() == 2
    itc = itc_labels(labels, um_per_px=UM)
    assert itc == {int(labels[11, 11])}
    assert int(labels[70, 70]) not in itc


def test_bad_masks_are_refused() -> None:
    with pytest.raises(ValueError, match="2-D"):
        evaluation_mask(np.zeros((2, 2, 2)), um_per_px=UM)
    with pytest.raises(ConfigError, match="um_per_px"):
        evaluation_mask(np.zeros((2, 2)), um_per_px=0.0)
