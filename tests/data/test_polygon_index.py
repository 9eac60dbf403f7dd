"""The spatial polygon index gives exactly what data/annotations/ gives for the whole
annotation (masks, centre tests, coverage, area), and scales with the polygons near a query."""

from __future__ import annotations

import time

import numpy as np
import pytest

from lymph.data.annotations import (
    Annotations,
    Polygon,
    contains,
    coverage_thumb,
    rasterize,
)
from lymph.data.polygon_index import PolygonIndex


def _annotations(rng: np.random.Generator, n: int, *, holes: int = 0,
                 offset: float = 0.0) -> Annotations:
    def poly(i: int) -> Polygon:
        k = int(rng.integers(3, 12))
        centre = rng.uniform(0, 4000, 2) + offset
        pts = centre + rng.uniform(-60, 60, (k, 2))  # random k-gons: many cross themselves
        return Polygon(np.round(pts, 1), name=f"p{i}")

    return Annotations(tumor=tuple(poly(i) for i in range(n)),
                       holes=tuple(poly(n + i) for i in range(holes)))


@pytest.mark.parametrize("downsample", [1.0, 2.0, 5.3])
def test_index_rasterize_equals_the_whole_annotation(downsample: float) -> None:
    rng = np.random.default_rng(0)
    ann = _annotations(rng, 150, holes=20)
    index = PolygonIndex(ann)
    for x, y in rng.uniform(-100, 3900, (20, 2)):
        a = rasterize(ann, x_level0=x, y_level0=y, width=96, height=80, downsample=downsample)
        b = index.rasterize(x_level0=x, y_level0=y, width=96, height=80, downsample=downsample)
        np.testing.assert_array_equal(a, b)
    whole = rasterize(ann, x_level0=0, y_level0=0, width=500, height=400, downsample=8.0)
    np.testing.assert_array_equal(whole, index.rasterize(x_level0=0, y_level0=0, width=500,
                                                         height=400, downsample=8.0))


def test_index_contains_coverage_and_area_equal_the_whole_annotation() -> None:
    rng = np.random.default_rng(1)
    ann = _annotations(rng, 150, holes=20)
    index = PolygonIndex(ann)
    pts = np.concatenate([rng.uniform(0, 4000, (3000, 2)),
                          np.concatenate([p.points_level0 for p in ann.tumor[:50]])])
    np.testing.assert_array_equal(contains(ann, pts), index.contains(pts))
    core = index.rasterize(x_level0=0, y_level0=0, width=500, height=400, downsample=8.0)
    np.testing.assert_array_equal(coverage_thumb(ann, shape=(400, 500), downsample=8.0),
                                  index.coverage_thumb(core, downsample=8.0))
    expected = max(0.0, sum(p.area_level0 for p in ann.tumor)
                   - sum(p.area_level0 for p in ann.holes))
    assert index.tumor_area() == pytest.approx(expected, rel=1e-12)


def test_a_patch_mask_costs_about_the_same_with_many_far_polygons() -> None:
    """Ratio of two timings in one run (not a timed test): 20,000 polygons elsewhere on the
    slide must not make a patch's mask cost 20x more than the 100 polygons near it."""
    rng = np.random.default_rng(2)
    few = _annotations(rng, 100)
    far = _annotations(rng, 20_000, offset=50_000.0)
    many = Annotations(tumor=few.tumor + far.tumor)

    def cost(ann: Annotations) -> float:
        index = PolygonIndex(ann)
        t0 = time.perf_counter()
        for x, y in np.random.default_rng(3).uniform(0, 3700, (50, 2)):
            index.rasterize(x_level0=x, y_level0=y, width=64, height=64, downsample=1.0)
        return time.perf_counter() - t0

    assert cost(many) < 20 * cost(few) + 0.5
