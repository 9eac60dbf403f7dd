"""The official script's rules (``--rules official``): computationalpathologygroup/Camelyon16
Python/Evaluation_FROC.py number for number (its algorithm, re-written here; none of its code),
quirks included:

Q1 the mask is read with OpenSlide at level index 5 (whatever its downsample), whole, red
   channel; only 255 is tumor (a level-5 pixel that averages tumor and normal is not);
Q2 0.243 um/px is assumed for every slide: growth threshold 75 / (0.243 * 2^5 * 2) = 4.82 px
   (a distance transform to the nearest 255 pixel, ``<``), ITC when regionprops' major axis is
   ``< 275 / (0.243 * 2^5)`` = 35.37 px;
Q3 a tumor slide without any 255 pixel at level 5 still gets one region: scipy's distance
   transform of an image without background measures from outside its top-left corner, so a
   small ITC appears there and a detection on it is ignored;
Q4 a detection hits ``mask[int(Y / 2^5), int(X / 2^5)]``, in the file's level-5 pixels
   (lymph refuses one outside that frame: the script fails on it);
Q5 the best probability of each lesion is kept in float32 (``TP_probs``), false positives in
   float64, and a threshold compares float32 to float32 and float64 to float64, so a lesion
   and a false positive of the same probability (0.3, 0.6) can fall on either side of it;
Q6 the thresholds are the distinct probabilities, lowest dropped (``all_probs[1:]``): usually
   the 0 of missed lesions, but a lesion found only at the lowest probability is lost; a last
   point (0, 0) is appended;
Q7 FP per slide divides by every scored slide, sensitivity by the non-ITC lesions;
Q8 the score is NCRF's and MONAI's completion of the script (which only plots the curve): the
   mean of ``np.interp([1/4, 1/2, 1, 2, 4, 8], FPs[::-1], sens[::-1])``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from lymph.data.errors import AnnotationError, ConfigError, SlideError
from lymph.model.camelyon.cases import SlideCase
from lymph.model.camelyon.files import check_detections
from lymph.model.camelyon.froc import FP_RATES, rate_key
from lymph.model.camelyon.truth import (
    major_axis_lengths,
    nominal_downsample,
    read_whole_level,
    slide_geometry,
    truth_mask,
)

OFFICIAL_LEVEL = 5
OFFICIAL_MPP = 0.243
OFFICIAL_GROW_PX = 75 / (OFFICIAL_MPP * pow(2, OFFICIAL_LEVEL) * 2)  # 4.8225 px
OFFICIAL_ITC_PX = 275 / (OFFICIAL_MPP * pow(2, OFFICIAL_LEVEL))  # 35.3652 px


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
        return read_whole_level(mask, OFFICIAL_LEVEL, path=path)
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
    det = check_detections(detections)
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


def official_froc(slides: Sequence[OfficialSlide]) -> dict[str, object]:
    """Q8: the official score, its six sensitivities and curve (score None without lesions)."""
    fps, sens = official_froc_curve(slides)
    n_tumors = sum(s.n_tumors for s in slides)
    at = np.interp(FP_RATES, fps[::-1], sens[::-1]) if n_tumors else None
    return {
        "froc": None if at is None else float(np.mean(at)),
        "sensitivity_at": {} if at is None else {rate_key(r): float(v)
                                                 for r, v in zip(FP_RATES, at, strict=True)},
        "n_slides": len(slides),
        "n_lesions": n_tumors,
        "curve": {"fps_per_slide": [float(v) for v in fps],
                  "sensitivity": [None if math.isnan(v) else float(v) for v in sens]},
    }


def official_score(case: SlideCase, det: np.ndarray) -> OfficialSlide:
    """The official script's view of one slide: a mask TIFF is read at level 5 (Q1); vector
    annotations are rasterized into the level-5 frame ``ceil(dim / 32)`` as 0/255 first (the
    challenge's masks were made from its XML with ASAP)."""
    if case.annotation is None:
        return official_slide(det, labels=None)
    if case.annotation.suffix.lower() in (".xml", ".geojson", ".json"):
        dims, _ = slide_geometry(case.slide)
        tumor = truth_mask(case.slide, case.annotation, dimensions=dims,
                           downsample=2.0**OFFICIAL_LEVEL)  # fmt: skip
        red = tumor.astype(np.uint8) * 255
    else:
        red = official_mask_red(case.annotation)
    labels = official_evaluation_mask(red)
    return official_slide(det, labels=labels, itc=official_itc_labels(labels),
                          source=str(case.detections or case.name))  # fmt: skip


def official_detail(value: OfficialSlide | Exception | None) -> dict[str, object]:
    if isinstance(value, Exception):
        return {"error": str(value)}
    if value is None:
        return {}
    return {
        "false_positives": len(value.fp_probs),
        "lesions": value.n_tumors,
        "lesions_hit": int((value.tp_probs > 0).sum()),
    }

