"""One slide scored by both rule sets: its detections read, its slide probability (scores.csv,
else the best detection), lymph's counts and the official script's (or the error that stopped
the official rules), and the JSON detail ``metrics.json`` keeps per slide.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lymph.data.errors import LymphError
from lymph.model.camelyon.cases import SlideCase
from lymph.model.camelyon.config import SlideEvalConfig
from lymph.model.camelyon.files import read_detections_csv
from lymph.model.camelyon.lymph_rules import SlideScore, lymph_truth, score_slide
from lymph.model.camelyon.official import OfficialSlide, official_detail, official_score


@dataclass
class Scored:
    """What one slide adds: its JSON detail, slide probability and each rule set's input (an
    exception when a rule set cannot score it)."""

    detail: dict[str, object]
    probability: float
    lymph: SlideScore | None = None
    official: OfficialSlide | Exception | None = None


def score_case(case: SlideCase, config: SlideEvalConfig, scores: dict[str, float]) -> Scored:
    """Score one slide by both rule sets (the official one recorded as an error if it cannot)."""
    det = read_detections_csv(case.detections) if case.detections else np.zeros((0, 3))
    detail: dict[str, object] = {
        "slide": str(case.slide),
        "status": "tumor" if case.is_tumor else "normal",
        "annotation": str(case.annotation) if case.annotation else None,
        "detections_file": str(case.detections) if case.detections else None,
    }
    if case.name in scores:
        probability, source = scores[case.name], "scores.csv"
    elif case.detections is None:
        probability, source = 0.0, "no predictions: scored as all-missed"
    else:
        probability = float(det[:, 0].max()) if len(det) else 0.0
        source = "max detection confidence (no scores.csv row)"
    detail.update(probability=probability, score_source=source)
    scored = Scored(detail, probability)
    if case.annotation is None and case.is_tumor:
        detail["froc"] = "skipped: tumor slide without annotations (AUC only)"
        return scored
    truth = (
        lymph_truth(case, downsample=config.downsample, detail=detail)
        if case.annotation
        else None
    )
    scored.lymph = score_slide(det, labels=truth[0] if truth else None,
                               itc=truth[1] if truth else (), downsample=config.downsample,
                               name=case.name)  # fmt: skip
    detail.update(scored.lymph.to_dict())
    try:
        scored.official = official_score(case, det)
    except LymphError as exc:
        scored.official = exc
    detail["official"] = official_detail(scored.official)
    return scored
