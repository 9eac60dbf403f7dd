"""A checkpoint records its store's content digest; --resume refuses a store whose content
changed (re-extracted at the same path)."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from lymph.data.errors import CheckpointError
from lymph.data.store import create_store, write_slide
from lymph.model.checkpoint import load_checkpoint
from lymph.model.train import TrainConfig, train

P = 36


def _store(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    create_store(path, {"patch_size": P, "level": 0, "seed": 0})
    for sid in ("u1", "u2"):
        write_slide(path, sid, images=rng.integers(0, 256, (20, P, P, 3), dtype=np.uint8),
                    coords=np.zeros((20, 2), np.int64), attrs={"status": "unlabeled"})
    return path


def test_resume_refuses_a_store_whose_content_changed(tmp_path: Path) -> None:
    store = _store(tmp_path / "store.zarr", seed=0)
    config = TrainConfig(store=store, out=tmp_path / "run", steps=4, batch_size=4, crop=32,
                         base_width=4, depth=2, workers=0, device="cpu", checkpoint_every=2,
                         eval_every=2, log_every=1, val_patches=8, stop_at=2)
    train(config, progress=False)
    assert load_checkpoint(tmp_path / "run/last.pt")["config"]["store"]["content_digest"]
    shutil.rmtree(store)
    _store(store, seed=1)  # same path, same settings, other patches
    with pytest.raises(CheckpointError, match=r"--resume: .*last.pt was trained on other "
                                              r"content of the store .*re-extracted or slides "
                                              r"redone since"):
        train(replace(config, stop_at=None, resume=True), progress=False)
