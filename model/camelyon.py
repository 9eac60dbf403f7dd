"""CAMELYON16 scoring (`lymph eval slides`): lesion-level FROC and slide-level AUC, by two rule
sets, both computed on every run; ``SlideEvalConfig.rules`` picks the headline ``froc``.

**official** (the default; section "the official script's rules"): the numbers of the challenge's
own ``Evaluation_FROC.py`` (computationalpathologygroup/Camelyon16; Ehteshami Bejnordi et al.,
JAMA 2017), quirks Q1-Q8 included, scored as NCRF and MONAI complete the script. Published
CAMELYON16 figures come from it, so only it is comparable with them.

**lymph**: the same lesion rules, corrected:

* The evaluation mask lives at 1/32 of level 0 (``EVAL_DOWNSAMPLE``; level 5 of a 2x pyramid),
  read from the mask file's own level pixels whatever the slide size (``_mask_tiff``), tumor
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
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from lymph.data.annotations import read_labels_csv
from lymph.data.errors import AnnotationError, ConfigError, SlideError
from lymph.data.io import as_paths
from lymph.data.slides import discover_slides, slide_id

EVAL_DOWNSAMPLE = 32.0  # level 5 of a CAMELYON16 slide
CAMELYON16_MPP = 0.243  # um/px at level 0 of the CAMELYON16 scanners, assumed when unknown
MERGE_DISTANCE_UM = 75.0  # lesions closer than this merge (each is grown by half of it)
ITC_MAJOR_AXIS_UM = 275.0  # 200 um + the 75 um of growth
FP_RATES = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


# --- evaluation mask -----------------------------------------------------------------------------


def evaluation_mask(tumor: np.ndarray, *, um_per_px: float) -> np.ndarray:
    """8-connected lesion labels (int32, 0 = background) of a tumor mask in the evaluation frame.

    ``tumor``: bool/0-1 (H, W) at the evaluation downsample; ``um_per_px``: its pixel size. Each
    tumor pixel is grown by ``MERGE_DISTANCE_UM / 2`` (so lesions closer than 75 um merge) and
    holes are filled, as the official script does.
    """
    tumor = np.asarray(tumor)
    if tumor.ndim != 2:
        raise ValueError(f"tumor mask must be 2-D (H, W), got shape {tumor.shape}")
    if not um_per_px > 0:
        raise ConfigError(f"um_per_px must be > 0, got {um_per_px}")
    tumor = tumor.astype(bool)
    if not tumor.any():
        return np.zeros(tumor.shape, np.int32)
    radius_px = MERGE_DISTANCE_UM / 2 / um_per_px
    distance = ndimage.distance_transform_edt(~tumor)
    grown = ndimage.binary_fill_holes(distance < radius_px)
    labels, _ = ndimage.label(grown, structure=np.ones((3, 3), bool))
    return labels.astype(np.int32)


def major_axis_lengths(labels: np.ndarray) -> np.ndarray:
    """Major axis length in pixels of each label 1..max (index i is label i + 1), defined as
    skimage's regionprops does: 4 sqrt(largest eigenvalue of the pixel-coordinate covariance)."""
    labels = np.asarray(labels)
    n = int(labels.max()) if labels.size else 0
    if n == 0:
        return np.zeros(0, np.float64)
    rows, cols = np.nonzero(labels)
    lab = labels[rows, cols]
    r = rows.astype(np.float64)
    c = cols.astype(np.float64)
    count = np.bincount(lab, minlength=n + 1).astype(np.float64)
    count[0] = 1.0  # label 0 is not a region; avoids 0 / 0
    dr = r - (np.bincount(lab, r, n + 1) / count)[lab]  # about each centroid, as regionprops'
    dc = c - (np.bincount(lab, c, n + 1) / count)[lab]  # central moments: no cancellation
    var_r = np.bincount(lab, dr * dr, n + 1)[1:] / count[1:]
    var_c = np.bincount(lab, dc * dc, n + 1)[1:] / count[1:]
    cov = np.bincount(lab, dr * dc, n + 1)[1:] / count[1:]
    half_trace = (var_r + var_c) / 2
    root = np.sqrt(np.maximum(((var_r - var_c) / 2) ** 2 + cov**2, 0.0))
    largest = np.maximum(half_trace + root, 0.0)
    return 4.0 * np.sqrt(largest)


def itc_labels(labels: np.ndarray, *, um_per_px: float) -> frozenset[int]:
    """Labels whose major axis is under ``ITC_MAJOR_AXIS_UM``: isolated tumor cells."""
    if not um_per_px > 0:
        raise ConfigError(f"um_per_px must be > 0, got {um_per_px}")
    lengths_um = major_axis_lengths(labels) * um_per_px
    return frozenset(int(i) + 1 for i in np.flatnonzero(lengths_um < ITC_MAJOR_AXIS_UM))


# --- per-slide scoring ---------------------------------------------------------------------------


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


