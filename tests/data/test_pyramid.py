from __future__ import annotations

from pathlib import Path

import numpy as np
import openslide
import pytest
import tifffile

from lymph.data.errors import ConfigError
from lymph.data.pyramid import (
    downsample_block,
    pyramid_dimensions,
    write_pyramidal_tiff,
)


def _image(width: int, height: int) -> np.ndarray:
    """Smooth RGB test pattern (JPEG-friendly) with a distinct value in each region."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    r = 128 + 100 * np.sin(xx / 97.0)
    g = 128 + 100 * np.cos(yy / 71.0)
    b = (xx + yy) / (width + height) * 255
    return np.stack([r, g, b], axis=-1).round().astype(np.uint8)


def _rows(img: np.ndarray, tile: int = 256):
    calls: list[int] = []

    def rows(i: int) -> np.ndarray:
        calls.append(i)
        return img[i * tile : (i + 1) * tile]

    return rows, calls


def test_pyramid_dimensions_halve_until_long_side_under_min() -> None:
    assert pyramid_dimensions(4096, 3072) == [(4096, 3072), (2048, 1536), (1024, 768)]
    assert pyramid_dimensions(5000, 100, factor=4) == [(5000, 100), (1250, 25)]
    assert pyramid_dimensions(1000, 700) == [(1000, 700)]
    assert pyramid_dimensions(2049, 10)[-1] == (1025, 5)


@pytest.mark.parametrize(("w", "h", "factor"), [(0, 10, 2), (10, -1, 2), (10, 10, 3)])
def test_pyramid_dimensions_rejects_bad_input(w: int, h: int, factor: int) -> None:
    with pytest.raises(ConfigError, match="size must be positive|factor must be 2 or 4"):
        pyramid_dimensions(w, h, factor=factor)


def test_downsample_block_mean_and_majority() -> None:
    block = np.array([[0, 255, 255, 255], [0, 0, 255, 255]], np.uint8)
    assert downsample_block(block, 2).tolist() == [[64, 255]]
    assert downsample_block(block, 2, mode="majority").tolist() == [[0, 255]]
    with pytest.raises(ConfigError, match="not a multiple of the factor"):
        downsample_block(block[:, :3], 2)


def test_generic_tiff_opens_in_openslide_with_levels_mpp_and_pixels(tmp_path: Path) -> None:
    w, h = 2600, 2100
    img = _image(w, h)
    rows, calls = _rows(img)
    info = write_pyramidal_tiff(tmp_path / "a.tif", rows, width=w, height=h, mpp=0.25)
    assert calls == list(range(9)), "each tile row is asked for once, in order"
    assert info.level_dimensions == ((2600, 2100), (1300, 1050))
    assert not info.bigtiff
    s = openslide.OpenSlide(info.path)
    assert s.properties["openslide.vendor"] == "generic-tiff"
    assert s.level_dimensions == ((2600, 2100), (1300, 1050))
    assert s.level_downsamples == (1.0, 2.0)
    assert float(s.properties["openslide.mpp-x"]) == pytest.approx(0.25)
    region = np.asarray(s.read_region((300, 1900), 0, (400, 200)))[..., :3].astype(int)
    assert np.abs(region - img[1900:2100, 300:700]).mean() < 3  # JPEG q90 on a smooth image
    low = np.asarray(s.read_region((0, 0), 1, (1300, 1050)))[..., :3].astype(int)
    expected = downsample_block(img, 2).astype(int)
    assert np.abs(low - expected).mean() < 3
    assert not list(tmp_path.glob("*.part")), "no partial file left behind"
    assert not list(tmp_path.glob(".pyramid-spool-*")), "spool removed"


def test_aperio_layout_is_aperio_with_mpp_power_and_associated_images(tmp_path: Path) -> None:
    w, h = 2300, 1100
    rows, _ = _rows(_image(w, h))
    info = write_pyramidal_tiff(
        tmp_path / "a.svs", rows, width=w, height=h, mpp=0.243, layout="aperio", factor=4,
        aperio_fields={"AppMag": 40},
    )
    s = openslide.OpenSlide(info.path)
    assert s.properties["openslide.vendor"] == "aperio"
    assert float(s.properties["openslide.mpp-x"]) == pytest.approx(0.243)
    assert s.properties["openslide.objective-power"] == "40"
    assert s.level_dimensions == ((2300, 1100), (575, 275))
    assert set(s.associated_images) == {"thumbnail", "label", "macro"}
    with tifffile.TiffFile(info.path) as tf:
        assert tf.pages[0].description.startswith("Aperio Image Library")
        assert "|MPP = 0.243" in tf.pages[0].description


def test_single_channel_deflate_is_lossless_and_majority_keeps_binary(tmp_path: Path) -> None:
    w, h = 2200, 600
    yy, xx = np.mgrid[0:h, 0:w]
    mask = (((xx // 37) + (yy // 29)) % 2 * 255).astype(np.uint8)
    rows, _ = _rows(mask)
    info = write_pyramidal_tiff(
        tmp_path / "m.tif", rows, width=w, height=h, channels=1, compression="deflate",
        mpp=0.243, downsample="majority",
    )
    s = openslide.OpenSlide(info.path)
    full = np.asarray(s.read_region((0, 0), 0, (w, h)))[..., 0]
    assert np.array_equal(full, mask)
    low = np.asarray(s.read_region((0, 0), 1, s.level_dimensions[1]))[..., 0]
    assert set(np.unique(low)) <= {0, 255}


def test_bigtiff_when_asked(tmp_path: Path) -> None:
    rows, _ = _rows(_image(300, 300))
    info = write_pyramidal_tiff(tmp_path / "b.tif", rows, width=300, height=300, bigtiff=True)
    with tifffile.TiffFile(info.path) as tf:
        assert tf.is_bigtiff
    assert openslide.OpenSlide(info.path).dimensions == (300, 300)


def test_same_input_same_bytes(tmp_path: Path) -> None:
    img = _image(700, 500)
    paths = []
    for name, workers in (("a.tif", 1), ("b.tif", 2)):
        rows, _ = _rows(img)
        paths.append(
            write_pyramidal_tiff(tmp_path / name, rows, width=700, height=500,
                                 workers=workers).path
        )
    assert paths[0].read_bytes() == paths[1].read_bytes()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"channels": 2}, "channels must be 1 or 3"),
        ({"compression": "lzw"}, "compression must be one of"),
        ({"layout": "philips"}, "layout must be one of"),
        ({"layout": "aperio", "channels": 1}, "aperio layout needs RGB"),
        ({"downsample": "max"}, "downsample must be one of"),
        ({"tile": 100}, "tile must be a positive multiple of 16"),
        ({"quality": 0}, "quality must be in 1..100"),
        ({"mpp": -1.0}, "mpp must be positive"),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict, match: str) -> None:
    rows, _ = _rows(_image(300, 300))
    with pytest.raises(ConfigError, match=match):
        write_pyramidal_tiff(tmp_path / "x.tif", rows, width=300, height=300, **kwargs)


def test_wrong_rows_are_refused_and_leave_no_file(tmp_path: Path) -> None:
    img = _image(300, 300)
    with pytest.raises(ConfigError, match=r"rows\(0\) returned \(256, 299\)"):
        write_pyramidal_tiff(
            tmp_path / "x.tif", lambda i: img[i * 256 : (i + 1) * 256, :299], width=300,
            height=300,
        )
    with pytest.raises(ConfigError, match="rows must be uint8"):
        write_pyramidal_tiff(
            tmp_path / "x.tif", lambda i: img[i * 256 : (i + 1) * 256].astype(float),
            width=300, height=300,
        )
    assert list(tmp_path.iterdir()) == []
