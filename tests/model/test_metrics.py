from __future__ import annotations

import numpy as np
import pytest

from lymph.model.metrics import PixelCounts, PRAccumulator, binarize, pixel_counts


def test_hand_computed_counts_and_metrics() -> None:
    pred = np.array([[1, 1, 0, 0], [1, 0, 0, 0]], dtype=np.uint8)
    target = np.array([[1, 0, 1, 0], [1, 0, 0, 0]], dtype=np.uint8)
    c = pixel_counts(pred, target)
    assert c == PixelCounts(tp=2, fp=1, fn=1, tn=4)
    assert c.precision == pytest.approx(2 / 3)
    assert c.recall == pytest.approx(2 / 3)
    assert c.f1 == pytest.approx(2 / 3)
    assert c.dice == c.f1
    assert c.iou == pytest.approx(2 / 4)


def test_unequal_precision_recall_f1() -> None:
    # 3 tumor pixels, 1 found, 0 false alarms: P 1, R 1/3, F1 = 2*1/(2+0+2) = 0.5, IoU 1/3
    target = np.array([1, 1, 1, 0, 0, 0], dtype=bool)
    pred = np.array([1, 0, 0, 0, 0, 0], dtype=bool)
    c = pixel_counts(pred, target)
    assert (c.tp, c.fp, c.fn, c.tn) == (1, 0, 2, 3)
    assert c.precision == 1.0
    assert c.recall == pytest.approx(1 / 3)
    assert c.f1 == pytest.approx(0.5)
    assert c.iou == pytest.approx(1 / 3)


def test_all_negative_patch_predicted_negative_is_perfect() -> None:
    c = pixel_counts(np.zeros((5, 7), bool), np.zeros((5, 7), bool))
    assert c == PixelCounts(tn=35)
    assert (c.precision, c.recall, c.f1, c.dice, c.iou) == (1.0, 1.0, 1.0, 1.0, 1.0)


def test_all_negative_patch_with_false_alarm_scores_zero() -> None:
    pred = np.zeros((4, 4), bool)
    pred[0, 0] = True
    c = pixel_counts(pred, np.zeros((4, 4), bool))
    assert c == PixelCounts(fp=1, tn=15)
    # no tumor to find, but an error was made: the empty ratio (recall) is 0.0, not 1.0
    assert (c.precision, c.recall, c.f1, c.iou) == (0.0, 0.0, 0.0, 0.0)


def test_perfect_prediction() -> None:
    target = np.zeros((6, 6), np.uint8)
    target[1:4, 2:5] = 1
    c = pixel_counts(target.copy(), target)
    assert c == PixelCounts(tp=9, tn=27)
    assert (c.precision, c.recall, c.f1, c.iou) == (1.0, 1.0, 1.0, 1.0)


def test_empty_prediction_on_tumor_patch() -> None:
    target = np.ones((3, 3), np.uint8)
    c = pixel_counts(np.zeros((3, 3), np.uint8), target)
    assert c == PixelCounts(fn=9)
    assert (c.precision, c.recall, c.f1, c.iou) == (0.0, 0.0, 0.0, 0.0)


def test_threshold_at_the_edge_is_inclusive() -> None:
    probs = np.array([0.49, 0.5, 0.51, 0.0, 1.0], dtype=np.float32)
    np.testing.assert_array_equal(binarize(probs, 0.5), [False, True, True, False, True])
    np.testing.assert_array_equal(binarize(probs, 0.0), [True] * 5)
    np.testing.assert_array_equal(binarize(probs, 1.0), [False, False, False, False, True])


def test_binarize_rejects_threshold_out_of_range() -> None:
    with pytest.raises(ValueError, match=r"threshold must be within \[0, 1\]"):
        binarize(np.zeros(3, np.float32), 1.5)


def test_counts_add_and_sum() -> None:
    a = PixelCounts(tp=1, fp=2, fn=3, tn=4)
    b = PixelCounts(tp=10, fp=20, fn=30, tn=40)
    assert a + b == PixelCounts(tp=11, fp=22, fn=33, tn=44)
    assert sum([a, b]) == a + b
    assert (a + b).total == 110
    d = a.to_dict()
    assert set(d) >= {"precision", "recall", "f1", "dice", "iou", "tp", "fp", "fn", "tn"}


def test_pooled_counts_differ_from_mean_of_patches() -> None:
    # pooled over patches = counts of the concatenation
    rng = np.random.default_rng(3)
    pred = rng.random((4, 8, 8)) > 0.5
    target = rng.random((4, 8, 8)) > 0.7
    pooled = sum(pixel_counts(p, t) for p, t in zip(pred, target, strict=True))
    assert pooled == pixel_counts(pred, target)


def test_pixel_counts_rejects_probabilities() -> None:
    with pytest.raises(ValueError, match="threshold probabilities first"):
        pixel_counts(np.full((2, 2), 0.7), np.ones((2, 2), np.uint8))


def test_pixel_counts_rejects_non_binary_integers() -> None:
    with pytest.raises(ValueError, match="only 0 and 1"):
        pixel_counts(np.full((2, 2), 255, np.uint8), np.ones((2, 2), np.uint8))


def test_pixel_counts_rejects_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="differs from target shape"):
        pixel_counts(np.ones((2, 2), bool), np.ones((2, 3), bool))