def _check_detections(detections: np.ndarray) -> np.ndarray:
    det = np.asarray(detections, dtype=np.float64)
    if det.size == 0:
        return np.zeros((0, 3), np.float64)
    if det.ndim != 2 or det.shape[1] != 3:
        raise ValueError(f"detections must be (n, 3) confidence, X, Y; got shape {det.shape}")
    if not np.isfinite(det).all():
        raise ValueError("detections hold NaN or infinite values")
    return det


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
    det = _check_detections(detections)
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


# --- FROC ----------------------------------------------------------------------------------------


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


# --- the official script's rules -----------------------------------------------------------------
#
# `--rules official` reproduces computationalpathologygroup/Camelyon16 Python/Evaluation_FROC.py
# number for number (its algorithm, re-written here; none of its code), quirks included:
#
# Q1 the mask is read with OpenSlide at level index 5 (whatever its downsample), whole, red
#    channel; only 255 is tumor (a level-5 pixel that averages tumor and normal is not);
# Q2 0.243 um/px is assumed for every slide: growth threshold 75 / (0.243 * 2^5 * 2) = 4.82 px
#    (a distance transform to the nearest 255 pixel, ``<``), ITC when regionprops' major axis is
#    ``< 275 / (0.243 * 2^5)`` = 35.37 px;
# Q3 a tumor slide without any 255 pixel at level 5 still gets one region: scipy's distance
#    transform of an image without background measures from outside its top-left corner, so a
#    small ITC appears there and a detection on it is ignored;
# Q4 a detection hits ``mask[int(Y / 2^5), int(X / 2^5)]``, in the file's level-5 pixels
#    (lymph refuses one outside that frame: the script fails on it);
# Q5 the best probability of each lesion is kept in float32 (``TP_probs``), false positives in
#    float64, and a threshold compares float32 to float32 and float64 to float64, so a lesion
#    and a false positive of the same probability (0.3, 0.6) can fall on either side of it;
# Q6 the thresholds are the distinct probabilities, lowest dropped (``all_probs[1:]``): usually
#    the 0 of missed lesions, but a lesion found only at the lowest probability is lost; a last
#    point (0, 0) is appended;
# Q7 FP per slide divides by every scored slide, sensitivity by the non-ITC lesions;
# Q8 the score is NCRF's and MONAI's completion of the script (which only plots the curve): the
#    mean of ``np.interp([1/4, 1/2, 1, 2, 4, 8], FPs[::-1], sens[::-1])``.

OFFICIAL_LEVEL = 5
OFFICIAL_MPP = 0.243
OFFICIAL_GROW_PX = 75 / (OFFICIAL_MPP * pow(2, OFFICIAL_LEVEL) * 2)  # 4.8225 px
OFFICIAL_ITC_PX = 275 / (OFFICIAL_MPP * pow(2, OFFICIAL_LEVEL))  # 35.3652 px
RULES = ("official", "lymph")


def official_mask_red(path: Path) -> np.ndarray:
    """Q1: the red channel (uint8) of level index 5 of a mask TIFF, read whole from (0, 0).
    AnnotationError when the file has no level 5, or one that is not a 1/32 downsample."""
    from lymph.data.annotations import open_mask

    try:
        mask = open_mask(path)  # tiled (OpenSlide) or strip TIFF (one level: refused below)
    except SlideError as exc:
        raise AnnotationError(f"mask {path} cannot be opened ({exc})") from exc
    try:
        if mask.level_count <= OFFICIAL_LEVEL:
            raise AnnotationError(
                f"mask {path} has {mask.level_count} level(s); the official rules read level "
                f"{OFFICIAL_LEVEL} (1/32): write the mask with a pyramid down to level 5 "
                "(`lymph synth` does) or use --rules lymph"
            )
        ds = float(mask.level_downsamples[OFFICIAL_LEVEL])
        if nominal_downsample(ds) != 2.0**OFFICIAL_LEVEL:
            raise AnnotationError(
                f"mask {path}: level {OFFICIAL_LEVEL} has downsample {ds:.4g}, not 32, so the "
                "official rules would misplace every detection; write the mask as a 2x pyramid "
                "or use --rules lymph"
            )
        return _read_whole_level(mask, OFFICIAL_LEVEL, path=path)
    except SlideError as exc:
        raise AnnotationError(f"mask {path} cannot be read ({exc})") from exc
    finally:
        mask.close()


def official_evaluation_mask(red: np.ndarray) -> np.ndarray:
    """Q1-Q3: 8-connected labels of ``distance_to_255 < OFFICIAL_GROW_PX``, holes filled."""
    red = np.asarray(red, np.uint8)
    distance = ndimage.distance_transform_edt(255 - red)
    filled = ndimage.binary_fill_holes(distance < OFFICIAL_GROW_PX)
    labels, _ = ndimage.label(filled, structure=np.ones((3, 3), bool))
    return labels.astype(np.int32)


