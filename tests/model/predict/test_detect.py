"""From the map to findings: tissue masking, lesion detections and the slide score."""

from __future__ import annotations

import numpy as np
import pytest

from lymph.model.predict.detect import detect_lesions, mask_to_tissue, slide_probability


def test_slide_probability_in_bands_is_exact() -> None:
    from scipy import ndimage

    rng = np.random.default_rng(0)
    prob = (rng.random((300, 70)) ** 8 * 255).astype(np.uint8)
    whole = ndimage.gaussian_filter(prob.astype(np.float32), 1.0, mode="constant").max() / 255
    assert slide_probability(prob, band=7) == pytest.approx(whole, abs=1e-6)
    assert slide_probability(prob, band=1000) == pytest.approx(whole, abs=1e-6)


def test_detect_lesions_finds_regions_at_their_maximum() -> None:
    prob = np.zeros((40, 50), np.uint8)
    prob[5:10, 5:12] = 200
    prob[7, 8] = 250
    prob[30:32, 40:41] = 140
    prob[20, 20] = 100  # below 0.5
    dets = detect_lesions(prob, map_downsample=16, threshold=0.5, mpp=0.25)
    assert len(dets) == 2
    best = max(dets, key=lambda d: d.confidence)
    assert best.confidence == pytest.approx(250 / 255)
    assert (best.x_level0, best.y_level0) == (int(8.5 * 16), int(7.5 * 16))
    assert best.area_um2 == pytest.approx(35 * (16 * 0.25) ** 2)
    xs, ys = best.outline_level0[:, 0], best.outline_level0[:, 1]
    assert xs.min() == pytest.approx(5 * 16) and xs.max() == pytest.approx(12 * 16)
    assert ys.min() == pytest.approx(5 * 16) and ys.max() == pytest.approx(10 * 16)
    assert detect_lesions(np.zeros((5, 5), np.uint8), map_downsample=16) == []


def test_detect_lesions_matches_whole_map_statistics() -> None:
    from scipy import ndimage

    rng = np.random.default_rng(1)
    prob = (ndimage.gaussian_filter(rng.random((120, 90)), 3) * 255 * 2.2 - 150).clip(0, 255)
    prob = prob.astype(np.uint8)
    labels, n = ndimage.label(prob >= 128, structure=np.ones((3, 3), bool))
    assert n >= 3
    index = np.arange(1, n + 1)
    maxima = ndimage.maximum(prob, labels, index)
    dets = detect_lesions(prob, map_downsample=16, threshold=0.5)
    assert len(dets) == n
    found = set()
    for d in dets:  # at a pixel holding its region's maximum (ties: any of them)
        r, c = d.y_level0 // 16, d.x_level0 // 16
        lab = int(labels[r, c])
        assert lab > 0 and prob[r, c] == maxima[lab - 1] == round(d.confidence * 255)
        found.add(lab)
    assert found == set(index.tolist())
    assert sum(d.extra["area_map_px"] for d in dets) == (prob >= 128).sum()


def test_slide_probability_ignores_a_single_hot_pixel() -> None:
    spike = np.zeros((30, 30), np.uint8)
    spike[15, 15] = 255
    blob = np.zeros((30, 30), np.uint8)
    blob[10:20, 10:20] = 255
    assert slide_probability(spike) < 0.2
    assert slide_probability(blob) > 0.99
    assert slide_probability(np.zeros((0, 0), np.uint8)) == 0.0


def test_mask_to_tissue_zeroes_glass_and_keeps_tissue():

    # thumbnail at downsample 64: tissue is the left half; map at downsample 16 (4x finer)
    tissue = np.zeros((8, 8), bool)
    tissue[:, :4] = True
    prob = np.full((32, 32), 200, np.uint8)
    out = mask_to_tissue(prob, tissue, thumb_downsample=64.0, map_downsample=16.0,
                         margin_thumb=0)
    assert out is prob
    assert (prob[:, :16] == 200).all() and (prob[:, 16:] == 0).all()
    prob = np.full((32, 32), 200, np.uint8)
    mask_to_tissue(prob, tissue, thumb_downsample=64.0, map_downsample=16.0, margin_thumb=1)
    assert (prob[:, :20] == 200).all() and (prob[:, 20:] == 0).all()  # one thumb px of margin
