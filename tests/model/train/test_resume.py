"""--resume: the same weights as an uninterrupted run, and what a resume refuses."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from lymph.data.errors import CheckpointError, ConfigError
from lymph.data.store import create_store, write_slide
from lymph.model.checkpoint import (
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from lymph.model.train import TrainConfig, run
from lymph.model.unet import UNet, UNetConfig
from tests.builders import tiny_train_args

Cfg = Callable[..., TrainConfig]

P = 36  # the conftest stores' patch size
ROOT = Path(__file__).resolve().parents[3]


def test_resume_equals_uninterrupted(
    store: Path, tmp_path: Path, cfg: Cfg
) -> None:
    c = cfg(
        store,
        tmp_path / "full",
        steps=6,
        checkpoint_every=3,
        stage="finetune",
        from_scratch=True,
        labeled=12,
    )
    full = run(c, progress=False)
    part = replace(c, out=tmp_path / "part", stop_at=3)
    first = run(part, progress=False)
    assert first.stopped and first.steps == 3
    assert load_checkpoint(first.last)["step"] == 3
    second = run(replace(part, stop_at=None, resume=True), progress=False)
    assert second.steps == 6 and not second.stopped
    a, _ = load_model(full.last)
    b, _ = load_model(second.last)
    for k, v in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[k], v, rtol=1e-5, atol=1e-6, msg=k)
    ca, cb = load_checkpoint(full.last), load_checkpoint(second.last)
    assert ca["extra"]["best_f1"] == pytest.approx(cb["extra"]["best_f1"])
    steps = [
        json.loads(x)["step"] for x in (tmp_path / "part/metrics.jsonl").read_text().splitlines()
    ]
    full_steps = [
        json.loads(x)["step"] for x in (tmp_path / "full/metrics.jsonl").read_text().splitlines()
    ]
    assert steps == full_steps


def test_resume_refuses_other_architecture(
    store: Path, pretrained: Path, tmp_path: Path, cfg: Cfg
) -> None:
    out = tmp_path / "r"
    out.mkdir()
    ckpt = load_checkpoint(pretrained)
    ckpt["config"]["model"]["base_width"] = 8
    save_checkpoint(
        out / "last.pt",
        model=UNet(UNetConfig(base_width=8, depth=2)),
        config=ckpt["config"],
        step=2,
        extra=ckpt["extra"],
    )
    with pytest.raises(CheckpointError, match=r"another architecture \(base_width"):
        run(cfg(store, out, resume=True), progress=False)


def test_resume_needs_last_and_existing_run_needs_resume(
    store: Path, pretrained: Path, tmp_path: Path, cfg: Cfg
) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        run(cfg(store, tmp_path / "none", resume=True), progress=False)
    with pytest.raises(ConfigError, match="already holds a run"):
        run(cfg(store, pretrained.parent), progress=False)


def test_kill_9_then_resume(
    store: Path, tmp_path: Path, cfg: Cfg
) -> None:
    out = tmp_path / "killed"
    args = [
        sys.executable,
        "-m",
        "lymph.cli",
        *tiny_train_args(
            store, out, steps=400, extra=("--checkpoint-every", "3", "--eval-every", "1000")
        ),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    deadline = time.time() + 180
    while time.time() < deadline and not (out / "last.pt").exists():
        time.sleep(0.1)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    step = load_checkpoint(out / "last.pt")["step"]  # intact: written atomically
    assert 3 <= step < 400 and step % 3 == 0
    res = run(
        cfg(
            store,
            out,
            steps=400,
            batch_size=2,
            checkpoint_every=3,
            eval_every=1000,
            val_slides=0,
            stop_at=step + 3,
            resume=True,
            lr=1e-3,  # the CLI's defaults: a resume must repeat the run's settings
            log_every=10,
            val_patches=64,
        ),
        progress=False,
    )
    assert res.steps == step + 3
    assert not list(out.glob(".*.tmp"))


def test_resume_refuses_another_store(
    store: Path, pretrained: Path, tmp_path: Path, cfg: Cfg,
    tiny_slide: Callable[..., dict[str, np.ndarray]],
) -> None:
    other = tmp_path / "other.zarr"
    create_store(other, {"patch_size": P, "level": 2, "seed": 0})
    rng = np.random.default_rng(1)
    for sid in ("t1", "t2", "n1", "u1"):
        write_slide(other, sid, attrs={"status": "unlabeled"}, **{
            k: v for k, v in tiny_slide(rng, 8, False).items() if k in ("images", "coords")})
    out = tmp_path / "run"
    out.mkdir()
    (out / "last.pt").write_bytes(pretrained.read_bytes())
    with pytest.raises(CheckpointError, match=r"trained on the store .*level 0 -> 2.*--store"):
        run(cfg(other, out, resume=True), progress=False)
    assert not (out / "config.json").exists()  # nothing rewritten to claim the other store


@pytest.mark.slow  # over 5 s (make test-all runs it)
def test_resume_refuses_another_setting_and_records_allowed_changes(
    store: Path, tmp_path: Path, cfg: Cfg
) -> None:
    c = cfg(store, tmp_path / "run", steps=6, checkpoint_every=3, stop_at=3)
    run(c, progress=False)
    before = (tmp_path / "run/config.json").read_text()
    with pytest.raises(CheckpointError, match=r"other settings \(lr: checkpoint 0\.003, now 5"):
        run(replace(c, stop_at=None, resume=True, lr=5.0), progress=False)
    with pytest.raises(CheckpointError, match=r"steps: checkpoint 6, now 9.*may change"):
        run(replace(c, stop_at=None, resume=True, steps=9), progress=False)
    assert (tmp_path / "run/config.json").read_text() == before
    with pytest.warns(UserWarning, match="another process layout or batch size"):
        res = run(replace(c, stop_at=None, resume=True, batch_size=2), progress=False)
    assert res.steps == 6
    rec = load_checkpoint(res.last)["config"]
    assert rec["resumes"] == [{"step": 3, "changed": {"batch_size": [4, 2]}}]
    assert rec["train"]["batch_size"] == 2


def test_early_stopping_counter_survives_resume(
    store: Path, tmp_path: Path, cfg: Cfg
) -> None:
    c = cfg(store, tmp_path / "full", stage="finetune", from_scratch=True, labeled=8, steps=40,
            eval_every=2, checkpoint_every=100, patience=3, lr=1e-12, norm="group")  # fmt: skip
    full = run(c, progress=False)
    assert full.early_stopped and full.stopped_step == 8
    part = replace(c, out=tmp_path / "part", stop_at=5)
    assert run(part, progress=False).stopped
    resumed = run(replace(part, stop_at=None, resume=True), progress=False)
    assert resumed.early_stopped and (resumed.stopped_step, resumed.best_step) == (8, 2)


def _unlabeled_store(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    create_store(path, {"patch_size": P, "level": 0, "seed": 0})
    for sid in ("u1", "u2"):
        write_slide(path, sid, images=rng.integers(0, 256, (20, P, P, 3), dtype=np.uint8),
                    coords=np.zeros((20, 2), np.int64), attrs={"status": "unlabeled"})
    return path


def test_resume_refuses_a_store_whose_content_changed(tmp_path: Path, cfg: Cfg) -> None:
    store = _unlabeled_store(tmp_path / "store.zarr", seed=0)
    config = cfg(store, tmp_path / "run", lr=1e-3, stop_at=2)
    run(config, progress=False)
    assert load_checkpoint(tmp_path / "run/last.pt")["config"]["store"]["content_digest"]
    shutil.rmtree(store)
    _unlabeled_store(store, seed=1)  # same path, same settings, other patches
    with pytest.raises(CheckpointError, match=r"--resume: .*last.pt was trained on other "
                                              r"content of the store .*re-extracted or slides "
                                              r"redone since"):
        run(replace(config, stop_at=None, resume=True), progress=False)
