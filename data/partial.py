"""Partial annotations: reviewed regions, and the IGNORE value of masks outside them.

A pathologist rarely outlines every lesion of a slide. An annotation file may therefore mark
*reviewed regions*: areas that were looked at exhaustively. Inside a reviewed region the tumor
outlines are complete, so every tissue pixel outside them is non-tumor; outside every reviewed
region nothing is known (a lesion there may simply not have been drawn).

Formats (names compared case-insensitively, surrounding spaces ignored):
- ASAP XML: polygons (or rectangles) in the group `Reviewed` or `ROI`.
- QuPath GeoJSON: Polygon / MultiPolygon features classified `Reviewed` or `ROI`.
- `Suggested` boxes written by `lymph suggest` are neither tumor nor reviewed: they are skipped
  (with a warning counting them) until the pathologist changes their class (QuPath) or group
  (ASAP) to `Reviewed`, which turns each into a reviewed region.

A slide whose file has reviewed regions is extracted partially (`lymph.pipeline.partial`):
tumor patches are centred on annotated tumor inside a reviewed region, non-tumor patches on
tissue inside a reviewed region and outside every tumor outline, and each patch's mask holds
IGNORE (255) at every pixel whose centre lies outside all reviewed regions; the training losses
and the pixel metrics skip those pixels. A slide without reviewed regions is exhaustive, exactly
as before. Reviewed regions are unions: overlapping regions count once.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lymph.data.annotations import Annotations, Polygon, contains, rasterize

IGNORE = 255
"""Mask value of a pixel whose label is unknown (outside every reviewed region). Masks are
uint8: 0 non-tumor, 1 tumor, 255 ignore."""

REVIEWED_CLASSES = frozenset({"reviewed", "roi"})
SUGGESTED_CLASS = "suggested"
REVIEWED_NAME = "Reviewed"
SUGGESTED_NAME = "Suggested"
"""The class (QuPath) or group (ASAP) of `lymph suggest`'s boxes (matched as SUGGESTED_CLASS)."""
AREA_GRID_CELLS = 2048
"""The reviewed tumor area is counted on a grid of at most this many cells per side over the
reviewed regions' bounding box (0.05% of the box's side per cell)."""


def region_role(name: str | None) -> str | None:
    """'reviewed', 'suggested' or None for an ASAP group or QuPath class name."""
    low = (name or "").strip().casefold()
    if low in REVIEWED_CLASSES:
        return "reviewed"
    return "suggested" if low == SUGGESTED_CLASS else None


def is_partial(ann: Annotations | None) -> bool:
    """Whether the annotations carry reviewed regions (then the slide is partially annotated)."""
    return ann is not None and bool(getattr(ann, "reviewed", ()))


def _regions(ann: Annotations) -> Annotations:
    """The reviewed regions as the 'tumor' of an Annotations (to reuse rasterize/contains)."""
    return Annotations(tumor=tuple(ann.reviewed))


def reviewed_raster(ann: Annotations, *, x_level0: float, y_level0: float, width: int,
                    height: int, downsample: float) -> np.ndarray:
    """bool (height, width): pixel centres inside a reviewed region (same sampling rule as
    `rasterize`)."""
    return rasterize(_regions(ann), x_level0=x_level0, y_level0=y_level0, width=width,
                     height=height, downsample=downsample).astype(bool)


def patch_mask(ann: Annotations, *, x_level0: float, y_level0: float, width: int, height: int,
               downsample: float) -> np.ndarray:
    """uint8 (height, width) mask of a partially annotated region: 1 tumor, 0 non-tumor,
    IGNORE outside every reviewed region."""
    mask = rasterize(ann, x_level0=x_level0, y_level0=y_level0, width=width, height=height,
                     downsample=downsample)
    seen = reviewed_raster(ann, x_level0=x_level0, y_level0=y_level0, width=width,
                           height=height, downsample=downsample)
    mask[~seen] = IGNORE
    return mask


def in_reviewed(ann: Annotations, points_level0: np.ndarray) -> np.ndarray:
    """bool (n,): which level-0 points lie inside a reviewed region."""
    return contains(_regions(ann), points_level0)


def _grid(ann: Annotations, cells: int) -> tuple[float, float, int, int, float]:
    """(x0, y0, width, height, step) of a grid over the reviewed regions' bounding box."""
    boxes = np.array([p.bbox_level0 for p in ann.reviewed])
    x0, y0 = float(boxes[:, 0].min()), float(boxes[:, 1].min())
    x1, y1 = float(boxes[:, 2].max()), float(boxes[:, 3].max())
    step = max(x1 - x0, y1 - y0, 1e-9) / cells
    return x0, y0, max(1, int(np.ceil((x1 - x0) / step))), max(1, int(np.ceil((y1 - y0) / step))
                                                               ), step


