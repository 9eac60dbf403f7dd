"""TrainConfig: validation of every setting, parse_labeled, from_dict."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from lymph.data.errors import ConfigError
from lymph.model.augment import AugmentConfig
from lymph.model.checkpoint import load_run_record
from lymph.model.train import TrainConfig, parse_labeled

Cfg = Callable[..., TrainConfig]


@pytest.mark.parametrize(
    "value,match", [("0", ">= 1"), ("abc", "count N"), ("0%", "percentage"), ("150%", "percentage")]
)
def test_parse_labeled_refuses(value: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_labeled(value)


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"stage": "finetune"}, "exactly one of --init"),
        ({"stage": "pretrain", "from_scratch": True}, "are for --stage finetune"),
        ({"stage": "x"}, "stage must be"),
        ({"steps": 0}, "steps"),
        ({"lr": 0.0}, "lr"),
        ({"device": "tpu"}, "device"),
        ({"base_width": 0}, "base_width"),
        ({"threshold": 1.0}, "threshold"),
        ({"pretext": "jigsaw"}, "pretext must be one of"),
        ({"stage": "finetune", "from_scratch": True, "patience": 0}, "patience must be"),
        ({"threads": 0}, "threads must be"),
        ({"channels_per_group": 2}, "channels_per_group must be an integer >= 4"),
        ({"upsample": "nearest"}, "upsample"),
        ({"train_slide_ids": ["a"], "val_slide_ids": ["a", "b"]}, "both training and"),
    ],
)
def test_bad_config(
    tmp_path: Path, kw: dict, match: str, cfg: Cfg
) -> None:
    with pytest.raises(ConfigError, match=match):
        cfg(tmp_path, tmp_path, **kw)


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"stage": "finetune", "from_scratch": True, "labeled": "3%", "patience": 2,
         "train_slide_ids": ["t2", "t1"], "val_slide_ids": ("n1",), "norm": "group",
         "augment": AugmentConfig.none(), "select": "best_f1", "threads": 1},
        {"stage": "finetune", "init": "pre/last.pt", "labeled_patches": [["t1", 3], ["n1", 0]],
         "base_width": None, "depth": None, "stop_at": 3, "warmup_steps": 0},
    ],
)
def test_from_dict_inverts_to_dict(tmp_path: Path, kw: dict, cfg: Cfg) -> None:
    c = cfg(tmp_path / "s.zarr", tmp_path / "run", **kw)
    assert TrainConfig.from_dict(c.to_dict()) == c
    assert TrainConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c  # lists for tuples


def test_from_dict_reads_what_a_checkpoint_records(pretrained: Path) -> None:
    record = load_run_record(pretrained)
    config = TrainConfig.from_dict(record.settings)
    assert config.to_dict() == record.settings and config.steps == 4 and config.base_width == 4


@pytest.mark.parametrize(
    "data,match",
    [
        ({"store": "s", "out": "o", "colour": 1}, r"unknown TrainConfig keys \['colour'"),
        ({"store": "s"}, r"\['out'\] missing"),
        ({"store": "s", "out": "o", "augment": {"hue": 0.1, "blur": 1}}, "unknown AugmentConfig"),
        ({"store": "s", "out": "o", "augment": {"hue": 0.9}}, "hue must be in"),
    ],
)
def test_from_dict_refuses(data: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        TrainConfig.from_dict(data)


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"store": 3}, "store must be a path"),
        ({"init": 1.5, "stage": "finetune"}, "init must be a path"),
        ({"resume": "yes"}, "resume must be True or False"),
        ({"lr": "0.1"}, "lr must be > 0"),
        ({"grad_clip": True}, "grad_clip must be >= 0"),
        ({"threshold": None}, "threshold must be in"),
        ({"warmup_steps": 2.5}, "warmup_steps must be >= 0"),
        ({"stop_at": 1.0}, "stop_at must be an integer"),
        ({"device": None}, "device must be one of"),
        ({"augment": {"hue": 0.1}}, "augment must be an AugmentConfig"),
        ({"val_slide_ids": "t1"}, "val_slide_ids must be a list of slide ids"),
        ({"labeled_patches": [("t1",)]}, "labeled_patches must be"),
        ({"last_skip": 1}, "last_skip must be a bool"),
    ],
)
def test_every_value_is_validated(tmp_path: Path, kw: dict, match: str, cfg: Cfg) -> None:
    with pytest.raises(ConfigError, match=match):
        cfg(kw.pop("store", tmp_path), tmp_path, **kw)
