"""Tile painting: morphology, not colour, carries the label."""

from __future__ import annotations

import numpy as np
import openslide
from scipy import ndimage

from lymph.data.synth import (
    SynthSlide,
    tissue_fraction,
)

SIZE = (4096, 3072)


def _otsu(values: np.ndarray) -> float:
    hist, edges = np.histogram(values, bins=128)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m = np.cumsum(hist * centres)
    with np.errstate(all="ignore"):
        between = (m[-1] * w0 / w0[-1] - m) ** 2 / (w0 * w1)
    return float(centres[np.nanargmax(between)])


def test_tumor_nuclei_are_larger_than_lymphocytes(colour_world: tuple[SynthSlide, ...]) -> None:
    """Morphology carries the label: nuclear blobs (Otsu on the blurred red channel, where
    hematoxylin absorbs) are much bigger in tumor patches than in non-tumor tissue."""
    medians: dict[bool, list[float]] = {True: [], False: []}
    for s in colour_world[:3]:
        img = np.asarray(openslide.OpenSlide(s.path).read_region((0, 0), 0, SIZE))[..., :3]
        gt = np.asarray(openslide.OpenSlide(s.mask).read_region((0, 0), 0, SIZE))[..., 0] > 127
        _nuclear_blob_medians(img, gt, medians)
    assert len(medians[True]) >= 5 and len(medians[False]) >= 5
    assert np.median(medians[True]) > 2 * np.median(medians[False])


def _nuclear_blob_medians(
    img: np.ndarray, gt: np.ndarray, medians: dict[bool, list[float]]
) -> None:
    for y in range(0, SIZE[1] - 300, 300):
        for x in range(0, SIZE[0] - 300, 300):
            rgb = img[y : y + 300, x : x + 300]
            frac = gt[y : y + 300, x : x + 300].mean()
            if tissue_fraction(rgb) < 0.9 or 0 < frac < 0.9:
                continue
            red = ndimage.gaussian_filter(rgb[..., 0].astype(float), 2)
            nuclei = ndimage.binary_opening(
                ndimage.binary_fill_holes(red < _otsu(red)), iterations=3
            )
            lab, n = ndimage.label(nuclei)
            if n:
                sizes = ndimage.sum_labels(nuclei, lab, np.arange(1, n + 1))
                medians[bool(frac >= 0.9)].append(float(np.median(sizes)))
