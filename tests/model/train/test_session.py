"""The run folder: its files, and one-line errors when it cannot be written."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from lymph.cli import main
from lymph.data.errors import OutputError
from lymph.model.checkpoint import (
    load_checkpoint,
    load_model,
    load_run_record,
)
from lymph.model.train import TrainConfig, run
from lymph.model.unet import UNetConfig

Cfg = Callable[..., TrainConfig]

P = 36  # the conftest stores' patch size


def test_pretrain_run_folder(pretrained: Path) -> None:
    run = pretrained.parent
    for name in ("last.pt", "metrics.jsonl", "config.json", "loss.png"):
        assert (run / name).is_file(), name
    model, _ = load_model(pretrained)
    assert model.config == UNetConfig(base_width=4, depth=2, last_skip=False)
    ckpt = load_checkpoint(pretrained)  # the file as written
    c = ckpt["config"]
    assert c["stage"] == "pretrain" and c["store"]["patch_size"] == P
    record = load_run_record(pretrained)  # the typed view every reader uses
    assert record.stage == "pretrain" and record.store is not None
    assert (record.store.patch_size, record.store.level) == (P, 0)
    assert record.seed == 0 and record.settings["steps"] == 4 and record.versions
    run_cfg = json.loads((run / "config.json").read_text())  # the precision asked and used
    assert run_cfg["precision_used"] in ("fp32", "bf16")
    assert record.settings["precision"] == "auto" and ckpt["extra"]["precision_used"] == run_cfg[
        "precision_used"]
    assert record.val_slides == tuple(c["splits"]["val"]) and record.labeled == ()
    assert c["train"]["seed"] == 0 and c["stream"]["augment"]["hue"] == 0.04
    assert ckpt["step"] == 4 and ckpt["extra"]["data"]["batches"] == 4
    assert ckpt["optimizer"] is not None and ckpt["scheduler"] is not None
    val = c["splits"]["val"]
    assert len(val) == 1 and val[0] not in c["splits"]["train"]
    assert "u1" in c["splits"]["train"]  # pretraining also uses unlabeled slides
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3, 4]
    assert all("recon_mse" in r for r in records if r["kind"] == "val")
    assert not (run / "best.pt").exists()


def test_read_only_out_is_one_line_error(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cfg: Cfg
) -> None:
    import errno

    ro = tmp_path / "ro"
    real_mkdir = Path.mkdir

    def mkdir(self: Path, *a: object, **kw: object) -> None:
        if self == ro or ro in self.parents:
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        real_mkdir(self, *a, **kw)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    with pytest.raises(OutputError, match=r"cannot write .*ro/run.*not writable.*another --out"):
        run(cfg(store, ro / "run"), progress=False)
    res = CliRunner().invoke(main, ["train", "--store", str(store), "--out", str(ro / "run"),
                                    "--steps", "2", "--crop", "32", "--base-width", "4",
                                    "--depth", "2", "--workers", "0", "--quiet"])  # fmt: skip
    assert res.exit_code == 1 and res.output.startswith("Error: cannot write"), res.output
    assert len(res.output.strip().splitlines()) == 1


def test_disk_full_during_training_keeps_what_was_written(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cfg: Cfg
) -> None:
    import errno

    import lymph.model.checkpoint as ck

    saves: list[Path] = []
    real_save = torch.save

    def save(obj: object, f: object, *a: object, **kw: object) -> None:
        saves.append(Path(str(f)))
        if len(saves) == 2:  # the second last.pt (step 4): the disk is full
            Path(str(f)).write_bytes(b"half a checkpoint")
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(obj, f, *a, **kw)

    monkeypatch.setattr(ck.torch, "save", save)
    out = tmp_path / "full"
    with pytest.raises(OutputError, match=r"cannot write .*last\.pt: the disk is full"):
        run(cfg(store, out, steps=6, checkpoint_every=2, eval_every=100), progress=False)
    monkeypatch.undo()
    assert load_checkpoint(out / "last.pt")["step"] == 2  # the previous one, intact
    assert json.loads((out / "config.json").read_text())["stage"] == "pretrain"
    assert not list(out.glob(".*.tmp"))
    res = run(cfg(store, out, steps=6, checkpoint_every=2, eval_every=100, resume=True),
                progress=False)  # fmt: skip
    assert res.steps == 6


def test_resume_keeps_the_log_through_damaged_lines(tmp_path: Path) -> None:
    """A killed run's torn last line is dropped quietly; a line damaged on disk (bytes that
    are not UTF-8, a record that is not an object) is dropped with a warning naming the
    file and the lines, never a traceback that stops the resume."""
    from lymph.model.train.session import truncate_metrics

    log = tmp_path / "metrics.jsonl"
    rows = [json.dumps({"kind": "train", "step": s, "loss": 1.0}).encode() for s in (1, 2, 3, 4)]
    log.write_bytes(b"\n".join([rows[0], b"\xff\xfe" + rows[1], b"7", rows[2], rows[3],
                                b'{"kind": "tr']))
    with pytest.warns(UserWarning, match=r"metrics\.jsonl: 2 line\(s\) are not a record "
                                         r"\(damaged; lines \[2, 3\]\)"):
        truncate_metrics(log, 3)
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 3]
    log.write_bytes(rows[0] + b"\n" + b'{"kind": "tr')  # only a torn last line: no warning
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        truncate_metrics(log, 3)
    assert log.read_text().splitlines() == [rows[0].decode()]
