from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import openslide
import pytest
import zarr
from click.testing import CliRunner

from lymph.cli import main
from lymph.data.annotations import Annotations, Polygon, contains, rasterize, read_annotations
from lymph.data.errors import ConfigError, StoreError
from lymph.data.slides import ArraySlide
from lymph.data.store import PatchStore, create_store, describe_store
from lymph.data.tissue import saturation
from lymph.pipeline.extract import (
    ExtractConfig,
    PatchPlan,
    extract_slide,
    plan_patches,
    read_labels_csv,
    run,
)
from lymph.pipeline.sampling import PatchGeometry, TumorMaps


def _arrays(store: Path, slide_id: str) -> dict[str, np.ndarray]:
    g = zarr.open_group(str(store / "slides" / slide_id), mode="r")
    return {k: g[k][:] for k in g.array_keys()}


def test_synth_store_patches_masks_and_balance(synth_world, synth_store):
    store = PatchStore.open(synth_store)
    assert [s.slide_id for s in store.slides] == ["normal_001", "tumor_001"]
    tumor, normal = store.slide("tumor_001"), store.slide("normal_001")
    assert (tumor.status, normal.status) == ("tumor", "normal")
    assert tumor.n_patches == normal.n_patches == 32
    assert 6 <= tumor.n_tumor <= 26 and normal.n_tumor == 0  # Binomial(32, 1/2)
    assert store.settings["patch_size"] == 300 and store.settings["seed"] == 0
    ann = read_annotations(synth_world / "tumor_001.xml")
    osr = openslide.OpenSlide(str(synth_world / "tumor_001.tif"))
    batch = store.read("tumor_001", 0, 32)
    for k in range(32):
        x, y = (int(v) for v in batch.coords[k])
        ref = np.asarray(osr.read_region((x, y), 0, (300, 300)))[..., :3]
        np.testing.assert_array_equal(batch.images[k], ref)  # patches equal read_region
        np.testing.assert_array_equal(batch.masks[k], rasterize(
            ann, x_level0=x, y_level0=y, width=300, height=300, downsample=1.0))
        centre = contains(ann, np.array([[x + 150.5, y + 150.5]]))[0]
        assert batch.masks[k][150, 150] == centre == bool(batch.labels[k])
    # masks agree with the polygons at random pixels (an independent point test)
    rng = np.random.default_rng(0)
    ks, ii, jj = rng.integers(0, 32, 500), rng.integers(0, 300, 500), rng.integers(0, 300, 500)
    pts = batch.coords[ks] + np.c_[jj, ii] + 0.5
    np.testing.assert_array_equal(batch.masks[ks, ii, jj].astype(bool), contains(ann, pts))
    nb = store.read("normal_001", 0, 32)
    assert not nb.masks.any() and not nb.labels.any()
    # patches are tissue, not glass
    sat, _ = saturation(nb.images.reshape(-1, 300, 3))
    assert np.median(sat) > 20


def test_rerun_skips_and_other_settings_are_refused(synth_world, synth_store, tmp_path):
    out = tmp_path / "store.zarr"
    shutil.copytree(synth_store, out)
    before = _arrays(out, "tumor_001")
    cfg = ExtractConfig(slides=synth_world, out=out, labels=synth_world / "reference.csv",
                        patches_per_slide=32, progress=False)
    again = run(cfg)
    assert not again.done and len(again.skipped) == 2
    # a partial group (killed run) is redone, with identical content
    g = zarr.open_group(str(out / "slides" / "tumor_001"), mode="r+")
    g.attrs["complete"] = False
    shutil.rmtree(out / "slides" / "tumor_001" / "masks")
    redo = run(cfg)
    assert [r.slide_id for r in redo.done] == ["tumor_001"]
    after = _arrays(out, "tumor_001")
    for name in before:
        np.testing.assert_array_equal(after[name], before[name])
    with pytest.raises(StoreError, match="patches_per_slide: store has 32, this run asks 33"):
        run(ExtractConfig(slides=synth_world, out=out, labels=synth_world / "reference.csv",
                              patches_per_slide=33, progress=False))


