from __future__ import annotations

import numpy as np
import pytest

from lymph.pipeline.sampling import (
    PatchGeometry,
    plan_classes,
    sample_top_left,
    slide_rng,
    tumor_capacity,
)


def test_slide_rng_depends_on_seed_and_slide_only():
    a = slide_rng(0, "tumor_001").random(4)
    np.testing.assert_array_equal(a, slide_rng(0, "tumor_001").random(4))
    assert not np.array_equal(a, slide_rng(1, "tumor_001").random(4))
    assert not np.array_equal(a, slide_rng(0, "tumor_002").random(4))


def test_plan_is_balanced_and_respects_capacity():
    classes = plan_classes(np.random.default_rng(0), 10_000, tumor_capacity=10_000)
    assert abs(classes.mean() - 0.5) < 0.02
    capped = plan_classes(np.random.default_rng(0), 100, tumor_capacity=7)
    assert capped.sum() == 7
    uncapped = plan_classes(np.random.default_rng(0), 100, tumor_capacity=100)
    # the first 7 tumor draws are kept in place
    first7 = np.flatnonzero(uncapped)[:7]
    np.testing.assert_array_equal(np.flatnonzero(capped), first7)
    assert plan_classes(np.random.default_rng(0), 10, tumor_capacity=100,
                        normal_available=False).all()
    with pytest.raises(ValueError, match=">= 0"):
        plan_classes(np.random.default_rng(0), -1, tumor_capacity=0)


def test_capacity_scales_with_area():
    g = PatchGeometry(size=100, downsample=1.0, width=1000, height=1000)
    assert tumor_capacity(0, g) == 0
    assert tumor_capacity(1.0, g) == 1
    assert tumor_capacity(100 * 100, g) == 16


def test_geometry_centre_is_the_centre_pixel():
    g = PatchGeometry(size=300, downsample=2.0, width=10_000, height=8_000)
    tl = g.top_left(np.array([[1000.0, 2000.0]]))
    c = g.centres(tl)
    np.testing.assert_allclose(c - tl, [[301.0, 301.0]])  # pixel 150's centre at 2 px/pixel
    assert np.abs(c - [1000, 2000]).max() <= 0.5
    inside = g.inside(np.array([[0, 0], [-1, 0], [10_000 - 600, 0], [10_000 - 599, 0]]))
    assert inside.tolist() == [True, False, True, False]


def test_sampled_patches_are_accepted_and_inside():
    rng = np.random.default_rng(3)
    g = PatchGeometry(size=50, downsample=1.0, width=1000, height=800)
    cand = np.zeros((80, 100), bool)
    cand[10:40, 20:60] = True

    def accept(c):
        return (c[:, 0] > 300) & (c[:, 1] < 300)

    tl = sample_top_left(rng, cand, 200, thumb_downsample=10.0, geometry=g, accept=accept)
    assert tl.shape == (200, 2) and tl.dtype == np.int64
    centres = g.centres(tl)
    assert accept(centres).all() and g.inside(tl).all()
    assert (centres[:, 0] >= 200).all() and (centres[:, 0] <= 600).all()
    assert len(np.unique(tl, axis=0)) > 190  # continuous jitter, not a grid


def test_sampling_gives_up_and_returns_fewer():
    g = PatchGeometry(size=10, downsample=1.0, width=100, height=100)
    cand = np.ones((10, 10), bool)
    tl = sample_top_left(np.random.default_rng(0), cand, 5, thumb_downsample=10.0, geometry=g,
                         accept=lambda c: np.zeros(len(c), bool), max_tries=3)
    assert tl.shape == (0, 2)
    tl = sample_top_left(np.random.default_rng(0), np.zeros((10, 10), bool), 5,
                         thumb_downsample=10.0, geometry=g, accept=lambda c: c[:, 0] > 0)
    assert tl.shape == (0, 2)