def official_itc_labels(labels: np.ndarray) -> frozenset[int]:
    """Q2: labels whose regionprops major axis is under ``OFFICIAL_ITC_PX`` (35.37 px)."""
    lengths = major_axis_lengths(labels)
    return frozenset(int(i) + 1 for i in np.flatnonzero(lengths < OFFICIAL_ITC_PX))


@dataclass(frozen=True, eq=False)
class OfficialSlide:
    """A slide as the official script sees it: ``fp_probs`` (float64), ``tp_probs`` (float32,
    one per label, 0 for missed and ITC labels) and ``n_tumors`` (labels that are not ITC)."""

    fp_probs: np.ndarray
    tp_probs: np.ndarray
    n_tumors: int


def official_slide(
    detections: np.ndarray,
    *,
    labels: np.ndarray | None,
    itc: Iterable[int] = (),
    source: str = "detections",
) -> OfficialSlide:
    """Q4-Q5 for one slide (``labels`` None: a normal slide, every detection a false positive).
    ConfigError naming ``source`` and the row for a detection outside the level-5 frame."""
    det = _check_detections(detections)
    if labels is None:
        return OfficialSlide(det[:, 0].copy(), np.zeros(0, np.float32), 0)
    labels = np.asarray(labels)
    itc_set = frozenset(int(i) for i in itc)
    n_labels = int(labels.max()) if labels.size else 0
    rows = np.floor(det[:, 2] / 2**OFFICIAL_LEVEL).astype(np.int64)
    cols = np.floor(det[:, 1] / 2**OFFICIAL_LEVEL).astype(np.int64)
    outside = (rows < 0) | (rows >= labels.shape[0]) | (cols < 0) | (cols >= labels.shape[1])
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise ConfigError(
            f"{source}, detection {i + 1} (X={det[i, 1]:g}, Y={det[i, 2]:g}) lies outside the "
            f"mask's level-5 frame ({labels.shape[1]} x {labels.shape[0]} px): the official "
            "script cannot score it; fix the coordinates or use --rules lymph"
        )
    hit = labels[rows, cols]
    tp = np.zeros(n_labels, np.float32)
    for prob, lab in zip(det[:, 0], hit, strict=True):
        if lab != 0 and int(lab) not in itc_set and prob > tp[lab - 1]:
            tp[lab - 1] = prob
    n_itc = len(itc_set & set(range(1, n_labels + 1)))
    return OfficialSlide(det[hit == 0, 0].copy(), tp, n_labels - n_itc)


def official_froc_curve(slides: Sequence[OfficialSlide]) -> tuple[np.ndarray, np.ndarray]:
    """Q5-Q7: (FP per slide, sensitivity) by increasing threshold, ending at (0, 0).
    Sensitivity is NaN when there is no lesion to find."""
    if not slides:
        raise ConfigError("no slides to score: the FROC needs at least one slide")
    fp = np.sort(np.concatenate([s.fp_probs for s in slides]).astype(np.float64))
    tp = np.sort(np.concatenate([s.tp_probs for s in slides]).astype(np.float32))
    thresholds = np.unique(np.concatenate([fp, tp.astype(np.float64)]))[1:]
    n_fp = len(fp) - np.searchsorted(fp, thresholds, side="left")
    n_tp = len(tp) - np.searchsorted(tp, thresholds.astype(np.float32), side="left")
    n_fp, n_tp = np.r_[n_fp, 0], np.r_[n_tp, 0]
    n_tumors = sum(s.n_tumors for s in slides)
    sens = n_tp / n_tumors if n_tumors else np.full(len(n_tp), np.nan)
    return n_fp / len(slides), sens


def official_froc(slides: Sequence[OfficialSlide]) -> dict[str, Any]:
    """Q8: the official score, its six sensitivities and curve (score None without lesions)."""
    fps, sens = official_froc_curve(slides)
    n_tumors = sum(s.n_tumors for s in slides)
    at = np.interp(FP_RATES, fps[::-1], sens[::-1]) if n_tumors else None
    return {
        "froc": None if at is None else float(np.mean(at)),
        "sensitivity_at": {} if at is None else {_rate_key(r): float(v)
                                                 for r, v in zip(FP_RATES, at, strict=True)},
        "n_slides": len(slides),
        "n_lesions": n_tumors,
        "curve": {"fps_per_slide": [float(v) for v in fps],
                  "sensitivity": [None if math.isnan(v) else float(v) for v in sens]},
    }


# --- slide AUC -----------------------------------------------------------------------------------


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


# --- files ---------------------------------------------------------------------------------------


def read_text_csv(path: str | Path, *, what: str = "CSV") -> list[list[str]]:
    """The rows of a UTF-8 text CSV. ConfigError, one line naming the file, for a binary file
    (NUL bytes), a UTF-16 one or bytes that are not UTF-8; OSError when it cannot be read."""
    from lymph.data.io import decode_text

    path = Path(path)
    text = decode_text(path.read_bytes(), path, what=what, fix="save it as UTF-8 CSV")
    return list(csv.reader(text.splitlines()))


