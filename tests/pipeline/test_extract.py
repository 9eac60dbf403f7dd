from __future__ import annotations

import json
import os
import re
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


# --- issue 11: one writer, damage found and redone, one-line errors ---------------------------


def _cfg(synth_world: Path, out: Path, **kw) -> ExtractConfig:
    return ExtractConfig(slides=synth_world, out=out, labels=synth_world / "reference.csv",
                         patches_per_slide=kw.pop("patches_per_slide", 32), progress=False, **kw)


def _assert_same_store(ref: Path, got: Path) -> None:
    for sid in ("tumor_001", "normal_001"):
        a, b = _arrays(ref, sid), _arrays(got, sid)
        assert a.keys() == b.keys()
        for name in a:
            np.testing.assert_array_equal(b[name], a[name])


_HOLDER = """
import sys
from lymph.data.store import writer_lock
with writer_lock(sys.argv[1], command="holder-test"):
    print("locked", flush=True)
    sys.stdin.read()
"""


def test_second_extract_is_refused_while_another_writes(synth_world, tmp_path):
    """A real second process holds the store: `lymph extract` (in process and with dask
    workers) is refused, naming the holder, and writes nothing."""
    out = tmp_path / "s.zarr"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(out)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "locked"
        r = CliRunner().invoke(main, ["extract", "--slides", str(synth_world), "--out", str(out),
                                      "--patches-per-slide", "8", "--quiet"])
        assert r.exit_code == 1
        assert f"another lymph is writing this store (pid {holder.pid} on host" in r.output
        assert "holder-test" in r.output and "Traceback" not in r.output
        with pytest.raises(StoreError, match=rf"pid {holder.pid} on host .* since "):
            run(_cfg(synth_world, out, workers=2))
        assert sorted(p.name for p in out.iterdir()) == [".lymph-writer.lock"]
    finally:
        holder.communicate("", timeout=30)


@pytest.mark.slow  # over 5 s (make test-all runs it)
def test_extract_holds_the_lock_for_a_whole_dask_batch(synth_world, synth_store, tmp_path):
    """The client of a `--workers 2` run holds the lock while its workers write; the store is
    the one-worker store (synth_store), whatever the worker count."""
    from lymph.data.store import writer_lock

    out = tmp_path / "s.zarr"
    cmd = [sys.executable, "-m", "lymph.cli", "extract", "--slides", str(synth_world), "--out",
           str(out), "--labels", str(synth_world / "reference.csv"), "--patches-per-slide", "32",
           "--workers", "2", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lock = out / ".lymph-writer.lock"
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        if lock.is_file() and f'"pid": {proc.pid}' in lock.read_text():
            break
        time.sleep(0.005)
    assert proc.poll() is None, "extract finished before the lock could be tested"
    with pytest.raises(StoreError, match=rf"pid {proc.pid} on host"):
        with writer_lock(out):
            pass
    assert proc.wait(timeout=120) == 0, proc.stderr.read()
    _assert_same_store(synth_store, out)


def test_complete_slide_with_a_missing_array_is_redone(synth_world, synth_store, tmp_path):
    """Two writers used to leave `complete` slides whose images were gone: info says so, the
    trainer refuses, and a rerun redoes the slide."""
    out = tmp_path / "s.zarr"
    shutil.copytree(synth_store, out)
    shutil.rmtree(out / "slides" / "tumor_001" / "images")
    info = describe_store(out)
    by_id = {s["slide_id"]: s for s in info["slides"]}
    assert not by_id["tumor_001"]["complete"] and "images" in by_id["tumor_001"]["damage"]
    text = CliRunner().invoke(main, ["info", str(out)]).output
    assert "NO, damaged: array 'images' is missing" in text
    with pytest.raises(StoreError, match="'tumor_001' is marked complete but array 'images'"):
        PatchStore.open(out)
    redo = run(_cfg(synth_world, out))
    assert [r.slide_id for r in redo.done] == ["tumor_001"]
    _assert_same_store(synth_store, out)


def test_info_verify_lists_each_bad_chunk(synth_store, tmp_path):
    out = tmp_path / "s.zarr"
    shutil.copytree(synth_store, out)
    runner = CliRunner()
    ok = runner.invoke(main, ["info", str(out), "--verify"])
    assert ok.exit_code == 0 and "verify: 8 chunks checked, 0 bad" in ok.output
    chunk = out / "slides/tumor_001/images/c/0/0/0/0"
    data = bytearray(chunk.read_bytes())
    data[1000] ^= 0xFF
    chunk.write_bytes(bytes(data))
    (out / "slides/normal_001/labels/c/0").unlink()
    bad = runner.invoke(main, ["info", str(out), "--verify"])
    assert bad.exit_code == 1
    assert "slide 'tumor_001', array 'images', chunk 0: checksum mismatch" in bad.output
    assert "slide 'normal_001', array 'labels', chunk 0: the chunk file is missing" in bad.output
    assert "verify: 8 chunks checked, 2 bad" in bad.output
    j = json.loads(runner.invoke(main, ["info", str(out), "--verify", "--json"]).output)
    assert [(b["slide_id"], b["array"], b["chunk"]) for b in j["verify"]["bad"]] == [
        ("normal_001", "labels", 0), ("tumor_001", "images", 0)]


def test_out_that_is_a_file_or_a_foreign_folder_is_refused_untouched(synth_world, tmp_path):
    runner = CliRunner()
    args = ["extract", "--slides", str(synth_world), "--patches-per-slide", "8", "--quiet"]
    f = tmp_path / "store.zarr"
    f.write_text("mine")
    r = runner.invoke(main, [*args, "--out", str(f)])
    assert r.exit_code == 1 and "is a regular file, not a store folder" in r.output
    assert f.read_text() == "mine"
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    r = runner.invoke(main, [*args, "--out", str(folder)])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "not a lymph store (1 entries lymph did not write, e.g. 'notes.txt')" in r.output
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]  # not even a lock file


