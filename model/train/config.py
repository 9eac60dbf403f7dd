"""`TrainConfig`: every setting of a training run, validated when it is made; what a run
records of it (``to_dict``) reads back with ``TrainConfig.from_dict``."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from lymph.data.errors import ConfigError
from lymph.model.augment import PRETEXTS, AugmentConfig
from lymph.model.infer import DEVICES
from lymph.model.precision import check_precision
from lymph.model.unet import UNetConfig

STAGES = ("pretrain", "finetune")
ARCH_KEYS = ("base_width", "depth", "last_skip", "norm", "upsample", "padding_mode",
             "channels_per_group")  # fmt: skip
# What best.pt and --patience follow: "f1" at --threshold, or "best_f1", the F1 at the
# F1-best threshold of a 101-step grid on the validation pixels (calibration-free: early in a
# fine-tune the probabilities sit near 0.5, and F1 at a fixed 0.5 scores that, not the features).
SELECT = ("f1", "best_f1")
_POSITIVE = ("steps", "batch_size", "crop", "val_patches", "checkpoint_every", "eval_every",
             "log_every", "window_chunks")  # fmt: skip
_NON_NEGATIVE = ("min_steps", "val_slides", "workers", "seed")
_OPTIONAL_POSITIVE = ("patience", "threads", "stop_at")


def parse_labeled(value: int | str | None) -> int | str | None:
    """``200`` -> 200, ``"200"`` -> 200, ``"3%"`` -> "3%"; ConfigError otherwise."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ConfigError(f"labeled must be a count N or a percentage 'P%', got {value!r}")
    if isinstance(value, int | np.integer):
        if value < 1:
            raise ConfigError(f"labeled must be >= 1 patch, got {value}")
        return int(value)
    text = str(value).strip()
    try:
        number = float(text[:-1]) if text.endswith("%") else int(text)
    except ValueError:
        raise ConfigError(
            f"labeled must be a count N (e.g. 200) or a percentage P% (e.g. 3%), got {value!r}"
        ) from None
    if isinstance(number, int):
        return parse_labeled(number)
    if not 0 < number <= 100:
        raise ConfigError(f"labeled percentage must be in (0, 100], got {text!r}")
    return f"{number:g}%"