def test_mask_tiff_annotations_and_statuses(synth_world, tmp_path):
    """S_mask.tif instead of XML; no labels CSV: `normal_*` is normal by name; a copy under an
    unknown name is unlabeled."""
    src = tmp_path / "slides"
    src.mkdir()
    shutil.copy(synth_world / "tumor_001.tif", src / "tumor_001.tif")
    shutil.copy(synth_world / "tumor_001_mask.tif", src / "tumor_001_mask.tif")
    os.symlink(synth_world / "normal_001.tif", src / "normal_001.tif")
    os.symlink(synth_world / "normal_001.tif", src / "case_9.tif")
    out = tmp_path / "m.zarr"
    s = run(ExtractConfig(slides=src, out=out, patches_per_slide=12, patch_size=128,
                              progress=False))
    assert not s.failed
    status = {r.slide_id: r.status for r in s.done}
    assert status == {"tumor_001": "tumor", "normal_001": "normal", "case_9": "unlabeled"}
    a = _arrays(out, "tumor_001")
    assert set(a) == {"images", "coords", "labels", "masks"}
    mask = openslide.OpenSlide(str(src / "tumor_001_mask.tif"))
    for k in range(12):
        x, y = (int(v) for v in a["coords"][k])
        ref = np.asarray(mask.read_region((x, y), 0, (128, 128)))[..., 0] > 0
        np.testing.assert_array_equal(a["masks"][k], ref)
        assert a["masks"][k][64, 64] == a["labels"][k]
    assert a["labels"].any()
    assert set(_arrays(out, "case_9")) == {"images", "coords"}  # unlabeled: no labels, masks


def test_every_fixture_slide(fixtures_dir, tmp_path):
    """The real H&E gives tissue patches; each broken file is reported with its cause; the tiny
    16 px slides are reported as smaller than a patch; the DICOM pair is one slide."""
    out = tmp_path / "fx.zarr"
    result = CliRunner().invoke(main, ["extract", "--slides", str(fixtures_dir / "slides"),
                                       "--out", str(out), "--patches-per-slide", "8", "--quiet"])
    assert result.exit_code == 1, result.output
    text = result.output
    assert "cmu-1-small-region" in text and "1 done" in text
    for name, cause in (("broken.svs", "Unsupported or missing image file"),
                        ("boxes.png", "Unsupported or missing image file"),
                        ("unopenable.tiff", "Unsupported TIFF compression: 52479"),
                        ("small.svs", "smaller than one 300 px patch"),
                        ("unreadable.svs", "smaller than one 300 px patch"),
                        ("boxes_0.dcm", "smaller than one 300 px patch"),
                        ("boxes.tiff", "smaller than one 300 px patch")):
        assert any(name in line and cause in line for line in text.splitlines()), (name, text)
    assert text.count("boxes_1.dcm") == 0  # one DICOM slide, opened through its first file
    a = _arrays(out, "cmu-1-small-region")
    assert a["images"].shape == (8, 300, 300, 3)
    sat, _ = saturation(a["images"].reshape(-1, 300, 3))
    assert np.median(sat) > 25  # H&E, not glass
    # small patches: the corrupt-pixel slide now fails on reading, the others are extracted
    out2 = tmp_path / "fx16.zarr"
    s = run(ExtractConfig(slides=fixtures_dir / "slides" / "openslide-python", out=out2,
                              patch_size=16, patches_per_slide=4, progress=False))
    assert {r.slide_id for r in s.done} == {"boxes_dcm", "boxes_tiff", "small"}
    errors = dict(s.failed)
    assert "Bogus marker length" in errors[str(fixtures_dir / "slides/openslide-python/"
                                                "unreadable.svs")]
    attrs = describe_store(out2)
    mpp = {x["slide_id"]: x["mpp"] for x in attrs["slides"]}
    assert mpp["boxes_tiff"] is None and mpp["small"] == pytest.approx(0.499)
    warn = next(x for x in attrs["slides"] if x["slide_id"] == "boxes_tiff")["warnings"]
    assert any("implausible microns-per-pixel" in w for w in warn)


