"""lymph extract under a hostile user (issue 11): one writer per store, damage found and redone,
a read-only or full disk, a folder lymph did not write, one-line errors."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from lymph.cli import main
from lymph.data.errors import ConfigError, StoreError
from lymph.data.store import PatchStore, describe_store
from lymph.pipeline.extract import ExtractConfig, run
from tests.builders import store_lock_holder


def _arrays(store: Path, slide_id: str) -> dict[str, np.ndarray]:
    g = zarr.open_group(str(store / "slides" / slide_id), mode="r")
    return {k: g[k][:] for k in g.array_keys()}


def _cfg(synth_world: Path, out: Path, **kw) -> ExtractConfig:
    return ExtractConfig(slides=synth_world, out=out, labels=synth_world / "reference.csv",
                         patches_per_slide=kw.pop("patches_per_slide", 32), progress=False, **kw)


def _assert_same_store(ref: Path, got: Path) -> None:
    for sid in ("tumor_001", "normal_001"):
        a, b = _arrays(ref, sid), _arrays(got, sid)
        assert a.keys() == b.keys()
        for name in a:
            np.testing.assert_array_equal(b[name], a[name])


def test_second_extract_is_refused_while_another_writes(synth_world, tmp_path):
    """A real second process holds the store: `lymph extract` (in process and with dask
    workers) is refused, naming the holder, and writes nothing."""
    out = tmp_path / "s.zarr"
    with store_lock_holder(out) as holder:
        r = CliRunner().invoke(main, ["extract", "--slides", str(synth_world), "--out", str(out),
                                      "--patches-per-slide", "8", "--quiet"])
        assert r.exit_code == 1
        assert f"another lymph is writing this store (pid {holder.pid} on host" in r.output
        assert "holder-test" in r.output and "Traceback" not in r.output
        with pytest.raises(StoreError, match=rf"pid {holder.pid} on host .* since "):
            run(_cfg(synth_world, out, workers=2))
        assert sorted(p.name for p in out.iterdir()) == [".lymph-writer.lock"]


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
