"""Checks that a synthetic world is not trivially separable, beside `checks.colour_separability`:
a nuclear-size-only rule (the mean size of a patch's dark blobs, one threshold) and the shape
statistics of a world's lesion outlines against real CAMELYON16 ones."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import ndimage

from lymph.data.synth.checks import best_balanced_accuracy, labelled_patches
from lymph.data.synth.world.outlines import shape_stats, summarize
from lymph.data.synth.write import SynthSlide


def otsu(values: np.ndarray) -> float:
    """Otsu's threshold of a float image (256 bins)."""
    hist, edges = np.histogram(values, bins=256)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist).astype(float)
    w1 = w0[-1] - w0
    m = np.cumsum(hist * centres)
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (m[-1] * w0 / w0[-1] - m) ** 2 / (w0 * w1)
    return float(centres[np.nanargmax(between)])


def blob_sizes(rgb: np.ndarray) -> np.ndarray:
    """Areas (px) of the dark blobs of a patch: Otsu on the blurred red channel (where
    hematoxylin absorbs), holes filled, opened; blobs under 30 px (noise) left out."""
    red = ndimage.gaussian_filter(rgb[..., 0].astype(np.float64), 1.5)
    blobs = ndimage.binary_opening(ndimage.binary_fill_holes(red < otsu(red)), iterations=2)
    lab, n = ndimage.label(blobs)
    sizes = ndimage.sum_labels(blobs, lab, np.arange(1, n + 1)) if n else np.zeros(0)
    return sizes[sizes >= 30]


# The rule's variants: the statistic of a patch's blob areas, and an upper area cap (6000 px:
# a 20 um disc at 0.243 um/px; larger blobs are merged sheets, not nuclei). The reported
# figure is the best of them (the strongest nuclear-size rule tried).
Statistic = Callable[[np.ndarray], np.floating]
VARIANTS: dict[str, tuple[Statistic, float | None]] = {
    "mean": (np.mean, None), "median": (np.median, None),
    "mean_capped": (np.mean, 6000), "median_capped": (np.median, 6000),
}


def blob_features(rgb: np.ndarray) -> dict[str, float]:
    """Each VARIANTS statistic of a patch's dark-blob areas (0 when there is none)."""
    sizes = blob_sizes(rgb)
    out = {}
    for name, (stat, cap) in VARIANTS.items():
        s = sizes if cap is None else sizes[sizes <= cap]
        out[name] = float(stat(s)) if s.size else 0.0
    return out


def nuclear_size_separability(
    slides: Sequence[SynthSlide], *, patch_size: int = 300, min_tissue: float = 0.5
) -> dict[str, object]:
    """Best balanced accuracy of one threshold on a patch's dark-blob size, tumor (at
    least half the patch in the mask) against non-tumor (none of it); level-0 patches on a
    grid, as `checks.colour_separability` takes them."""
    sizes, labels = [], []
    for rgb, label in labelled_patches(slides, patch_size=patch_size, min_tissue=min_tissue):
        sizes.append(blob_features(rgb))
        labels.append(label)
    y = np.asarray(labels)
    per = {k: best_balanced_accuracy(np.asarray([s[k] for s in sizes]), y) for k in VARIANTS}
    return {
        "balanced_accuracy": max(per.values()),
        "per_variant": per,
        "n_tumor": int(y.sum()),
        "n_non_tumor": int((1 - y).sum()),
    }


def world_outline_stats(slides: Sequence[SynthSlide], *, min_diameter_um: float = 0.0,
                        mpp: float = 0.243) -> dict[str, float]:
    """Shape statistics (summarize) of a world's tumor outlines of at least `min_diameter_um`."""
    stats = [shape_stats(les.points) for s in slides for les in s.lesions
             if les.diameter_um >= min_diameter_um]
    out = summarize(stats)
    diam = np.array([st["diameter"] * mpp for st in stats])
    out["diameter_um_median"] = float(np.median(diam))
    return out
