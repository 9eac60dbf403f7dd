"""Ground truth of lymph's rules: the tumor mask of a slide in the evaluation frame (from ASAP
XML, QuPath GeoJSON or a mask TIFF), its lesions (grown by half of 75 um, holes filled,
8-connected) and which of them hold isolated tumor cells (major axis under 275 um).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from scipy import ndimage

from lymph.data.errors import AnnotationError, ConfigError, SlideError
from lymph.data.slides import SlideReader

EVAL_DOWNSAMPLE = 32.0  # level 5 of a CAMELYON16 slide
CAMELYON16_MPP = 0.243  # um/px at level 0 of the CAMELYON16 scanners, assumed when unknown
MERGE_DISTANCE_UM = 75.0  # lesions closer than this merge (each is grown by half of it)
ITC_MAJOR_AXIS_UM = 275.0  # 200 um + the 75 um of growth


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
            out = read_whole_level(mask, level, path=path)[np.ix_(rows_all, cols)] > 0
        out[~row_ok] = False
        out[:, ~col_ok] = False
        return out
    except SlideError as exc:
        raise AnnotationError(f"mask {path} cannot be read ({exc})") from exc
    finally:
        mask.close()


MAX_LEVEL_PIXELS = 1 << 28  # a level read whole: 1 GiB of RGBA at most


def read_whole_level(mask: SlideReader, level: int, *, path: Path) -> np.ndarray:
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


def slide_geometry(path: Path) -> tuple[tuple[int, int], float | None]:
    """(level-0 width, height) and the mpp OpenSlide reports (None when absent or not a number).
    SlideError when the slide cannot be opened."""
    import openslide

    try:
        with openslide.OpenSlide(str(path)) as slide:
            width, height = (int(v) for v in slide.dimensions)
            mpp = slide.properties.get(openslide.PROPERTY_NAME_MPP_X)
    except (openslide.OpenSlideError, OSError) as exc:
        raise SlideError(f"slide {path} cannot be opened ({exc})") from exc
    try:
        mpp_f = float(mpp) if mpp is not None else None
    except ValueError:
        mpp_f = None
    return (width, height), mpp_f
