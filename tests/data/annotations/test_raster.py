"""Masks and point membership: exact rasterization of real CAMELYON16 outlines with holes,
agreement with `contains` at pixel centres, half-open edges, thumbnail coverage, bow-ties."""

from __future__ import annotations

import json

import numpy as np
import pytest
from matplotlib.path import Path as MplPath

from lymph.data.annotations import (
    Annotations,
    Polygon,
    contains,
    coverage_thumb,
    parse_asap_xml,
    rasterize,
    read_annotations,
)


def reference_mask(ann: Annotations, x0: float, y0: float, w: int, h: int, ds: float):
    yy, xx = np.mgrid[:h, :w]
    pts = np.c_[x0 + (xx.ravel() + 0.5) * ds, y0 + (yy.ravel() + 0.5) * ds]
    inside = np.zeros(len(pts), bool)
    for p in ann.tumor:
        inside |= MplPath(p.points_level0).contains_points(pts)
    for p in ann.holes:
        inside &= ~MplPath(p.points_level0).contains_points(pts)
    return inside.reshape(h, w)


def test_camelyon16_lesions_with_holes_rasterize_exactly(ann_dir, asap_xml):
    """NCRF's real CAMELYON16 geometry (2 lesions, 3 `_2` exclusions) as ASAP XML."""
    src = json.loads((ann_dir / "ncrf-camelyon16" / "Tumor_083.json").read_text())
    polys = [("_0", p["vertices"]) for p in src["positive"]]
    polys += [("_2", p["vertices"]) for p in src["negative"]]
    ann = parse_asap_xml(asap_xml(polys))
    assert len(ann.tumor) == 2 and len(ann.holes) == 3
    # Windows on each hole at two scales. The origin is offset by 0.1234 px: NCRF's integer
    # vertices put many 45-degree edges exactly through half-integer pixel centres, where inside
    # or outside is a convention (ours: half-open, like `contains`), not a fact to compare.
    for hole in ann.holes:
        x0, y0, x1, y1 = hole.bbox_level0
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        for ds, size in ((1.0, 300), (4.0, min(int(max(x1 - x0, y1 - y0) / 4) + 40, 300))):
            ox, oy = cx - size * ds / 2 + 0.1234, cy - size * ds / 2 + 0.1234
            got = rasterize(ann, x_level0=ox, y_level0=oy, width=size, height=size,
                            downsample=ds)
            ref = reference_mask(ann, ox, oy, size, size, ds)
            assert got.dtype == np.uint8 and set(np.unique(got)) <= {0, 1}
            assert (got.astype(bool) != ref).sum() == 0
            assert ref.any() and not ref.all()  # the window sees tumor and the hole


def test_rasterize_agrees_with_contains_at_pixel_centres(ann_dir):
    ann = read_annotations(ann_dir / "camelyon17-asap-xml" / "patient_004_node_4.xml")
    x0, y0, x1, y1 = ann.bbox_level0
    m = rasterize(ann, x_level0=x0, y_level0=y0, width=200, height=300, downsample=7.5)
    yy, xx = np.mgrid[:300, :200]
    pts = np.c_[x0 + (xx.ravel() + 0.5) * 7.5, y0 + (yy.ravel() + 0.5) * 7.5]
    np.testing.assert_array_equal(contains(ann, pts), m.ravel().astype(bool))
    assert m.any()


def test_square_edges_are_half_open():
    ann = Annotations(tumor=(Polygon(np.array([[2.0, 2.0], [6.0, 2.0], [6.0, 6.0],
                                               [2.0, 6.0]])),))
    m = rasterize(ann, x_level0=0, y_level0=0, width=8, height=8, downsample=1.0)
    expected = np.zeros((8, 8), np.uint8)
    expected[2:6, 2:6] = 1
    np.testing.assert_array_equal(m, expected)
    # a region wholly outside the polygon's bounding box
    assert not rasterize(ann, x_level0=100, y_level0=100, width=4, height=4, downsample=1).any()


def test_coverage_finds_lesions_smaller_than_a_thumbnail_pixel():
    tiny = Polygon(np.array([[101.0, 101.0], [104.0, 101.0], [104.0, 104.0]]))
    ann = Annotations(tumor=(tiny,))
    assert not rasterize(ann, x_level0=0, y_level0=0, width=16, height=16, downsample=32).any()
    cov = coverage_thumb(ann, shape=(16, 16), downsample=32)
    assert cov[3, 3]


BOWTIE = [[200, 150], [800, 600], [800, 150], [200, 600]]


def test_bowtie_area_is_the_even_odd_area_not_the_shoelace_zero():
    bow = Polygon(BOWTIE)
    assert bow.area_level0 == pytest.approx(2 * 300 * 225 / 2 * 2, rel=0.01)  # two triangles
    m = rasterize(Annotations(tumor=(bow,)), x_level0=0, y_level0=0, width=1000, height=800,
                  downsample=1)
    assert bow.area_level0 == pytest.approx(m.sum(), rel=0.01)
    square = Polygon([[0, 0], [10, 0], [10, 10], [0, 10]])
    assert square.area_level0 == 100.0  # simple polygons keep the exact shoelace value


def test_bowtie_centre_test_and_rasterizer_agree_everywhere():
    ann = Annotations(tumor=(Polygon(BOWTIE),))
    for ds, (x0, y0) in ((1.0, (190, 140)), (2.0, (0, 0)), (3.7, (101.3, 55.1))):
        w = h = 160
        m = rasterize(ann, x_level0=x0, y_level0=y0, width=w, height=h, downsample=ds)
        jj, ii = np.meshgrid(np.arange(w), np.arange(h))
        pts = np.stack([x0 + (jj.ravel() + 0.5) * ds, y0 + (ii.ravel() + 0.5) * ds], axis=1)
        np.testing.assert_array_equal(contains(ann, pts).reshape(h, w), m.astype(bool))
        assert m.any()
