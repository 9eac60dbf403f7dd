"""One slide's FROC view for the viewer: the counts of ``lymph eval slides --rules lymph`` (the
same truth, ``model.camelyon.lymph_truth``, and the same ``score_slide``) and, per detection,
what it counted as, plus a box around each lesion no detection hit.

Per detection (in ``S.csv`` order): ``hit`` (the best detection of a lesion), ``dup`` (another
detection in a lesion already hit: ignored), ``itc`` (on an isolated-tumor-cell region:
ignored), ``fp`` (outside every lesion, or any detection on a normal slide).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from lymph.model.camelyon import SlideEvalConfig


def _statuses(det: np.ndarray, labels: np.ndarray, itc: frozenset[int],
              downsample: float) -> list[str]:
    rows = np.floor(det[:, 2] / downsample).astype(np.int64)
    cols = np.floor(det[:, 1] / downsample).astype(np.int64)
    inside = (rows >= 0) & (rows < labels.shape[0]) & (cols >= 0) & (cols < labels.shape[1])
    lab = np.zeros(len(det), np.int64)
    lab[inside] = labels[rows[inside], cols[inside]]
    out = ["fp" if k == 0 else "itc" if k in itc else "dup" for k in lab]
    best: dict[int, int] = {}
    for i, k in enumerate(lab.tolist()):
        if k and k not in itc and det[i, 0] > 0 and (k not in best or det[i, 0] > det[best[k], 0]):
            best[k] = i
    for i in best.values():
        out[i] = "hit"
    return out


def _missed_boxes(labels: np.ndarray, lesion_labels: tuple[int, ...], lesion_probs: np.ndarray,
                  downsample: float) -> list[list[float]]:
    from scipy import ndimage

    objects = ndimage.find_objects(labels)
    boxes = []
    for lab, p in zip(lesion_labels, lesion_probs, strict=True):
        if p > 0 or objects[lab - 1] is None:
            continue
        rs, cs = objects[lab - 1]
        boxes.append([cs.start * downsample, rs.start * downsample, cs.stop * downsample,
                      rs.stop * downsample])
    return boxes


def score_for_view(*, slide_id: str, slide: Path, detections: Path, annotation: Path | None,
                   is_tumor: bool, config: SlideEvalConfig) -> dict[str, Any]:
    """{"counts": {...}, "status": [per detection], "missed": [[x0, y0, x1, y1], ...]}, or
    {"error": ...} for a tumor slide without annotations."""
    from lymph.model.camelyon import SlideCase, lymph_truth, read_detections_csv, score_slide

    det = read_detections_csv(detections)
    if annotation is None and is_tumor:
        return {"error": "tumor by the labels CSV but not annotated: no FROC counts"}
    case = SlideCase(slide_id, slide, detections, annotation, is_tumor)
    truth = lymph_truth(case, downsample=config.downsample) if annotation is not None else None
    ds = config.downsample
    score = score_slide(det, labels=truth[0] if truth else None,
                        itc=truth[1] if truth else (), downsample=ds, name=slide_id)
    counts = {k: v for k, v in score.to_dict().items()
              if k in ("lesions", "lesions_hit", "false_positives", "detections")}
    counts["missed"] = counts["lesions"] - counts["lesions_hit"]
    if truth is None:
        return {"counts": counts, "status": ["fp"] * len(det), "missed": []}
    labels, itc = truth
    return {"counts": counts, "status": _statuses(det, labels, itc, ds),
            "missed": _missed_boxes(labels, score.lesion_labels, score.lesion_probs, ds)}
