"""run(TrainConfig) and `lymph train`: explicit slide roles, threads, the CLI."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from lymph.cli import main
from lymph.data.errors import ConfigError
from lymph.model.checkpoint import load_checkpoint, load_model
from lymph.model.train import TrainConfig, run
from lymph.model.unet import UNetConfig
from tests.builders import tiny_train_args

Cfg = Callable[..., TrainConfig]


def test_finetune_from_scratch_and_explicit_labeled(
    store: Path, tmp_path: Path, cfg: Cfg
) -> None:
    picks = [("t1", 0), ("t1", 1), ("n1", 5), ("n1", 6)]
    c = cfg(store, tmp_path / "b", stage="finetune", from_scratch=True, base_width=8, steps=2)
    roles = {"train_slide_ids": ("t1", "n1"), "val_slide_ids": ()}
    res = run(replace(c, **roles, labeled_patches=tuple(picks)), progress=False)
    assert res.best is None and res.steps == 2
    model, ckpt = load_model(res.last)
    assert model.config.base_width == 8
    assert ckpt.record.labeled == tuple(tuple(p) for p in sorted(picks))
    with pytest.raises(ConfigError, match="non-training slides"):
        run(replace(c, out=tmp_path / "c", train_slide_ids=("n1",), val_slide_ids=(),
                    labeled_patches=tuple(picks)), progress=False)  # fmt: skip


def test_threads_are_set_for_the_run_and_restored(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cfg: Cfg
) -> None:
    from lymph.model.train import runner
    from lymph.model.train.loop import LoopStats
    from lymph.model.train.session import Session

    seen: list[int] = []
    real = runner.train_loop

    def loop(s: Session, *, progress: bool) -> LoopStats:
        seen.append(torch.get_num_threads())
        return real(s, progress=progress)

    monkeypatch.setattr(runner, "train_loop", loop)
    before = torch.get_num_threads()
    want = 2 if before != 2 else 1
    run(cfg(store, tmp_path / "t", steps=1, threads=want), progress=False)
    assert seen == [want] and torch.get_num_threads() == before


def test_cli_train(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    args = tiny_train_args(store, out, steps=2)
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "pretrain: 2 steps" in res.output and (out / "last.pt").exists()
    before = (out / "last.pt").read_bytes()
    res = CliRunner().invoke(main, [*args, "--resume"])  # finished: say so, no fake rate
    assert res.exit_code == 0, res.output
    assert "nothing to train" in res.output and "already at step 2" in res.output
    assert "patches/s" not in res.output and (out / "last.pt").read_bytes() == before
    bad = CliRunner().invoke(
        main, [*args[:5], "--stage", "finetune", "--from-scratch", "--labeled", "x%"]
    )
    assert bad.exit_code == 2 and "--labeled" in bad.output
    bad = CliRunner().invoke(main, [*args[:5], "--stage", "finetune"])
    assert bad.exit_code == 2 and "--from-scratch" in bad.output


def test_cli_train_model_and_pretext_options(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    args = ["train", "--store", str(store), "--out", str(out), "--steps", "2", "--crop", "32",
            "--base-width", "8", "--depth", "2", "--workers", "0", "--device", "cpu", "--quiet",
            "--val-slides", "0", "--pretext", "inpaint", "--norm", "batch", "--upsample",
            "transpose", "--padding-mode", "zeros", "--channels-per-group", "4",
            "--threads", "1"]  # fmt: skip
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    ck = load_checkpoint(out / "last.pt")["config"]
    assert ck["model"] == {**UNetConfig(base_width=8, depth=2).to_dict(), "norm": "batch",
                           "upsample": "transpose", "padding_mode": "zeros",
                           "channels_per_group": 4}  # fmt: skip
    assert ck["train"]["pretext"] == "inpaint" and ck["train"]["threads"] == 1
    ft = tmp_path / "ft"
    res = CliRunner().invoke(main, ["train", "--store", str(store), "--out", str(ft),
                                    "--stage", "finetune", "--init", str(out / "last.pt"),
                                    "--labeled", "8", "--steps", "4", "--eval-every", "2",
                                    "--patience", "1", "--recon-weight", "0", "--crop", "32",
                                    "--workers", "0", "--quiet"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert load_checkpoint(ft / "last.pt")["config"]["train"]["patience"] == 1
    bad = CliRunner().invoke(main, [*args[:5], "--channels-per-group", "2"])
    assert bad.exit_code == 2 and "--channels-per-group" in bad.output