def test_v1_store_is_refused_by_extract(synth_world, synth_store, tmp_path):
    out = tmp_path / "s.zarr"
    shutil.copytree(synth_store, out)
    root = zarr.open_group(str(out), mode="r+")
    root.attrs["lymph"] = {**root.attrs["lymph"], "schema_version": 1}
    r = CliRunner().invoke(main, ["extract", "--slides", str(synth_world), "--out", str(out),
                                  "--labels", str(synth_world / "reference.csv"),
                                  "--patches-per-slide", "32", "--quiet"])
    assert r.exit_code == 1
    assert "version 2 adds chunk checksums); re-extract into a new --out" in r.output


def test_huge_patches_per_slide_is_refused_up_front(tmp_path):
    t0 = time.perf_counter()
    r = CliRunner().invoke(main, ["extract", "--slides", str(tmp_path), "--out",
                                  str(tmp_path / "o"), "--patches-per-slide", "200000000"])
    assert r.exit_code == 2 and "patches_per_slide 200000000 out of range 1..100,000" in r.output
    assert time.perf_counter() - t0 < 5 and not (tmp_path / "o").exists()


def _fail_writes(monkeypatch, under: Path, err: int) -> None:
    """Every write under `under` fails with `err` (EROFS: a read-only mount; root ignores
    chmod, so the OS calls are patched rather than the permissions)."""
    import builtins
    import errno as errno_mod

    real_open, real_os_open, real_mkdir = builtins.open, os.open, os.mkdir

    def inside(p: object) -> bool:
        return str(p).startswith(str(under))

    def fail(p: object) -> OSError:
        return OSError(err, os.strerror(err), str(p))

    def fake_open(file, mode="r", *a, **k):
        if inside(file) and any(c in mode for c in "wax+"):
            raise fail(file)
        return real_open(file, mode, *a, **k)

    def fake_os_open(file, flags, *a, **k):
        if inside(file) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise fail(file)
        return real_os_open(file, flags, *a, **k)

    def fake_mkdir(p, *a, **k):
        if inside(p):
            raise fail(p)
        return real_mkdir(p, *a, **k)

    assert err in (errno_mod.EROFS, errno_mod.ENOSPC, errno_mod.EACCES)
    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(os, "open", fake_os_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)


def test_read_only_out_is_one_line(synth_world, synth_store, tmp_path, monkeypatch):
    """A new --out under a read-only folder, and a half-done store on a read-only mount: one
    line naming the file and the fix, and the store's data unchanged."""
    import errno

    half = tmp_path / "half.zarr"
    shutil.copytree(synth_store, half)
    zarr.open_group(str(half / "slides" / "tumor_001"), mode="r+").attrs["complete"] = False
    before = {sid: _arrays(half, sid) for sid in ("tumor_001", "normal_001")}
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() != 0:
        os.chmod(ro, 0o555)
        for p in [half, *half.rglob("*")]:
            os.chmod(p, 0o555 if p.is_dir() else 0o444)
    else:
        _fail_writes(monkeypatch, ro, errno.EROFS)
        _fail_writes(monkeypatch, half, errno.EROFS)
    runner = CliRunner()
    args = ["extract", "--slides", str(synth_world), "--labels",
            str(synth_world / "reference.csv"), "--patches-per-slide", "32", "--quiet"]
    for out in (ro / "new.zarr", half):
        r = runner.invoke(main, [*args, "--out", str(out)])
        assert r.exit_code == 1 and "Traceback" not in r.output, r.output
        assert "not a zarr v3 group" not in r.output
        assert re.search(r"Error: cannot write .*: the folder is not writable \(read-only mount "
                         r"or permissions\); choose another --out", r.output), r.output
    monkeypatch.undo()
    if os.geteuid() != 0:
        for p in [half, *half.rglob("*")]:
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
    for sid, arrays in before.items():
        for name, a in arrays.items():
            np.testing.assert_array_equal(_arrays(half, sid)[name], a)


