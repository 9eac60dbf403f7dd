"""A study's settings: `StudyConfig`, its profiles and the settings in effect.

Every profile setting (`PROFILE_KEYS`) is resolved once, in `StudyConfig.__post_init__`: the
value given, else the profile's, else DEFAULTS; the result (`StudyConfig.resolved`, a
`StudySettings`) is validated there, so a profile's values pass the same checks as given ones.
"""

from __future__ import annotations

import operator
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, SupportsIndex, TypedDict, TypeVar

from lymph.data.errors import ConfigError
from lymph.model.precision import check_precision
from lymph.model.study.conditions import BASELINES
from lymph.model.study.stats import BOOTSTRAP_RESAMPLES, MARGIN, PILOT_SD

PAPER_SIZES = (200, 120, 80, 40)


class ProfileValues(TypedDict):
    """The settings a profile fixes (None: the trainer's own value)."""

    sizes: tuple[int, ...]
    folds: int
    repeats: int
    steps: int
    patience: int
    min_steps: int
    eval_every: int
    batch_size: int | None
    crop: int | None
    val_slides: int
    val_patches: int
    eval_batch_size: int
    workers: int


# Profiles. Every value is used unless the option is given. Costs measured on this idle 2-core
# CPU (one torch thread per run, 2 runs in parallel), the synthetic world at level 2, 128 px
# patches, width-8 UNet; see the README's study section for the measurement.
PROFILES: dict[str, ProfileValues] = {
    # the demo: illustrates the protocol on a small world; it does not test the hypothesis
    "quick": {
        "sizes": (80, 40),
        "folds": 2,
        "repeats": 2,
        "steps": 600,
        "patience": 3,
        "min_steps": 0,
        "eval_every": 100,
        "batch_size": 8,
        "crop": 64,
        "val_slides": 2,
        "val_patches": 96,
        "eval_batch_size": 32,
        "workers": 0,
    },
    # `make study`: 10 pairs (5 folds x 2 repeats: MIN_PAIRS; the `make study` world's 20 tumor
    # slides give 4 per test fold) x 5 sizes x 5 conditions (two pretexts, their two scratch
    # runs, seg_only) = 250 fine-tunes. The primary endpoint's size runs first, so a stopped
    # study already holds it. The cap: at 1,200 steps 62% of the recorded study's 160 runs never
    # early-stopped (bench/results/study_standard.csv); its stopping hazard over the last 400
    # steps (47 of the 146 runs still going at 800 stopped by 1,200: x0.907 per 100 steps),
    # held constant, leaves 9% running at 3,200 (11% at 3,000). An extrapolation: table.md
    # reports the measured fraction and says when the cap bound.
    "standard": {
        "sizes": (40, 200, 120, 80, 20),
        "folds": 5,
        "repeats": 2,
        "steps": 3200,
        "patience": 3,
        # Early stopping never ends a run before step 800 (a quarter of the cap): calibration
        # round c2 (bench/results/world_calibration.csv, seg_only only) had 2 of 3 runs, and c1
        # 1 of 8, stop at step 400 on a best validation F1 at step 100 (test F1 0.33-0.38), the
        # learning rate still near its peak; the same rule for every condition.
        "min_steps": 800,
        "eval_every": 100,
        "batch_size": 8,
        "crop": 64,
        "val_slides": 4,  # 2 (one tumor slide) chose checkpoints that failed on the test fold
        "val_patches": 128,
        "eval_batch_size": 32,
        "workers": 0,
    },
}
# Without a profile: the paper's sizes and the trainer's own batch, crop and cap.
DEFAULTS: ProfileValues = {
    "sizes": PAPER_SIZES,
    "folds": 5,
    "repeats": 3,
    "steps": 3000,
    "patience": 5,
    "min_steps": 0,
    "eval_every": 100,
    "batch_size": None,
    "crop": None,
    "val_slides": 2,
    "val_patches": 256,
    "eval_batch_size": 16,
    "workers": 0,
}
PROFILE_KEYS = tuple(DEFAULTS)

PROFILE_NOTES = {
    "quick": "The quick profile ILLUSTRATES the protocol on a small world in minutes; it is far "
    "too small to TEST whether pretraining helps: do not read its verdicts as findings.",
    "standard": "The standard profile (`make study`): 5 folds x 2 repeats = 10 pairs, 2 "
    "pretraining seeds per pretext, a 3,200-step cap (README: study section for its time).",
    None: "No profile: the paper's sizes and the defaults.",
}

