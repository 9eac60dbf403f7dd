"""Validation during training: best.pt, select, early stopping."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from lymph.data.errors import ConfigError
from lymph.model.checkpoint import (
    load_checkpoint,
)
from lymph.model.train import TrainConfig, run

Cfg = Callable[..., TrainConfig]


def test_early_stopping_on_validation_f1(
    store: Path, tmp_path: Path, cfg: Cfg
) -> None:
    # lr ~ 0 and GroupNorm (no running statistics): the validation F1 never improves after
    # the first evaluation
    c = cfg(store, tmp_path / "es", stage="finetune", from_scratch=True, labeled=8, steps=40,
            eval_every=2, checkpoint_every=100, patience=2, lr=1e-12, norm="group")  # fmt: skip
    res = run(c, progress=False)
    assert res.early_stopped and not res.stopped
    assert (res.best_step, res.stopped_step, res.steps) == (2, 6, 6)
    assert res.best_f1 is not None
    assert load_checkpoint(res.best)["step"] == 2
    last = load_checkpoint(res.last)
    assert last["step"] == 6 and last["extra"]["evals_since_best"] == 2
    recs = [json.loads(x) for x in (tmp_path / "es/metrics.jsonl").read_text().splitlines()]
    assert recs[-1] == {"kind": "early_stop", "step": 6, "best_step": 2,
                        "best_f1": res.best_f1}  # fmt: skip
    with pytest.raises(ConfigError, match="patience needs validation slides"):
        run(replace(c, out=tmp_path / "x", val_slides=0), progress=False)
    with pytest.raises(ConfigError, match="patience .* is for --stage finetune"):
        cfg(store, tmp_path / "y", patience=3)


def test_min_steps_keeps_early_stopping_off_until_that_step(
    store: Path, tmp_path: Path, cfg: Cfg
) -> None:
    """The same flat run as above stops at 6 without min_steps; with min_steps=10 patience is
    already spent at 6 but the run goes on to the first validation at or after step 10."""
    c = cfg(store, tmp_path / "ms", stage="finetune", from_scratch=True, labeled=8, steps=40,
            eval_every=2, checkpoint_every=100, patience=2, lr=1e-12, norm="group",
            min_steps=10)  # fmt: skip
    res = run(c, progress=False)
    assert res.early_stopped and (res.best_step, res.stopped_step) == (2, 10)
    with pytest.raises(ConfigError, match="min_steps must be an integer >= 0"):
        replace(c, min_steps=-1)


def test_select_best_f1_follows_the_calibration_free_f1(
    store: Path, tmp_path: Path, cfg: Cfg
) -> None:
    c = cfg(store, tmp_path / "sel", stage="finetune", from_scratch=True, labeled=8, steps=6,
            eval_every=2, checkpoint_every=100, select="best_f1")  # fmt: skip
    res = run(c, progress=False)
    recs = [json.loads(x) for x in (tmp_path / "sel/metrics.jsonl").read_text().splitlines()]
    vals = [r for r in recs if r["kind"] == "val"]
    assert len(vals) == 3
    for v in vals:  # the grid's best F1 is at least the F1 at the fixed threshold's grid point
        assert 0 <= v["best_f1"] <= 1 and 0 <= v["ap"] <= 1 and 0 <= v["best_threshold"] <= 1
    best = max(vals, key=lambda v: v["best_f1"])  # first of the ties, as the loop keeps it
    assert res.best_f1 == best["best_f1"] and res.best_step == best["step"]
    with pytest.raises(ConfigError, match="select must be one of"):
        cfg(store, tmp_path / "bad", select="loss")