def read_detections_csv(path: str | Path) -> np.ndarray:
    """A CAMELYON16 detection file: ``confidence,X,Y`` rows, no header -> float64 (n, 3).
    ConfigError naming the file, line and value for anything else (NaN and inf included)."""
    path = Path(path)
    rows: list[list[float]] = []
    for i, row in enumerate(read_text_csv(path, what="detection file"), 1):
        if not row or not "".join(row).strip():
            continue
        if len(row) < 3:
            raise ConfigError(
                f"{path}, line {i}: expected 'confidence,X,Y', got {','.join(row)!r}; "
                "write one detection per line, level-0 pixel coordinates, no header"
            )
        try:
            values = [float(row[0]), float(row[1]), float(row[2])]
        except ValueError:
            raise ConfigError(
                f"{path}, line {i}: {','.join(row)!r} is not three numbers "
                "(confidence,X,Y; CAMELYON16 detection files have no header)"
            ) from None
        if not all(math.isfinite(v) for v in values):
            raise ConfigError(
                f"{path}, line {i}: {','.join(row)!r} holds NaN or infinity; write finite "
                "confidences and coordinates"
            )
        rows.append(values)
    return _check_detections(np.asarray(rows, np.float64).reshape(-1, 3))


def read_scores_csv(path: str | Path) -> dict[str, float]:
    """``slide,probability`` rows (an optional header line is skipped) -> {slide: probability}.
    ConfigError naming the file, line and value for a probability that is not a finite number."""
    path = Path(path)
    out: dict[str, float] = {}
    for i, row in enumerate(read_text_csv(path, what="scores file"), 1):
        if not row or not "".join(row).strip():
            continue
        if len(row) < 2:
            raise ConfigError(f"{path}, line {i}: expected 'slide,probability', got {row!r}")
        try:
            value = float(row[1])
        except ValueError:
            if i == 1:
                continue  # header
            raise ConfigError(f"{path}, line {i}: probability {row[1]!r} is not a number") from None
        if not math.isfinite(value):
            raise ConfigError(
                f"{path}, line {i}: probability {row[1]!r} of {row[0]!r} is not finite; "
                "write a number in [0, 1]"
            )
        out[slide_id(row[0].strip())] = value
    return out


def truth_mask(
    slide_path: Path,
    annotation: Path,
    *,
    dimensions: tuple[int, int],
    downsample: float = EVAL_DOWNSAMPLE,
) -> np.ndarray:
    """Ground-truth tumor (bool, evaluation frame ``ceil(dim / downsample)``) from ASAP XML or
    QuPath GeoJSON (``read_annotations`` + ``rasterize``) or a mask TIFF (OpenSlide, the level
    closest to ``downsample``, sampled at the evaluation pixels' centres)."""
    width = math.ceil(dimensions[0] / downsample)
    height = math.ceil(dimensions[1] / downsample)
    if annotation.suffix.lower() in (".xml", ".geojson", ".json"):
        from lymph.data.annotations import rasterize, read_annotations

        ann = read_annotations(annotation)
        return rasterize(
            ann, x_level0=0, y_level0=0, width=width, height=height, downsample=downsample
        ).astype(bool)
    return _mask_tiff(annotation, width=width, height=height, downsample=downsample)


def nominal_downsample(reported: float) -> float:
    """The pyramid step a level was made with: the power of two nearest OpenSlide's reported
    downsample when within 10% of it, else the reported value.

    OpenSlide reports a level's downsample as the mean of level-0 size over level size per axis,
    so level 5 of a slide whose sides are not multiples of 32 reads as e.g. 31.655, while each of
    its pixels covers 32 x 32 level-0 pixels (the pyramid was built by halving, rounding up).
    """
    power = 2.0 ** round(math.log2(reported)) if reported > 0 else reported
    return power if abs(reported / power - 1) < 0.1 else float(reported)


def _mask_tiff(path: Path, *, width: int, height: int, downsample: float) -> np.ndarray:
    """Tumor (> 0, red channel) of a mask TIFF in the evaluation frame (height, width).

    The level closest to ``downsample`` is read; evaluation pixel j takes that level's pixel
    ``floor((j + 0.5) * downsample / step)``, where ``step`` is the level's nominal downsample
    (``nominal_downsample``), so at level 5 of a 2x pyramid pixel j is the file's own pixel j
    whatever the slide size. Evaluation pixels beyond the level's extent are not tumor.
    """
    from lymph.data.annotations import open_mask

    try:
        mask = open_mask(path)  # tiled (OpenSlide) or strip TIFF
    except SlideError as exc:
        raise AnnotationError(f"mask {path} cannot be opened ({exc})") from exc
    try:
        level = max(i for i, d in enumerate(mask.level_downsamples) if d <= downsample * 1.001)
        ds = float(mask.level_downsamples[level])
        step = nominal_downsample(ds)
        lw, lh = mask.level_dimensions[level]
        cols = ((np.arange(width) + 0.5) * downsample / step).astype(np.int64)
        rows_all = ((np.arange(height) + 0.5) * downsample / step).astype(np.int64)
        col_ok, row_ok = cols < lw, rows_all < lh
        cols = np.minimum(cols, lw - 1)
        rows_all = np.minimum(rows_all, lh - 1)
        if level == 0:  # level 0 (exact locations): one row per evaluation row
            out = np.zeros((height, width), bool)
            for r, row in enumerate(rows_all):
                region = mask.read_region((0, int(row)), 0, (lw, 1))
                out[r] = np.asarray(region)[0, :, 0][cols] > 0
        else:
            out = _read_whole_level(mask, level, path=path)[np.ix_(rows_all, cols)] > 0
        out[~row_ok] = False
        out[:, ~col_ok] = False
        return out
    except SlideError as exc:
        raise AnnotationError(f"mask {path} cannot be read ({exc})") from exc
    finally:
        mask.close()


