"""From the raw map to findings: the map zeroed outside tissue, lesion detections (8-connected
regions of map >= threshold, confidence = the region's maximum, located at that maximum) and the
slide score (the maximum of the map after a Gaussian blur of sigma 1 map pixel: a single hot map
pixel does not make a slide positive).

Memory: the map is ``1 / map_downsample^2`` of the slide (39 MB at 100,000 x 100,000 px and
downsample 16) and is needed whole for lesion detection, which labels only the bounding box of
the pixels above the threshold; the slide score's blur runs in bands.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import numpy as np

from lymph.model.predict.config import SMOOTH_SIGMA_PX, THRESHOLD, TISSUE_MARGIN_THUMB
from lymph.model.predict.exports import Detection

if TYPE_CHECKING:
    from lymph.model.predict.plan import TilePlan


@dataclass(frozen=True)
class SlideMaps:
    """What post-processing makes of the raw map: the masked map, detections and the score."""

    prob_map: np.ndarray
    detections: list[Detection]
    probability: float


def mask_to_tissue(
    prob_map: np.ndarray, tissue_thumb: np.ndarray, *, thumb_downsample: float,
    map_downsample: float, margin_thumb: int = 2,
) -> np.ndarray:
    """Zero the map (map frame) wherever the thumbnail tissue mask (thumb frame, grown by
    `margin_thumb` thumbnail pixels) holds no tissue, in place; returns the map.

    Windows at the tissue border are partly glass, which the model never saw in training (patches
    are drawn inside tissue): blended, they leave spurious probability on the background. Lesions
    lie in tissue, so masking costs nothing and removes those false positives, as the CAMELYON16
    pipelines (e.g. Liu et al.) restrict predictions to tissue.
    """
    from lymph.data.tissue import dilate

    tissue = dilate(np.asarray(tissue_thumb, bool), margin_thumb) if margin_thumb else \
        np.asarray(tissue_thumb, bool)
    h, w = prob_map.shape[:2]
    scale = map_downsample / thumb_downsample
    rows = np.minimum(((np.arange(h) + 0.5) * scale).astype(np.int64), tissue.shape[0] - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * scale).astype(np.int64), tissue.shape[1] - 1)
    band = 1024
    for y0 in range(0, h, band):
        inside = tissue[np.ix_(rows[y0:y0 + band], cols)]
        prob_map[y0:y0 + band][~inside] = 0
    return prob_map


def detect_lesions(
    prob_map: np.ndarray,
    *,
    map_downsample: float,
    threshold: float = THRESHOLD,
    mpp: float | None = None,
) -> list[Detection]:
    """Detections from a uint8 (0-255) map: 8-connected regions of ``map >= threshold``; the
    confidence is the region's maximum and its location that maximum's map pixel centre in
    level-0 integers (the first in raster order on ties); the outline is the region's outer
    boundary (contourpy, at 0.5 between inside and outside pixel centres). Labels are computed
    only inside the bounding box of the pixels above the threshold, and every statistic inside
    each region's own box, so memory follows the detections, not the map."""
    from scipy import ndimage

    level = max(1, int(math.ceil(threshold * 255 - 1e-9)))
    mask = prob_map >= level
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return []
    cols = np.flatnonzero(mask.any(axis=0))
    r_off, c_off = int(rows[0]), int(cols[0])
    crop = (slice(r_off, int(rows[-1]) + 1), slice(c_off, int(cols[-1]) + 1))
    labels, _ = ndimage.label(mask[crop], structure=np.ones((3, 3), bool))
    values = prob_map[crop]
    del mask
    px_um2 = (mpp * map_downsample) ** 2 if mpp else None
    out = []
    for i, box in enumerate(ndimage.find_objects(labels), 1):
        if box is None:
            continue
        region = labels[box] == i
        inside = np.where(region, values[box], 0)
        row, col = np.unravel_index(int(np.argmax(inside)), inside.shape)
        top, left = r_off + box[0].start, c_off + box[1].start
        area = int(region.sum())
        out.append(
            Detection(
                confidence=float(inside[row, col]) / 255.0,
                x_level0=int((left + col + 0.5) * map_downsample),
                y_level0=int((top + row + 0.5) * map_downsample),
                outline_level0=_outline(region, top, left, map_downsample),
                area_um2=area * px_um2 if px_um2 else None,
                extra={"area_map_px": float(area)},
            )
        )
    return out


def _outline(region: np.ndarray, top: int, left: int, downsample: float) -> np.ndarray | None:
    """The longest boundary of a bool region whose pixel (0, 0) is map pixel (top, left), in
    level-0 coordinates."""
    import contourpy

    padded = np.pad(region.astype(np.float64), 1)
    lines = cast(list[np.ndarray],  # line_type "Separate": one (k, 2) array per line
                 contourpy.contour_generator(z=padded, line_type="Separate").lines(0.5))
    if not lines:
        return None
    ring = max(lines, key=len)
    if len(ring) > 1 and np.array_equal(ring[0], ring[-1]):
        ring = ring[:-1]
    if len(ring) < 3:
        return None
    # contour x, y are column, row of the padded crop; level 0 of a pixel centre: (j + 0.5) * ds
    x = (ring[:, 0] - 1 + left + 0.5) * downsample
    y = (ring[:, 1] - 1 + top + 0.5) * downsample
    return np.stack([x, y], axis=1)


def slide_probability(
    prob_map: np.ndarray, *, sigma: float = SMOOTH_SIGMA_PX, band: int = 1024
) -> float:
    """The slide's tumor probability: the maximum of the map after a Gaussian blur of ``sigma``
    map pixels (0..1). Blurred in bands of rows with enough overlap to be exact, so memory stays
    a few bands of float32 whatever the map's size."""
    from scipy import ndimage

    if prob_map.size == 0:
        return 0.0
    pad = int(4.0 * sigma + 0.5) + 1  # gaussian_filter's default truncate is 4 sigma
    h = prob_map.shape[0]
    best = 0.0
    for r0 in range(0, h, band):
        a, b = max(0, r0 - pad), min(h, r0 + band + pad)
        chunk = prob_map[a:b]
        if not chunk.any():
            continue
        smooth = ndimage.gaussian_filter(chunk, sigma, output=np.float32, mode="constant")
        if a > 0 or b < h:  # rows at a band edge inside the map: keep only the exact centre
            smooth = smooth[r0 - a : r0 - a + min(band, h - r0)]
        best = max(best, float(smooth.max()))
    return float(np.clip(best / 255.0, 0.0, 1.0))


def postprocess(prob_map: np.ndarray, plan: TilePlan, *, threshold: float) -> SlideMaps:
    """Zero the map outside tissue, then detections and the slide score from it."""
    map_ds = plan.grid.map_downsample
    mask_to_tissue(prob_map, plan.tissue, thumb_downsample=plan.thumb_downsample,
                   map_downsample=map_ds, margin_thumb=TISSUE_MARGIN_THUMB)
    detections = detect_lesions(prob_map, map_downsample=map_ds, threshold=threshold,
                                mpp=plan.mpp)
    return SlideMaps(prob_map=prob_map, detections=detections,
                     probability=slide_probability(prob_map))

