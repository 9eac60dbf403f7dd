"""lymph's rules for one slide: hits, ITC hits ignored, false positives."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from lymph.model.camelyon import froc, score_slide

Lesions = tuple[np.ndarray, frozenset[int]]
At = Callable[[float, float], tuple[float, float]]


def test_two_detections_in_one_lesion_count_once(two_lesions: Lesions, at: At) -> None:
    labels, itc = two_lesions
    det = np.array([[0.9, *at(20, 20)], [0.7, *at(25, 25)]])
    s = score_slide(det, labels=labels, itc=itc)
    assert s.n_lesions == 2
    assert sorted(s.lesion_probs.tolist()) == [0.0, pytest.approx(0.9)]
    assert s.fp_probs.size == 0
    assert s.n_ignored == 1


def test_an_itc_hit_neither_helps_nor_hurts(two_lesions: Lesions, at: At) -> None:
    labels, itc = two_lesions
    hit_a = [0.9, *at(20, 20)]
    on_itc = [0.8, *at(91, 61)]
    without = score_slide(np.array([hit_a]), labels=labels, itc=itc)
    with_itc = score_slide(np.array([hit_a, on_itc]), labels=labels, itc=itc)
    assert with_itc.n_lesions == without.n_lesions == 2
    np.testing.assert_array_equal(with_itc.lesion_probs, without.lesion_probs)
    assert with_itc.fp_probs.size == without.fp_probs.size == 0
    assert with_itc.n_ignored == 1
    a = froc([without]).interpolated
    b = froc([with_itc]).interpolated
    assert a == b == pytest.approx(0.5)


def test_detections_outside_lesions_and_outside_the_frame_are_false_positives(
    two_lesions: Lesions, at: At
) -> None:
    labels, itc = two_lesions
    det = np.array([[0.6, *at(100, 150)], [0.5, 1e7, 1e7], [0.4, -5.0, 3.0]])
    s = score_slide(det, labels=labels, itc=itc)
    assert sorted(s.fp_probs.tolist()) == [0.4, 0.5, 0.6]
    assert (s.lesion_probs == 0).all()


def test_every_detection_on_a_normal_slide_is_a_false_positive() -> None:
    det = np.array([[0.9, 100.0, 100.0], [0.2, 5000.0, 7000.0]])
    s = score_slide(det, labels=None)
    assert not s.is_tumor and s.n_lesions == 0
    assert s.fp_probs.tolist() == [0.9, 0.2]
    assert score_slide(np.zeros((0, 3)), labels=None).fp_probs.size == 0


def test_bad_detection_arrays_are_refused() -> None:
    with pytest.raises(ValueError, match=r"\(n, 3\)"):
        score_slide(np.zeros((2, 2)), labels=None)
    with pytest.raises(ValueError, match="NaN"):
        score_slide(np.array([[np.nan, 1.0, 1.0]]), labels=None)