def test_blank_slide_reported_as_no_tissue(tmp_path):
    import tifffile

    src = tmp_path / "s"
    src.mkdir()
    blank = np.full((512, 512, 3), 243, np.uint8)
    tifffile.imwrite(src / "blank.tif", blank, tile=(256, 256), photometric="rgb")
    s = run(ExtractConfig(slides=src, out=tmp_path / "b.zarr", patch_size=64,
                              patches_per_slide=4, progress=False))
    assert not s.done and "blank.tif: no tissue found" in s.failed[0][1]


def test_info_cli_text_and_json(synth_store):
    runner = CliRunner()
    result = runner.invoke(main, ["info", str(synth_store), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["schema_version"] == 2 and info["complete"]
    assert info["settings"]["patches_per_slide"] == 32
    by_id = {s["slide_id"]: s for s in info["slides"]}
    assert by_id["tumor_001"]["n_tumor"] + by_id["tumor_001"]["n_non_tumor"] == 32
    text = runner.invoke(main, ["info", str(synth_store)]).output
    assert "tumor_001" in text and "2/2 slides complete" in text
    bad = runner.invoke(main, ["info", str(synth_store / "slides")])
    assert bad.exit_code != 0 and "not a lymph store" in bad.output


def test_config_validation(tmp_path):
    for kwargs, match in (({"patch_size": 8}, "patch_size 8 out of range"),
                          ({"level": -1}, "level -1"),
                          ({"patches_per_slide": 0}, "patches_per_slide 0"),
                          ({"seed": -2}, "seed -2"),
                          ({"workers": 0}, "workers 0"),
                          ({"workers": 2, "scheduler": "tcp://x:1"}, "not both"),
                          ({"thumb_size": 10}, "thumb_size 10")):
        with pytest.raises(ConfigError, match=match):
            ExtractConfig(slides=tmp_path, out=tmp_path / "o", **kwargs)
    with pytest.raises(ConfigError, match="no slide files found"):
        run(ExtractConfig(slides=tmp_path, out=tmp_path / "o.zarr", progress=False))
    bad = tmp_path / "ref.csv"
    bad.write_text("name,label\ntumor_001,Tumor\nx,Maybe\n")
    with pytest.raises(ConfigError, match="line 3: label 'Maybe' is not tumor/normal"):
        read_labels_csv(bad)


def test_cli_rejects_bad_options(tmp_path):
    r = CliRunner().invoke(main, ["extract", "--slides", str(tmp_path), "--out",
                                  str(tmp_path / "o"), "--patch-size", "4"])
    assert r.exit_code == 2 and "patch_size 4 out of range" in r.output


def test_kill_and_resume_equals_an_uninterrupted_run(synth_world, synth_store, tmp_path):
    """`kill -9` while the first slide is being written, rerun: the same store as one run."""
    out = tmp_path / "killed.zarr"
    cmd = [sys.executable, "-m", "lymph.cli", "extract", "--slides", str(synth_world), "--out",
           str(out), "--labels", str(synth_world / "reference.csv"), "--patches-per-slide", "32",
           "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = out / "slides" / "normal_001" / "images" / "zarr.json"
    deadline = time.monotonic() + 60
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "extract finished before it could be killed"
    assert first.exists()
    assert not describe_store(out)["complete"]
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    for sid in ("tumor_001", "normal_001"):
        ref, got = _arrays(synth_store, sid), _arrays(out, sid)
        assert ref.keys() == got.keys()
        for name in ref:
            np.testing.assert_array_equal(got[name], ref[name])


def _memory_slide(path: Path) -> ArraySlide:
    """A 1024 x 768 in-memory slide: pink textured tissue in an ellipse on near-white glass."""
    rgb = np.full((768, 1024, 3), 240, np.uint8)
    yy, xx = np.mgrid[:768, :1024]
    blob = ((xx - 512) / 420) ** 2 + ((yy - 384) / 320) ** 2 < 1
    noise = np.random.default_rng(0).integers(0, 40, (int(blob.sum()), 3))
    rgb[blob] = (noise + [190, 100, 160]).astype(np.uint8)
    return ArraySlide(rgb, downsamples=(1, 2), path=path)


def test_extract_slide_from_an_in_memory_slide(tmp_path):
    """The per-slide stage takes a SlideReader: no file, polygons given directly."""
    slide = _memory_slide(tmp_path / "mem_001.tif")
    ann = Annotations(tumor=(Polygon(np.array([[400, 300], [600, 300], [600, 460],
                                               [400, 460]])),))
    cfg = ExtractConfig(slides=tmp_path, out=tmp_path / "s.zarr", patch_size=64,
                        patches_per_slide=40, progress=False)
    create_store(cfg.out, cfg.settings())
    r = extract_slide(slide, slide_id="mem_001", config=cfg, annotations=ann)
    assert (r.status, r.n_patches) == ("tumor", 40) and 0 < r.n_tumor < 40
    batch = PatchStore.open(cfg.out).read("mem_001", 0, 40)
    rgb = slide.read_region((0, 0), 0, slide.dimensions)
    for k, (x, y) in enumerate(batch.coords):
        np.testing.assert_array_equal(batch.images[k], rgb[y:y + 64, x:x + 64])
        np.testing.assert_array_equal(batch.masks[k], rasterize(
            ann, x_level0=x, y_level0=y, width=64, height=64, downsample=1.0))
        assert batch.masks[k][32, 32] == batch.labels[k]
    # a second call finds the slide complete and skips it
    again = extract_slide(slide, slide_id="mem_001", config=cfg, annotations=ann)
    assert again.skipped


def test_plan_patches_is_pure_and_reports_shortfalls():
    tissue = np.zeros((48, 64), bool)
    tissue[10:30, 10:40] = True
    geometry = PatchGeometry(size=32, downsample=1.0, width=1024, height=768)

    def plan(seed: int) -> PatchPlan:
        return plan_patches(np.random.default_rng(seed), n=30, tissue=tissue,
                            tumor=TumorMaps.empty(tissue.shape), thumb_downsample=16.0,
                            geometry=geometry, status="normal")

    a, b = plan(0), plan(0)
    np.testing.assert_array_equal(a.top_left, b.top_left)
    assert len(a) == 30 and not a.classes.any() and a.tumor_capacity == 0 and not a.notes
    centres = geometry.centres(a.top_left) // 16
    assert tissue[centres[:, 1].astype(int), centres[:, 0].astype(int)].all()
    tiny = plan_patches(np.random.default_rng(0), n=30, tissue=np.zeros((48, 64), bool),
                        tumor=TumorMaps.empty((48, 64)), thumb_downsample=16.0,
                        geometry=geometry, status="normal")
    assert len(tiny) == 0 and tiny.notes == ("only 0 of 30 patches fit in the tissue",)


def test_tumor_cap_note_only_when_the_cap_bound_the_draw():
    """The note 'allows at most K tumor patches' fires when the draw reached the cap, not
    whenever the cap is under the request (63 tumor drawn of a cap of 104 got the note)."""
    tissue = np.zeros((48, 64), bool)
    tissue[10:30, 10:40] = True
    core = np.zeros_like(tissue)
    core[14:26, 14:30] = True  # 12 x 16 thumb px = 192 x 256 level-0 px at downsample 16
    box = (14 * 16, 14 * 16, 30 * 16, 26 * 16)  # x0, y0, x1, y1 at level 0

    def accept(c: np.ndarray) -> np.ndarray:
        c = np.asarray(c)
        return ((c[:, 0] >= box[0]) & (c[:, 0] < box[2]) & (c[:, 1] >= box[1])
                & (c[:, 1] < box[3]))

    geometry = PatchGeometry(size=32, downsample=1.0, width=1024, height=768)
    area = 17 * 32**2 / 16  # a capacity of 17 tumor patches, under the 30 asked
    tumor = TumorMaps(core, core, area, accept)
    seen = set()
    for seed in range(12):
        p = plan_patches(np.random.default_rng(seed), n=30, tissue=tissue, tumor=tumor,
                         thumb_downsample=16.0, geometry=geometry, status="tumor")
        assert p.tumor_capacity == 17
        capped = int(p.classes.sum()) == 17
        noted = any("allows at most 17 tumor patches" in n for n in p.notes)
        assert noted == capped, (seed, int(p.classes.sum()), p.notes)
        seen.add(capped)
    assert seen == {True, False}  # both cases occurred
