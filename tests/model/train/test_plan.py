"""What a run decides before its first step: architecture from --init, crop, refused stores."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import zarr

from lymph.data.errors import CheckpointError, ConfigError, StoreError
from lymph.data.store import create_store
from lymph.model.checkpoint import load_checkpoint, load_model
from lymph.model.train import TrainConfig, run

Cfg = Callable[..., TrainConfig]
MakeStore = Callable[..., Path]

P = 36  # the conftest stores' patch size


def test_finetune_from_init_inherits_architecture(
    store: Path, pretrained: Path, tmp_path: Path, cfg: Cfg
) -> None:
    c = cfg(
        store,
        tmp_path / "ft",
        stage="finetune",
        init=pretrained,
        labeled=10,
        base_width=None,
        depth=None,
    )
    res = run(c, progress=False)
    assert res.best is not None and res.best_f1 is not None and 0 <= res.best_f1 <= 1
    model, ckpt = load_model(res.last)
    assert model.config.base_width == 4 and model.config.depth == 2
    lab = json.loads((tmp_path / "ft" / "labeled.json").read_text())
    assert lab["n"] == 10 and lab["n_tumor"] == 5
    assert not {s for s, _ in lab["patches"]} & set(lab["val_slides"])
    assert set(lab["val_slides"]) <= {"t1", "t2"}  # validation slides with tumor
    assert ckpt.record.init is not None and ckpt.record.init["path"] == str(pretrained)
    best_ckpt = load_checkpoint(res.best)
    assert best_ckpt["extra"]["best_f1"] == res.best_f1
    recs = [json.loads(x) for x in (tmp_path / "ft" / "metrics.jsonl").read_text().splitlines()]
    assert {"bce", "dice", "recon"} <= set(recs[0]) and any("f1" in r for r in recs)


def test_finetune_from_init_refuses_other_architecture_options(
    store: Path, pretrained: Path, tmp_path: Path, cfg: Cfg
) -> None:
    c = cfg(store, tmp_path / "ft", stage="finetune", init=pretrained, base_width=8)
    with pytest.raises(ConfigError, match="inherits the architecture.*base_width: asked 8"):
        run(c, progress=False)


def test_corrupt_init_checkpoint(
    store: Path, tmp_path: Path, cfg: Cfg
) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="cannot be read"):
        run(
            cfg(store, tmp_path / "x", stage="finetune", init=bad, base_width=None, depth=None),
            progress=False,
        )


def test_store_of_another_schema_version(
    tmp_path: Path, cfg: Cfg, make_tiny_store: MakeStore
) -> None:
    path = make_tiny_store(tmp_path / "s.zarr", {"a": "tumor"}, n=8)
    g = zarr.open_group(str(path), mode="r+")
    g.attrs["lymph"] = {**g.attrs["lymph"], "schema_version": 99}
    with pytest.raises(StoreError, match="schema version 99"):
        run(cfg(path, tmp_path / "run"), progress=False)


def test_empty_store(
    tmp_path: Path, cfg: Cfg
) -> None:
    create_store(tmp_path / "e.zarr", {"patch_size": P, "level": 0})
    with pytest.raises(StoreError, match="no complete slide"):
        run(cfg(tmp_path / "e.zarr", tmp_path / "run"), progress=False)


def test_finetune_on_a_store_without_labels(
    tmp_path: Path, cfg: Cfg, make_tiny_store: MakeStore
) -> None:
    path = make_tiny_store(tmp_path / "u.zarr", {"u1": "unlabeled", "u2": "unlabeled"}, n=8)
    with pytest.raises(StoreError, match="no labeled"):
        run(cfg(path, tmp_path / "run", stage="finetune", from_scratch=True), progress=False)


def test_crop_must_fit_the_model_and_the_patches(
    store: Path, tmp_path: Path, cfg: Cfg
) -> None:
    with pytest.raises(ConfigError, match="multiple of 4"):
        run(cfg(store, tmp_path / "a", crop=30), progress=False)
    with pytest.raises(ConfigError, match="patch size 36"):
        run(cfg(store, tmp_path / "b", crop=40), progress=False)