def test_disk_full_fails_the_slide_keeps_the_rest_and_a_rerun_resumes(
        synth_world, synth_store, tmp_path, monkeypatch):
    import errno

    from lymph.data.store import chunks

    out = tmp_path / "s.zarr"
    real = chunks.write_chunk_file
    calls = []

    def full_after_two(target: Path, encoded: bytes) -> None:
        calls.append(target)
        if len(calls) > 2:  # normal_001's images and masks are written, tumor_001's are not
            raise OSError(errno.ENOSPC, "No space left on device", str(target))
        real(target, encoded)

    monkeypatch.setattr(chunks, "write_chunk_file", full_after_two)
    s = run(_cfg(synth_world, out))
    assert [r.slide_id for r in s.done] == ["normal_001"]
    (source, error), = s.failed
    assert source.endswith("tumor_001.tif")
    assert re.search(r"cannot write .*tumor_001/images/c/0/0/0/0: the disk is full; free space",
                     error), error
    monkeypatch.undo()
    again = run(_cfg(synth_world, out))
    assert [r.slide_id for r in again.done] == ["tumor_001"]
    assert [r.slide_id for r in again.skipped] == ["normal_001"]
    _assert_same_store(synth_store, out)


def test_a_run_that_finds_no_slide_leaves_no_store_behind(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no slide files found"):
        run(ExtractConfig(slides=tmp_path / "empty", out=tmp_path / "o.zarr",
                              progress=False))
    assert not (tmp_path / "o.zarr").exists()


def test_tumor_slide_without_annotation_warns_naming_it_and_the_folder(synth_world, tmp_path):
    """CAMELYON16's layout: slides in training/tumor/, XML in lesion_annotations/. Without
    --annotations a `tumor_*` slide (or one the labels CSV calls Tumor) finds no annotation:
    a warning names the slide and the folder searched; with --annotations it is tumor."""
    tumor_dir, ann_dir = tmp_path / "training" / "tumor", tmp_path / "lesion_annotations"
    tumor_dir.mkdir(parents=True)
    ann_dir.mkdir()
    os.symlink(synth_world / "tumor_001.tif", tumor_dir / "tumor_001.tif")
    os.symlink(synth_world / "tumor_001.tif", tumor_dir / "case_7.tif")
    shutil.copy(synth_world / "tumor_001.xml", ann_dir / "tumor_001.xml")
    labels = tmp_path / "labels.csv"
    labels.write_text("tumor_001,Tumor\ncase_7,Tumor\n")
    common = dict(slides=tmp_path / "training", patches_per_slide=8, patch_size=128,
                  progress=False)
    s = run(ExtractConfig(out=tmp_path / "a.zarr", **common))
    warned = {r.slide_id: " ".join(r.warnings) for r in s.done}
    assert {r.slide_id: r.status for r in s.done} == {"tumor_001": "unlabeled",
                                                     "case_7": "unlabeled"}
    assert "slide tumor_001: its name says tumor but no annotation" in warned["tumor_001"]
    assert f"in {tumor_dir}" in warned["tumor_001"] and "--annotations" in warned["tumor_001"]
    assert "no annotation" not in warned["case_7"]  # neither name nor CSV says tumor
    s = run(ExtractConfig(out=tmp_path / "b.zarr", labels=labels, **common))
    warned = {r.slide_id: " ".join(r.warnings) for r in s.done}
    assert "slide case_7: the labels CSV says Tumor but no annotation" in warned["case_7"]
    s = run(ExtractConfig(out=tmp_path / "c.zarr", annotations=ann_dir, **common))
    by_id = {r.slide_id: r for r in s.done}
    assert by_id["tumor_001"].status == "tumor"
    assert not any("no annotation" in w for w in by_id["tumor_001"].warnings)
    from click.testing import CliRunner

    from lymph.cli import main

    done = CliRunner().invoke(main, ["extract", "--slides", str(tmp_path / "training"), "--out",
                                     str(tmp_path / "d.zarr"), "--patches-per-slide", "8",
                                     "--patch-size", "128", "--quiet"])
    assert done.exit_code == 0, done.output
    assert "warning: " in done.output and "its name says tumor" in done.output
    assert "(0 tumor, 0 non-tumor, 16 unlabeled)" in done.output  # the words `lymph info` uses


def test_a_config_touches_no_file_and_run_names_a_missing_folder(tmp_path: Path) -> None:
    from lymph.pipeline.extract import ExtractConfig, run

    config = ExtractConfig(slides=tmp_path / "nope", out=tmp_path / "s.zarr", progress=False)
    with pytest.raises(ConfigError, match=r"--slides .*nope: not a folder"):
        run(config)
    folder = tmp_path / "slides"
    folder.mkdir()
    bad = ExtractConfig(slides=folder, out=tmp_path / "s.zarr", annotations=tmp_path / "ann",
                        progress=False)
    with pytest.raises(ConfigError, match=r"--annotations .*ann: not a folder"):
        run(bad)
    assert not (tmp_path / "s.zarr").exists()
