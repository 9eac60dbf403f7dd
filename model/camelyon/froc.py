"""lymph's FROC: for every distinct confidence (none dropped, float64), the mean false
positives per slide and the fraction of lesions hit; the score is the mean sensitivity at 1/4,
1/2, 1, 2, 4 and 8 FP per slide, read by linear interpolation (``froc``) and at the last
operating point at or below each rate (``froc_stepwise``). The official script's FROC, quirks
included, is ``official.py``'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from lymph.data.errors import ConfigError
from lymph.model.camelyon.lymph_rules import SlideScore

FP_RATES = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


@dataclass(frozen=True, eq=False)
class Froc:
    """The FROC curve (operating points by decreasing threshold, from (0, 0)) and its scores."""

    thresholds: np.ndarray  # inf first
    fps_per_slide: np.ndarray  # non-decreasing
    sensitivity: np.ndarray  # non-decreasing
    n_slides: int
    n_lesions: int
    sensitivity_interpolated: dict[float, float] = field(default_factory=dict)
    sensitivity_stepwise: dict[float, float] = field(default_factory=dict)

    @property
    def interpolated(self) -> float | None:
        v = self.sensitivity_interpolated
        return float(np.mean(list(v.values()))) if v else None

    @property
    def stepwise(self) -> float | None:
        v = self.sensitivity_stepwise
        return float(np.mean(list(v.values()))) if v else None


def froc_curve(scores: Sequence[SlideScore]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds, FP per slide, sensitivity) at every distinct confidence, decreasing, after a
    first point (inf, 0, 0). Sensitivity is NaN when there are no lesions to find."""
    if not scores:
        raise ConfigError("no slides to score: the FROC needs at least one slide")
    fp = np.concatenate([s.fp_probs for s in scores]) if scores else np.zeros(0)
    tp = np.concatenate([s.lesion_probs for s in scores])
    tp = tp[tp > 0]
    n_lesions = sum(s.n_lesions for s in scores)
    thresholds = np.unique(np.concatenate([fp, tp]))[::-1]
    fp_sorted = np.sort(fp)
    tp_sorted = np.sort(tp)
    n_fp = len(fp_sorted) - np.searchsorted(fp_sorted, thresholds, side="left")
    n_tp = len(tp_sorted) - np.searchsorted(tp_sorted, thresholds, side="left")
    fps = np.concatenate([[0.0], n_fp / len(scores)])
    sens = np.concatenate([[0.0], n_tp / n_lesions]) if n_lesions else np.full(len(fps), np.nan)
    return np.concatenate([[np.inf], thresholds]), fps, sens


def sensitivity_at(
    fps: np.ndarray, sens: np.ndarray, rate: float, *, rule: str = "interpolated"
) -> float:
    """Sensitivity of an FROC curve (points by decreasing threshold) at ``rate`` FP per slide.

    "stepwise": the sensitivity of the last point with FP <= rate. "interpolated": linear between
    that point and the next one, as ``np.interp`` does in the official script; beyond the last
    point, its sensitivity.
    """
    if rule not in ("interpolated", "stepwise"):
        raise ConfigError(f"rule must be 'interpolated' or 'stepwise', got {rule!r}")
    fps = np.asarray(fps, np.float64)
    sens = np.asarray(sens, np.float64)
    j = int(np.searchsorted(fps, rate, side="right")) - 1  # last point with fps <= rate
    if j < 0:
        return 0.0
    if rule == "stepwise" or j == len(fps) - 1:
        return float(sens[j])
    x0, x1, y0, y1 = fps[j], fps[j + 1], sens[j], sens[j + 1]
    return float(y0 + (y1 - y0) * (rate - x0) / (x1 - x0))


def froc(scores: Sequence[SlideScore], *, rates: Sequence[float] = FP_RATES) -> Froc:
    """The FROC curve and its mean sensitivities (both rules) over ``scores``."""
    thresholds, fps, sens = froc_curve(scores)
    n_lesions = sum(s.n_lesions for s in scores)
    interp: dict[float, float] = {}
    step: dict[float, float] = {}
    if n_lesions:
        interp = {float(r): sensitivity_at(fps, sens, r, rule="interpolated") for r in rates}
        step = {float(r): sensitivity_at(fps, sens, r, rule="stepwise") for r in rates}
    return Froc(thresholds, fps, sens, len(scores), n_lesions, interp, step)


def rate_key(rate: float) -> str:
    """The JSON key of an FP rate: "0.25", "1", "8"."""
    return f"{rate:g}"
