"""The colour-separability check."""

from __future__ import annotations

import numpy as np
import pytest

from lymph.data.synth import (
    SynthSlide,
    best_balanced_accuracy,
    colour_separability,
)


def test_best_balanced_accuracy() -> None:
    y = np.array([0, 0, 0, 1, 1, 1])
    assert best_balanced_accuracy(np.array([1, 2, 3, 4, 5, 6.0]), y) == 1.0
    assert best_balanced_accuracy(np.array([6, 5, 4, 3, 2, 1.0]), y) == 1.0  # either direction
    assert best_balanced_accuracy(np.ones(6), y) == 0.5
    with pytest.raises(ValueError, match="need both tumor and non-tumor"):
        best_balanced_accuracy(np.ones(3), np.ones(3))


@pytest.mark.slow  # over 5 s (make test-all runs it)
def test_mean_colour_does_not_separate_tumor(colour_world: tuple[SynthSlide, ...]) -> None:
    result = colour_separability(colour_world)
    assert result["n_tumor"] >= 20 and result["n_non_tumor"] >= 100
    for feature, bacc in result["balanced_accuracy"].items():
        assert bacc <= 0.75, f"mean {feature} separates tumor at {bacc:.3f} balanced accuracy"