# The checks of the profile settings, in the order they are made: >= 1 unless None (batch_size
# and crop: the trainer's), workers >= 0; sizes and folds have their own.
_POSITIVE = ("repeats", "steps", "patience", "eval_every", "val_slides", "val_patches",
             "batch_size", "crop", "eval_batch_size")  # fmt: skip
_OPTIONAL = ("batch_size", "crop")


def _integer(name: str, value: object) -> int:
    """`value` as an int; ConfigError for a bool, a float or anything else."""
    if isinstance(value, bool) or not isinstance(value, SupportsIndex):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    return operator.index(value)


@dataclass(frozen=True)
class StudySettings:
    """The profile settings in effect (given, else the profile's, else DEFAULTS), validated."""

    sizes: tuple[int, ...]
    folds: int
    repeats: int
    steps: int  # the cap
    patience: int
    min_steps: int  # early stopping never ends a run before this step
    eval_every: int
    batch_size: int | None
    crop: int | None
    val_slides: int
    val_patches: int
    eval_batch_size: int
    workers: int

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        try:
            sizes = tuple(_integer("sizes", s) for s in self.sizes)
        except (ConfigError, TypeError):
            sizes = ()
        if not sizes or any(s < 2 for s in sizes):
            raise ConfigError(
                f"sizes must be integers >= 2, got {self.sizes!r}; e.g. 200,120,80,40"
            )
        if len(set(sizes)) != len(sizes):
            raise ConfigError(f"sizes repeat a value: {self.sizes!r}")
        set_(self, "sizes", sizes)
        folds = _integer("folds", self.folds)
        if folds < 2:
            raise ConfigError(f"folds must be >= 2 for cross-validation, got {self.folds}")
        set_(self, "folds", folds)
        for name in ("workers", "min_steps"):
            number = _integer(name, getattr(self, name))
            if number < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
            set_(self, name, number)
        for name in _POSITIVE:
            value = getattr(self, name)
            if value is None and name in _OPTIONAL:
                continue
            number = _integer(name, value)
            if number < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")
            set_(self, name, number)


_T = TypeVar("_T")


def _given(value: _T | None, fallback: _T) -> _T:
    return fallback if value is None else value


_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")

Pretrained = tuple[tuple[str | None, Path], ...]
"""(pretext name or None, checkpoint path) per --pretrained checkpoint."""


def parse_pretrained(values: Sequence[str | Path]) -> Pretrained:
    """`["identity=a.pt", "genesis=b.pt"]` -> ((name, path), ...); a bare path gets name None
    (the checkpoint's recorded pretext, else "identity", decides it)."""
    out: list[tuple[str | None, Path]] = []
    for value in values:
        text = str(value)
        name, sep, path = text.partition("=")
        if sep and _NAME.match(name):
            out.append((name, Path(path)))
        elif sep and not Path(text).exists():
            raise ConfigError(
                f"--pretrained {text!r}: {name!r} is not a pretext name (lowercase letters, "
                "digits, _ and -); write e.g. --pretrained identity=runs/pre/last.pt"
            )
        else:
            out.append((None, Path(text)))
    return tuple(out)


def _pretrained(given: object) -> Pretrained:
    """The --pretrained checkpoints as (name, path) pairs: from a path, or a sequence of paths,
    "name=path" strings or (name, path) pairs; ConfigError for none or one given twice."""
    if isinstance(given, str | Path):
        items: list[object] = [given]
    elif isinstance(given, Iterable):
        items = list(given)
    else:
        raise ConfigError(f"pretrained must be a path or a sequence of them, got {given!r}")
    parsed = [
        (it[0], Path(it[1])) if isinstance(it, tuple) else parse_pretrained([str(it)])[0]
        for it in items
    ]
    if not parsed:
        raise ConfigError("a study needs at least one --pretrained checkpoint")
    paths = [str(p) for _, p in parsed]
    if len(set(paths)) != len(paths):
        raise ConfigError(
            f"--pretrained gives one checkpoint twice: {paths}; several checkpoints of one "
            "pretext are distinct files, e.g. identity=seed0.pt identity=seed1.pt"
        )
    return tuple(parsed)


