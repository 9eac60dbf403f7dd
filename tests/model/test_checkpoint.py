from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lymph.data.errors import CheckpointError
from lymph.model.checkpoint import (
    check_architecture,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from lymph.model.unet import UNet, UNetConfig

CFG = UNetConfig(base_width=4, depth=2)


def _saved(tmp_path: Path, cfg: UNetConfig = CFG) -> tuple[Path, UNet]:
    torch.manual_seed(1)
    model = UNet(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    model(torch.rand(1, 3, 8, 8)).reconstruction.mean().backward()
    opt.step()
    sched.step()
    path = tmp_path / "run" / "last.pt"
    save_checkpoint(
        path,
        model=model,
        config={"store": {"patch_size": 300, "path": tmp_path}, "stage": "pretrain"},
        step=7,
        optimizer=opt,
        scheduler=sched,
        extra={"data": {"epoch": 1, "consumed": 5}},
    )
    return path, model


def test_round_trip_weights_only(tmp_path: Path) -> None:
    path, model = _saved(tmp_path)
    raw = torch.load(path, weights_only=True)  # no pickled objects
    assert raw["step"] == 7 and raw["extra"]["data"] == {"epoch": 1, "consumed": 5}
    assert raw["config"]["model"] == CFG.to_dict()
    assert raw["config"]["store"]["path"] == str(tmp_path)
    assert set(raw["versions"]) >= {"torch", "lymph"}
    assert raw["optimizer"]["state"] and raw["scheduler"]["last_epoch"] == 1
    loaded, ckpt = load_model(path)
    assert not loaded.training and loaded.config == CFG
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    assert ckpt["config"]["stage"] == "pretrain"
    assert not list(path.parent.glob("*.tmp"))  # atomic: no temporary left behind


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")


def test_corrupt_file(tmp_path: Path) -> None:
    path, _ = _saved(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated, as after a crash without atomic write
    with pytest.raises(CheckpointError, match="cannot be read.*corrupt"):
        load_checkpoint(path)


def test_garbage_file(tmp_path: Path) -> None:
    path = tmp_path / "x.pt"
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_model(path)


def test_not_a_lymph_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "sd.pt"
    torch.save(UNet(CFG).state_dict(), path)
    with pytest.raises(CheckpointError, match="not a lymph checkpoint"):
        load_checkpoint(path)


def test_pickled_object_refused(tmp_path: Path) -> None:
    path = tmp_path / "obj.pt"
    torch.save({"format": "lymph-checkpoint", "model": UNet(CFG)}, path)
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(path)


def test_other_architecture_refused_naming_the_key(tmp_path: Path) -> None:
    path, _ = _saved(tmp_path)
    with pytest.raises(CheckpointError, match=r"another architecture \(base_width: checkpoint 4"):
        load_model(path, expect=UNetConfig(base_width=8, depth=2))
    with pytest.raises(CheckpointError, match="last_skip"):
        check_architecture(CFG, UNetConfig(base_width=4, depth=2, last_skip=True), path=path)


def test_weights_not_matching_recorded_architecture(tmp_path: Path) -> None:
    path, _ = _saved(tmp_path)
    ckpt = torch.load(path, weights_only=True)
    ckpt["config"]["model"]["base_width"] = 8
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match="weights do not fit"):
        load_model(path)


def test_bad_model_settings_in_checkpoint(tmp_path: Path) -> None:
    path, _ = _saved(tmp_path)
    ckpt = torch.load(path, weights_only=True)
    ckpt["config"]["model"]["depth"] = 0
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match="bad UNet settings"):
        load_model(path)


def test_config_model_must_match(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="differs from the model"):
        save_checkpoint(
            tmp_path / "a.pt", model=UNet(CFG), config={"model": {**CFG.to_dict(), "depth": 3}}
        )


def test_unplain_config_refused(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"config.train.fn: builtin_function"):
        save_checkpoint(tmp_path / "a.pt", model=UNet(CFG), config={"train": {"fn": print}})
    assert not list(tmp_path.iterdir())
