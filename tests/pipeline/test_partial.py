from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import zarr

from lymph.data.annotations import contains, rasterize, read_annotations
from lymph.data.errors import NoTissueError
from lymph.data.partial import IGNORE, in_reviewed
from lymph.data.store import PatchStore, create_store
from lymph.pipeline.extract import ExtractConfig, extract_slide, run

GOLDEN = "f9fce315033b909d16622ff3c0777c7f55ff1b7979a9d7cbc1c987a4e2ae88c2"
"""`store_digest` of the synth_store extract, computed with lymph before partial annotations
existed (commit 1a86eaa; recomputed with the area rounding below on a store that 1a86eaa
extracted, equal to today's): a slide without reviewed regions must extract exactly as before."""

VOLATILE = {"source", "annotations", "seconds", "warnings", "slides_dir", "annotations_dir",
            "labels_csv", "lymph_version",
            # identity records added after the golden (issue 21): the source file's mtime and
            # the slide's content digest over them differ from run to run
            "source_identity", "digest"}
BOX = (400, 900, 2100, 2700)  # covers lesion `Annotation 0` of synth_world's tumor_001


def store_digest(path: Path) -> str:
    """SHA-256 over the store's settings, every slide's attrs and decoded arrays, paths and
    timings left out (they differ between runs)."""
    h = hashlib.sha256()
    root = zarr.open_group(str(path), mode="r")
    meta = {k: v for k, v in root.attrs["lymph"].items() if k not in VOLATILE}
    h.update(json.dumps(meta, sort_keys=True).encode())
    for sid in sorted(root["slides"].group_keys()):
        g = root["slides"][sid]
        attrs = {k: v for k, v in g.attrs.asdict().items() if k not in VOLATILE}
        # the polygon index (issue 21) sums the same shoelace terms in another order: the area
        # may differ in its last bits (7.6e5 px^2 +- 1e-8), so it is pinned to 1e-3 px^2
        attrs["tumor_area_level0"] = round(attrs["tumor_area_level0"], 3)
        h.update(sid.encode() + json.dumps(attrs, sort_keys=True).encode())
        for name in sorted(g.array_keys()):
            a = np.ascontiguousarray(g[name][:])
            h.update(name.encode() + str(a.dtype).encode() + str(a.shape).encode() + a.tobytes())
    return h.hexdigest()


def test_store_without_reviewed_regions_is_unchanged(synth_store):
    assert store_digest(synth_store) == GOLDEN


def _with_region(xml: str, box: tuple[float, float, float, float], group: str = "Reviewed"
                 ) -> str:
    x0, y0, x1, y1 = box
    pts = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    coords = "".join(f'<Coordinate Order="{k}" X="{x}" Y="{y}" />' for k, (x, y) in
                     enumerate(pts))
    ann = (f'<Annotation Name="box" Type="Polygon" PartOfGroup="{group}" Color="#00FF00">'
           f"<Coordinates>{coords}</Coordinates></Annotation>")
    return re.sub(r"</Annotations>", ann + "</Annotations>", xml, count=1)


def _world(synth_world: Path, tmp_path: Path, xml: str) -> Path:
    src = tmp_path / "slides"
    src.mkdir()
    for name in ("tumor_001.tif", "normal_001.tif", "reference.csv"):
        os.symlink(synth_world / name, src / name)
    (src / "tumor_001.xml").write_text(xml)
    return src


def test_partial_slide_samples_only_inside_reviewed_regions(synth_world, tmp_path):
    xml = _with_region((synth_world / "tumor_001.xml").read_text(), BOX)
    src = _world(synth_world, tmp_path, xml)
    out = tmp_path / "p.zarr"
    s = run(ExtractConfig(slides=src, out=out, labels=src / "reference.csv",
                              patches_per_slide=48, patch_size=128, progress=False))
    assert not s.failed
    store = PatchStore.open(out)
    info = store.slide("tumor_001")
    a = info.attrs
    assert a["reviewed"] is True and a["reviewed_regions"] == 1
    assert a["mask_ignore_value"] == IGNORE
    assert a["reviewed_area_level0"] == pytest.approx(1700 * 1800, rel=2e-3)
    ann = read_annotations(src / "tumor_001.xml")
    lesion0 = ann.tumor[0].area_level0
    assert a["reviewed_tumor_area_level0"] == pytest.approx(lesion0, rel=0.01)
    assert "reviewed" not in store.slide("normal_001").attrs  # exhaustive, as before
    batch = store.read("tumor_001", 0, info.n_patches)
    centres = batch.coords + 64.5
    assert in_reviewed(ann, centres).all()  # unreviewed tissue is never sampled
    np.testing.assert_array_equal(contains(ann, centres), batch.labels.astype(bool))
    assert 0 < batch.labels.sum() < info.n_patches
    for k in range(info.n_patches):
        x, y = (int(v) for v in batch.coords[k])
        full = rasterize(ann, x_level0=x, y_level0=y, width=128, height=128, downsample=1.0)
        jj, ii = np.meshgrid(np.arange(128) + x + 0.5, np.arange(128) + y + 0.5)
        seen = in_reviewed(ann, np.c_[jj.ravel(), ii.ravel()]).reshape(128, 128)
        np.testing.assert_array_equal(batch.masks[k], np.where(seen, full, IGNORE))
    assert (batch.masks == IGNORE).any()


