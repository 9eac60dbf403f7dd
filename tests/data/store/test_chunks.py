"""Chunks (data/store/chunks.py): direct chunk files as zarr writes them; every read checks its
chunks exist and match their checksums."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lymph.data.errors import StoreError
from lymph.data.store import (
    CHUNK_PATCHES,
    PatchStore,
    describe_store,
    slide_is_complete,
)
from tests.builders import flip_byte, random_patches, tiny_store


def test_direct_chunk_files_equal_what_zarr_writes_with_the_checksum(tmp_path):
    """The fast path (whole chunks straight to files) writes the bytes zarr's own pipeline
    (bytes -> blosc -> crc32c) writes, the padded last chunk included; zarr reads them back."""
    import zarr

    from lymph.data.store import ARRAY_CONFIG
    from lymph.data.store.chunks import compressors

    path = tiny_store(tmp_path / "s.zarr")  # 150 patches: chunks 0, 1 full, 2 padded
    images = random_patches(np.random.default_rng(5), 150)[0]  # what tiny_store wrote
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
    path = tiny_store(tmp_path / "s.zarr")
    flip_byte(path / "slides/s1/images/c/1/0/0/0")
    store = PatchStore.open(path)
    store.read("s1", 0, 64)  # chunk 0 is fine
    with pytest.raises(StoreError, match=r"slide 's1', array 'images', chunk 1: checksum "
                                         r"mismatch"):
        store.read("s1", 64, 128)
    flip_byte(path / "slides/s1/labels/c/0", offset=20)
    with pytest.raises(StoreError, match=r"slide 's1', array 'labels', chunk 0: checksum"):
        store.labels("s1")


def test_missing_chunk_is_an_error_not_zeros(tmp_path):
    """zarr reads a missing chunk as the fill value (64 black patches, label 0): lymph refuses."""
    path = tiny_store(tmp_path / "s.zarr")
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


@pytest.mark.parametrize("keep", [0.5, 0.0, 3])
def test_truncated_chunk_is_an_error_never_garbage(tmp_path, keep):
    """A half-written chunk used to give different data on every read (and segfaults in
    blosc): the checksum is checked before decompressing, so it is one StoreError."""
    path = tiny_store(tmp_path / "s.zarr")
    chunk = path / "slides/s1/masks/c/1/0/0"
    data = chunk.read_bytes()
    chunk.write_bytes(data[: int(len(data) * keep) if keep < 1 else keep])
    with pytest.raises(StoreError, match=r"slide 's1', array 'masks', chunk 1: checksum "
                                         r"mismatch"):
        PatchStore.open(path).read("s1", 64, 128)
