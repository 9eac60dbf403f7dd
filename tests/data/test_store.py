from __future__ import annotations

import numpy as np
import pytest

from lymph.data.errors import StoreError
from lymph.data.store import (
    CHUNK_PATCHES,
    PatchStore,
    SlideWriter,
    create_store,
    sanitize_slide_id,
    write_slide,
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
    with pytest.raises(StoreError, match="not a zarr store"):
        create_store(tmp_path / "full", SETTINGS)


@pytest.mark.parametrize(
    ("name", "expected"),
    [("tumor_001.tif", "tumor_001"), ("../evil/../x.svs", "evil___x"), ("a\x00b.ndpi", "a_b"),
     ("CMU-1 small.svs", "CMU-1_small")],
)
def test_sanitize_slide_id(name, expected):
    sid = sanitize_slide_id(name)
    assert "/" not in sid and ".." not in sid and not any(ord(c) < 32 for c in sid)
    assert sid == expected


def test_sanitize_rejects_empty():
    with pytest.raises(StoreError, match="no usable id"):
        sanitize_slide_id("...")