def test_pixel_counts_rejects_negative_counts() -> None:
    with pytest.raises(ValueError, match="must be >= 0"):
        PixelCounts(tp=-1)


def test_accumulator_matches_direct_counts_at_every_threshold() -> None:
    rng = np.random.default_rng(0)
    bins = 11
    # random probabilities plus values exactly on grid thresholds (edge cases for >=)
    probs = np.concatenate(
        [rng.random(500), np.linspace(0, 1, bins), np.linspace(0, 1, bins)]
    ).astype(np.float32)
    target = rng.random(probs.size) < 0.3
    acc = PRAccumulator(bins=bins)
    acc.update(probs[:200], target[:200])  # streamed in two parts
    acc.update(probs[200:], target[200:])
    curve = acc.curve()
    for k, t in enumerate(acc.thresholds):
        expected = pixel_counts(binarize(probs, t), target)
        assert curve.counts(k) == expected, t
        assert acc.counts_at(t) == expected
        assert curve.f1[k] == pytest.approx(expected.f1)
        assert curve.precision[k] == pytest.approx(expected.precision)
        assert curve.recall[k] == pytest.approx(expected.recall)


def test_accumulator_best_f1_and_recall_threshold_hand_case() -> None:
    # tumor pixels at 0.9, 0.8, 0.3; non-tumor at 0.6, 0.1 (grid step 0.1)
    probs = np.array([0.9, 0.8, 0.3, 0.6, 0.1])
    target = np.array([1, 1, 1, 0, 0], dtype=np.uint8)
    acc = PRAccumulator(bins=11)
    acc.update(probs, target)
    # t=0.7..0.8: tp2 fp0 fn1 -> F1 0.8 ; t=0.2..0.3: tp3 fp1 -> F1 6/7=0.857 (best)
    assert acc.best_f1_threshold() == pytest.approx(0.3)
    # recall >= 0.9 needs all three tumor pixels: highest such threshold is 0.3
    assert acc.threshold_at_recall(0.9) == pytest.approx(0.3)
    # recall >= 0.6 is reached with two pixels: highest threshold 0.8
    assert acc.threshold_at_recall(0.6) == pytest.approx(0.8)
    assert 0.0 < acc.curve().average_precision() <= 1.0


def test_accumulator_merge_and_roundtrip() -> None:
    a, b = PRAccumulator(bins=5), PRAccumulator(bins=5)
    a.update(np.array([0.1, 0.9]), np.array([0, 1], np.uint8))
    b.update(np.array([0.4]), np.array([1], np.uint8))
    a += b
    assert a.n_pixels == 3
    c = PRAccumulator.from_dict(a.to_dict())
    np.testing.assert_array_equal(c.hist_pos, a.hist_pos)
    np.testing.assert_array_equal(c.hist_neg, a.hist_neg)


def test_accumulator_rejects_out_of_range_probs() -> None:
    acc = PRAccumulator(bins=5)
    with pytest.raises(ValueError, match=r"probs must lie in \[0, 1\]"):
        acc.update(np.array([0.2, 1.2]), np.array([0, 1], np.uint8))
    with pytest.raises(ValueError, match=r"probs must lie in \[0, 1\]"):
        acc.update(np.array([np.nan]), np.array([0], np.uint8))


def test_accumulator_rejects_integer_probs() -> None:
    with pytest.raises(ValueError, match="must be floating point"):
        PRAccumulator(bins=5).update(np.array([0, 1]), np.array([0, 1], np.uint8))


def test_accumulator_empty_raises() -> None:
    with pytest.raises(ValueError, match="holds no pixels"):
        PRAccumulator().best_f1_threshold()


def test_recall_threshold_without_tumor_raises() -> None:
    acc = PRAccumulator(bins=5)
    acc.update(np.array([0.2]), np.array([0], np.uint8))
    with pytest.raises(ValueError, match="no tumor pixels"):
        acc.threshold_at_recall(0.9)


def test_counts_at_off_grid_threshold_raises() -> None:
    acc = PRAccumulator(bins=5)
    acc.update(np.array([0.2]), np.array([1], np.uint8))
    with pytest.raises(ValueError, match="not on the grid"):
        acc.counts_at(0.3)


def test_accumulator_exact_next_to_grid_thresholds_across_blocks() -> None:
    # 1001-bin grid; float32 values on, just above and just below every threshold, plus enough
    # random values to span several internal blocks
    grid = (np.arange(1001) / 1000).astype(np.float32)
    edges = np.concatenate(
        [grid, np.nextafter(grid, np.float32(2)), np.nextafter(grid, np.float32(-1))]
    ).clip(0, 1)
    rng = np.random.default_rng(5)
    probs = np.concatenate([edges, rng.random(150_000, dtype=np.float32)])
    target = rng.random(probs.size) < 0.25
    acc = PRAccumulator()
    acc.update(probs, target)
    # reference: index of the largest threshold <= p, by binary search in float64
    idx = np.searchsorted(acc.thresholds, probs.astype(np.float64), side="right") - 1
    np.testing.assert_array_equal(acc.hist_pos, np.bincount(idx[target], minlength=1001))
    np.testing.assert_array_equal(acc.hist_neg, np.bincount(idx[~target], minlength=1001))
    for t in (0.0, 0.3, 0.5, 0.999, 1.0):
        assert acc.counts_at(t) == pixel_counts(binarize(probs, t), target)
