"""Slide roles and labeled sets: pick_val_slides (the one validation-slide rule),
choose_val_slides, select_labeled."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from lymph.data.errors import ConfigError
from lymph.data.store import PatchStore
from lymph.model.train import (
    TrainConfig,
    choose_val_slides,
    pick_val_slides,
    run,
    select_labeled,
)

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


def _pairs(n_tumor: int, n_normal: int) -> list[tuple[str, str]]:
    return [(f"t{i}", "tumor") for i in range(n_tumor)] + [
        (f"n{i}", "normal") for i in range(n_normal)
    ]


def test_pick_val_slides_takes_tumor_first_and_is_seeded() -> None:
    pairs = _pairs(3, 4)
    a = pick_val_slides(pairs, 3, rng=np.random.default_rng(5), keep_tumor=False)
    assert a == pick_val_slides(pairs, 3, rng=np.random.default_rng(5), keep_tumor=False)
    assert a == ["t0", "t1", "t2"] and a == sorted(a)  # all tumor slides before any normal one
    kept = pick_val_slides(pairs, 3, rng=np.random.default_rng(5), keep_tumor=True)
    assert sum(s.startswith("t") for s in kept) == 2  # one tumor slide stays outside
    assert sum(s.startswith("n") for s in kept) == 1
    assert pick_val_slides(pairs, 0, rng=np.random.default_rng(5), keep_tumor=True) == []


def test_pick_val_slides_keeps_the_last_tumor_slide_only_when_asked() -> None:
    pairs = _pairs(4, 1)
    picks = pick_val_slides(pairs, 4, rng=np.random.default_rng(0), keep_tumor=True)
    assert "n0" in picks and sum(s.startswith("t") for s in picks) == 3
    one_tumor = pick_val_slides(_pairs(1, 3), 1, rng=np.random.default_rng(0), keep_tumor=True)
    assert one_tumor[0].startswith("n")  # the only tumor slide stays outside validation
    assert pick_val_slides(_pairs(1, 3), 1, rng=np.random.default_rng(0), keep_tumor=False) == [
        "t0"
    ]


def test_pick_val_slides_draw_is_tumor_then_normal_permutation() -> None:
    rng = np.random.default_rng(11)
    tumor = [f"t{i}" for i in rng.permutation(3)]
    normal = [f"n{i}" for i in rng.permutation(4)]
    got = pick_val_slides(_pairs(3, 4), 4, rng=np.random.default_rng(11), keep_tumor=True)
    assert got == sorted(tumor[:2] + normal[:2])


def test_pick_val_slides_rejects_a_negative_count() -> None:
    with pytest.raises(ConfigError, match="integer >= 0, got -1"):
        pick_val_slides(_pairs(2, 2), -1, rng=np.random.default_rng(0), keep_tumor=False)


def test_pick_val_slides_rejects_a_count_that_is_not_an_integer() -> None:
    with pytest.raises(ConfigError, match="integer >= 0, got 1.5"):
        pick_val_slides(_pairs(2, 2), 1.5, rng=np.random.default_rng(0), keep_tumor=False)  # type: ignore[arg-type]


def test_pick_val_slides_rejects_a_bool_count() -> None:
    with pytest.raises(ConfigError, match="integer >= 0, got True"):
        pick_val_slides(_pairs(2, 2), True, rng=np.random.default_rng(0), keep_tumor=False)


def test_pick_val_slides_rejects_repeated_slide_ids() -> None:
    with pytest.raises(ConfigError, match=r"slide ids \['t0'\] are listed more than once"):
        pick_val_slides([("t0", "tumor"), ("t0", "tumor"), ("n0", "normal")], 1,
                        rng=np.random.default_rng(0), keep_tumor=False)  # fmt: skip


def test_pick_val_slides_rejects_more_than_there_are() -> None:
    with pytest.raises(ConfigError, match="5 validation slide.*of 4 slide.*no more"):
        pick_val_slides(_pairs(2, 2), 5, rng=np.random.default_rng(0), keep_tumor=False)


def test_pick_val_slides_keeps_one_slide_outside_when_asked() -> None:
    with pytest.raises(ConfigError, match="4 validation slide.*of 4 slide.*stay outside"):
        pick_val_slides(_pairs(2, 2), 4, rng=np.random.default_rng(0), keep_tumor=True)
