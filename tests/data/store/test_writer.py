"""The write side (data/store/writer.py): streaming a slide chunk by chunk, complete last."""

from __future__ import annotations

import numpy as np
import pytest

from lymph.data.errors import StoreError
from lymph.data.store import (
    CHUNK_PATCHES,
    PatchStore,
    SlideWriter,
    create_store,
    verify_store,
    write_slide,
)
from tests.builders import STORE_SETTINGS, random_patches


def test_roundtrip_streaming_writer(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "s.zarr"
    create_store(path, STORE_SETTINGS)
    images, masks, labels, coords = random_patches(rng, 150)
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
    create_store(path, STORE_SETTINGS)
    images, _, _, coords = random_patches(rng, 10)
    write_slide(path, "slide_a", images=images, coords=coords, attrs={"source": "a.svs"})
    batch = PatchStore.open(path).read("slide_a", 0, 10)
    assert batch.labels is None and batch.masks is None
    assert PatchStore.open(path).slide("slide_a").status == "unlabeled"


def test_incomplete_slide_is_invisible_and_rewritten(tmp_path):
    rng = np.random.default_rng(2)
    path = tmp_path / "s.zarr"
    create_store(path, STORE_SETTINGS)
    images, masks, labels, coords = random_patches(rng, 70)
    w = SlideWriter(path, "s1", capacity=70, patch_size=8, labeled=True, attrs={})
    w.append(images=images, coords=coords, labels=labels, masks=masks)  # never finished
    with pytest.raises(StoreError, match="no complete slide"):
        PatchStore.open(path)
    write_slide(path, "s1", images=images[:5], coords=coords[:5], labels=labels[:5],
                masks=masks[:5], attrs={})
    assert PatchStore.open(path).slide("s1").n_patches == 5


def test_all_zero_chunks_are_written_too(tmp_path):
    """A normal slide's labels are all 0: the chunk must still exist, or its absence would be
    indistinguishable from damage."""
    path = tmp_path / "s.zarr"
    create_store(path, STORE_SETTINGS)
    images, masks, _, coords = random_patches(np.random.default_rng(0), 10)
    write_slide(path, "n1", images=images, coords=coords, labels=np.zeros(10, np.uint8),
                masks=np.zeros_like(masks), attrs={"status": "normal"})
    assert (path / "slides/n1/labels/c/0").is_file()
    assert (path / "slides/n1/masks/c/0/0/0").is_file()
    assert verify_store(path) == (4, [])


def test_unicode_slide_ids_are_stored_unsafe_ones_refused(tmp_path):
    """Discovery keeps Unicode ids (a slide named only in non-ASCII letters must not abort a
    batch); the writer refuses only what is unsafe as a group name."""
    path = tmp_path / "s.zarr"
    create_store(path, STORE_SETTINGS)
    images, _, _, coords = random_patches(np.random.default_rng(3), 5)
    write_slide(path, "腫瘍_001", images=images, coords=coords, attrs={})
    store = PatchStore.open(path)
    assert [s.slide_id for s in store.slides] == ["腫瘍_001"]
    np.testing.assert_array_equal(store.read("腫瘍_001", 0, 5).images, images)
    for bad in ("a/b", "..x", "__x", ".hidden", "a\x00b", ""):
        with pytest.raises(StoreError, match="not safe as a store group name"):
            SlideWriter(path, bad, capacity=1, patch_size=8, labeled=False, attrs={})
