"""Shared by the camelyon tests: a hand-built evaluation mask with two lesions and an ITC, and
the level-0 position of an evaluation pixel."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from lymph.model.camelyon import EVAL_DOWNSAMPLE, evaluation_mask, itc_labels

UM = 0.243 * EVAL_DOWNSAMPLE  # um per evaluation pixel of a CAMELYON16 slide: 7.776


@pytest.fixture
def at() -> Callable[[float, float], tuple[float, float]]:
    """Level-0 (X, Y) of the centre of evaluation pixel (row, col)."""

    def level0(row: float, col: float) -> tuple[float, float]:
        return (col + 0.5) * EVAL_DOWNSAMPLE, (row + 0.5) * EVAL_DOWNSAMPLE

    return level0


@pytest.fixture
def two_lesions() -> tuple[np.ndarray, frozenset[int]]:
    """(labels, ITC labels) of two 30-px lesions and a 2-px ITC on a 120 x 160 frame."""
    mask = np.zeros((120, 160), bool)
    mask[10:40, 10:40] = True  # lesion A
    mask[10:40, 100:130] = True  # lesion B
    mask[90:92, 60:62] = True  # ITC
    labels = evaluation_mask(mask, um_per_px=UM)
    itc = itc_labels(labels, um_per_px=UM)
    assert labels.max() == 3 and len(itc) == 1
    return labels, itc
