"""A spatial index over an annotation's polygons, so that extraction costs about as much with
100,000 small polygons as with 100: each patch mask, each patch centre and the thumbnail
raster only meet the polygons whose bounding box meets them.

`PolygonIndex(ann)` keeps every polygon's bounding box in arrays (tumor and holes) and a
uniform grid of buckets; `rasterize`, `contains`, `coverage_thumb` and `tumor_area` give
exactly what `lymph.data.annotations` gives for the whole annotation (they call its functions
on the polygons that can matter, each polygon rasterised only over its own box), at a cost that
grows with the polygons near the query rather than all of them.
"""

from __future__ import annotations

import weakref
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from lymph.data.annotations import Annotations, Polygon, _self_intersects, contains, rasterize


def _boxes(polys: Sequence[Polygon]) -> np.ndarray:
    """(n, 4) float64 x_min, y_min, x_max, y_max of each polygon."""
    if not polys:
        return np.zeros((0, 4))
    return np.array([(*p.points_level0.min(axis=0), *p.points_level0.max(axis=0))
                     for p in polys], dtype=np.float64)


def _meets(boxes: np.ndarray, box: Sequence[float]) -> np.ndarray:
    """Indices of `boxes` that meet `box` (closed boxes, as `annotations._overlaps`)."""
    return np.flatnonzero(~((boxes[:, 2] < box[0]) | (boxes[:, 0] > box[2])
                            | (boxes[:, 3] < box[1]) | (boxes[:, 1] > box[3])))


class PolygonIndex:
    """Bounding boxes and grid buckets of an annotation's tumor polygons and holes."""

    def __init__(self, ann: Annotations) -> None:
        self.ann = ann
        self.tumor, self.holes = tuple(ann.tumor), tuple(ann.holes)
        self.tumor_boxes, self.hole_boxes = _boxes(self.tumor), _boxes(self.holes)
        both = np.concatenate([self.tumor_boxes, self.hole_boxes])
        sizes = np.maximum(both[:, 2] - both[:, 0], both[:, 3] - both[:, 1]) if len(both) else []
        self.cell = max(float(np.median(sizes)) * 4 if len(both) else 1.0, 256.0)
        self.tumor_grid = self._grid(self.tumor_boxes)
        self.hole_grid = self._grid(self.hole_boxes)

    def _grid(self, boxes: np.ndarray) -> dict[tuple[int, int], list[int]]:
        grid: dict[tuple[int, int], list[int]] = defaultdict(list)
        lo = np.floor(boxes[:, :2] / self.cell).astype(np.int64)
        hi = np.floor(boxes[:, 2:] / self.cell).astype(np.int64)
        for i in range(len(boxes)):
            for cx in range(lo[i, 0], hi[i, 0] + 1):
                for cy in range(lo[i, 1], hi[i, 1] + 1):
                    grid[(int(cx), int(cy))].append(i)
        return grid

    def near(self, box: Sequence[float]) -> Annotations:
        """The annotation restricted to polygons whose bounding box meets `box`."""
        return Annotations(tumor=tuple(self.tumor[i] for i in _meets(self.tumor_boxes, box)),
                           holes=tuple(self.holes[i] for i in _meets(self.hole_boxes, box)),
                           source=self.ann.source)

    def rasterize(self, *, x_level0: float, y_level0: float, width: int, height: int,
                  downsample: float) -> np.ndarray:
        """`annotations.rasterize` of the whole annotation, each polygon rasterised over its
        own box only (a thumbnail with 100,000 polygons is not 100,000 full-frame passes)."""
        box = (x_level0, y_level0, x_level0 + width * downsample,
               y_level0 + height * downsample)
        out = np.zeros((height, width), bool)
        for i in _meets(self.tumor_boxes, box):
            self._paint(out, self.tumor[i], self.tumor_boxes[i], x_level0, y_level0, downsample,
                        hole=False)
        if out.any():
            for i in _meets(self.hole_boxes, box):
                self._paint(out, self.holes[i], self.hole_boxes[i], x_level0, y_level0,
                            downsample, hole=True)
        return out.astype(np.uint8)

    @staticmethod
    def _paint(out: np.ndarray, poly: Polygon, box: np.ndarray, x0: float, y0: float,
               step: float, *, hole: bool) -> None:
        """OR (or, for a hole, AND NOT) one polygon into `out` over the pixels whose centres
        can fall inside its box: pixel j's centre is x0 + (j + 0.5) * step."""
        h, w = out.shape
        c0 = max(0, int(np.floor((box[0] - x0) / step - 0.5)) - 1)
        c1 = min(w, int(np.ceil((box[2] - x0) / step - 0.5)) + 2)
        r0 = max(0, int(np.floor((box[1] - y0) / step - 0.5)) - 1)
        r1 = min(h, int(np.ceil((box[3] - y0) / step - 0.5)) + 2)
        if c1 <= c0 or r1 <= r0:
            return
        part = rasterize(Annotations(tumor=(poly,)), x_level0=x0 + c0 * step,
                         y_level0=y0 + r0 * step, width=c1 - c0, height=r1 - r0,
                         downsample=step).astype(bool)
        if hole:
            out[r0:r1, c0:c1] &= ~part
        else:
            out[r0:r1, c0:c1] |= part

    def contains(self, points_level0: np.ndarray) -> np.ndarray:
        """`annotations.contains` of the whole annotation, each point tested only against the
        polygons of its grid cell."""
        pts = np.asarray(points_level0, dtype=np.float64).reshape(-1, 2)
        out = np.zeros(len(pts), bool)
        if not len(pts):
            return out
        cells = np.floor(pts / self.cell).astype(np.int64)
        keys, inverse = np.unique(cells, axis=0, return_inverse=True)
        for k, (cx, cy) in enumerate(keys):
            sel = np.flatnonzero(inverse.reshape(-1) == k)
            tumor = self.tumor_grid.get((int(cx), int(cy)), [])
            if not tumor:
                continue
            holes = self.hole_grid.get((int(cx), int(cy)), [])
            sub = Annotations(tumor=tuple(self.tumor[i] for i in tumor),
                              holes=tuple(self.holes[i] for i in holes))
            out[sel] = contains(sub, pts[sel])
        return out

    def coverage_thumb(self, core: np.ndarray, *, downsample: float) -> np.ndarray:
        """`annotations.coverage_thumb` from the centre-sampled raster `core` (this index's
        `rasterize` of the thumbnail frame): plus every pixel holding a tumor vertex, dilated
        by one pixel."""
        from lymph.data.tissue import dilate

        h, w = core.shape
        mask = core.astype(bool).copy()
        if self.tumor:
            pts = np.concatenate([p.points_level0 for p in self.tumor])
            ij = np.floor(pts[:, ::-1] / downsample).astype(np.int64)
            ok = (ij[:, 0] >= 0) & (ij[:, 0] < h) & (ij[:, 1] >= 0) & (ij[:, 1] < w)
            mask[ij[ok, 0], ij[ok, 1]] = True
        return dilate(mask, 1) if mask.any() else mask

    def tumor_area(self) -> float:
        """Tumor minus holes area in level-0 px² as `Polygon.area_level0` sums it: the shoelace
        value of every polygon that does not cross itself (tested for all polygons of one
        vertex count at once), `area_level0` for those that do."""
        return max(0.0, _area_sum(self.tumor) - _area_sum(self.holes))