MAX_LEVEL_PIXELS = 1 << 28  # a level read whole: 1 GiB of RGBA at most


def _read_whole_level(mask: Any, level: int, *, path: Path) -> np.ndarray:
    """Red channel of a whole level, read from (0, 0) as the official script does.

    A region read elsewhere at a level whose reported downsample is fractional (31.66 for level 5
    of a slide whose sides are not multiples of 32) is placed at a sub-pixel offset and blended,
    so reads of lower levels always start at (0, 0)."""
    lw, lh = mask.level_dimensions[level]
    if lw * lh > MAX_LEVEL_PIXELS:
        raise AnnotationError(
            f"mask {path}: its level {level} ({lw} x {lh} px) is the one nearest the evaluation "
            "downsample and is too large to read; write the mask with a pyramid down to level 5 "
            "(downsample 32), as CAMELYON16's masks and `lymph synth`'s have"
        )
    return np.asarray(mask.read_region((0, 0), level, (lw, lh)))[:, :, 0]


def _slide_geometry(path: Path) -> tuple[tuple[int, int], float | None]:
    import openslide

    try:
        with openslide.OpenSlide(str(path)) as slide:
            dims = tuple(int(v) for v in slide.dimensions)
            mpp = slide.properties.get(openslide.PROPERTY_NAME_MPP_X)
    except (openslide.OpenSlideError, OSError) as exc:
        raise SlideError(f"slide {path} cannot be opened ({exc})") from exc
    try:
        mpp_f = float(mpp) if mpp is not None else None
    except ValueError:
        mpp_f = None
    return (dims[0], dims[1]), mpp_f  # type: ignore[return-value]


def _find_annotation(slide: Path, annotations_dir: Path | None) -> Path | None:
    try:
        from lymph.data.annotations import find_annotations
    except ImportError:  # pragma: no cover - EXTRACT's module not present
        find_annotations = None
    if find_annotations is not None:
        return find_annotations(slide, annotations_dir=annotations_dir)
    folder = annotations_dir or slide.parent
    for suffix in (".xml", "_mask.tif", "_Mask.tif", ".geojson"):
        candidate = folder / f"{slide.stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


# --- the whole evaluation ------------------------------------------------------------------------

CAMELYON16_TEST_EXCLUDED = ("Test_049", "Test_114")  # left out of the CAMELYON16 test scoring
MISSING = ("error", "missed")
RULE_NOTES = {
    "official": "froc = the official CAMELYON16 Evaluation_FROC.py rules, quirks included "
    "(mask level 5 red == 255, 0.243 um/px, float32 lesion probabilities, lowest threshold "
    "dropped), scored as NCRF/MONAI complete it: mean np.interp at 1/4..8 FP per slide",
    "lymph": "froc = lymph's rules: the slide's own mpp, tumor > 0 at 1/32, every threshold "
    "kept, float64; mean sensitivity at 1/4..8 FP per slide by linear interpolation "
    "(froc_stepwise: the last operating point at or below each rate)",
}


