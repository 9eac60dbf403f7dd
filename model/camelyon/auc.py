"""Slide-level ROC: the AUC of slide probabilities against tumor/normal (ranks, ties counting
one half) and the ROC curve ``roc.png`` draws.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lymph.data.errors import ConfigError


def slide_auc(scores: Sequence[float], labels: Sequence[int | bool]) -> float:
    """ROC AUC of slide scores against 0/1 labels, by ranks (Mann-Whitney U): the probability
    that a random tumor slide outscores a random normal one, ties counting one half.
    ConfigError when a class is missing."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels).astype(bool)
    if s.shape != y.shape or s.ndim != 1:
        raise ValueError(f"scores {s.shape} and labels {y.shape} must be equal 1-D shapes")
    if not np.isfinite(s).all():
        raise ValueError("slide scores hold NaN or infinite values")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ConfigError(
            f"slide AUC needs tumor and normal slides, got {n_pos} tumor and {n_neg} normal"
        )
    ranks = _average_ranks(s)
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="mergesort")
    sorted_vals = values[order]
    ranks = np.empty(len(values), np.float64)
    starts = np.flatnonzero(np.r_[True, sorted_vals[1:] != sorted_vals[:-1]])
    ends = np.r_[starts[1:], len(values)]
    for a, b in zip(starts, ends, strict=True):
        ranks[order[a:b]] = (a + b + 1) / 2  # mean of 1-based ranks a+1..b
    return ranks


def roc_curve(scores: Sequence[float], labels: Sequence[int | bool]) -> tuple[np.ndarray, ...]:
    """(false positive rate, true positive rate, thresholds) by decreasing threshold, from
    (0, 0) at +inf; tied scores make one step."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels).astype(bool)
    thresholds = np.unique(s)[::-1]
    pos = np.sort(s[y])
    neg = np.sort(s[~y])
    tp = len(pos) - np.searchsorted(pos, thresholds, side="left")
    fp = len(neg) - np.searchsorted(neg, thresholds, side="left")
    tpr = np.r_[0.0, tp / max(len(pos), 1)]
    fpr = np.r_[0.0, fp / max(len(neg), 1)]
    return fpr, tpr, np.r_[np.inf, thresholds]

