"""Mask TIFFs: strip TIFFs read like tiled ones, bounded strips, bilevel, RGB and truncated."""

from __future__ import annotations

import numpy as np
import pytest

from lymph.data.annotations import open_mask
from lymph.data.annotations.masks import MAX_STRIP_BYTES, StripTiffMask
from lymph.data.errors import AnnotationError


@pytest.mark.parametrize("kwargs", [
    {},  # uncompressed, one strip of the whole image (tifffile's default)
    {"compression": "zlib", "rowsperstrip": 37},
    {"compression": "lzw", "rowsperstrip": 64},
])
def test_strip_mask_tiff_reads_like_the_tiled_one(tmp_path, kwargs, mask_image):
    import tifffile

    m = mask_image()
    tifffile.imwrite(tmp_path / "tiled.tif", m, tile=(256, 256))
    tifffile.imwrite(tmp_path / "strip.tif", m, **kwargs)
    tiled, strip = open_mask(tmp_path / "tiled.tif"), open_mask(tmp_path / "strip.tif")
    assert isinstance(strip, StripTiffMask) and strip.dimensions == tiled.dimensions
    rng = np.random.default_rng(0)
    for _ in range(30):
        x, y = int(rng.integers(0, 900)), int(rng.integers(0, 700))
        np.testing.assert_array_equal(strip.read_region((x, y), 0, (100, 60)),
                                      tiled.read_region((x, y), 0, (100, 60)))
    np.testing.assert_array_equal(strip.thumbnail(256)[0], tiled.thumbnail(256)[0])
    out = strip.read_region((1000, 760), 0, (50, 20))  # outside the image: not tumor
    assert out[:8, :24].max() == 255 and out[8:].max() == 0 and out[:, 24:].max() == 0
    strip.close()


def test_strip_mask_with_a_strip_too_large_gives_the_convert_command(tmp_path, monkeypatch,
                                                                      mask_image):
    import tifffile

    from lymph.data.annotations import masks as masks_mod

    tifffile.imwrite(tmp_path / "big_mask.tif", mask_image(), compression="zlib")  # one strip
    monkeypatch.setattr(masks_mod, "MAX_STRIP_BYTES", 1 << 16)
    assert MAX_STRIP_BYTES > 1 << 16
    with pytest.raises(AnnotationError, match=r"big_mask.tif: one compressed strip of 256 rows "
                                              r"is over 0.0625 MiB decoded; rewrite it tiled with "
                                              r"`vips tiffsave '.*big_mask.tif' "
                                              r"'.*big_mask.tiled.tif' --tile"):
        open_mask(tmp_path / "big_mask.tif")


def test_eval_reads_a_strip_mask_like_the_tiled_one(tmp_path, mask_image):
    import tifffile

    from lymph.model.camelyon import truth_mask

    m = mask_image()
    tifffile.imwrite(tmp_path / "t_mask.tif", m, tile=(256, 256))
    tifffile.imwrite(tmp_path / "s_mask.tif", m, compression="zlib", rowsperstrip=50)
    kw = {"dimensions": (1024, 768), "downsample": 16.0}
    tiled = truth_mask(tmp_path / "t.tif", tmp_path / "t_mask.tif", **kw)
    strip = truth_mask(tmp_path / "s.tif", tmp_path / "s_mask.tif", **kw)
    assert tiled.shape == (48, 64) and tiled.sum() > 100
    np.testing.assert_array_equal(strip, tiled)


def test_strip_mask_bilevel_rgb_and_truncated(tmp_path, mask_image):
    import tifffile

    m = mask_image()
    tifffile.imwrite(tmp_path / "bool_mask.tif", m > 0, rowsperstrip=32)  # 1 bit per pixel
    rgb = np.zeros((*m.shape, 3), np.uint8)
    rgb[..., 0] = m
    tifffile.imwrite(tmp_path / "rgb_mask.tif", rgb, photometric="rgb")
    for name in ("bool_mask.tif", "rgb_mask.tif"):
        with open_mask(tmp_path / name) as r:
            got = r.read_region((0, 0), 0, (1024, 768))[..., 0] > 0
        np.testing.assert_array_equal(got, m > 0)
    tifffile.imwrite(tmp_path / "t_mask.tif", m)
    data = (tmp_path / "t_mask.tif").read_bytes()
    (tmp_path / "t_mask.tif").write_bytes(data[: len(data) // 2])
    match = r"t_mask.tif: the file ends inside row 38[0-9] of 768 \(truncated"
    with open_mask(tmp_path / "t_mask.tif") as r, pytest.raises(AnnotationError, match=match):
        r.read_region((0, 0), 0, (1024, 768))