def _area_sum(polys: Sequence[Polygon]) -> float:
    by_k: dict[int, list[int]] = defaultdict(list)
    for i, p in enumerate(polys):
        by_k[len(p.points_level0)].append(i)
    total = 0.0
    for k, idx in by_k.items():
        pts = np.stack([polys[i].points_level0 for i in idx])  # (m, k, 2)
        x, y = pts[..., 0], pts[..., 1]
        shoelace = np.abs((x * np.roll(y, -1, axis=1)).sum(1)
                          - (y * np.roll(x, -1, axis=1)).sum(1)) / 2
        crossing = _crossing(pts) if k > 3 else np.zeros(len(idx), bool)
        total += float(shoelace[~crossing].sum())
        total += sum(polys[idx[j]].area_level0 for j in np.flatnonzero(crossing))
    return total


def _crossing(pts: np.ndarray, *, block: int = 4096) -> np.ndarray:
    """(m,) whether each of m closed k-gons has two non-adjacent edges that cross (the exact
    test of `annotations._self_intersects`, vectorised over polygons; large k one by one)."""
    m, k, _ = pts.shape
    if k > 64:
        return np.array([_self_intersects(p) for p in pts], bool)
    out = np.zeros(m, bool)
    i, j = np.arange(k)[:, None], np.arange(k)[None, :]
    gap = np.abs(i - j)
    pair = (gap > 1) & (gap < k - 1)
    for s in range(0, m, block):
        a = pts[s:s + block]
        b = np.roll(a, -1, axis=1)
        pa, pb = a[:, :, None, :], b[:, :, None, :]
        qa, qb = a[:, None, :, :], b[:, None, :, :]
        d1, d2 = _cross(qa, qb, pa), _cross(qa, qb, pb)
        d3, d4 = _cross(pa, pb, qa), _cross(pa, pb, qb)
        hit = (d1 * d2 < 0) & (d3 * d4 < 0) & pair
        out[s:s + block] = hit.any(axis=(1, 2))
    return out


def _cross(o: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a[..., 0] - o[..., 0]) * (b[..., 1] - o[..., 1]) - \
        (a[..., 1] - o[..., 1]) * (b[..., 0] - o[..., 0])


_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def index_for(ann: Annotations) -> PolygonIndex:
    """The index of `ann`, built once per annotation object (extraction asks twice)."""
    index = _CACHE.get(ann)
    if index is None:
        index = _CACHE[ann] = PolygonIndex(ann)
    return index
