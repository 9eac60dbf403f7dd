"""Checks that a synthetic world is not trivially separable by colour: the best balanced
accuracy of one threshold on a patch's mean R, G, B, H, S or V, tumor against non-tumor
patches (the issue's bar: <= 0.75). world/checks.py adds a nuclear-size rule and outline
statistics."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from lymph.data.synth.write import SynthSlide

COLOUR_FEATURES = ("R", "G", "B", "H", "S", "V")


def best_balanced_accuracy(values: np.ndarray, labels: np.ndarray) -> float:
    """Best balanced accuracy of any single threshold on `values` (either direction)."""
    order = np.argsort(values, kind="stable")
    v, y = values[order], labels[order].astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("need both tumor and non-tumor patches to measure separability")
    # predict "tumor" for values above the cut placed after position k (k = 0..n)
    pos_below = np.concatenate([[0], np.cumsum(y)])
    neg_below = np.concatenate([[0], np.cumsum(~y)])
    # only cut between distinct values
    cut_ok = np.concatenate([[True], v[1:] != v[:-1], [True]])
    tpr = (n_pos - pos_below) / n_pos
    tnr = neg_below / n_neg
    bacc = (tpr + tnr) / 2
    bacc = np.where(cut_ok, np.maximum(bacc, 1 - bacc), 0)
    return float(bacc.max())


def patch_colour_features(rgb: np.ndarray, *, step: int = 3) -> dict[str, float]:
    """Mean R, G, B (0-255) and mean per-pixel H, S, V (0-1) of an RGB uint8 patch (the means
    are taken over every `step`-th pixel in each direction: within 0.5% of the full mean)."""
    px = rgb[::step, ::step].reshape(-1, 3).astype(np.float32)
    r, g, b = px[:, 0], px[:, 1], px[:, 2]
    mx = px.max(axis=1)
    mn = px.min(axis=1)
    delta = mx - mn
    safe = np.where(delta > 0, delta, 1)
    hue = np.where(
        mx == r, ((g - b) / safe) % 6, np.where(mx == g, (b - r) / safe + 2, (r - g) / safe + 4)
    )
    hue = np.where(delta > 0, hue / 6, 0)
    sat = np.where(mx > 0, delta / np.where(mx > 0, mx, 1), 0)
    return {
        "R": float(r.mean()),
        "G": float(g.mean()),
        "B": float(b.mean()),
        "H": float(hue.mean()),
        "S": float(sat.mean()),
        "V": float(mx.mean() / 255),
    }


def tissue_fraction(rgb: np.ndarray, *, step: int = 3) -> float:
    """Fraction of a patch that is tissue (not near-white glass): coloured (max - min > 20) or
    darker than 200 on average; every `step`-th pixel."""
    px = rgb[::step, ::step].reshape(-1, 3).astype(np.int16)
    r, g, b = px[:, 0], px[:, 1], px[:, 2]
    mx = np.maximum(np.maximum(r, g), b)
    mn = np.minimum(np.minimum(r, g), b)
    return float(((mx - mn > 20) | (r + g + b < 600)).mean())


def labelled_patches(slides: Sequence[SynthSlide], *, patch_size: int = 300,
                     stride: int | None = None,
                     min_tissue: float = 0.5) -> Iterator[tuple[np.ndarray, int]]:
    """(RGB patch, 1 tumor / 0 non-tumor) of every level-0 patch on a regular grid (read with
    OpenSlide) with at least `min_tissue` tissue; tumor = at least half the patch in the mask
    TIFF, non-tumor = none of it (patches in between are left out)."""
    import openslide

    stride = stride or patch_size
    for s in slides:
        slide = openslide.OpenSlide(str(s.path))
        mask = openslide.OpenSlide(str(s.mask)) if s.mask is not None else None
        w, h = slide.dimensions
        whole = w * h <= 64e6  # small slides: one read, then slice
        img = np.asarray(slide.read_region((0, 0), 0, (w, h)))[..., :3] if whole else None
        gt = None
        if whole and mask is not None:
            gt = np.asarray(mask.read_region((0, 0), 0, (w, h)))[..., 0]
        for y in range(0, h - patch_size + 1, stride):
            for x in range(0, w - patch_size + 1, stride):
                if img is not None:
                    rgb = img[y : y + patch_size, x : x + patch_size]
                else:
                    rgb = np.asarray(
                        slide.read_region((x, y), 0, (patch_size, patch_size))
                    )[..., :3]
                if tissue_fraction(rgb) < min_tissue:
                    continue
                frac = 0.0
                if gt is not None:
                    frac = float((gt[y : y + patch_size, x : x + patch_size] > 127).mean())
                elif mask is not None:
                    m = np.asarray(mask.read_region((x, y), 0, (patch_size, patch_size)))[..., 0]
                    frac = float((m > 127).mean())
                if 0 < frac < 0.5:
                    continue
                yield rgb, int(frac >= 0.5)
        slide.close()
        if mask is not None:
            mask.close()


def colour_separability(
    slides: Sequence[SynthSlide],
    *,
    patch_size: int = 300,
    stride: int | None = None,
    min_tissue: float = 0.5,
) -> dict[str, object]:
    """How well a single threshold on a 300 px patch's mean colour separates tumor from
    non-tumor patches: the best balanced accuracy per feature (R, G, B, H, S, V), the best of
    them, and the patch counts (patches as `labelled_patches` takes them)."""
    feats: list[dict[str, float]] = []
    labels: list[int] = []
    for rgb, label in labelled_patches(slides, patch_size=patch_size, stride=stride,
                                       min_tissue=min_tissue):
        feats.append(patch_colour_features(rgb))
        labels.append(label)
    y = np.asarray(labels)
    result = {
        f: best_balanced_accuracy(np.asarray([d[f] for d in feats]), y)
        for f in COLOUR_FEATURES
    }
    return {
        "balanced_accuracy": result,
        "best": max(result.values()),
        "n_tumor": int(y.sum()),
        "n_non_tumor": int((1 - y).sum()),
    }