@dataclass(frozen=True)
class SlideEvalConfig:
    """Settings of one slide-mode evaluation (`lymph eval slides`), all recorded in the output.

    ``slides``: a folder (searched recursively, as extract and predict do) or one slide;
    ``predictions``: the ``--out`` of ``lymph predict`` (``S.csv`` detections, ``scores.csv``);
    ``annotations``: ground truth (default beside each slide); ``labels``: a reference CSV
    (CAMELYON16 ``reference.csv``) that says tumor or normal; ``rules``: which rule set gives
    the headline ``froc`` (both are computed); ``exclude``: slide ids left out;
    ``missing``: a slide without a detection file is an error ("error") or scored as all-missed
    with a warning ("missed").
    """

    slides: Path
    predictions: Path
    annotations: Path | None = None
    labels: Path | None = None
    out: Path | None = None
    rules: str = "official"
    exclude: tuple[str, ...] = ()
    missing: str = "error"
    downsample: float = EVAL_DOWNSAMPLE

    def __post_init__(self) -> None:
        as_paths(self, ("slides", "predictions", "annotations", "labels", "out"))
        if isinstance(self.exclude, str):
            raise ConfigError("exclude must be a sequence of slide ids, not a string")
        object.__setattr__(self, "exclude", tuple(sorted({str(v) for v in self.exclude})))
        if self.rules not in RULES:
            raise ConfigError(f"rules must be one of {RULES}, got {self.rules!r}")
        if self.missing not in MISSING:
            raise ConfigError(f"missing must be one of {MISSING}, got {self.missing!r}")
        if not self.downsample > 0:
            raise ConfigError(f"downsample must be > 0, got {self.downsample}")
        if not (self.slides.is_dir() or self.slides.is_file()):
            raise ConfigError(
                f"slides {self.slides} do not exist; pass the slides folder or a slide"
            )
        if not self.predictions.is_dir():
            raise ConfigError(
                f"predictions folder {self.predictions} does not exist; pass the --out of "
                "lymph predict"
            )
        if self.annotations is not None and not self.annotations.is_dir():
            raise ConfigError(f"annotations folder {self.annotations} does not exist")
        if self.labels is not None and not self.labels.is_file():
            raise ConfigError(f"labels CSV {self.labels} does not exist")
        if self.out is not None and self.out.exists() and not self.out.is_dir():
            raise ConfigError(f"--out {self.out} is a file, not a folder; choose a folder")

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        d = asdict(self)
        for key in ("slides", "predictions", "annotations", "labels", "out"):
            d[key] = None if d[key] is None else str(d[key])
        d["exclude"] = list(self.exclude)
        return d


@dataclass(frozen=True)
class SlideCase:
    """One slide to score: its detections file (None: none was written), ground truth, class."""

    name: str
    slide: Path
    detections: Path | None
    annotation: Path | None
    is_tumor: bool


def _slide_files(slides: Path) -> dict[str, Path]:
    """{id: path} of one slide, or of the slides under a folder (recursively), by the ids
    ``lymph predict`` names its outputs by (``data.slides.slide_id``). SlideError naming the
    files for slides that cannot take part (id collisions, dangling links)."""
    found = discover_slides(slides)
    if found.problems:
        raise SlideError(
            "; ".join(p.message for p in found.problems[:3])
            + (f" (and {len(found.problems) - 3} more)" if len(found.problems) > 3 else "")
        )
    return {s.id: s.path for s in found}


def plan_cases(config: SlideEvalConfig) -> tuple[list[SlideCase], list[str]]:
    """The slides to score and notes: each slide of ``config.slides`` not excluded, paired with
    its ``S.csv``. SlideError for a detection file without a slide; ConfigError for slides
    without a detection file unless ``missing == "missed"`` (then a note and a warning)."""
    excluded = {e.casefold() for e in config.exclude}  # Test_049 excludes test_049.tif
    detections = {
        p.stem: p
        for p in sorted(config.predictions.glob("*.csv"))
        if p.name != "scores.csv" and p.stem.casefold() not in excluded
    }
    slides = {k: v for k, v in _slide_files(config.slides).items()
              if k.casefold() not in excluded}  # fmt: skip
    if config.slides.is_file():
        detections = {k: v for k, v in detections.items() if k in slides}
    if not detections:
        raise ConfigError(
            f"no detection files (S.csv) in {config.predictions}"
            + (f" for {config.slides.name}" if config.slides.is_file() else "")
            + "; run `lymph predict` into it first"
        )
    orphans = sorted(set(detections) - set(slides))
    if orphans:
        raise SlideError(
            f"no slide in {config.slides} for the detection files {orphans[:5]} of "
            f"{config.predictions}; point --slides at the folder of the predicted slides"
        )
    notes: list[str] = []
    without = sorted(set(slides) - set(detections))
    if without and config.missing == "error":
        raise ConfigError(
            f"{len(without)} slide(s) of {config.slides} have no detection file in "
            f"{config.predictions}: {without[:5]}; run `lymph predict` on them, leave them out "
            "(--exclude ID), or pass --score-missing to score them as all-missed"
        )
    if without:
        import warnings

        note = (
            f"{len(without)} slide(s) without predictions scored as all-missed (probability 0, "
            f"no detections): {without[:10]}"
        )
        notes.append(note)
        warnings.warn(note, stacklevel=3)
    labels = _read_labels(config.labels) if config.labels is not None else {}
    cases = [
        _case(name, path, detections.get(name), labels, config) for name, path in slides.items()
    ]
    return sorted(cases, key=lambda c: c.name), notes


def _read_labels(path: Path) -> Mapping[str, bool]:
    return read_labels_csv(path)  # one-line LabelsError (a ConfigError) for any bad file


