"""lymph's rules for one slide: which detections hit a lesion, fall on an isolated-tumor-cell
region (ignored) or are false positives, on the truth of ``truth.py`` at the slide's own mpp.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from lymph.model.camelyon.cases import SlideCase
from lymph.model.camelyon.files import check_detections
from lymph.model.camelyon.truth import (
    CAMELYON16_MPP,
    EVAL_DOWNSAMPLE,
    evaluation_mask,
    itc_labels,
    slide_geometry,
    truth_mask,
)


@dataclass(frozen=True, eq=False)
class SlideScore:
    """What one slide contributes to the FROC.

    ``fp_probs``: confidences of the false positives; ``lesion_probs``: per lesion to find
    (non-ITC label, ascending), the best hitting confidence or 0.0 when missed (the official
    ``TP_probs``); ``labels``: the non-ITC labels in that order; ``n_itc``: ITC regions;
    ``n_ignored``: detections that fell on an ITC or were not the best in their lesion.
    """

    name: str
    is_tumor: bool
    fp_probs: np.ndarray
    lesion_probs: np.ndarray
    lesion_labels: tuple[int, ...] = ()
    n_itc: int = 0
    n_ignored: int = 0
    n_detections: int = 0

    @property
    def n_lesions(self) -> int:
        return len(self.lesion_probs)

    def to_dict(self) -> dict[str, Any]:
        hit = self.lesion_probs > 0
        return {
            "is_tumor": self.is_tumor,
            "detections": self.n_detections,
            "false_positives": len(self.fp_probs),
            "lesions": self.n_lesions,
            "lesions_hit": int(hit.sum()),
            "itc_regions": self.n_itc,
            "ignored_detections": self.n_ignored,
            "lesion_best_confidence": {
                str(lab): float(p)
                for lab, p in zip(self.lesion_labels, self.lesion_probs, strict=True)
            },
        }


def score_slide(
    detections: np.ndarray,
    *,
    labels: np.ndarray | None,
    itc: Iterable[int] = (),
    downsample: float = EVAL_DOWNSAMPLE,
    name: str = "",
) -> SlideScore:
    """Split one slide's detections into hits and false positives.

    ``detections``: (n, 3) rows of confidence, X, Y (level-0 pixels). ``labels``: the evaluation
    mask of a tumor slide (``evaluation_mask``), or None for a normal slide (every detection is a
    false positive). ``itc``: labels of isolated-tumor-cell regions. A detection outside the
    mask's frame is a false positive.
    """
    det = check_detections(detections)
    if labels is None:
        return SlideScore(name, False, det[:, 0].copy(), np.zeros(0), n_detections=len(det))
    labels = np.asarray(labels)
    itc_set = frozenset(int(i) for i in itc)
    n_labels = int(labels.max()) if labels.size else 0
    best = np.zeros(n_labels + 1, np.float64)
    fp: list[float] = []
    ignored = 0
    rows = np.floor(det[:, 2] / downsample).astype(np.int64)
    cols = np.floor(det[:, 1] / downsample).astype(np.int64)
    inside = (rows >= 0) & (rows < labels.shape[0]) & (cols >= 0) & (cols < labels.shape[1])
    for (prob, _, _), row, col, ok in zip(det, rows, cols, inside, strict=True):
        hit = int(labels[row, col]) if ok else 0
        if hit == 0:
            fp.append(float(prob))
        elif hit in itc_set:
            ignored += 1
        else:
            if best[hit] > 0:
                ignored += 1  # a second detection in a lesion: only the best counts
            best[hit] = max(best[hit], float(prob))
    lesion_labels = tuple(i for i in range(1, n_labels + 1) if i not in itc_set)
    return SlideScore(
        name,
        True,
        np.asarray(fp, np.float64),
        best[list(lesion_labels)] if lesion_labels else np.zeros(0),
        lesion_labels,
        n_itc=len(itc_set & set(range(1, n_labels + 1))),
        n_ignored=ignored,
        n_detections=len(det),
    )


def lymph_truth(
    case: SlideCase, *, downsample: float, detail: dict[str, object] | None = None
) -> tuple[np.ndarray, frozenset[int]]:
    """(lesion labels, ITC labels) of an annotated slide by lymph's rules, in the evaluation
    frame of ``downsample``; the slide's mpp (CAMELYON16's 0.243 when it records none or an
    implausible one) goes into ``detail`` as ``mpp`` (and ``mpp_assumed``)."""
    detail = {} if detail is None else detail
    dims, mpp = slide_geometry(case.slide)
    detail["mpp"] = mpp
    if mpp is None or not 0.05 <= mpp <= 20:
        detail["mpp_assumed"] = mpp = CAMELYON16_MPP
    assert case.annotation is not None
    truth = truth_mask(case.slide, case.annotation, dimensions=dims, downsample=downsample)
    um_per_px = mpp * downsample
    lab = evaluation_mask(truth, um_per_px=um_per_px)
    return lab, itc_labels(lab, um_per_px=um_per_px)
