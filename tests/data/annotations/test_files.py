"""Annotation files: reading by suffix, finding a slide's file, checking outlines against the
slide."""

from __future__ import annotations

import numpy as np
import pytest

from lymph.data.annotations import (
    Annotations,
    Polygon,
    check_inside,
    find_annotations,
    read_annotations,
)
from lymph.data.errors import AnnotationError


def test_real_camelyon17_xml(ann_dir):
    ann = read_annotations(ann_dir / "camelyon17-asap-xml" / "patient_004_node_4.xml")
    assert len(ann.tumor) == 3 and not ann.holes
    assert all(p.group == "Tumor" for p in ann.tumor)
    first = ann.tumor[0].points_level0
    assert first.shape == (8, 2)
    np.testing.assert_allclose(first[0], [12711.2998, 88778.1016])


def test_read_annotations_rejects_unknown_and_missing(tmp_path):
    with pytest.raises(AnnotationError, match="no such annotation file"):
        read_annotations(tmp_path / "none.xml")
    odd = tmp_path / "a.txt"
    odd.write_text("x")
    with pytest.raises(AnnotationError, match="unknown annotation kind '.txt'"):
        read_annotations(odd)


def test_find_annotations_order_and_case(tmp_path):
    slide = tmp_path / "tumor_001.tif"
    slide.write_bytes(b"")
    assert find_annotations(slide) is None
    (tmp_path / "tumor_001_mask.tif").write_bytes(b"")
    assert find_annotations(slide).name == "tumor_001_mask.tif"
    (tmp_path / "Tumor_001.xml").write_text("")
    assert find_annotations(slide).name == "Tumor_001.xml"  # xml first, case-insensitive
    other = tmp_path / "ann"
    other.mkdir()
    (other / "tumor_001.geojson").write_text("")
    assert find_annotations(slide, annotations_dir=other) == other / "tumor_001.geojson"


# --- the labels CSV -------------------------------------------------------------------------


def test_check_inside_all_polygons_outside_the_slide_is_an_error(tmp_path):
    ann = Annotations(tumor=(Polygon([[5000, 4000], [5100, 4000], [5100, 4100]], name="L"),))
    with pytest.raises(AnnotationError, match=r"a.xml: every tumor polygon lies outside the slide "
                                              r"\(they span x 5000..5100, y 4000..4100; the slide "
                                              r"is 1000x800 px at level 0\)"):
        check_inside(ann, width=1000, height=800, path=tmp_path / "a.xml")


def test_check_inside_some_polygons_outside_are_reported_and_inside_ones_pass():
    inside = Polygon([[10, 10], [50, 10], [50, 50]], name="in")
    across = Polygon([[990, 10], [1100, 10], [1100, 50]], name="edge")
    out = Polygon([[-300, -300], [-200, -300], [-200, -200]], name="out")
    assert check_inside(Annotations(tumor=(inside, across)), width=1000, height=800) == []
    msgs = check_inside(Annotations(tumor=(inside, out)), width=1000, height=800, path="s.xml")
    assert msgs == ["s.xml: tumor polygon 'out' lies outside the slide (x -300..-200, "
                    "y -300..-200; the slide is 1000x800 px at level 0); it is ignored"]
