"""A spatial index over an annotation's polygons, so that extraction costs about as much with
100,000 small polygons as with 100: each patch mask, each patch centre and the thumbnail
raster only meet the polygons whose bounding box meets them.

`PolygonIndex(ann)` keeps every polygon's bounding box in arrays (tumor and holes) and a
uniform grid of buckets; `rasterize`, `contains`, `coverage_thumb` and `tumor_area` give
exactly what `lymph.data.annotations` gives for the whole annotation, at a cost that grows with
the polygons near the query rather than all of them: masks rasterise the nearby polygons all at
once (`raster_union`, one vectorised pass instead of one full-frame pass per polygon), centre
tests call `annotations.contains` on a grid cell's polygons.
"""

from __future__ import annotations

import contextlib
import gc
import weakref
from collections import defaultdict
from collections.abc import Iterator, Sequence

import numpy as np

from lymph.data.annotations import Annotations, Polygon
from lymph.data.annotations.geometry import self_intersects

_Rings = dict[str, np.ndarray]
"""Every vertex of some polygons, concatenated (`_rings`): x, y, next, start, size."""


def _boxes(polys: Sequence[Polygon]) -> np.ndarray:
    """(n, 4) float64 x_min, y_min, x_max, y_max of each polygon."""
    if not polys:
        return np.zeros((0, 4))
    return np.array([p.bbox_level0 for p in polys], dtype=np.float64)  # cached per polygon


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
        self._tumor_csr = self._csr(self.tumor_boxes)
        self._hole_csr = self._csr(self.hole_boxes)
        self._rings: tuple[_Rings, _Rings | None] | None = None  # built on the first `contains`

    def _csr(self, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(cell keys sorted, polygon of each): every grid cell each box covers."""
        lo = np.floor(boxes[:, :2] / self.cell).astype(np.int64)
        hi = np.floor(boxes[:, 2:] / self.cell).astype(np.int64)
        ny = hi[:, 1] - lo[:, 1] + 1
        n = (hi[:, 0] - lo[:, 0] + 1) * ny  # cells each box covers
        poly = np.repeat(np.arange(len(boxes)), n)
        o = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
        keys = (lo[poly, 0] + o // ny[poly]) * _KEY + lo[poly, 1] + o % ny[poly]
        order = np.argsort(keys, kind="stable")
        return keys[order], poly[order]

    def near(self, box: Sequence[float]) -> Annotations:
        """The annotation restricted to polygons whose bounding box meets `box`."""
        return Annotations(tumor=tuple(self.tumor[i] for i in _meets(self.tumor_boxes, box)),
                           holes=tuple(self.holes[i] for i in _meets(self.hole_boxes, box)),
                           source=self.ann.source)

    def rasterize(self, *, x_level0: float, y_level0: float, width: int, height: int,
                  downsample: float) -> np.ndarray:
        """`annotations.rasterize` of the whole annotation: the polygons near the region, all
        at once (`raster_union`), tumor minus holes."""
        box = (x_level0, y_level0, x_level0 + width * downsample,
               y_level0 + height * downsample)
        def union(polys: list[Polygon]) -> np.ndarray:
            return raster_union(polys, x0=x_level0, y0=y_level0, width=width, height=height,
                                step=downsample)

        out = union([self.tumor[i] for i in _meets(self.tumor_boxes, box)])
        holes = [self.holes[i] for i in _meets(self.hole_boxes, box)]
        if holes and out.any():
            out &= ~union(holes)
        return out.astype(np.uint8)

    def contains(self, points_level0: np.ndarray) -> np.ndarray:
        """`annotations.contains` of the whole annotation: each point tested only against the
        polygons registered in its grid cell whose box holds it, all (point, polygon, edge)
        crossings at once with the arithmetic of `annotations.geometry.inside_points`."""
        pts = np.asarray(points_level0, dtype=np.float64).reshape(-1, 2)
        out = np.zeros(len(pts), bool)
        if not len(pts) or not self.tumor:
            return out
        if self._rings is None:
            self._rings = (_rings(self.tumor), _rings(self.holes) if self.holes else None)
        tumor_rings, hole_rings = self._rings  # hole_rings is None iff there are no holes
        out = self._inside_any(pts, tumor_rings, self.tumor_boxes, self._tumor_csr)
        if hole_rings is not None and out.any():
            out &= ~self._inside_any(pts, hole_rings, self.hole_boxes, self._hole_csr)
        return out

    def _inside_any(self, pts: np.ndarray, ring: _Rings, boxes: np.ndarray,
                    csr: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        """bool (n,): whether each point lies inside (even-odd) any of `polys`."""
        reg_key, reg_poly = csr
        cells = np.floor(pts / self.cell).astype(np.int64)
        key = cells[:, 0] * _KEY + cells[:, 1]
        lo, hi = np.searchsorted(reg_key, key, "left"), np.searchsorted(reg_key, key, "right")
        counts = hi - lo
        pair_pt = np.repeat(np.arange(len(pts)), counts)
        offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        pair_poly = reg_poly[np.repeat(lo, counts) + offsets]
        b, p = boxes[pair_poly], pts[pair_pt]
        hold = (p[:, 0] >= b[:, 0]) & (p[:, 0] <= b[:, 2]) & (p[:, 1] >= b[:, 1]) & \
            (p[:, 1] <= b[:, 3])
        pair_pt, pair_poly = pair_pt[hold], pair_poly[hold]
        inside = np.zeros(len(pts), bool)
        if not len(pair_pt):
            return inside
        cum = np.cumsum(ring["size"][pair_poly])  # edges to evaluate, in bounded batches
        cuts = np.searchsorted(cum, np.arange(_EDGES, int(cum[-1]), _EDGES), "right")
        for part in np.split(np.arange(len(pair_pt)), np.unique(cuts)):
            if len(part):
                hit = _pairs_inside(pts[pair_pt[part]], pair_poly[part], ring)
                inside[pair_pt[part][hit]] = True
        return inside

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


_KEY = 1 << 32  # cell key: cx * _KEY + cy (cells are far fewer than 2^31 per axis)
_EDGES = 1 << 21  # (point, polygon, edge) triples evaluated at once: bounded temporaries


def _rings(polys: Sequence[Polygon]) -> _Rings:
    """Every vertex of `polys` concatenated: x, y, the next vertex of its ring, and each
    polygon's first vertex and size."""
    pts = np.concatenate([p.points_level0 for p in polys])
    size = np.array([len(p.points_level0) for p in polys], np.int64)
    start = np.cumsum(size) - size
    nxt = np.arange(len(pts)) + 1
    nxt[start + size - 1] = start
    return {"x": pts[:, 0], "y": pts[:, 1], "next": nxt, "start": start, "size": size}


def _pairs_inside(pts: np.ndarray, poly: np.ndarray, ring: _Rings) -> np.ndarray:
    """bool (m,): point m inside polygon poly[m] by the even-odd rule, with exactly the
    arithmetic of `annotations.geometry.inside_points`."""
    k = ring["size"][poly]
    pair = np.repeat(np.arange(len(poly)), k)
    e = np.repeat(ring["start"][poly], k) + np.arange(k.sum()) - np.repeat(np.cumsum(k) - k, k)
    px, py = ring["x"][e], ring["y"][e]
    qx, qy = ring["x"][ring["next"][e]], ring["y"][ring["next"][e]]
    x, y = pts[pair, 0], pts[pair, 1]
    crosses = (np.minimum(py, qy) <= y) & (y < np.maximum(py, qy))
    with np.errstate(divide="ignore", invalid="ignore"):
        xc = px + (y - py) * (qx - px) / (qy - py)
    right = crosses & (x >= xc)
    return (np.bincount(pair, weights=right, minlength=len(poly)).astype(np.int64) & 1) \
        .astype(bool)


def raster_union(polys: Sequence[Polygon], *, x0: float, y0: float, width: int, height: int,
                 step: float) -> np.ndarray:
    """bool (height, width): the union of the polygons' even-odd insides sampled at pixel
    centres (x0 + (j + 0.5) * step, y0 + (i + 0.5) * step), exactly as OR-ing
    `annotations.geometry.parity_grid` of each polygon (same crossing arithmetic, same
    half-open rule), computed for all polygons at once: each polygon's crossings of each row
    are sorted and paired into inside spans, and the spans of all polygons are painted with one
    difference array."""
    out = np.zeros((height, width), bool)
    if not polys or not width or not height:
        return out
    pts = np.concatenate([p.points_level0 for p in polys])
    sizes = np.array([len(p.points_level0) for p in polys])
    pid = np.repeat(np.arange(len(polys)), sizes)
    start = np.repeat(np.cumsum(sizes) - sizes, sizes)
    nxt = np.arange(len(pts)) + 1
    nxt[np.cumsum(sizes) - 1] = start[np.cumsum(sizes) - 1]  # each ring closes on itself
    u, v = (pts[:, 0] - x0) / step, (pts[:, 1] - y0) / step
    u2, v2 = u[nxt], v[nxt]
    vmin, vmax = np.minimum(v, v2), np.maximum(v, v2)
    i_lo = np.maximum(np.ceil(vmin - 0.5), 0).astype(np.int64)
    i_hi = np.minimum(np.ceil(vmax - 0.5), height).astype(np.int64)
    keep = i_hi > i_lo
    if not keep.any():
        return out
    u, v, u2, v2 = u[keep], v[keep], u2[keep], v2[keep]
    i_lo, i_hi, pid = i_lo[keep], i_hi[keep], pid[keep]
    counts = i_hi - i_lo
    edge = np.repeat(np.arange(len(u)), counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    rows = i_lo[edge] + offsets
    t = (rows + 0.5 - v[edge]) / (v2[edge] - v[edge])
    uc = u[edge] + t * (u2[edge] - u[edge])
    first = np.clip(np.ceil(uc - 0.5), 0, width).astype(np.int64)
    order = np.lexsort((first, rows, pid[edge]))
    first, rows = first[order], rows[order]
    begin, end, row = first[0::2], first[1::2], rows[0::2]  # (polygon, row) counts are even
    diff = np.bincount(row * (width + 1) + begin, minlength=height * (width + 1)) \
        - np.bincount(row * (width + 1) + end, minlength=height * (width + 1))
    inside = np.cumsum(diff.reshape(height, width + 1)[:, :width], axis=1) > 0
    out |= inside
    return out


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
    test of `annotations.geometry.self_intersects`, vectorised over polygons; large k one by
    one)."""
    m, k, _ = pts.shape
    if k > 64:
        return np.array([self_intersects(p) for p in pts], bool)
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


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off for the block (reading a large annotation file builds
    millions of objects and no cycles; its passes measured ~1 s of 7 for 100,000 polygons)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def index_for(ann: Annotations) -> PolygonIndex:
    """The index of `ann`, built once per annotation object (extraction asks twice)."""
    index = _CACHE.get(ann)
    if index is None:
        index = _CACHE[ann] = PolygonIndex(ann)
    return index
