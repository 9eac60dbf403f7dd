"""Slide discovery: subfolders, DICOM series, id collisions, dangling links, and the ids the
stages agree on."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from lymph.data.errors import SlideError
from lymph.data.slides import discover_slides, open_slide
from lymph.data.slides.names import is_slide_path


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
