"""The root group (data/store/groups.py): settings and schema version checked, foreign outputs
refused untouched, one writer at a time."""

from __future__ import annotations

import json
import os
import re
import socket

import pytest

from lymph.data.errors import OutputError, StoreError
from lymph.data.store import (
    LOCK_FILE,
    PatchStore,
    create_store,
    describe_store,
    writer_lock,
)
from tests.builders import STORE_SETTINGS, store_lock_holder


def test_other_settings_are_refused_by_name(tmp_path):
    path = tmp_path / "s.zarr"
    create_store(path, STORE_SETTINGS)
    create_store(path, {**STORE_SETTINGS, "workers": 4})  # runtime settings may differ
    with pytest.raises(StoreError, match=r"patch_size: store has 8, this run asks 16"):
        create_store(path, {**STORE_SETTINGS, "patch_size": 16})


def test_other_schema_version_is_refused(tmp_path):
    import zarr

    path = tmp_path / "s.zarr"
    create_store(path, STORE_SETTINGS)
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
        create_store(tmp_path / "full", STORE_SETTINGS)


def test_schema_v1_store_is_refused_with_the_fix(tmp_path):
    import zarr

    path = tmp_path / "s.zarr"
    create_store(path, STORE_SETTINGS)
    root = zarr.open_group(str(path), mode="r+")
    root.attrs["lymph"] = {**root.attrs["lymph"], "schema_version": 1}
    fix = r"schema version 1, this lymph reads version 2 .*re-extract into a new --out"
    with pytest.raises(StoreError, match=fix):
        PatchStore.open(path)
    with pytest.raises(StoreError, match=fix):
        create_store(path, STORE_SETTINGS)


def test_out_that_is_a_regular_file_is_refused(tmp_path):
    (tmp_path / "store.zarr").write_text("not a store")
    with pytest.raises(StoreError, match=r"store.zarr: is a regular file, not a store folder"):
        create_store(tmp_path / "store.zarr", STORE_SETTINGS)
    with pytest.raises(StoreError, match=r"a regular file, not a store folder"):
        describe_store(tmp_path / "store.zarr")


def test_second_writer_is_refused_naming_the_holder(tmp_path):
    """Two real processes: the first holds the lock, the second is refused by name."""
    path = tmp_path / "s.zarr"
    with store_lock_holder(path) as holder:
        host = re.escape(socket.gethostname())
        with pytest.raises(StoreError, match=rf"another lymph is writing this store \(pid "
                                             rf"{holder.pid} on host {host} since .*: "
                                             r"holder-test\); wait for it"):
            with writer_lock(path):
                pass
    with writer_lock(path, command="after") as info:  # released when the holder ended
        assert info["pid"] == os.getpid()
        assert json.loads((path / LOCK_FILE).read_text())["command"] == "after"


def test_lock_in_a_read_only_folder_is_one_line(tmp_path, monkeypatch):
    import errno

    path = tmp_path / "s.zarr"
    create_store(path, STORE_SETTINGS)
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
