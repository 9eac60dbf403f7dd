from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lymph.data.errors import OutputError, SlideError, StoreError
from lymph.data.slides import safe_id, strip_slide_suffix
from lymph.data.store import (
    CHUNK_PATCHES,
    LOCK_FILE,
    PatchStore,
    SlideWriter,
    create_store,
    check_slide_id,
    describe_store,
    slide_is_complete,
    verify_store,
    write_slide,
    writer_lock,
)

SETTINGS = {"patch_size": 8, "level": 0, "seed": 0, "patches_per_slide": 100}


def _patches(rng: np.random.Generator, n: int, p: int = 8):
    images = rng.integers(0, 256, (n, p, p, 3), dtype=np.uint8)
    masks = rng.integers(0, 2, (n, p, p), dtype=np.uint8)
    labels = rng.integers(0, 2, n, dtype=np.uint8)
    coords = rng.integers(0, 10_000, (n, 2), dtype=np.int64)
    return images, masks, labels, coords


def test_roundtrip_streaming_writer(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "s.zarr"
    create_store(path, SETTINGS)
    images, masks, labels, coords = _patches(rng, 150)
    w = SlideWriter(path, "tumor_001", capacity=200, patch_size=8, labeled=True,
                    attrs={"status": "tumor", "source": "x.tif"})
    for a in range(0, 150, 37):  # uneven appends cross chunk borders
        b = min(a + 37, 150)
        w.append(images=images[a:b], coords=coords[a:b], labels=labels[a:b], masks=masks[a:b])
    assert w.finish(mpp=0.243) == 150
    store = PatchStore.open(path)
    (info,) = store.slides
    assert info.n_patches == 150 and info.n_tumor == int(labels.sum()) and info.labeled
    assert info.attrs["mpp"] == 0.243
    chunks = store.chunks()
    assert [(c.start, c.stop) for c in chunks] == [(0, 64), (64, 128), (128, 150)]
    got = [store.read(c.slide_id, c.start, c.stop) for c in chunks]
    np.testing.assert_array_equal(np.concatenate([g.images for g in got]), images)
    np.testing.assert_array_equal(np.concatenate([g.masks for g in got]), masks)
    np.testing.assert_array_equal(np.concatenate([g.labels for g in got]), labels)
    np.testing.assert_array_equal(np.concatenate([g.coords for g in got]), coords)
    assert CHUNK_PATCHES == 64


def test_unlabeled_slide_has_no_masks(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "s.zarr"
    create_store(path, SETTINGS)
    images, _, _, coords = _patches(rng, 10)
    write_slide(path, "slide_a", images=images, coords=coords, attrs={"source": "a.svs"})
    batch = PatchStore.open(path).read("slide_a", 0, 10)
    assert batch.labels is None and batch.masks is None
    assert PatchStore.open(path).slide("slide_a").status == "unlabeled"


def test_incomplete_slide_is_invisible_and_rewritten(tmp_path):
    rng = np.random.default_rng(2)
    path = tmp_path / "s.zarr"
    create_store(path, SETTINGS)
    images, masks, labels, coords = _patches(rng, 70)
    w = SlideWriter(path, "s1", capacity=70, patch_size=8, labeled=True, attrs={})
    w.append(images=images, coords=coords, labels=labels, masks=masks)  # never finished
    with pytest.raises(StoreError, match="no complete slide"):
        PatchStore.open(path)
    write_slide(path, "s1", images=images[:5], coords=coords[:5], labels=labels[:5],
                masks=masks[:5], attrs={})
    assert PatchStore.open(path).slide("s1").n_patches == 5


def test_other_settings_are_refused_by_name(tmp_path):
    path = tmp_path / "s.zarr"
    create_store(path, SETTINGS)
    create_store(path, {**SETTINGS, "workers": 4})  # runtime settings may differ
    with pytest.raises(StoreError, match=r"patch_size: store has 8, this run asks 16"):
        create_store(path, {**SETTINGS, "patch_size": 16})


def test_other_schema_version_is_refused(tmp_path):
    import zarr

    path = tmp_path / "s.zarr"
    create_store(path, SETTINGS)
    root = zarr.open_group(str(path), mode="r+")
    root.attrs["lymph"] = {**root.attrs["lymph"], "schema_version": 99}
    with pytest.raises(StoreError, match="schema version 99"):
        PatchStore.open(path)


def test_missing_and_foreign_stores(tmp_path):
    import zarr

    with pytest.raises(StoreError, match="no such store"):
        PatchStore.open(tmp_path / "nope.zarr")
    zarr.open_group(str(tmp_path / "other.zarr"), mode="w")
    with pytest.raises(StoreError, match="not a lymph store"):
        PatchStore.open(tmp_path / "other.zarr")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("x")
    with pytest.raises(StoreError, match="not a lymph store .* nothing in it was changed"):
        create_store(tmp_path / "full", SETTINGS)


@pytest.mark.parametrize(
    ("name", "expected"),
    [("tumor_001.tif", "tumor_001"), ("../evil/../x.svs", "evil___x"), ("a\x00b.ndpi", "a_b"),
     ("CMU-1 small.svs", "CMU-1_small")],
)
def test_ids_made_by_the_one_rule_are_safe_group_names(name, expected):
    """A file name made an id by the slide discovery's rule (`safe_id` of the name without its
    slide suffix) is one path component, and the store takes it as a group name."""
    sid = safe_id(strip_slide_suffix(name))
    assert "/" not in sid and ".." not in sid and not any(ord(c) < 32 for c in sid)
    assert sid == expected
    check_slide_id(sid)


def test_a_name_with_no_usable_id_is_refused():
    with pytest.raises(SlideError, match="no usable id"):
        safe_id(strip_slide_suffix("..."))
    with pytest.raises(StoreError, match="not safe as a store group name"):
        check_slide_id("...")


# --- issue 11: checksums, missing chunks, complete means whole, schema v2, the writer lock ---


def _labeled_store(tmp_path, n: int = 150):
    rng = np.random.default_rng(5)
    path = tmp_path / "s.zarr"
    create_store(path, SETTINGS)
    images, masks, labels, coords = _patches(rng, n)
    write_slide(path, "s1", images=images, coords=coords, labels=labels, masks=masks,
                attrs={"status": "tumor"})
    return path, images


def _flip_byte(chunk: Path, offset: int = 40) -> None:
    data = bytearray(chunk.read_bytes())
    data[offset] ^= 0x01
    chunk.write_bytes(bytes(data))


def test_direct_chunk_files_equal_what_zarr_writes_with_the_checksum(tmp_path):
    """The fast path (whole chunks straight to files) writes the bytes zarr's own pipeline
    (bytes -> blosc -> crc32c) writes, the padded last chunk included; zarr reads them back."""
    import zarr

    from lymph.data.store import ARRAY_CONFIG
    from lymph.data.store.chunks import compressors

    path, images = _labeled_store(tmp_path)  # 150 patches: chunks 0, 1 full, 2 padded
    ref = zarr.open_group(str(tmp_path / "ref.zarr"), mode="w").create_array(
        "images", shape=images.shape, chunks=(CHUNK_PATCHES, 8, 8, 3), dtype="uint8",
        compressors=compressors(), config=ARRAY_CONFIG)
    ref[:] = images
    codecs = [c["name"] for c in json.loads(
        (path / "slides/s1/images/zarr.json").read_text())["codecs"]]
    assert codecs == ["bytes", "blosc", "crc32c"]
    for i in range(3):
        direct = (path / f"slides/s1/images/c/{i}/0/0/0").read_bytes()
        assert direct == (tmp_path / f"ref.zarr/images/c/{i}/0/0/0").read_bytes()
    got = zarr.open_array(str(path / "slides/s1/images"), mode="r")[:]
    np.testing.assert_array_equal(got, images)


def test_flipped_byte_is_an_error_naming_slide_array_and_chunk(tmp_path):
    path, _ = _labeled_store(tmp_path)
    _flip_byte(path / "slides/s1/images/c/1/0/0/0")
    store = PatchStore.open(path)
    store.read("s1", 0, 64)  # chunk 0 is fine
    with pytest.raises(StoreError, match=r"slide 's1', array 'images', chunk 1: checksum "
                                         r"mismatch"):
        store.read("s1", 64, 128)
    _flip_byte(path / "slides/s1/labels/c/0", offset=20)
    with pytest.raises(StoreError, match=r"slide 's1', array 'labels', chunk 0: checksum"):
        store.labels("s1")


def test_missing_chunk_is_an_error_not_zeros(tmp_path):
    """zarr reads a missing chunk as the fill value (64 black patches, label 0): lymph refuses."""
    path, _ = _labeled_store(tmp_path)
    (path / "slides/s1/images/c/2/0/0/0").unlink()
    store = PatchStore.open(path)  # metadata is whole: open is cheap and succeeds
    with pytest.raises(StoreError, match=r"slide 's1', array 'images', chunk 2: the chunk file "
                                         r"is missing; delete .* and rerun `lymph extract`"):
        store.read("s1", 128, 150)
    (path / "slides/s1/labels/c/0").unlink()
    with pytest.raises(StoreError, match=r"array 'labels', chunk 0: the chunk file is missing"):
        store.labels("s1")
    info = describe_store(path)
    assert not info["complete"] and "chunk 2 is missing" in info["slides"][0]["damage"]
    assert not slide_is_complete(path, "s1")  # so a rerun of extract redoes the slide


def test_all_zero_chunks_are_written_too(tmp_path):
    """A normal slide's labels are all 0: the chunk must still exist, or its absence would be
    indistinguishable from damage."""
    path = tmp_path / "s.zarr"
    create_store(path, SETTINGS)
    images, masks, _, coords = _patches(np.random.default_rng(0), 10)
    write_slide(path, "n1", images=images, coords=coords, labels=np.zeros(10, np.uint8),
                masks=np.zeros_like(masks), attrs={"status": "normal"})
    assert (path / "slides/n1/labels/c/0").is_file()
    assert (path / "slides/n1/masks/c/0/0/0").is_file()
    assert verify_store(path) == (4, [])


def test_complete_flag_with_a_missing_array_is_not_trusted(tmp_path):
    path, _ = _labeled_store(tmp_path)
    shutil.rmtree(path / "slides/s1/masks")
    with pytest.raises(StoreError, match=r"slide 's1' is marked complete but array 'masks' is "
                                         r"missing; rerun `lymph extract`"):
        PatchStore.open(path)
    info = describe_store(path)
    assert info["totals"]["complete_slides"] == 0 and not info["slides"][0]["complete"]
    assert not slide_is_complete(path, "s1")


def test_verify_store_reports_every_bad_chunk(tmp_path):
    path, _ = _labeled_store(tmp_path)
    assert verify_store(path) == (8, [])  # images 3 + coords 1 + labels 1 + masks 3
    _flip_byte(path / "slides/s1/masks/c/0/0/0")
    (path / "slides/s1/images/c/1/0/0/0").unlink()
    checked, bad = verify_store(path)
    assert checked == 8
    assert [(b.slide_id, b.array, b.chunk) for b in bad] == [("s1", "images", 1),
                                                              ("s1", "masks", 0)]
    assert "missing" in bad[0].error and "checksum mismatch" in bad[1].error


def test_schema_v1_store_is_refused_with_the_fix(tmp_path):
    import zarr

    path = tmp_path / "s.zarr"
    create_store(path, SETTINGS)
    root = zarr.open_group(str(path), mode="r+")
    root.attrs["lymph"] = {**root.attrs["lymph"], "schema_version": 1}
    fix = r"schema version 1, this lymph reads version 2 .*re-extract into a new --out"
    with pytest.raises(StoreError, match=fix):
        PatchStore.open(path)
    with pytest.raises(StoreError, match=fix):
        create_store(path, SETTINGS)


def test_out_that_is_a_regular_file_is_refused(tmp_path):
    (tmp_path / "store.zarr").write_text("not a store")
    with pytest.raises(StoreError, match=r"store.zarr: is a regular file, not a store folder"):
        create_store(tmp_path / "store.zarr", SETTINGS)
    with pytest.raises(StoreError, match=r"a regular file, not a store folder"):
        describe_store(tmp_path / "store.zarr")


_HOLDER = """
import sys
from lymph.data.store import writer_lock
with writer_lock(sys.argv[1], command="holder-test"):
    print("locked", flush=True)
    sys.stdin.read()
"""


def test_second_writer_is_refused_naming_the_holder(tmp_path):
    """Two real processes: the first holds the lock, the second is refused by name."""
    path = tmp_path / "s.zarr"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "locked"
        host = re.escape(socket.gethostname())
        with pytest.raises(StoreError, match=rf"another lymph is writing this store \(pid "
                                             rf"{holder.pid} on host {host} since .*: "
                                             r"holder-test\); wait for it"):
            with writer_lock(path):
                pass
    finally:
        holder.communicate("", timeout=30)
    with writer_lock(path, command="after") as info:  # released when the holder ended
        assert info["pid"] == os.getpid()
        assert json.loads((path / LOCK_FILE).read_text())["command"] == "after"


def test_lock_in_a_read_only_folder_is_one_line(tmp_path, monkeypatch):
    import errno

    path = tmp_path / "s.zarr"
    create_store(path, SETTINGS)
    real_open = os.open

    def read_only(file, flags, *a, **k):
        if str(file).startswith(str(path)) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, "Read-only file system", str(file))
        return real_open(file, flags, *a, **k)

    monkeypatch.setattr(os, "open", read_only)
    with pytest.raises(OutputError, match=r"cannot write .*\.lymph-writer\.lock: the folder is "
                                          r"not writable \(read-only mount or permissions\)"):
        with writer_lock(path):
            pass


def test_unicode_slide_ids_are_stored_unsafe_ones_refused(tmp_path):
    """Discovery keeps Unicode ids (a slide named only in non-ASCII letters must not abort a
    batch); the writer refuses only what is unsafe as a group name."""
    path = tmp_path / "s.zarr"
    create_store(path, SETTINGS)
    images, _, _, coords = _patches(np.random.default_rng(3), 5)
    write_slide(path, "腫瘍_001", images=images, coords=coords, attrs={})
    store = PatchStore.open(path)
    assert [s.slide_id for s in store.slides] == ["腫瘍_001"]
    np.testing.assert_array_equal(store.read("腫瘍_001", 0, 5).images, images)
    for bad in ("a/b", "..x", "__x", ".hidden", "a\x00b", ""):
        with pytest.raises(StoreError, match="not safe as a store group name"):
            SlideWriter(path, bad, capacity=1, patch_size=8, labeled=False, attrs={})


@pytest.mark.parametrize("keep", [0.5, 0.0, 3])
def test_truncated_chunk_is_an_error_never_garbage(tmp_path, keep):
    """A half-written chunk used to give different data on every read (and segfaults in
    blosc): the checksum is checked before decompressing, so it is one StoreError."""
    path, _ = _labeled_store(tmp_path)
    chunk = path / "slides/s1/masks/c/1/0/0"
    data = chunk.read_bytes()
    chunk.write_bytes(data[: int(len(data) * keep) if keep < 1 else keep])
    with pytest.raises(StoreError, match=r"slide 's1', array 'masks', chunk 1: checksum "
                                         r"mismatch"):
        PatchStore.open(path).read("s1", 64, 128)
