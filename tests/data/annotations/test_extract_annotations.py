"""Extraction from annotation inputs: bow-tie outlines, outlines off the slide, strip mask TIFFs;
each patch's centre label agrees with its mask."""

from __future__ import annotations

import warnings

import numpy as np

BOWTIE = [[200, 150], [800, 600], [800, 150], [200, 600]]


def _tissue_slide(path, size=(1024, 768), seed=0):
    import tifffile

    rng = np.random.default_rng(seed)
    w, h = size
    rgb = np.full((h, w, 3), 242, np.uint8)
    rgb[32:h - 32, 32:w - 32] = rng.integers(40, 200, (h - 64, w - 64, 3), dtype=np.uint8)
    tifffile.imwrite(path, rgb, tile=(256, 256), photometric="rgb")
    return path


def _write_xml(path, polys, asap_xml):
    path.write_text(asap_xml([("_0", p) for p in polys]))


def _extract_one(tmp_path, src, **kw):
    from lymph.pipeline.extract import ExtractConfig, run

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run(ExtractConfig(slides=src, out=tmp_path / "s.zarr", patch_size=64,
                                     patches_per_slide=kw.get("n", 40), seed=0, progress=False))


def _centres_agree_with_masks(store, sid):
    import zarr

    g = zarr.open_group(str(store / "slides" / sid), mode="r")
    labels, masks = np.asarray(g["labels"][:]), np.asarray(g["masks"][:])
    np.testing.assert_array_equal(labels, masks[:, 32, 32])  # the centre pixel (P // 2)
    return labels, masks


def test_bowtie_gives_tumor_patches_whose_centres_are_tumor_in_their_masks(tmp_path, asap_xml):
    src = tmp_path / "src"
    src.mkdir()
    _tissue_slide(src / "tumor_bow.tif")
    _write_xml(src / "tumor_bow.xml", [BOWTIE], asap_xml)
    s = _extract_one(tmp_path, src)
    assert not s.failed, s.failed
    labels, masks = _centres_agree_with_masks(tmp_path / "s.zarr", "tumor_bow")
    assert s.done[0].n_tumor == int(labels.sum()) > 5  # was 0 (shoelace area 0)


def test_extract_of_annotations_wholly_outside_the_slide_fails_that_slide(tmp_path, asap_xml):
    src = tmp_path / "src"
    src.mkdir()
    _tissue_slide(src / "tumor_far.tif")
    _write_xml(src / "tumor_far.xml", [[[5000, 5000], [5200, 5000], [5200, 5200]]],
               asap_xml)
    _tissue_slide(src / "normal_ok.tif", seed=1)
    s = _extract_one(tmp_path, src, n=8)
    assert [r.slide_id for r in s.done] == ["normal_ok"]  # the batch goes on
    (source, error), = s.failed
    assert source.endswith("tumor_far.tif")
    assert "every tumor polygon lies outside the slide" in error and "1024x768" in error


def test_extract_with_a_strip_mask_tiff(tmp_path, mask_image):
    import tifffile

    src = tmp_path / "src"
    src.mkdir()
    _tissue_slide(src / "tumor_m.tif")
    tifffile.imwrite(src / "tumor_m_mask.tif", mask_image(), compression="zlib", rowsperstrip=16)
    s = _extract_one(tmp_path, src)
    assert not s.failed, s.failed
    labels, masks = _centres_agree_with_masks(tmp_path / "s.zarr", "tumor_m")
    assert s.done[0].status == "tumor" and labels.sum() > 5