@dataclass(frozen=True)
class StudyConfig:
    """Settings of a study; every one is recorded in OUT/study.json. A profile setting left
    None takes the profile's value, else DEFAULTS: `resolved` holds the settings in effect.
    `pretrained` may be given as a path, or a sequence of paths / "name=path" / (name, path);
    it is held as (name, path) pairs."""

    store: Path
    pretrained: Pretrained
    out: Path
    profile: str | None = None
    sizes: tuple[int, ...] | None = None
    folds: int | None = None
    repeats: int | None = None
    steps: int | None = None  # the cap
    patience: int | None = None
    min_steps: int | None = None
    eval_every: int | None = None
    val_slides: int | None = None
    val_patches: int | None = None
    seed: int = 0
    batch_size: int | None = None
    crop: int | None = None
    base_width: int | None = None  # must match the pretrained checkpoint when given
    lr: float | None = None
    recon_weight: float | None = None  # scratch and pretrained (seg_only: always 0)
    threshold: float | str = "auto"  # "auto": F1-best on the inner-validation slides
    device: str = "auto"
    eval_batch_size: int | None = None
    workers: int | None = None
    max_test_patches: int | None = None  # per test slide; None: every patch
    conditions: tuple[str, ...] | None = None  # baselines to run (None: scratch and seg_only)
    jobs: int | None = None  # parallel runs (None: the CPU count)
    threads: int = 1  # torch threads per run
    resamples: int = BOOTSTRAP_RESAMPLES
    margin: float = MARGIN  # equivalence margin (F1 fraction), declared in the protocol
    pilot_sd: float = PILOT_SD  # paired ΔF1 sd (F1 fraction) for the protocol's power line
    allow_test_in_pretraining: bool = False
    keep_checkpoints: bool = False
    progress: bool = True
    precision: str = "auto"  # lymph.model.precision: training and scoring autocast
    resolved: StudySettings = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        check_precision(self.precision)
        for name in ("store", "out"):
            set_(self, name, Path(getattr(self, name)))
        set_(self, "pretrained", _pretrained(self.pretrained))
        if self.profile is not None and self.profile not in PROFILES:
            raise ConfigError(f"profile must be one of {sorted(PROFILES)}, got {self.profile!r}")
        set_(self, "resolved", self._resolve())
        if self.sizes is not None:
            set_(self, "sizes", self.resolved.sizes)
        self._check_numbers()

    def _resolve(self) -> StudySettings:
        """Each profile setting: given, else the profile's, else DEFAULTS (validated)."""
        p: ProfileValues = PROFILES[self.profile] if self.profile is not None else DEFAULTS
        profile: Mapping[str, Any] = p
        return StudySettings(**{k: _given(getattr(self, k), profile[k]) for k in PROFILE_KEYS})

    def _check_numbers(self) -> None:
        for name in ("base_width", "max_test_patches", "jobs", "threads", "resamples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")
        for name in ("margin", "pilot_sd"):
            value = getattr(self, name)
            if not 0 < value < 1:
                raise ConfigError(
                    f"{name} must be within (0, 1) as an F1 fraction, got {value} (0.02 = 2 pp)"
                )
        if self.threshold != "auto":
            from lymph.model.evaluate import parse_threshold

            object.__setattr__(self, "threshold", parse_threshold(self.threshold))
        if self.conditions is not None:
            bad = sorted(set(self.conditions) - set(BASELINES))
            if bad:
                raise ConfigError(
                    f"conditions {bad} unknown: the baselines are {list(BASELINES)} (pretrained "
                    "conditions come from --pretrained)"
                )
            object.__setattr__(self, "conditions", tuple(self.conditions))

    @property
    def n_jobs(self) -> int:
        return self.jobs or max(1, os.cpu_count() or 1)

    def to_dict(self) -> dict[str, object]:
        """study.json's settings: every field as given, and "resolved": the settings in effect."""
        d = asdict(self)
        d["store"], d["out"] = str(self.store), str(self.out)
        d["pretrained"] = [[n, str(p)] for n, p in self.pretrained]
        d["resolved"]["sizes"] = list(self.resolved.sizes)
        if d["sizes"] is not None:
            d["sizes"] = list(d["sizes"])
        return d