def _slide_ids(value: object, name: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    ids = None if isinstance(value, str) or not isinstance(value, Iterable) else tuple(value)
    if ids is None or not all(isinstance(s, str) for s in ids):
        raise ConfigError(f"{name} must be a list of slide ids, got {value!r}")
    return tuple(sorted(ids))


def _patch_list(value: object) -> tuple[tuple[str, int], ...] | None:
    if value is None:
        return None
    try:
        if not isinstance(value, Iterable):
            raise TypeError(value)
        picks = tuple(sorted((str(s), int(i)) for s, i in value))
    except (TypeError, ValueError):
        raise ConfigError(
            f"labeled_patches must be (slide_id, patch index) pairs, got {value!r}"
        ) from None
    if not picks:
        raise ConfigError("labeled= is an empty list")
    return picks


def _path(value: object, name: str) -> Path:
    if not isinstance(value, str | os.PathLike):
        raise ConfigError(f"{name} must be a path, got {value!r}")
    return Path(value)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run; all of it lands in config.json and the checkpoints.

    Architecture (``ARCH_KEYS``: base_width, depth, last_skip, norm, upsample, padding_mode,
    channels_per_group): None means UNetConfig's default for pretrain and --from-scratch, and
    the --init checkpoint's for fine-tuning (a value that differs from it is refused).

    ``patience``: early stopping after that many validations without a better F1 (finetune);
    ``min_steps``: early stopping never ends a run before this step (a run's first validations
    are noisy: a best F1 at step 100 would otherwise stop a run at 100 + patience x eval_every);
    ``threads``: torch intra-op threads for the run (set, then restored).

    Slide roles: ``val_slide_ids`` names the validation slides (else ``val_slides`` of them are
    drawn, seeded); ``train_slide_ids`` restricts which slides' patches may be trained on (else
    every other slide: labeled ones for finetune, all for pretrain); ``labeled_patches`` gives
    the labeled set explicitly (else ``labeled`` draws it, class-balanced).
    """

    store: Path
    out: Path
    stage: str = "pretrain"
    init: Path | None = None
    from_scratch: bool = False
    labeled: int | str | None = 200
    steps: int = 1000
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int | None = None  # None: min(100, steps // 10)
    grad_clip: float = 1.0
    recon_weight: float = 1.0
    base_width: int | None = None
    depth: int | None = None
    last_skip: bool | None = None
    norm: str | None = None
    crop: int = 256
    val_slides: int = 1
    val_patches: int = 64
    threshold: float = 0.5
    seed: int = 0
    device: str = "auto"
    workers: int = 2
    checkpoint_every: int = 200
    eval_every: int = 200
    log_every: int = 10
    resume: bool = False
    window_chunks: int = 8
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    stop_at: int | None = None  # stop (checkpointed, resumable) at this step: job time slots
    train_slide_ids: tuple[str, ...] | None = None
    val_slide_ids: tuple[str, ...] | None = None
    labeled_patches: tuple[tuple[str, int], ...] | None = None
    upsample: str | None = None
    padding_mode: str | None = None
    channels_per_group: int | None = None
    pretext: str = "identity"
    patience: int | None = None
    min_steps: int = 0
    threads: int | None = None
    select: str = "f1"
    precision: str = "auto"  # lymph.model.precision: bf16 autocast on CUDA and AMX CPUs

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "store", _path(self.store, "store"))
        set_(self, "out", _path(self.out, "out"))
        if self.init is not None:
            set_(self, "init", _path(self.init, "init"))
        set_(self, "labeled", parse_labeled(self.labeled) if self.stage == "finetune" else None)
        set_(self, "train_slide_ids", _slide_ids(self.train_slide_ids, "train_slide_ids"))
        set_(self, "val_slide_ids", _slide_ids(self.val_slide_ids, "val_slide_ids"))
        set_(self, "labeled_patches", _patch_list(self.labeled_patches))
        self._check_stage()
        self._check_numbers()
        self._check_choices()
        if self.train_slide_ids is not None and self.val_slide_ids is not None:
            overlap = sorted(set(self.train_slide_ids) & set(self.val_slide_ids))
            if overlap:
                raise ConfigError(f"slides {overlap} are both training and validation slides")
        UNetConfig(**self.architecture)  # validates the architecture options given

    def _check_stage(self) -> None:
        if self.stage not in STAGES:
            raise ConfigError(f"stage must be one of {STAGES}, got {self.stage!r}")
        for name in ("from_scratch", "resume"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.stage == "finetune":
            if (self.init is None) == (not self.from_scratch):
                raise ConfigError(
                    "finetune needs exactly one of --init CKPT (a pretrain checkpoint) or "
                    "--from-scratch (the baseline)"
                )
            if self.labeled is None and self.labeled_patches is None:
                raise ConfigError("finetune needs --labeled N or P%")
        elif self.init is not None or self.from_scratch:
            raise ConfigError(
                "--init / --from-scratch are for --stage finetune; continue a pretraining "
                "with --resume"
            )
        if self.patience is not None and self.stage != "finetune":
            raise ConfigError(
                "patience (early stopping on validation F1) is for --stage finetune; pretraining "
                "runs its --steps"
            )

    def _check_numbers(self) -> None:
        for name in _POSITIVE:
            v = getattr(self, name)
            if not _is_int(v) or v < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {v!r}")
        for name in _NON_NEGATIVE:
            v = getattr(self, name)
            if not _is_int(v) or v < 0:
                raise ConfigError(f"{name} must be an integer >= 0, got {v!r}")
        for name in _OPTIONAL_POSITIVE:
            v = getattr(self, name)
            if v is not None and (not _is_int(v) or v < 1):
                raise ConfigError(f"{name} must be an integer >= 1 (or unset), got {v!r}")
        w = self.warmup_steps
        if w is not None and (not _is_int(w) or w < 0):
            raise ConfigError(f"warmup_steps must be >= 0, got {w!r}")
        if not (_is_number(self.lr) and self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        for name in ("weight_decay", "recon_weight", "grad_clip"):
            v = getattr(self, name)
            if not (_is_number(v) and v >= 0 and math.isfinite(v)):
                raise ConfigError(f"{name} must be >= 0, got {v}")
        if not (_is_number(self.threshold) and 0 < self.threshold < 1):
            raise ConfigError(f"threshold must be in (0, 1), got {self.threshold}")

    def _check_choices(self) -> None:
        if not isinstance(self.device, str) or self.device.split(":")[0] not in DEVICES:
            raise ConfigError(f"device must be one of {DEVICES}, got {self.device!r}")
        if self.pretext not in PRETEXTS:
            raise ConfigError(f"pretext must be one of {PRETEXTS}, got {self.pretext!r}")
        if self.select not in SELECT:
            raise ConfigError(f"select must be one of {SELECT}, got {self.select!r}")
        check_precision(self.precision)
        if not isinstance(self.augment, AugmentConfig):
            raise ConfigError(f"augment must be an AugmentConfig, got {self.augment!r}")

    @property
    def warmup(self) -> int:
        return min(100, self.steps // 10) if self.warmup_steps is None else self.warmup_steps

    @property
    def architecture(self) -> dict[str, Any]:
        """The architecture options given (None ones left out)."""
        return {k: getattr(self, k) for k in ARCH_KEYS if getattr(self, k) is not None}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["augment"] = self.augment.to_dict()
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """The inverse of ``to_dict``, also of what a checkpoint records as its run's settings
        (``RunRecord.settings``: lists for tuples); ConfigError for unknown or missing keys."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"TrainConfig.from_dict needs a dict, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown TrainConfig keys {unknown}; known keys: {sorted(known)}")
        missing = sorted({"store", "out"} - set(data))
        if missing:
            raise ConfigError(f"TrainConfig.from_dict: {missing} missing")
        values = dict(data)
        augment = values.get("augment")
        if isinstance(augment, Mapping):
            values["augment"] = _augment(augment)
        return cls(**values)


def _augment(data: Mapping[str, Any]) -> AugmentConfig:
    known = {f.name for f in fields(AugmentConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown AugmentConfig keys {unknown}; known keys: {sorted(known)}")
    return AugmentConfig(**data)