def test_suggested_box_marked_reviewed_becomes_a_region(synth_world, tmp_path):
    xml = _with_region((synth_world / "tumor_001.xml").read_text(), BOX, group="Suggested")
    with pytest.warns(UserWarning, match="Suggested"):
        assert read_annotations_text(tmp_path, xml).reviewed == ()
    ann = read_annotations_text(tmp_path, xml.replace('PartOfGroup="Suggested"',
                                                      'PartOfGroup="Reviewed"'))
    assert len(ann.reviewed) == 1 and ann.reviewed[0].bbox_level0 == BOX


def read_annotations_text(tmp_path: Path, xml: str):
    p = tmp_path / "a.xml"
    p.write_text(xml)
    return read_annotations(p)


def test_normal_slide_with_reviewed_region_stays_exhaustive_normal(synth_world, tmp_path):
    src = _world(synth_world, tmp_path, (synth_world / "tumor_001.xml").read_text())
    empty = '<?xml version="1.0"?><ASAP_Annotations><Annotations></Annotations>' \
            "<AnnotationGroups /></ASAP_Annotations>"
    (src / "normal_001.xml").write_text(_with_region(empty, (0, 0, 500, 500)))
    out = tmp_path / "n.zarr"
    s = run(ExtractConfig(slides=src, out=out, labels=src / "reference.csv",
                              patches_per_slide=8, patch_size=128, progress=False))
    assert not s.failed
    info = PatchStore.open(out).slide("normal_001")
    assert info.status == "normal" and "reviewed" not in info.attrs


def test_reviewed_region_without_tissue_fails_that_slide_only(synth_world, tmp_path):
    xml = _with_region((synth_world / "tumor_001.xml").read_text(), (5000, 5000, 6000, 6000))
    src = _world(synth_world, tmp_path, xml)
    out = tmp_path / "e.zarr"
    s = run(ExtractConfig(slides=src, out=out, labels=src / "reference.csv",
                              patches_per_slide=8, patch_size=128, progress=False))
    assert [r.slide_id for r in s.done] == ["normal_001"]
    (source, error), = s.failed
    assert "tumor_001.xml" in error and "reviewed region(s) hold no tissue" in error
    cfg = ExtractConfig(slides=src, out=tmp_path / "e2.zarr", patches_per_slide=8,
                        patch_size=128, progress=False)
    create_store(cfg.out, cfg.settings())
    with pytest.raises(NoTissueError, match="hold no tissue or tumor"):
        extract_slide(src / "tumor_001.tif", slide_id="tumor_001", config=cfg)


def test_whole_slide_region_extracts_as_the_exhaustive_annotation(synth_world, synth_store,
                                                                  tmp_path):
    """What `lymph suggest` exports for an exhaustive annotation (a whole-slide Reviewed region
    added) extracts the same patches, labels and masks as the annotation alone."""
    xml = _with_region((synth_world / "tumor_001.xml").read_text(), (0, 0, 4096, 3072))
    src = _world(synth_world, tmp_path, xml)
    out = tmp_path / "w.zarr"
    run(ExtractConfig(slides=src, out=out, labels=src / "reference.csv", patch_size=300,
                          patches_per_slide=32, seed=0, progress=False))
    got = PatchStore.open(out).read("tumor_001", 0, 32)
    ref = PatchStore.open(synth_store).read("tumor_001", 0, 32)
    for name in ("coords", "labels", "masks", "images"):
        np.testing.assert_array_equal(getattr(got, name), getattr(ref, name))