def reviewed_areas(ann: Annotations, *, cells: int = AREA_GRID_CELLS) -> tuple[float, float]:
    """(reviewed area, tumor area inside it) in level-0 px^2, counted at the centres of a grid
    of at most `cells` x `cells` over the reviewed regions (unions: overlaps count once)."""
    if not is_partial(ann):
        return 0.0, 0.0
    x0, y0, w, h, step = _grid(ann, cells)
    seen = reviewed_raster(ann, x_level0=x0, y_level0=y0, width=w, height=h, downsample=step)
    tumor = rasterize(ann, x_level0=x0, y_level0=y0, width=w, height=h,
                      downsample=step).astype(bool)
    cell = step * step
    return float(seen.sum()) * cell, float((seen & tumor).sum()) * cell


def with_reviewed(ann: Annotations, reviewed: tuple[Polygon, ...]) -> Annotations:
    """A copy of `ann` whose reviewed regions are `reviewed` (tests, the simulated loop)."""
    return Annotations(tumor=ann.tumor, holes=ann.holes, reviewed=tuple(reviewed),
                       source=ann.source)


def box_polygon(x0: float, y0: float, x1: float, y1: float, *, name: str = "",
                group: str = REVIEWED_NAME) -> Polygon:
    """An axis-aligned box as a 4-point Polygon (level-0 px), clockwise from the top left."""
    return Polygon(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64), name=name,
                   group=group)


SUGGESTION_SUFFIXES = ("_suggestions.geojson", "_suggestions.xml")


def suggestions_file(stem: str, files: dict[str, Path]) -> Path | None:
    """The newer (by modification time) of `stem_suggestions.geojson` / `.xml` among `files`
    ({lower-case name: path} of a folder), or None: the one a pathologist saved last."""
    found = [files[n] for n in (f"{stem}{s}".lower() for s in SUGGESTION_SUFFIXES) if n in files]
    if not found:
        return None
    return max(found, key=lambda p: (p.stat().st_mtime_ns, p.suffix == ".xml"))


def clip_to_box(points: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray | None:
    """The part of a polygon inside the axis-aligned box (x0, y0, x1, y1), by Sutherland-Hodgman
    (exact for a convex clip region; a concave outline may come back with zero-width seams along
    the box's edges, which cover no pixel centre); None when under 3 points remain."""
    x0, y0, x1, y1 = box
    pts = np.asarray(points, np.float64)
    for axis, bound, keep_ge in ((0, x0, True), (0, x1, False), (1, y0, True), (1, y1, False)):
        if len(pts) == 0:
            return None
        nxt = np.roll(pts, -1, axis=0)
        a, b = pts[:, axis], nxt[:, axis]
        ina = a >= bound if keep_ge else a <= bound
        inb = b >= bound if keep_ge else b <= bound
        out = []
        for p, q, pin, qin, pa, qa in zip(pts, nxt, ina, inb, a, b, strict=True):
            if pin:
                out.append(p)
            if pin != qin:
                t = (bound - pa) / (qa - pa)
                out.append(p + t * (q - p))
        pts = np.array(out, np.float64).reshape(-1, 2)
    return pts if len(pts) >= 3 else None


def oracle_annotations(truth: Annotations, boxes: list[tuple[float, float, float, float]]
                       ) -> Annotations:
    """What an exact annotator returns for `boxes` of a slide whose complete outlines are
    `truth`: every tumor outline and hole clipped to each box, and the boxes as reviewed
    regions (the simulated loop's oracle)."""
    tumor: list[Polygon] = []
    holes: list[Polygon] = []
    for i, box in enumerate(boxes):
        for src, dst in ((truth.tumor, tumor), (truth.holes, holes)):
            for poly in src:
                x_min, y_min, x_max, y_max = poly.bbox_level0
                if x_max < box[0] or x_min > box[2] or y_max < box[1] or y_min > box[3]:
                    continue
                part = clip_to_box(poly.points_level0, box)
                if part is not None:
                    dst.append(Polygon(part, name=f"{poly.name} in box {i + 1}"))
    reviewed = tuple(box_polygon(*b, name=f"box {i + 1}") for i, b in enumerate(boxes))
    return Annotations(tumor=tuple(tumor), holes=tuple(holes), reviewed=reviewed)
