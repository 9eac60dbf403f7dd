"""Tissue detection on a low-resolution thumbnail: Otsu on HSV saturation, morphological
clean-up, small specks dropped. Everything is in the thumbnail frame (`thumb`)."""

from __future__ import annotations

import numpy as np

MIN_SATURATION = 20
"""Floor for the Otsu threshold (0-255): a blank glass slide has only noise in saturation, and
Otsu alone would split that noise into 'tissue'."""

DARK_VALUE = 25
"""Pixels darker than this (HSV value) are scanner borders or ink, not tissue."""


def otsu_threshold(values: np.ndarray) -> int:
    """Otsu's threshold of uint8 `values`: the t maximising between-class variance of
    {v < t} and {v >= t}. Returns 0 for a constant input."""
    hist = np.bincount(np.asarray(values, np.uint8).ravel(), minlength=256).astype(np.float64)
    total = hist.sum()
    if total == 0:
        return 0
    levels = np.arange(256, dtype=np.float64)
    w0 = np.cumsum(hist)  # weight of classes {v <= t}
    m0 = np.cumsum(hist * levels)
    w1 = total - w0
    mean_all = m0[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mean_all * w0 - m0 * total) ** 2 / (w0 * w1)
    between[~np.isfinite(between)] = -1
    best = int(np.argmax(between))
    if between[best] <= 0:
        return 0
    return best + 1


def saturation(thumb_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """HSV saturation and value (both uint8 0-255) of an RGB uint8 image."""
    rgb = np.asarray(thumb_rgb)
    mx = rgb.max(axis=2).astype(np.int32)
    mn = rgb.min(axis=2).astype(np.int32)
    sat = np.zeros(mx.shape, np.uint8)
    nz = mx > 0
    sat[nz] = ((mx[nz] - mn[nz]) * 255 // mx[nz]).astype(np.uint8)
    return sat, mx.astype(np.uint8)


def tissue_mask(thumb_rgb: np.ndarray, *, min_area_px: int | None = None) -> np.ndarray:
    """Boolean tissue mask in the thumbnail frame.

    Otsu on HSV saturation (threshold at least MIN_SATURATION), very dark pixels excluded, then
    closing (3x3, 2 iterations), hole filling, opening (3x3), and connected components smaller
    than `min_area_px` dropped (default: 1/10,000 of the thumbnail, at least 4 pixels).
    """
    from scipy import ndimage

    rgb = np.asarray(thumb_rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"tissue_mask needs a uint8 (H, W, 3) thumbnail, got {rgb.dtype} "
                         f"{rgb.shape}")
    if min_area_px is not None and min_area_px < 0:
        raise ValueError(f"min_area_px must be >= 0, got {min_area_px}")
    sat, val = saturation(rgb)
    threshold = max(otsu_threshold(sat), MIN_SATURATION)
    mask = (sat >= threshold) & (val >= DARK_VALUE)
    if not mask.any():
        return mask
    structure = np.ones((3, 3), bool)
    mask = ndimage.binary_closing(mask, structure, iterations=2, border_value=0)
    mask = ndimage.binary_fill_holes(mask)
    mask = ndimage.binary_opening(mask, structure)
    if min_area_px is None:
        min_area_px = max(4, mask.size // 10_000)
    if min_area_px > 1 and mask.any():
        labels, n = ndimage.label(mask)
        sizes = np.bincount(labels.ravel(), minlength=n + 1)
        keep = sizes >= min_area_px
        keep[0] = False
        mask = keep[labels]
    return mask
