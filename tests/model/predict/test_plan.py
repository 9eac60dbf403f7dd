"""One slide's plan: the checkpoint it runs (a pretraining or incomplete one refused), the
slide level, tile sizes by norm, and torch threads."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from lymph.data.errors import CheckpointError, ConfigError
from lymph.model.checkpoint import save_checkpoint
from lymph.model.predict.config import BIG_TILE, PredictConfig
from lymph.model.predict.grid import fitted_tile
from lymph.model.predict.plan import (
    load_for_predict,
    plan_slide,
    resolve_threads,
    window_independent,
)
from lymph.model.predict.run import predict_slides
from lymph.model.predict.slide import predict_slide
from lymph.model.unet import UNet, UNetConfig


def test_window_independent_norms_get_large_tiles(world: Path, tmp_path: Path) -> None:
    from lymph.data.slides import ArraySlide

    assert window_independent(UNet(UNetConfig(base_width=4, depth=2, norm="batch")))
    assert not window_independent(UNet(UNetConfig(base_width=4, depth=2, norm="group")))
    assert not window_independent(torch.nn.Conv2d(3, 1, 1))  # says nothing: GroupNorm assumed
    bn = tmp_path / "bn.pt"
    save_checkpoint(bn, model=UNet(UNetConfig(base_width=4, depth=2, norm="batch")),
                    config={"store": {"patch_size": 60, "level": 0}, "stage": "finetune"})
    slide = ArraySlide(np.full((2048, 2048, 3), 200, np.uint8), path="s")
    config = PredictConfig(checkpoint=bn, out=tmp_path, device="cpu", progress=False)
    plan = plan_slide(slide, config, load_for_predict(config))
    assert plan.grid.mode == "crop" and 700 < plan.grid.window < BIG_TILE  # 3 tiles a side
    assert len(plan.grid.xs_lvl) == 3 and plan.grid.xs_lvl[-1] + plan.grid.stride >= 2048
    assert 0.95 * BIG_TILE < fitted_tile((100_000, 80_000), 60) <= BIG_TILE  # a real slide
    assert fitted_tile((40, 30), 60) == 60  # never below the training patch
    gn = plan_slide(slide, replace(config, checkpoint=world / "tiny.pt", level=0),
                    load_for_predict(replace(config, checkpoint=world / "tiny.pt", level=0)))
    assert gn.grid.window == 64  # GroupNorm: the training window (60 rounded up)


def test_threads_default_to_every_core_on_cpu(tmp_path: Path) -> None:
    import os


    config = PredictConfig(checkpoint=tmp_path / "c.pt", out=tmp_path)
    assert resolve_threads(config, torch.device("cpu")) == len(os.sched_getaffinity(0))
    assert resolve_threads(replace(config, threads=3), torch.device("cpu")) == 3
    assert resolve_threads(config, torch.device("cuda")) is None


def test_a_level_the_slide_lacks_is_refused(world: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="level 7 does not exist"):
        predict_slide(
            world / "slides" / "normal_n.tif",
            PredictConfig(
                checkpoint=world / "tiny.pt",
                out=tmp_path,
                level=7,
                device="cpu",
                progress=False,
            ),
        )


def test_missing_or_incomplete_checkpoint_stops_before_any_slide(
    world: Path, tmp_path: Path
) -> None:
    slides = [world / "slides" / "normal_n.tif"]
    with pytest.raises(CheckpointError, match="missing.pt"):
        predict_slides(slides, PredictConfig(checkpoint=tmp_path / "missing.pt", out=tmp_path))
    with pytest.raises(CheckpointError, match="no store level .* pass --level"):
        predict_slides(slides, PredictConfig(checkpoint=world / "nolevel.pt", out=tmp_path))
    assert not (tmp_path / "scores.csv").exists()


def test_a_pretraining_checkpoint_is_refused(world: Path, tmp_path: Path) -> None:
    model = UNet(UNetConfig(base_width=4, depth=2))
    pre = tmp_path / "pre.pt"
    save_checkpoint(pre, model=model,
                    config={"store": {"patch_size": 60, "level": 2}, "stage": "pretrain"})
    config = PredictConfig(checkpoint=pre, out=tmp_path / "out", device="cpu", progress=False)
    with pytest.raises(CheckpointError, match=r"pre.pt is a pretraining checkpoint, not a "
                                              r"fine-tuned one.*--stage finetune"):
        predict_slides([world / "slides" / "normal_n.tif"], config, progress=False)
    with pytest.raises(CheckpointError, match="pretraining checkpoint"):
        predict_slide(world / "slides" / "normal_n.tif", config)
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_that_records_no_stage_is_refused(world: Path, tmp_path: Path) -> None:
    """The one rule (``require_finetuned``) eval also applies: no stage, no trained head known."""
    model = UNet(UNetConfig(base_width=4, depth=2))
    bare = tmp_path / "bare.pt"
    save_checkpoint(bare, model=model, config={"store": {"patch_size": 60, "level": 2}})
    config = PredictConfig(checkpoint=bare, out=tmp_path / "out", device="cpu", progress=False)
    for predict in (lambda: predict_slides([world / "slides" / "normal_n.tif"], config,
                                           progress=False),
                    lambda: predict_slide(world / "slides" / "normal_n.tif", config)):
        with pytest.raises(CheckpointError, match=r"bare.pt records no stage, not a fine-tuned"):
            predict()
    assert not (tmp_path / "out").exists()
