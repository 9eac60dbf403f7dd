"""Slide roles and labeled sets: choose_val_slides, select_labeled."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from lymph.data.errors import ConfigError
from lymph.data.store import PatchStore
from lymph.model.train import TrainConfig, choose_val_slides, run, select_labeled

Cfg = Callable[..., TrainConfig]
MakeStore = Callable[..., Path]


def test_val_slides_choice(store: Path) -> None:
    ps = PatchStore.open(store)
    assert choose_val_slides(ps, 0, seed=0, stage="finetune") == []
    picks = choose_val_slides(ps, 2, seed=0, stage="finetune")
    assert len(picks) == 2 and "n1" in picks  # one tumor slide stays for training
    with pytest.raises(ConfigError, match="--val-slides 2"):
        choose_val_slides(ps, 3, seed=0, stage="finetune")


def test_labeled_selection(store: Path) -> None:
    ps = PatchStore.open(store)
    a = select_labeled(ps, ["t1", "n1"], 20, seed=1)
    assert a == select_labeled(ps, ["t1", "n1"], 20, seed=1) and len(set(a)) == 20
    assert sum(s == "t1" and i < 35 for s, i in a) == 10  # 10 tumor patches (t1[:35])
    assert len(select_labeled(ps, ["t1", "n1"], "10%", seed=1)) == 14  # 10% of 140
    with pytest.raises(ConfigError, match="only 140 labeled"):
        select_labeled(ps, ["t1", "n1"], 141, seed=1)
    with pytest.warns(UserWarning, match="not balanced"):
        b = select_labeled(ps, ["n1"], 6, seed=1)
    assert len(b) == 6


def test_single_slide_store_needs_val_slides_0(
    tmp_path: Path, cfg: Cfg, make_tiny_store: MakeStore
) -> None:
    path = make_tiny_store(tmp_path / "one.zarr", {"u1": "unlabeled"}, n=8)
    with pytest.raises(ConfigError, match="--val-slides 0"):
        run(cfg(path, tmp_path / "run", val_slides=1), progress=False)
