"""Annotations to pixels: `rasterize` (a region's mask), `contains` (which level-0 points are
tumor) and `coverage_thumb` (thumbnail candidates).

Rasterization samples pixel centres: level pixel (i, j) of a region with top-left
(x_level0, y_level0) at `downsample` is tumor iff the level-0 point
(x_level0 + (j + 0.5) * downsample, y_level0 + (i + 0.5) * downsample) is inside a tumor
polygon (even-odd rule per polygon, union over polygons) and inside no hole.
"""

from __future__ import annotations

import numpy as np

from lymph.data.annotations.geometry import inside_points, parity_grid
from lymph.data.annotations.polygons import Annotations, Polygon


def _overlaps(poly: Polygon, box: tuple[float, float, float, float]) -> bool:
    x_min, y_min, x_max, y_max = poly.bbox_level0
    return not (x_max < box[0] or x_min > box[2] or y_max < box[1] or y_min > box[3])


def rasterize(ann: Annotations, *, x_level0: float, y_level0: float, width: int, height: int,
              downsample: float) -> np.ndarray:
    """uint8 0/1 (height, width): tumor minus holes, sampled at pixel centres of a region whose
    top-left is (x_level0, y_level0) at `downsample` level-0 pixels per pixel."""
    if width < 0 or height < 0 or not downsample > 0:
        raise ValueError(f"rasterize needs width, height >= 0 and downsample > 0, got "
                         f"{width}x{height} at {downsample}")
    out = np.zeros((height, width), bool)
    box = (x_level0, y_level0, x_level0 + width * downsample, y_level0 + height * downsample)
    for poly in ann.tumor:
        if _overlaps(poly, box):
            out |= parity_grid(poly.points_level0, x0=x_level0, y0=y_level0, width=width,
                                height=height, step=downsample)
    if out.any():
        for poly in ann.holes:
            if _overlaps(poly, box):
                out &= ~parity_grid(poly.points_level0, x0=x_level0, y0=y_level0, width=width,
                                     height=height, step=downsample)
    return out.astype(np.uint8)


def contains(ann: Annotations, points_level0: np.ndarray) -> np.ndarray:
    """bool (n,): which level-0 points lie in tumor and outside every hole."""
    pts = np.asarray(points_level0, dtype=np.float64).reshape(-1, 2)
    out = np.zeros(len(pts), bool)
    for start in range(0, len(pts), 512):  # bounded (points x vertices) temporaries
        sl = slice(start, start + 512)
        out[sl] = _contains_block(ann, pts[sl])
    return out


def _contains_block(ann: Annotations, pts: np.ndarray) -> np.ndarray:
    out = np.zeros(len(pts), bool)
    for poly in ann.tumor:
        x_min, y_min, x_max, y_max = poly.bbox_level0
        sel = (pts[:, 0] >= x_min) & (pts[:, 0] <= x_max) & (pts[:, 1] >= y_min) & (
            pts[:, 1] <= y_max) & ~out
        if sel.any():
            out[sel] = inside_points(poly.points_level0, pts[sel])
    for poly in ann.holes:
        x_min, y_min, x_max, y_max = poly.bbox_level0
        sel = (pts[:, 0] >= x_min) & (pts[:, 0] <= x_max) & (pts[:, 1] >= y_min) & (
            pts[:, 1] <= y_max) & out
        if sel.any():
            out[sel] &= ~inside_points(poly.points_level0, pts[sel])
    return out


def coverage_thumb(ann: Annotations, *, shape: tuple[int, int], downsample: float) -> np.ndarray:
    """bool thumbnail-frame mask of the pixels that may hold tumor: the centre-sampled raster,
    plus every pixel holding a tumor vertex, dilated by one pixel, so that lesions smaller than a
    thumbnail pixel are still found. Candidates only: exact membership is `contains`."""
    from lymph.data.tissue import dilate

    h, w = shape
    mask = rasterize(ann, x_level0=0, y_level0=0, width=w, height=h,
                     downsample=downsample).astype(bool)
    for poly in ann.tumor:
        ij = np.floor(poly.points_level0[:, ::-1] / downsample).astype(np.int64)
        ok = (ij[:, 0] >= 0) & (ij[:, 0] < h) & (ij[:, 1] >= 0) & (ij[:, 1] < w)
        mask[ij[ok, 0], ij[ok, 1]] = True
    return dilate(mask, 1) if mask.any() else mask