def _case(
    name: str, path: Path, det: Path | None, labels: Mapping[str, bool], config: SlideEvalConfig
) -> SlideCase:
    annotation = _find_annotation(path, config.annotations)
    listed = labels.get(name)
    if listed is False and annotation is not None:
        raise ConfigError(
            f"{config.labels} says {name} is normal but {annotation} annotates tumor in it; "
            "fix the labels CSV or remove the annotation"
        )
    return SlideCase(name, path, det, annotation, annotation is not None or bool(listed))


@dataclass
class _Scored:
    """What one slide adds: its JSON detail, slide probability and each rule set's input (an
    exception when a rule set cannot score it)."""

    detail: dict[str, Any]
    probability: float
    lymph: SlideScore | None = None
    official: OfficialSlide | Exception | None = None


def score_case(case: SlideCase, config: SlideEvalConfig, scores: dict[str, float]) -> _Scored:
    """Score one slide by both rule sets (the official one recorded as an error if it cannot)."""
    det = read_detections_csv(case.detections) if case.detections else np.zeros((0, 3))
    detail: dict[str, Any] = {
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
    scored = _Scored(detail, probability)
    if case.annotation is None and case.is_tumor:
        detail["froc"] = "skipped: tumor slide without annotations (AUC only)"
        return scored
    truth = _lymph_truth(case, detail, config) if case.annotation else None
    scored.lymph = score_slide(det, labels=truth[0] if truth else None,
                               itc=truth[1] if truth else (), downsample=config.downsample,
                               name=case.name)  # fmt: skip
    detail.update(scored.lymph.to_dict())
    from lymph.data.errors import LymphError

    try:
        scored.official = _official_score(case, det)
    except LymphError as exc:
        scored.official = exc
    detail["official"] = _official_detail(scored.official)
    return scored


def _lymph_truth(
    case: SlideCase, detail: dict[str, Any], config: SlideEvalConfig
) -> tuple[np.ndarray, frozenset[int]]:
    dims, mpp = _slide_geometry(case.slide)
    detail["mpp"] = mpp
    if mpp is None or not 0.05 <= mpp <= 20:
        detail["mpp_assumed"] = mpp = CAMELYON16_MPP
    assert case.annotation is not None
    truth = truth_mask(case.slide, case.annotation, dimensions=dims, downsample=config.downsample)
    um_per_px = mpp * config.downsample
    lab = evaluation_mask(truth, um_per_px=um_per_px)
    return lab, itc_labels(lab, um_per_px=um_per_px)


def _official_score(case: SlideCase, det: np.ndarray) -> OfficialSlide:
    """The official script's view of one slide: a mask TIFF is read at level 5 (Q1); vector
    annotations are rasterized into the level-5 frame ``ceil(dim / 32)`` as 0/255 first (the
    challenge's masks were made from its XML with ASAP)."""
    if case.annotation is None:
        return official_slide(det, labels=None)
    if case.annotation.suffix.lower() in (".xml", ".geojson", ".json"):
        dims, _ = _slide_geometry(case.slide)
        tumor = truth_mask(case.slide, case.annotation, dimensions=dims,
                           downsample=2.0**OFFICIAL_LEVEL)  # fmt: skip
        red = tumor.astype(np.uint8) * 255
    else:
        red = official_mask_red(case.annotation)
    labels = official_evaluation_mask(red)
    return official_slide(det, labels=labels, itc=official_itc_labels(labels),
                          source=str(case.detections or case.name))  # fmt: skip


def _official_detail(value: OfficialSlide | Exception | None) -> dict[str, Any]:
    if isinstance(value, Exception):
        return {"error": str(value)}
    if value is None:
        return {}
    return {
        "false_positives": len(value.fp_probs),
        "lesions": value.n_tumors,
        "lesions_hit": int((value.tp_probs > 0).sum()),
    }


def run(config: SlideEvalConfig) -> dict[str, Any]:
    """Lesion FROC (both rule sets, ``config.rules`` the headline) and slide AUC of a
    ``lymph predict`` output folder or any CAMELYON16-style submission; writes
    ``metrics.json``, ``froc.png`` and ``roc.png`` into ``config.out`` when given."""
    cases, notes = plan_cases(config)
    scores: dict[str, float] = {}
    scores_path = config.predictions / "scores.csv"
    if scores_path.is_file():
        scores = read_scores_csv(scores_path)
    from lymph.model.eval_checks import check_fresh, fallback_note

    for case in cases:
        check_fresh(case.name, case.slide, case.detections)
    scored = [score_case(case, config, scores) for case in cases]
    note = fallback_note([(c.name, s.detail["score_source"]) for c, s in zip(cases, scored,
                                                                             strict=True)])
    if note:
        notes.append(note)
    for case, s in zip(cases, scored, strict=True):
        if "froc" in s.detail:
            notes.append(f"{case.name}: tumor by the labels CSV but not annotated: not in the FROC")
    result, curve = _results(config, cases, scored, notes)
    if config.out is not None:
        result["files"] = _write_slide_outputs(config, result, scored, curve)
    return result


def _results(
    config: SlideEvalConfig, cases: list[SlideCase], scored: list[_Scored], notes: list[str]
) -> tuple[dict[str, Any], Froc | None]:
    lymph_block, curve = _lymph_block([s.lymph for s in scored if s.lymph is not None])
    official_block = _official_block([s.official for s in scored if s.official is not None])
    headline = official_block if config.rules == "official" else lymph_block
    if "error" in headline:
        raise ConfigError(f"the {config.rules} rules cannot score these slides: "
                          f"{headline['error']}")  # fmt: skip
    for name, block in (("official", official_block), ("lymph", lymph_block)):
        if block.get("froc") is None:
            notes.append(f"{name} rules: FROC undefined ({block.get('error', 'no lesions')})")
    auc_scores = [s.probability for s in scored]
    auc_labels = [c.is_tumor for c in cases]
    try:
        auc = slide_auc(auc_scores, auc_labels)
    except ConfigError as exc:
        auc = None
        notes.append(f"AUC undefined: {exc}")
    result = {
        "rules": config.rules,
        "rule_note": RULE_NOTES[config.rules],
        "froc": headline.get("froc"),
        "froc_official": official_block.get("froc"),
        "froc_lymph": lymph_block.get("froc"),
        "froc_interpolated": lymph_block.get("froc"),
        "froc_stepwise": lymph_block.get("froc_stepwise"),
        "sensitivity_at": headline.get("sensitivity_at", {}),
        "official": official_block,
        "lymph": lymph_block,
        "auc": auc,
        "n_slides": len(cases),
        "n_tumor_slides": int(sum(auc_labels)),
        "n_lesions": headline.get("n_lesions", 0),
        "excluded": list(config.exclude),
        "eval_downsample": config.downsample,
        "merge_distance_um": MERGE_DISTANCE_UM,
        "itc_major_axis_um": ITC_MAJOR_AXIS_UM,
        "notes": notes,
        "slides": {c.name: s.detail for c, s in zip(cases, scored, strict=True)},
        "config": config.to_dict(),
    }
    return result, curve


def _lymph_block(inputs: list[SlideScore]) -> tuple[dict[str, Any], Froc | None]:
    if not inputs:
        return {"froc": None, "error": "no slide to score"}, None
    curve = froc(inputs)
    block: dict[str, Any] = {
        "froc": curve.interpolated,
        "froc_stepwise": curve.stepwise,
        "sensitivity_at": {
            _rate_key(r): {"interpolated": curve.sensitivity_interpolated[r],
                           "stepwise": curve.sensitivity_stepwise[r]}
            for r in curve.sensitivity_interpolated
        },  # fmt: skip
        "n_slides": curve.n_slides,
        "n_lesions": curve.n_lesions,
        "curve": {
            "fps_per_slide": [float(v) for v in curve.fps_per_slide],
            "sensitivity": [None if math.isnan(v) else float(v) for v in curve.sensitivity],
            "thresholds": [None if math.isinf(v) else float(v) for v in curve.thresholds],
        },
    }
    return block, curve


def _official_block(inputs: list[OfficialSlide | Exception]) -> dict[str, Any]:
    errors = [e for e in inputs if isinstance(e, Exception)]
    if errors:
        return {"froc": None, "error": str(errors[0])}
    if not inputs:
        return {"froc": None, "error": "no slide to score"}
    return official_froc([s for s in inputs if isinstance(s, OfficialSlide)])


def _write_slide_outputs(
    config: SlideEvalConfig, result: dict[str, Any], scored: list[_Scored], curve: Froc | None
) -> dict[str, str]:
    from lymph.data.io import atomic_write_json
    from lymph.model.figures import plot_froc, plot_roc

    out = config.out
    assert out is not None
    files: dict[str, str] = {"metrics": str(out / "metrics.json")}
    if curve is not None and curve.n_lesions:
        official = result["official"]
        files["froc"] = str(plot_froc(curve, out / "froc.png", official=official))
    if result["auc"] is not None:
        files["roc"] = str(plot_roc([s.probability for s in scored],
                                    [s.detail["status"] == "tumor" for s in scored],
                                    out / "roc.png", auc=result["auc"]))  # fmt: skip
    result["files"] = files
    atomic_write_json(out / "metrics.json", result, sort_keys=False)
    return files


def evaluate_predictions(
    *,
    slides_dir: Path,
    annotations_dir: Path | None,
    predictions_dir: Path,
    labels_csv: Path | None = None,
    out_dir: Path | None = None,
    downsample: float = EVAL_DOWNSAMPLE,
    rules: str = "lymph",
) -> dict:
    """Keyword form kept for callers outside eval (tests of predict): ``run`` with lymph's
    rules as the headline, as before the official rules existed."""
    return run(SlideEvalConfig(slides=slides_dir, predictions=predictions_dir,
                               annotations=annotations_dir, labels=labels_csv, out=out_dir,
                               rules=rules, downsample=downsample))  # fmt: skip


def _rate_key(rate: float) -> str:
    return f"{rate:g}"
