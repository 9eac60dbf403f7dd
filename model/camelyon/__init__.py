"""CAMELYON16 scoring (`lymph eval slides`): lesion-level FROC and slide-level AUC, by two rule
sets, both computed on every run; ``SlideEvalConfig.rules`` picks the headline ``froc``.

**official** (the default; section "the official script's rules"): the numbers of the challenge's
own ``Evaluation_FROC.py`` (computationalpathologygroup/Camelyon16; Ehteshami Bejnordi et al.,
JAMA 2017), quirks Q1-Q8 included, scored as NCRF and MONAI complete the script. Published
CAMELYON16 figures come from it, so only it is comparable with them.

**lymph**: the same lesion rules, corrected:

* The evaluation mask lives at 1/32 of level 0 (``EVAL_DOWNSAMPLE``; level 5 of a 2x pyramid),
  read from the mask file's own level pixels whatever the slide size (``truth_mask``), tumor
  where the value is > 0. Physical distances use the slide's own mpp (``um_per_px = mpp * 32``).
* Every tumor pixel is grown by half of 75 um (a Euclidean distance transform, ``< 37.5 um``),
  so two lesions closer than 75 um (5 tumor cells) merge; holes are filled; regions are
  8-connected labels.
* A region whose major axis (the regionprops definition: 4 sqrt of the largest eigenvalue of the
  pixel-coordinate covariance) is under 275 um (200 um plus the 75 um of growth) holds isolated
  tumor cells (ITC): a detection on it is neither a hit nor a false positive, and it is not a
  lesion to find.
* A detection (``confidence,X,Y`` in level-0 pixels) hits the lesion whose label is at
  ``(floor(Y / 32), floor(X / 32))``; only the best detection per lesion counts, the others are
  ignored; a detection outside every region (or outside the frame) is a false positive; every
  detection on a normal slide is a false positive. A hit needs ``confidence > 0``.
* The FROC curve pairs, for every distinct confidence (none dropped, float64), the mean false
  positives per slide with the fraction of lesions hit. The score is the mean sensitivity at
  1/4, 1/2, 1, 2, 4 and 8 FP per slide read by linear interpolation (``froc``), and at the last
  operating point at or below each rate (``froc_stepwise``, what a user can set a threshold to).

The package, by job: ``config`` (SlideEvalConfig, the rule sets), ``cases`` (which slides,
with which detections and truth), ``files`` (detection and scores CSVs), ``truth`` (lymph's
lesion and ITC masks from annotations), ``lymph_rules`` (hits, ITCs and false positives of one
slide), ``froc`` (lymph's FROC), ``official`` (the official script's rules and FROC), ``auc``
(slide ROC), ``scoring`` (one slide by both rule sets), ``report`` (metrics.json, the plots,
``SlideEvalResult``) and ``run``.
"""

from __future__ import annotations

from lymph.data.annotations import read_labels_csv
from lymph.model.camelyon.auc import roc_curve, slide_auc
from lymph.model.camelyon.cases import SlideCase, plan_cases
from lymph.model.camelyon.config import (
    CAMELYON16_TEST_EXCLUDED,
    MISSING,
    RULE_NOTES,
    RULES,
    SlideEvalConfig,
    check_paths,
)
from lymph.model.camelyon.files import (
    check_detections,
    read_detections_csv,
    read_scores_csv,
    read_text_csv,
)
from lymph.model.camelyon.froc import FP_RATES, Froc, froc, froc_curve, sensitivity_at
from lymph.model.camelyon.lymph_rules import SlideScore, lymph_truth, score_slide
from lymph.model.camelyon.official import (
    OFFICIAL_GROW_PX,
    OFFICIAL_ITC_PX,
    OFFICIAL_LEVEL,
    OFFICIAL_MPP,
    OfficialSlide,
    official_evaluation_mask,
    official_froc,
    official_froc_curve,
    official_itc_labels,
    official_mask_red,
    official_slide,
)
from lymph.model.camelyon.report import SlideEvalResult
from lymph.model.camelyon.run import run
from lymph.model.camelyon.scoring import Scored, score_case
from lymph.model.camelyon.truth import (
    CAMELYON16_MPP,
    EVAL_DOWNSAMPLE,
    ITC_MAJOR_AXIS_UM,
    MERGE_DISTANCE_UM,
    evaluation_mask,
    itc_labels,
    major_axis_lengths,
    nominal_downsample,
    truth_mask,
)

__all__ = [
    "CAMELYON16_MPP", "CAMELYON16_TEST_EXCLUDED", "EVAL_DOWNSAMPLE", "FP_RATES",
    "ITC_MAJOR_AXIS_UM", "MERGE_DISTANCE_UM", "MISSING", "OFFICIAL_GROW_PX", "OFFICIAL_ITC_PX",
    "OFFICIAL_LEVEL", "OFFICIAL_MPP", "RULES", "RULE_NOTES", "Froc", "OfficialSlide", "Scored",
    "SlideCase", "SlideEvalConfig", "SlideEvalResult", "SlideScore", "check_detections",
    "check_paths",
    "evaluation_mask", "froc", "froc_curve", "itc_labels", "lymph_truth", "major_axis_lengths",
    "nominal_downsample", "official_evaluation_mask", "official_froc", "official_froc_curve",
    "official_itc_labels", "official_mask_red", "official_slide", "plan_cases",
    "read_detections_csv", "read_labels_csv", "read_scores_csv", "read_text_csv", "roc_curve",
    "run", "score_case", "score_slide", "sensitivity_at", "slide_auc", "truth_mask",
]  # fmt: skip
