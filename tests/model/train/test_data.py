"""The training batches: errors from DataLoader workers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from lymph.data.errors import StoreError
from lymph.model.train import TrainConfig, run

Cfg = Callable[..., TrainConfig]


def test_a_damaged_chunk_read_by_a_loader_worker_is_a_one_line_store_error(
    store: Path, tmp_path: Path, cfg: Cfg
) -> None:
    import shutil

    bad = tmp_path / "bad.zarr"
    shutil.copytree(store, bad)
    chunk = next(p for p in sorted((bad / "slides").rglob("*"))
                 if p.is_file() and "images" in p.parts and p.name != "zarr.json")  # fmt: skip
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="checksum mismatch") as info:
        run(cfg(bad, tmp_path / "run", workers=1, val_slides=0), progress=False)
    assert "\n" not in str(info.value) and "Traceback" not in str(info.value)
