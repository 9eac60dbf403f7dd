"""lymph's FROC: operating points, interpolated and stepwise sensitivities."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from lymph.data.errors import ConfigError
from lymph.model.camelyon import froc, froc_curve, score_slide, sensitivity_at

Lesions = tuple[np.ndarray, frozenset[int]]
At = Callable[[float, float], tuple[float, float]]


def test_froc_hand_case_interpolated_and_stepwise(two_lesions: Lesions, at: At) -> None:
    labels, itc = two_lesions
    # lesion A at 0.9; lesion B and a false positive both at 0.6 (one threshold, two events)
    det = np.array([[0.9, *at(20, 20)], [0.6, *at(20, 110)], [0.6, *at(100, 150)]])
    curve = froc([score_slide(det, labels=labels, itc=itc)])
    np.testing.assert_allclose(curve.fps_per_slide, [0, 0, 1])
    np.testing.assert_allclose(curve.sensitivity, [0, 0.5, 1])
    # stepwise: 0.5 below 1 FP, then 1.0; interpolated: on the segment (0, .5)-(1, 1)
    assert curve.sensitivity_stepwise == {0.25: 0.5, 0.5: 0.5, 1.0: 1, 2.0: 1, 4.0: 1, 8.0: 1}
    assert curve.sensitivity_interpolated[0.25] == pytest.approx(0.625)
    assert curve.sensitivity_interpolated[0.5] == pytest.approx(0.75)
    assert curve.stepwise == pytest.approx(5 / 6)
    assert curve.interpolated == pytest.approx((0.625 + 0.75 + 4) / 6)


def test_froc_counts_false_positives_per_slide_over_all_slides(
    two_lesions: Lesions, at: At
) -> None:
    labels, itc = two_lesions
    tumor = score_slide(np.array([[0.9, *at(20, 20)], [0.5, *at(20, 110)]]), labels=labels, itc=itc)
    normal = score_slide(np.array([[0.8, 1.0, 1.0], [0.7, 2.0, 2.0]]), labels=None)
    thresholds, fps, sens = froc_curve([tumor, normal])
    np.testing.assert_allclose(thresholds[1:], [0.9, 0.8, 0.7, 0.5])
    np.testing.assert_allclose(fps, [0, 0, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(sens, [0, 0.5, 0.5, 0.5, 1.0])
    assert sensitivity_at(fps, sens, 0.25, rule="stepwise") == 0.5
    assert sensitivity_at(fps, sens, 8, rule="interpolated") == 1.0


def test_froc_without_detections_is_zero_and_without_lesions_undefined(
    two_lesions: Lesions
) -> None:
    labels, itc = two_lesions
    missed = froc([score_slide(np.zeros((0, 3)), labels=labels, itc=itc)])
    assert missed.interpolated == 0.0 and missed.stepwise == 0.0
    only_normal = froc([score_slide(np.array([[0.5, 1.0, 1.0]]), labels=None)])
    assert only_normal.interpolated is None and only_normal.n_lesions == 0
    with pytest.raises(ConfigError, match="at least one slide"):
        froc([])
    with pytest.raises(ConfigError, match="rule"):
        sensitivity_at(np.zeros(1), np.zeros(1), 1.0, rule="nearest")
