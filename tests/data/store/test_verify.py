"""Whole slides (data/store/verify.py): complete means whole; --verify reports every bad chunk."""

from __future__ import annotations

import shutil

import pytest

from lymph.data.errors import StoreError
from lymph.data.store import (
    PatchStore,
    describe_store,
    slide_is_complete,
    verify_store,
)
from tests.builders import flip_byte, tiny_store


def test_complete_flag_with_a_missing_array_is_not_trusted(tmp_path):
    path = tiny_store(tmp_path / "s.zarr")
    shutil.rmtree(path / "slides/s1/masks")
    with pytest.raises(StoreError, match=r"slide 's1' is marked complete but array 'masks' is "
                                         r"missing; rerun `lymph extract`"):
        PatchStore.open(path)
    info = describe_store(path)
    assert info["totals"]["complete_slides"] == 0 and not info["slides"][0]["complete"]
    assert not slide_is_complete(path, "s1")


def test_verify_store_reports_every_bad_chunk(tmp_path):
    path = tiny_store(tmp_path / "s.zarr")
    assert verify_store(path) == (8, [])  # images 3 + coords 1 + labels 1 + masks 3
    flip_byte(path / "slides/s1/masks/c/0/0/0")
    (path / "slides/s1/images/c/1/0/0/0").unlink()
    checked, bad = verify_store(path)
    assert checked == 8
    assert [(b.slide_id, b.array, b.chunk) for b in bad] == [("s1", "images", 1),
                                                              ("s1", "masks", 0)]
    assert "missing" in bad[0].error and "checksum mismatch" in bad[1].error
