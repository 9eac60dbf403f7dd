"""The annotation model: `Polygon` (a checked closed outline in level-0 pixels) and
`Annotations` (tumor outlines, holes and reviewed regions of one file)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from lymph.data.annotations.geometry import grid_area, self_intersects
from lymph.data.errors import AnnotationError

COORD_LIMIT = float(2 ** 31)
"""Level-0 coordinates beyond +-2^31 px are refused: no slide is that large (CAMELYON16 slides
are under 2^18 px), and such values (1e300) overflow the integer pixel arithmetic."""


def check_points(pts: ArrayLike, *, name: str, source: Path | str | None = None) -> np.ndarray:
    """(k >= 3, 2) float64 finite points inside +-COORD_LIMIT, else AnnotationError naming the
    file, the annotation and the bad value."""
    where = f"{source}: " if source is not None else ""
    try:
        arr = np.asarray(pts, dtype=np.float64)
    except OverflowError:
        raise AnnotationError(f"{where}polygon {name!r} has a coordinate too large for a "
                              f"number of pixels (beyond +-{COORD_LIMIT:.0f} px of any slide); "
                              "are the coordinates in level-0 pixels?") from None
    except (TypeError, ValueError) as exc:
        raise AnnotationError(f"{where}annotation {name!r}: coordinates are not numbers "
                              f"({type(exc).__name__}: {str(exc)[:80]}); export it again") from None
    if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] < 3:
        raise AnnotationError(f"{where}polygon {name!r} needs (k >= 3, 2) points, got shape "
                              f"{arr.shape}")
    if -COORD_LIMIT <= arr.min() and arr.max() <= COORD_LIMIT:  # finite and in range (NaN fails)
        return arr
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        raise AnnotationError(f"{where}polygon {name!r} has a non-finite coordinate "
                              f"{tuple(arr[np.flatnonzero(bad)[0]])} (NaN or infinity); "
                              "export it again")
    big = (np.abs(arr) > COORD_LIMIT).any(axis=1)
    if big.any():
        raise AnnotationError(f"{where}polygon {name!r} has coordinate "
                              f"{tuple(float(v) for v in arr[np.flatnonzero(big)[0]])}, beyond "
                              f"+-{COORD_LIMIT:.0f} px of any slide; are the coordinates in "
                              "level-0 pixels?")
    return arr


@dataclass(frozen=True, eq=False)
class Polygon:
    """A closed outline in level-0 pixels. Inside means inside by the even-odd rule, for
    `contains` (patch centres), `rasterize` (masks) and `area_level0` alike, so a
    self-intersecting outline (a bow-tie) is the union of its lobes everywhere."""

    points_level0: np.ndarray  # (k, 2) float64 x, y
    name: str = ""
    group: str = ""

    def __post_init__(self) -> None:
        pts = check_points(self.points_level0, name=self.name)
        pts.setflags(write=False)
        object.__setattr__(self, "points_level0", pts)

    @functools.cached_property  # asked for every polygon by check_inside and the index
    def bbox_level0(self) -> tuple[float, float, float, float]:
        """(x_min, y_min, x_max, y_max)."""
        p = self.points_level0
        return float(p[:, 0].min()), float(p[:, 1].min()), float(p[:, 0].max()), float(
            p[:, 1].max())

    @functools.cached_property
    def area_level0(self) -> float:
        """Even-odd area in level-0 pixels squared: the shoelace value for a simple polygon;
        for a self-intersecting one (whose lobes cancel in the shoelace sum: 0 for a symmetric
        bow-tie) the area of its even-odd region, measured on a 1024 x 1024 grid over its box."""
        x, y = self.points_level0[:, 0], self.points_level0[:, 1]
        shoelace = float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)
        coarse = grid_area(self.points_level0, cells=256)
        if abs(coarse - shoelace) <= 0.02 * max(coarse, shoelace) or not self_intersects(
                self.points_level0):
            return shoelace
        return grid_area(self.points_level0, cells=1024)


@dataclass(frozen=True, eq=False)
class Annotations:
    tumor: tuple[Polygon, ...] = ()
    holes: tuple[Polygon, ...] = ()
    source: Path | None = None
    reviewed: tuple[Polygon, ...] = ()  # reviewed regions (partial annotations), else ()

    def __bool__(self) -> bool:
        return bool(self.tumor)

    @property
    def bbox_level0(self) -> tuple[float, float, float, float] | None:
        if not self.tumor:
            return None
        boxes = np.array([p.bbox_level0 for p in self.tumor])
        return (float(boxes[:, 0].min()), float(boxes[:, 1].min()), float(boxes[:, 2].max()),
                float(boxes[:, 3].max()))
