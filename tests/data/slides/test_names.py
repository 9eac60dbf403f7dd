"""Slide ids: suffixes, Unicode, unsafe names, DICOM series."""

from __future__ import annotations

import pytest

from lymph.data.errors import SlideError
from lymph.data.slides import (
    discover_slides,
    safe_id,
    slide_id,
)


@pytest.mark.parametrize(("name", "expected"), [
    ("x.ome.tif", "x"), ("x.OME.TIFF", "x"), ("tumor_001.TIF", "tumor_001"),
    ("Test_001", "Test_001"),
    ("CMU-1 small.svs", "CMU-1_small"), ("a.b.svs", "a.b"), ("a.b", "a.b"),
    ("腫瘍.tif", "腫瘍"), ("Lymphknoten_Größe.ndpi", "Lymphknoten_Größe"),
    ("sub/dir/tumor_001.tif", "tumor_001"), ("..hidden.tif", "hidden"), ("a\x00b\x1f.svs", "a_b"),
    ("a:b*c?.svs", "a_b_c"), ("__x.tif", "x"),
])
def test_slide_id_strips_multi_part_suffixes_and_keeps_unicode(name, expected):
    assert slide_id(name) == expected
    assert safe_id(expected) == expected  # ids are fixed points


def test_slide_id_nfc_normalizes_and_refuses_empty_or_overlong():
    assert slide_id("Gro\u0308sse.tif") == slide_id("Grösse.tif") == "Grösse"
    with pytest.raises(SlideError, match="no usable id"):
        slide_id("....tif")
    with pytest.raises(SlideError, match="over 200"):
        slide_id("x" * 300 + ".tif")


def test_dicom_series_id_is_the_same_from_the_folder_and_each_file(fixtures_dir, tmp_path):
    import shutil

    series = tmp_path / "case 7"
    series.mkdir()
    for f in ("boxes_0.dcm", "boxes_1.dcm"):
        shutil.copy(fixtures_dir / "slides" / "openslide-python" / f, series / f)
    assert slide_id(series) == slide_id(series / "boxes_0.dcm") == slide_id(
        series / "boxes_1.dcm") == "boxes"
    one = discover_slides(series)  # a DICOM folder given on its own is one slide
    assert [(s.id, len(s.files)) for s in one] == [("boxes", 2)]
