"""CAMELYON16 scoring: lesion-level FROC and slide-level AUC, by the rules of the challenge's
official ``Evaluation_FROC.py`` (Ehteshami Bejnordi et al., JAMA 2017).

The rules, as the official script applies them and as this module reproduces them:

* The evaluation mask lives at level 5 of a 0.243 um/px CAMELYON16 slide: a 32x downsample of
  level 0 (``EVAL_DOWNSAMPLE``). Physical distances are converted with the slide's own mpp
  (``um_per_px = mpp * 32``), where the official script hard-codes 0.243.
* Every tumor pixel is grown by half of 75 um (a Euclidean distance transform, ``< 37.5 um``),
  so two lesions closer than 75 um (5 tumor cells) merge; holes are filled; regions are
  8-connected labels.
* A region whose major axis (the regionprops definition: 4 sqrt of the largest eigenvalue of the
  pixel-coordinate covariance) is under 275 um (200 um plus the 75 um of growth) holds isolated
  tumor cells (ITC): a detection on it is neither a hit nor a false positive, and it is not a
  lesion to find.
* A detection (``confidence,X,Y`` in level-0 pixels) hits the lesion whose label is at
  ``(int(Y / 32), int(X / 32))``; only the best detection per lesion counts, the others are
  ignored; a detection outside every region is a false positive; every detection on a normal
  slide is a false positive.
* The FROC curve pairs, for every threshold, the mean false positives per slide with the
  fraction of lesions hit. The score is the mean sensitivity at 1/4, 1/2, 1, 2, 4 and 8 FP per
  slide. The official script reads these six values with ``np.interp`` (linear interpolation on
  the curve): that is ``froc_interpolated`` and the headline ``froc``. ``froc_stepwise`` reads
  the sensitivity of the last operating point at or below each FP rate (what a user can
  actually set a threshold to), and is reported beside it.

Differences from the official script, on purpose: it skips the lowest threshold of the curve
(``all_probs[1:]``, meant to drop the zero of missed lesions); here missed lesions are simply
not on the curve, so no real operating point is dropped. A hit needs ``confidence > 0`` in both.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from lymph.data.annotations import read_labels_csv
from lymph.data.errors import AnnotationError, ConfigError, SlideError
from lymph.data.slides import discover_slides, slide_id

EVAL_DOWNSAMPLE = 32.0  # level 5 of a CAMELYON16 slide
CAMELYON16_MPP = 0.243  # um/px at level 0 of the CAMELYON16 scanners, assumed when unknown
MERGE_DISTANCE_UM = 75.0  # lesions closer than this merge (each is grown by half of it)
ITC_MAJOR_AXIS_UM = 275.0  # 200 um + the 75 um of growth
FP_RATES = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
HEADLINE_RULE = "interpolated"
HEADLINE_NOTE = (
    "froc = mean sensitivity at 1/4, 1/2, 1, 2, 4, 8 FP per slide read by linear interpolation "
    "on the FROC curve (np.interp, as the official CAMELYON16 Evaluation_FROC.py); "
    "froc_stepwise reads the last operating point at or below each rate"
)


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
    count = np.bincount(lab, minlength=n + 1)[1:].astype(np.float64)
    mean_r = np.bincount(lab, r, n + 1)[1:] / count
    mean_c = np.bincount(lab, c, n + 1)[1:] / count
    var_r = np.bincount(lab, r * r, n + 1)[1:] / count - mean_r**2
    var_c = np.bincount(lab, c * c, n + 1)[1:] / count - mean_c**2
    cov = np.bincount(lab, r * c, n + 1)[1:] / count - mean_r * mean_c
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


def read_detections_csv(path: str | Path) -> np.ndarray:
    """A CAMELYON16 detection file: ``confidence,X,Y`` rows, no header -> float64 (n, 3)."""
    path = Path(path)
    rows: list[list[float]] = []
    with path.open(newline="") as fh:
        for i, row in enumerate(csv.reader(fh), 1):
            if not row or not "".join(row).strip():
                continue
            if len(row) < 3:
                raise ConfigError(
                    f"{path}, line {i}: expected 'confidence,X,Y', got {','.join(row)!r}; "
                    "write one detection per line, level-0 pixel coordinates, no header"
                )
            try:
                rows.append([float(row[0]), float(row[1]), float(row[2])])
            except ValueError:
                raise ConfigError(
                    f"{path}, line {i}: {','.join(row)!r} is not three numbers "
                    "(confidence,X,Y; CAMELYON16 detection files have no header)"
                ) from None
    return _check_detections(np.asarray(rows, np.float64).reshape(-1, 3))


def read_scores_csv(path: str | Path) -> dict[str, float]:
    """``slide,probability`` rows (an optional header line is skipped) -> {slide: probability}."""
    path = Path(path)
    out: dict[str, float] = {}
    with path.open(newline="") as fh:
        for i, row in enumerate(csv.reader(fh), 1):
            if not row or not "".join(row).strip():
                continue
            if len(row) < 2:
                raise ConfigError(f"{path}, line {i}: expected 'slide,probability', got {row!r}")
            try:
                value = float(row[1])
            except ValueError:
                if i == 1:
                    continue  # header
                raise ConfigError(
                    f"{path}, line {i}: probability {row[1]!r} is not a number"
                ) from None
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


def _mask_tiff(path: Path, *, width: int, height: int, downsample: float) -> np.ndarray:
    from lymph.data.annotations import open_mask

    try:
        mask = open_mask(path)  # tiled (OpenSlide) or strip TIFF
    except SlideError as exc:
        raise AnnotationError(f"mask {path} cannot be opened ({exc})") from exc
    try:
        level = max(i for i, d in enumerate(mask.level_downsamples) if d <= downsample * 1.001)
        ds = float(mask.level_downsamples[level])
        lw, lh = mask.level_dimensions[level]
        # level-0 centres of the evaluation pixels, in the chosen level's pixels
        cols = np.minimum(((np.arange(width) + 0.5) * downsample / ds).astype(np.int64), lw - 1)
        rows_all = np.minimum(
            ((np.arange(height) + 0.5) * downsample / ds).astype(np.int64), lh - 1
        )
        out = np.zeros((height, width), bool)
        band = max(1, int(2048 * ds / downsample))  # evaluation rows per read
        for r0 in range(0, height, band):
            rows = rows_all[r0 : r0 + band]
            y0, y1 = int(rows[0]), int(rows[-1]) + 1
            region = mask.read_region((0, int(round(y0 * ds))), level, (lw, y1 - y0))
            red = np.asarray(region)[:, :, 0]
            out[r0 : r0 + len(rows)] = red[np.ix_(rows - y0, cols)] > 0
        return out
    except SlideError as exc:
        raise AnnotationError(f"mask {path} cannot be read ({exc})") from exc
    finally:
        mask.close()


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


def evaluate_predictions(
    *,
    slides_dir: Path,
    annotations_dir: Path | None,
    predictions_dir: Path,
    labels_csv: Path | None = None,
    out_dir: Path | None = None,
    downsample: float = EVAL_DOWNSAMPLE,
) -> dict:
    """Lesion FROC and slide AUC of a ``lymph predict`` output folder (or any CAMELYON16-style
    submission: ``S.csv`` detections and a ``scores.csv`` of ``slide,probability``).

    The slides scored are those with an ``S.csv`` in ``predictions_dir``; each must be in
    ``slides_dir`` (its dimensions and mpp are read). Ground truth: ``S.xml``/``S_mask.tif``/
    ``S.geojson`` in ``annotations_dir`` (or beside the slide); a slide is tumor when it has
    one or ``labels_csv`` says so. Slide scores come from ``scores.csv``; a slide missing there
    scores the highest confidence of its detections (0 when none) and the JSON says so.
    Writes ``metrics.json``, ``froc.png`` and ``roc.png`` into ``out_dir`` when given.
    """
    slides_dir, predictions_dir = Path(slides_dir), Path(predictions_dir)
    if not (slides_dir.is_dir() or slides_dir.is_file()):
        raise ConfigError(f"slides {slides_dir} do not exist; pass the slides folder or a slide")
    if not predictions_dir.is_dir():
        raise ConfigError(
            f"predictions folder {predictions_dir} does not exist; pass the --out of lymph predict"
        )
    if annotations_dir is not None and not Path(annotations_dir).is_dir():
        raise ConfigError(f"annotations folder {annotations_dir} does not exist")
    detection_files = sorted(p for p in predictions_dir.glob("*.csv") if p.name != "scores.csv")
    if slides_dir.is_file():  # one slide: score its detections only
        slide_files = {slide_id(slides_dir): slides_dir}
        detection_files = [p for p in detection_files if p.stem == slide_id(slides_dir)]
    else:  # the ids predict names its outputs by; subfolders searched as extract and predict do
        slide_files = {s.id: s.path for s in discover_slides(slides_dir)}
    if not detection_files:
        raise ConfigError(
            f"no detection files (S.csv) in {predictions_dir}"
            + (f" for {slides_dir.name}" if slides_dir.is_file() else "")
            + "; run `lymph predict` into it first"
        )
    missing = [p.stem for p in detection_files if p.stem not in slide_files]
    if missing:
        raise SlideError(
            f"no slide in {slides_dir} for the detection files {missing[:5]} of "
            f"{predictions_dir}; point --slides at the folder of the predicted slides"
        )
    labels = read_labels_csv(labels_csv) if labels_csv is not None else {}
    scores_path = predictions_dir / "scores.csv"
    slide_scores = read_scores_csv(scores_path) if scores_path.is_file() else {}

    per_slide: dict[str, dict[str, Any]] = {}
    froc_inputs: list[SlideScore] = []
    auc_scores: list[float] = []
    auc_labels: list[bool] = []
    notes: list[str] = []
    for det_path in detection_files:
        name = det_path.stem
        slide_path = slide_files[name]
        detections = read_detections_csv(det_path)
        dims, mpp = _slide_geometry(slide_path)
        detail: dict[str, Any] = {"slide": str(slide_path), "mpp": mpp}
        if mpp is None or not 0.05 <= mpp <= 20:
            detail["mpp_assumed"] = CAMELYON16_MPP
            mpp = CAMELYON16_MPP
        annotation = _find_annotation(slide_path, annotations_dir)
        listed = labels.get(name)
        if listed is False and annotation is not None:
            raise ConfigError(
                f"{labels_csv} says {name} is normal but {annotation} annotates tumor in it; "
                "fix the labels CSV or remove the annotation"
            )
        is_tumor = annotation is not None or bool(listed)
        detail["status"] = "tumor" if is_tumor else "normal"
        detail["annotation"] = str(annotation) if annotation else None
        if annotation is not None:
            truth = truth_mask(slide_path, annotation, dimensions=dims, downsample=downsample)
            um_per_px = mpp * downsample
            lab = evaluation_mask(truth, um_per_px=um_per_px)
            itc = itc_labels(lab, um_per_px=um_per_px)
            score = score_slide(detections, labels=lab, itc=itc, downsample=downsample, name=name)
            froc_inputs.append(score)
            detail.update(score.to_dict())
        elif is_tumor:
            detail["froc"] = "skipped: tumor slide without annotations (AUC only)"
            notes.append(f"{name}: tumor by the labels CSV but not annotated: not in the FROC")
        else:
            score = score_slide(detections, labels=None, name=name)
            froc_inputs.append(score)
            detail.update(score.to_dict())
        if name in slide_scores:
            probability = slide_scores[name]
            detail["score_source"] = "scores.csv"
        else:
            probability = float(detections[:, 0].max()) if len(detections) else 0.0
            detail["score_source"] = "max detection confidence (no scores.csv row)"
        detail["probability"] = probability
        auc_scores.append(probability)
        auc_labels.append(is_tumor)
        per_slide[name] = detail

    result: dict[str, Any] = {"rule": HEADLINE_RULE, "rule_note": HEADLINE_NOTE}
    curve = froc(froc_inputs) if froc_inputs else None
    if curve is None or curve.n_lesions == 0:
        notes.append("no lesions to find (no annotated tumor beyond ITCs): FROC undefined")
        result.update(froc=None, froc_interpolated=None, froc_stepwise=None, sensitivity_at={})
    else:
        result.update(
            froc=curve.interpolated,
            froc_interpolated=curve.interpolated,
            froc_stepwise=curve.stepwise,
            sensitivity_at={
                _rate_key(r): {
                    "interpolated": curve.sensitivity_interpolated[r],
                    "stepwise": curve.sensitivity_stepwise[r],
                }
                for r in curve.sensitivity_interpolated
            },
        )
    try:
        auc = slide_auc(auc_scores, auc_labels)
    except ConfigError as exc:
        auc = None
        notes.append(f"AUC undefined: {exc}")
    result["auc"] = auc
    result["n_slides"] = len(per_slide)
    result["n_tumor_slides"] = int(sum(auc_labels))
    result["n_lesions"] = curve.n_lesions if curve else 0
    result["eval_downsample"] = downsample
    result["merge_distance_um"] = MERGE_DISTANCE_UM
    result["itc_major_axis_um"] = ITC_MAJOR_AXIS_UM
    result["notes"] = notes
    result["slides"] = per_slide
    if curve is not None:
        result["froc_curve"] = {
            "fps_per_slide": [float(v) for v in curve.fps_per_slide],
            "sensitivity": [None if math.isnan(v) else float(v) for v in curve.sensitivity],
            "thresholds": [None if math.isinf(v) else float(v) for v in curve.thresholds],
        }
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
        if curve is not None and curve.n_lesions:
            plot_froc(curve, out_dir / "froc.png")
        if auc is not None:
            plot_roc(auc_scores, auc_labels, out_dir / "roc.png", auc=auc)
    return result


def _rate_key(rate: float) -> str:
    return f"{rate:g}"


# --- plots ---------------------------------------------------------------------------------------


def plot_froc(curve: Froc, path: Path) -> Path:
    """The FROC curve with the six evaluation rates marked; writes ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.2), dpi=120)
    floor = 1 / 16  # a log axis has no 0: points at 0 FP per slide are drawn at 1/16
    fps = np.maximum(curve.fps_per_slide, floor)
    ax.step(
        fps,
        curve.sensitivity,
        where="post",
        color="black",
        lw=1.0,
        alpha=0.5,
        label="operating points (step-wise)",
    )
    ax.plot(fps, curve.sensitivity, "-", color="black", lw=1.2, label="FROC (interpolated)")
    rates = list(curve.sensitivity_interpolated)
    ax.plot(
        rates,
        [curve.sensitivity_interpolated[r] for r in rates],
        "o",
        color="tab:red",
        label=f"interpolated, mean {curve.interpolated:.3f}",
    )
    ax.plot(
        rates,
        [curve.sensitivity_stepwise[r] for r in rates],
        "x",
        color="tab:blue",
        label=f"stepwise, mean {curve.stepwise:.3f}",
    )
    ax.set_xscale("log", base=2)
    right = max(16.0, float(fps.max()) * 1.2)
    ax.set_xlim(floor, right)
    ticks = [2.0**k for k in range(-4, int(math.log2(right)) + 1)]
    ax.set_xticks(
        ticks, ["0" if t == floor else f"{t:g}" if t >= 1 else f"1/{1 / t:g}" for t in ticks]
    )
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("mean false positives per slide")
    ax.set_ylabel("lesion sensitivity")
    ax.set_title(f"FROC ({curve.n_slides} slide(s), {curve.n_lesions} lesion(s))")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_roc(scores: Sequence[float], labels: Sequence[bool], path: Path, *, auc: float) -> Path:
    """The slide-level ROC curve; writes ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fpr, tpr, _ = roc_curve(scores, labels)
    fig, ax = plt.subplots(figsize=(4.5, 4.2), dpi=120)
    ax.plot(fpr, tpr, "-", color="black", lw=1.2)
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("false positive rate (normal slides)")
    ax.set_ylabel("true positive rate (tumor slides)")
    ax.set_title(f"slide ROC, AUC {auc:.3f} ({len(scores)} slides)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
