from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lymph.data.errors import CheckpointError
from lymph.model.checkpoint import (
    RunRecord,
    check_architecture,
    load_checkpoint,
    load_model,
    load_run_record,
    read_checkpoint,
    require_finetuned,
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
    assert ckpt.record.stage == "pretrain" and ckpt.step == 7
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


def _flip_a_weight_byte(path: Path) -> str:
    """Flip one byte inside the largest tensor's stored bytes; the member's name."""
    import struct
    import zipfile

    with zipfile.ZipFile(path) as archive:
        info = max((i for i in archive.infolist() if "/data/" in i.filename),
                   key=lambda i: i.file_size)
    data = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26:
                                                    info.header_offset + 30])
    data[info.header_offset + 30 + name_len + extra_len + info.file_size // 2] ^= 0x01
    path.write_bytes(bytes(data))
    return info.filename


def test_a_flipped_weight_byte_is_caught_by_its_crc(tmp_path: Path) -> None:
    """torch.load would read it as a silently different model."""
    path, _ = _saved(tmp_path)
    member = _flip_a_weight_byte(path)
    with pytest.raises(CheckpointError, match=rf"checkpoint .*last\.pt is damaged: its part "
                                              rf"'{member}' fails its CRC-32 check.*copy it again"):
        load_model(path)


def test_a_checkpoint_written_without_crcs_still_loads(tmp_path: Path) -> None:
    config = pytest.importorskip("torch.utils.serialization").config
    with config.patch({"save.compute_crc32": False}):  # torch's own switch (torch >= 2.5)
        path, model = _saved(tmp_path)
    loaded, _ = load_model(path)
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())


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


def _with_config(tmp_path: Path, config: dict, name: str = "c.pt") -> Path:
    """A checkpoint whose recorded config is ``config`` as given (torch.save, bypassing the
    writer's own checks), as an edited or foreign file would be."""
    path, _ = _saved(tmp_path)
    raw = torch.load(path, weights_only=True)
    raw["config"] = {"model": CFG.to_dict(), **config}
    out = tmp_path / name
    torch.save(raw, out)
    return out


def test_run_record_round_trip_and_readers(tmp_path: Path) -> None:
    path, _ = _saved(tmp_path)
    record = load_run_record(path)
    assert record.stage == "pretrain" and record.model == CFG
    assert record.store is not None and record.store.patch_size == 300
    assert RunRecord.from_dict(record.to_dict()) == record
    full = {
        "model": CFG.to_dict(), "stage": "finetune",
        "store": {"path": "/s.zarr", "schema_version": 1, "level": 2, "patch_size": 128,
                  "mpp": 0.97, "seed": 0},
        "train": {"seed": 3, "lr": 0.001}, "stream": {"crop": 96},
        "splits": {"train": ["a", "b"], "val": ["c"]}, "labeled": [["a", 1], ["b", 2]],
        "init": {"path": "pre.pt", "step": 4, "stage": "pretrain"}, "extra_key": 1,
    }  # fmt: skip
    rec = RunRecord.from_dict(full)
    assert rec.to_dict() == full
    assert rec.seed == 3 and rec.train_slides == ("a", "b") and rec.val_slides == ("c",)
    assert rec.store is not None and (rec.store.level, rec.store.mpp) == (2, 0.97)
    assert require_finetuned(rec, path="x.pt") is rec
    with pytest.raises(CheckpointError, match=r"x\.pt is a pretraining checkpoint.*finetune"):
        require_finetuned(record, path="x.pt")
    with pytest.raises(CheckpointError, match=r"x\.pt records no stage, not a fine-tuned one"):
        require_finetuned(RunRecord(model=CFG), path="x.pt")


@pytest.mark.parametrize(
    "config,match",
    [
        ({"store": {"patch_size": "abc"}}, r"store\.patch_size is 'abc', expected an integer >= 1"),
        ({"store": {"level": -3}}, r"config\.store\.level is -3, expected an integer >= 0"),
        ({"store": {"mpp": 0}}, r"config\.store\.mpp is 0"),
        ({"store": "s.zarr"}, r"config\.store is 'str'"),
        ({"stage": 5}, r"config\.stage is 5"),
        ({"splits": {"train": "ab"}}, r"config\.splits\.train is 'ab'"),
        ({"labeled": [["a", "x"]]}, r"config\.labeled"),
        ({"train": {"seed": -1}}, r"config\.train\.seed is -1"),
    ],
)
def test_malformed_record_is_refused_by_name(tmp_path: Path, config: dict, match: str) -> None:
    path = _with_config(tmp_path, config)
    for read in (load_checkpoint, load_run_record, load_model):
        with pytest.raises(CheckpointError, match=match) as err:
            read(path)
        assert str(path) in str(err.value) and "lymph train" in str(err.value)


def test_read_checkpoint_gives_the_record_and_the_state_a_run_resumes(tmp_path: Path) -> None:
    path, model = _saved(tmp_path)
    ckpt = read_checkpoint(path)
    assert ckpt.path == path and ckpt.step == 7 and ckpt.record == load_run_record(path)
    assert ckpt.extra == {"data": {"epoch": 1, "consumed": 5}}
    assert isinstance(ckpt.weights, dict) and set(ckpt.weights) == set(model.state_dict())
    assert ckpt.optimizer is not None and ckpt.scheduler is not None
    raw = torch.load(path, weights_only=False)
    raw["step"] = "seven"
    torch.save(raw, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=r"bad\.pt: step is 'seven', expected an integer"):
        read_checkpoint(tmp_path / "bad.pt")
