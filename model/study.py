"""`lymph study`: does reconstruction pretraining help a UNet segment metastases from few labels?

The seed paper's Figure 3, run so that it can answer its question (issue 10):

- **Two worlds.** A labeled store (tumor and normal slides with masks) is split into K folds of
  whole slides; a *separate* pretraining store made the pretrained checkpoint(s). Every labeled
  slide is a test slide in one fold, so a labeled slide that pretrained a checkpoint would leak
  into a test fold: the study reads each checkpoint's recorded store and slide ids and refuses
  such a study unless `allow_test_in_pretraining` is set.
- **Inner validation.** In each (fold, repeat) a few training-fold slides (tumor first) are held
  out as inner-validation slides. They, and never the test fold, choose the fine-tune's stopping
  point (every `eval_every` steps the F1 at the F1-best threshold of the validation pixels,
  calibration-free (`TrainConfig.select="best_f1"`); best checkpoint kept, early stop after
  `patience` evaluations without improvement, `steps` the cap: the same rule for every
  condition) and its probability threshold (F1-best on every pixel of them, as
  `lymph eval --threshold auto`; `lymph.model.evaluate.evaluate` does both). Every patch of
  every test slide is then scored: P, R, F1 at that threshold and AP (threshold-free).
- **Conditions** on the same labeled subset, steps rule and training seed: one
  `pretrained_<name>` per pretext name (init from its checkpoint, joint segmentation +
  reconstruction loss with its pretext; several checkpoints of one name, e.g. two pretraining
  seeds, are used in turn: repeat r fine-tunes from checkpoint r mod n), a scratch run per
  pretext with the same fine-tuning loss (`scratch` for identity, `scratch_<pretext>` for the
  others: the initialisation-only ablation) and `seg_only` (random init, reconstruction weight
  0: the paper's baseline, a UNet trained directly on segmentation).
- **Repeats and statistics** (`lymph.model.study_stats`). folds x repeats pairs; the labeled
  subset, inner-validation slides and training seed are redrawn per repeat. The primary
  endpoint, declared before any run (table.md, protocol.json with its sha256), is ΔF1 =
  pretrained (first name) - its scratch at 40 labels (or the smallest size); only it gets a
  verdict: helps / hurts (exact Wilcoxon + t interval + Nadeau-Bengio corrected interval, at
  least 10 pairs), equivalent within the margin (TOST) or inconclusive. Every other comparison
  is an estimate with a Holm-adjusted p. A protocol changed after the first result is listed
  as a deviation.
- **Speed.** Each run uses one torch thread; runs go to `jobs` spawned processes (default: the
  cores); a tqdm bar over the grid shows the ETA. Each finished run writes
  `runs/<run_id>/done.json` atomically and last, so a killed study resumes where it stopped.

Outputs in OUT: study.json (every setting, the folds, the slide provenance), results.csv (one row
per run: which slides pretrained, trained, validated and tested it), table.md (protocol first,
then results and verdicts), f1_vs_size.png (every pair's points, the means and ΔF1 with CIs).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import os
import re
import shutil
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lymph.data.errors import CheckpointError, ConfigError, LeakageError, StoreError
from lymph.data.io import atomic_write_json, atomic_write_text
from lymph.model.precision import check_precision
from lymph.model.study_report import (
    cap_line,
    deviation_lines,
    primary_stats,
    protocol_markdown,
    protocol_sha256,
    record_protocol,
    results_markdown,
)
from lymph.model.study_stats import (
    ALPHA,
    BOOTSTRAP_RESAMPLES,
    MARGIN,
    MIN_PAIRS,
    PILOT_SD,
    cap_fractions,
    min_detectable_effect,
    summarize,
)
from lymph.model.train import balanced_subset  # the one class-balanced draw

SCRATCH = "scratch"
SEG_ONLY = "seg_only"
PRETRAINED = "pretrained_"  # + pretext name
BASELINES = (SCRATCH, SEG_ONLY)
PAPER_SIZES = (200, 120, 80, 40)
PRIMARY_SIZE = 40
PRETRAIN_RATIO = 30  # the paper's unlabeled corpus: ~30x the largest labeled set

# Profiles. Every value is used unless the option is given. Costs measured on this idle 2-core
# CPU (one torch thread per run, 2 runs in parallel), the synthetic world at level 2, 128 px
# patches, width-8 UNet; see the README's study section for the measurement.
PROFILES: dict[str, dict[str, Any]] = {
    # the demo: illustrates the protocol on a small world; it does not test the hypothesis
    "quick": {
        "sizes": (80, 40),
        "folds": 2,
        "repeats": 2,
        "steps": 600,
        "patience": 3,
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
DEFAULTS: dict[str, Any] = {
    "sizes": PAPER_SIZES,
    "folds": 5,
    "repeats": 3,
    "steps": 3000,
    "patience": 5,
    "eval_every": 100,
    "batch_size": None,
    "crop": None,
    "val_slides": 2,
    "val_patches": 256,
    "eval_batch_size": 16,
    "workers": 0,
}
PROFILE_KEYS = tuple(DEFAULTS)

CSV_FIELDS = (
    "run_id", "size", "fold", "repeat", "condition", "init", "pretrain_seed", "pretext",
    "recon_weight",
    "precision", "recall", "f1", "ap", "dice", "iou", "tp", "fp", "fn", "tn", "threshold",
    "best_step", "best_val_f1", "stopped_step", "steps_cap",
    "n_tumor_patches", "n_normal_patches", "subset_sha", "train_seed",
    "pretrain_store", "pretrain_slides", "train_slides", "val_slides", "test_slides",
    "n_test_patches", "train_seconds", "eval_seconds", "cpu_seconds",
)  # fmt: skip


def scratch_for(pretext: str) -> str:
    """The scratch condition whose fine-tuning loss is the `pretext` one's."""
    return SCRATCH if pretext == "identity" else f"{SCRATCH}_{pretext}"


def condition_label(condition: str, pretexts: Mapping[str, str] | None = None) -> str:
    """What a condition is, in the table's words (`pretexts`: condition -> its fine-tuning
    pretext)."""
    pretext = (pretexts or {}).get(condition, "identity")
    if condition == SCRATCH or condition.startswith(SCRATCH + "_"):
        return (
            f"{condition}: random init, the joint seg + recon loss with the {pretext!r} pretext "
            "(the initialisation-only ablation of the pretrained conditions with that pretext)"
        )
    if condition == SEG_ONLY:
        return "seg_only: random init, recon weight 0 (the paper's baseline: segmentation only)"
    if condition.startswith(PRETRAINED):
        name = condition[len(PRETRAINED) :]
        return (
            f"{condition}: init from the {name!r} checkpoint(s) (pretext {pretext!r}), joint loss "
            "with that pretext"
        )
    raise ConfigError(f"unknown condition {condition!r}")


def comparisons_for(
    conditions: Sequence[str], pretexts: Mapping[str, str] | None = None
) -> list[tuple[str, str]]:
    """(a, b) pairs compared as ΔF1 = F1(a) - F1(b): every pretrained condition against the
    scratch run with its fine-tuning loss (the primary family), then against seg_only, then
    later pretexts against the first."""
    pretexts = pretexts or {}
    pre = [c for c in conditions if c.startswith(PRETRAINED)]
    out = [
        (p, s) for p in pre if (s := scratch_for(pretexts.get(p, "identity"))) in conditions
    ]
    out += [(p, SEG_ONLY) for p in pre if SEG_ONLY in conditions]
    out += [(p, pre[0]) for p in pre[1:]]
    return out


# --- pure planning functions ------------------------------------------------------------------


def make_folds(
    slides: Sequence[tuple[str, str]], n_folds: int, *, seed: int
) -> list[tuple[str, ...]]:
    """Split labeled (slide_id, status) pairs into `n_folds` folds of whole slides.

    Tumor slides are dealt first, round robin in a seeded order, then normal slides continue
    the deal, so each fold gets tumor slides when there are enough and sizes differ by at most
    one. ConfigError when there are fewer slides than folds (a fold would be empty).
    """
    if n_folds < 2:
        raise ConfigError(f"folds must be >= 2 for cross-validation, got {n_folds}")
    ids = sorted({s for s, _ in slides})
    if len(ids) != len(slides):
        raise ConfigError("slide ids must be unique")
    if len(ids) < n_folds:
        raise ConfigError(
            f"{len(ids)} labeled slide(s) ({', '.join(ids) or 'none'}) cannot make {n_folds} "
            f"folds grouped by slide: a fold would hold no slide; pass --folds {max(len(ids), 2)}"
            " or fewer, or extract more labeled slides"
        )
    rng = np.random.default_rng([seed, 0xF01D])
    tumor = sorted(s for s, st in slides if st == "tumor")
    other = sorted(s for s, st in slides if st != "tumor")
    order = [tumor[i] for i in rng.permutation(len(tumor))]
    order += [other[i] for i in rng.permutation(len(other))]
    folds: list[list[str]] = [[] for _ in range(n_folds)]
    for i, sid in enumerate(order):
        folds[i % n_folds].append(sid)
    return [tuple(sorted(f)) for f in folds]


def inner_val_slides(
    train: Sequence[tuple[str, str]], n_val: int, *, rng: np.random.Generator
) -> tuple[str, ...]:
    """`n_val` inner-validation slides among the training folds' (slide_id, status) pairs:
    half tumor (at least one, keeping one tumor slide to train on), the rest normal."""
    tumor = sorted(s for s, st in train if st == "tumor")
    normal = sorted(s for s, st in train if st != "tumor")
    if len(tumor) < 2:
        raise ConfigError(
            f"the training folds hold {len(tumor)} tumor slide(s) ({', '.join(tumor) or 'none'}):"
            " inner validation needs one and training another; extract more tumor slides or "
            "pass fewer --folds"
        )
    if n_val < 1 or n_val >= len(train):
        raise ConfigError(
            f"val_slides must be within [1, {len(train) - 1}] for {len(train)} training-fold "
            f"slides, got {n_val}"
        )
    n_t = max(1, min(len(tumor) - 1, (n_val + 1) // 2))
    n_n = min(len(normal), n_val - n_t)
    n_t = min(len(tumor) - 1, n_val - n_n)
    picks = [tumor[i] for i in rng.permutation(len(tumor))[:n_t]]
    picks += [normal[i] for i in rng.permutation(len(normal))[:n_n]]
    return tuple(sorted(picks))


def subset_sha(subset: Sequence[tuple[str, int]]) -> str:
    """A short fingerprint of a subset (results.csv shows all conditions used the same one)."""
    text = "\n".join(f"{s}:{i}" for s, i in subset)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def train_seed(seed: int, fold: int, size: int, repeat: int = 0) -> int:
    """The training seed shared by every condition of one (fold, repeat, size)."""
    parts = [seed, fold, size] if repeat == 0 else [seed, fold, size, repeat]
    return int(np.random.SeedSequence(parts).generate_state(1)[0] & 0x7FFFFFFF)


@dataclass(frozen=True)
class RunSpec:
    """One fine-tune of the grid."""

    size: int
    fold: int
    repeat: int
    condition: str
    train_slides: tuple[str, ...]
    val_slides: tuple[str, ...]
    test_slides: tuple[str, ...]
    subset: tuple[tuple[str, int], ...] = field(repr=False)
    train_seed: int
    n_tumor_patches: int
    n_normal_patches: int

    @property
    def run_id(self) -> str:
        return f"n{self.size:04d}_f{self.fold}_r{self.repeat}_{self.condition}"

    @property
    def pair(self) -> tuple[int, int, int]:
        return (self.size, self.fold, self.repeat)

    def fingerprint(self) -> dict[str, Any]:
        """What a finished run must match to be reused."""
        return {
            "size": self.size,
            "fold": self.fold,
            "repeat": self.repeat,
            "condition": self.condition,
            "train_slides": list(self.train_slides),
            "val_slides": list(self.val_slides),
            "test_slides": list(self.test_slides),
            "subset_sha": subset_sha(self.subset),
            "train_seed": self.train_seed,
        }


def plan_runs(
    slides: Sequence[tuple[str, str]],
    labels: Mapping[str, np.ndarray],
    *,
    sizes: Sequence[int],
    n_folds: int,
    seed: int,
    repeats: int = 1,
    conditions: Sequence[str] = (SCRATCH, SEG_ONLY, PRETRAINED + "identity"),
    n_val: int = 2,
) -> list[RunSpec]:
    """Every run of the grid: size, fold, repeat, then condition.

    `slides`: labeled (slide_id, status); `labels`: each slide's per-patch labels (0/1). Per
    (fold, repeat) the inner-validation slides are drawn from the training folds with
    `Generator([seed, fold, repeat, 0x7A1])`; per (fold, repeat, size) the labeled subset with
    `Generator([seed, fold, size])` (repeat 0) or `Generator([seed, fold, size, repeat])`.
    """
    if repeats < 1:
        raise ConfigError(f"repeats must be >= 1, got {repeats}")
    folds = make_folds(slides, n_folds, seed=seed)
    status = dict(slides)
    for k, test in enumerate(folds):
        if not any(status[s] == "tumor" for s in test):
            raise ConfigError(
                f"test fold {k} ({', '.join(test)}) holds no tumor slide: its F1 would be 0 or 1 "
                f"by convention; pass --folds {sum(st == 'tumor' for st in status.values())} or "
                "fewer, or extract more tumor slides"
            )
    split: dict[tuple[int, int], tuple[tuple[str, ...], tuple[str, ...]]] = {}
    for k in range(n_folds):
        rest = [(s, status[s]) for j, f in enumerate(folds) if j != k for s in f]
        for r in range(repeats):
            val = inner_val_slides(rest, n_val, rng=np.random.default_rng([seed, k, r, 0x7A1]))
            split[k, r] = (tuple(s for s, _ in rest if s not in val), val)
    runs: list[RunSpec] = []
    for size in sizes:
        for k, test in enumerate(folds):
            for r in range(repeats):
                train, val = split[k, r]
                parts = [seed, k, size] if r == 0 else [seed, k, size, r]
                subset = balanced_subset(
                    {s: labels[s] for s in train}, size, rng=np.random.default_rng(parts)
                )
                n_tumor = sum(int(labels[s][i] == 1) for s, i in subset)
                for condition in conditions:
                    runs.append(
                        RunSpec(
                            size=int(size), fold=k, repeat=r, condition=condition,
                            train_slides=train, val_slides=val, test_slides=test,
                            subset=tuple(subset), train_seed=train_seed(seed, k, size, r),
                            n_tumor_patches=n_tumor, n_normal_patches=len(subset) - n_tumor,
                        )  # fmt: skip
                    )
    return runs


# --- settings ---------------------------------------------------------------------------------

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


def parse_pretrained(values: Sequence[str | Path]) -> tuple[tuple[str | None, Path], ...]:
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


@dataclass(frozen=True)
class StudyConfig:
    """Settings of a study; every one is recorded in OUT/study.json. None: the profile's value,
    else DEFAULTS."""

    store: Path
    pretrained: Any  # a path, or a sequence of paths / "name=path" / (name, path)
    out: Path
    profile: str | None = None
    sizes: tuple[int, ...] | None = None
    folds: int | None = None
    repeats: int | None = None
    steps: int | None = None  # the cap
    patience: int | None = None
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
    quick: bool = False  # the old flag: profile "quick"
    precision: str = "auto"  # lymph.model.precision: training and scoring autocast

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        check_precision(self.precision)
        for name in ("store", "out"):
            set_(self, name, Path(getattr(self, name)))
        given = self.pretrained
        items = [given] if isinstance(given, str | Path) else list(given)
        parsed = [
            (it[0], Path(it[1])) if isinstance(it, tuple) else parse_pretrained([it])[0]
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
        set_(self, "pretrained", tuple(parsed))
        if self.quick and self.profile not in (None, "quick"):
            raise ConfigError(f"--quick and --profile {self.profile} disagree; pass one")
        if self.quick:
            set_(self, "profile", "quick")
        if self.profile is not None and self.profile not in PROFILES:
            raise ConfigError(f"profile must be one of {sorted(PROFILES)}, got {self.profile!r}")
        self._check_numbers()

    def _check_numbers(self) -> None:
        if self.sizes is not None:
            sizes = tuple(int(s) for s in self.sizes)
            if not sizes or any(s < 2 for s in sizes):
                raise ConfigError(
                    f"sizes must be integers >= 2, got {self.sizes!r}; e.g. 200,120,80,40"
                )
            if len(set(sizes)) != len(sizes):
                raise ConfigError(f"sizes repeat a value: {self.sizes!r}")
            object.__setattr__(self, "sizes", sizes)
        if self.folds is not None and self.folds < 2:
            raise ConfigError(f"folds must be >= 2 for cross-validation, got {self.folds}")
        for name in ("workers",):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigError(f"{name} must be >= 0, got {value}")
        positive = ("repeats", "steps", "patience", "eval_every", "val_slides", "val_patches",
                    "batch_size", "crop", "base_width", "eval_batch_size", "max_test_patches",
                    "jobs", "threads", "resamples")  # fmt: skip
        for name in positive:
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

    def resolved(self, name: str) -> Any:
        """The setting in effect: given, else the profile's, else DEFAULTS."""
        value = getattr(self, name)
        if value is not None:
            return value
        if self.profile is not None and name in PROFILES[self.profile]:
            return PROFILES[self.profile][name]
        return DEFAULTS.get(name)

    @property
    def n_jobs(self) -> int:
        return self.jobs or max(1, os.cpu_count() or 1)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["store"], d["out"] = str(self.store), str(self.out)
        d["pretrained"] = [[n, str(p)] for n, p in self.pretrained]
        d["resolved"] = {k: self.resolved(k) for k in PROFILE_KEYS}
        d["resolved"]["sizes"] = list(d["resolved"]["sizes"])
        if d["sizes"] is not None:
            d["sizes"] = list(d["sizes"])
        return d


PROFILE_NOTES = {
    "quick": "The quick profile ILLUSTRATES the protocol on a small world in minutes; it is far "
    "too small to TEST whether pretraining helps: do not read its verdicts as findings.",
    "standard": "The standard profile (`make study`): 5 folds x 2 repeats = 10 pairs, 2 "
    "pretraining seeds per pretext, a 3,200-step cap (README: study section for its time).",
    None: "No profile: the paper's sizes and the defaults.",
}


# --- pretraining provenance -------------------------------------------------------------------


@dataclass(frozen=True)
class Pretraining:
    """What a pretraining checkpoint records about its data, checked against the labeled store."""

    name: str
    path: Path
    arch: dict[str, Any] = field(repr=False)
    stage: str | None
    pretext: str  # the pretext it was pretrained with (its fine-tunes keep it)
    store: str | None  # the pretraining store's path as recorded
    slides: tuple[str, ...]  # the slide ids it pretrained on (train and validation)
    n_patches: int | None  # patches of those slides, when the store is readable
    leaked: tuple[str, ...]  # labeled (hence test) slides that pretrained it
    unverifiable: str | None  # why the check could not be made, if it could not
    seed: int | None = None  # the pretraining run's recorded seed

    @property
    def condition(self) -> str:
        return PRETRAINED + self.name

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


def _resolved(path: str | os.PathLike | None) -> str | None:
    if not path:
        return None
    try:
        return str(Path(path).resolve())
    except OSError:
        return str(path)


def _locate_store(recorded: str, checkpoint: Path) -> str:
    """A recorded store path as it is found now: as written (relative to the working folder),
    else relative to a folder above the checkpoint (a relative path recorded by a run started
    elsewhere)."""
    path = Path(recorded)
    if path.is_absolute() or path.exists():
        return recorded
    for parent in Path(checkpoint).resolve().parents:
        if (parent / path).exists():
            return str(parent / path)
    return recorded


def read_pretraining(name: str | None, path: Path, labeled_store: Any) -> Pretraining:
    """Read a checkpoint's recorded pretraining store and slides and find which labeled slides
    of `labeled_store` it saw: by slide id when it is the same store, else by source file."""
    from lymph.data.store import PatchStore
    from lymph.model.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    cfg = ckpt.get("config", {})
    arch = dict(cfg.get("model") or {})
    pretext = (cfg.get("train") or {}).get("pretext") or "identity"
    seed = (cfg.get("train") or {}).get("seed")
    store_rec = cfg.get("store") if isinstance(cfg.get("store"), dict) else {}
    store_path = store_rec.get("path")
    if store_path is not None:
        store_path = _locate_store(str(store_path), path)
    splits = cfg.get("splits") if isinstance(cfg.get("splits"), dict) else {}
    slides = tuple(sorted({str(s) for k in ("train", "val") for s in splits.get(k) or []}))
    leaked: list[str] = []
    n_patches = None
    why = None
    labeled = {s.slide_id: s for s in labeled_store.slides if s.labeled}
    if store_path is None or not slides:
        why = f"{path} records no pretraining store or slide ids"
    elif _resolved(store_path) == _resolved(labeled_store.path):
        leaked = sorted(set(slides) & set(labeled))
        n_patches = sum(labeled_store.slide(s).n_patches for s in slides)
    else:
        try:
            pre = PatchStore.open(store_path)
        except (StoreError, OSError) as exc:
            why = f"its pretraining store {store_path} cannot be read ({exc})"
        else:
            known = {s.slide_id for s in pre.slides}
            n_patches = sum(pre.slide(s).n_patches for s in slides if s in known)
            sources = {_resolved(pre.slide(s).attrs.get("source")) for s in slides if s in known}
            missing = [s for s in labeled.values() if not s.attrs.get("source")]
            leaked = sorted(
                s for s, info in labeled.items() if _resolved(info.attrs.get("source")) in sources
            )
            if None in sources or missing:
                why = "some slides record no source file, so the same slide cannot be recognised"
    return Pretraining(
        name=name or str(pretext), path=path, arch=arch, stage=cfg.get("stage"),
        pretext=str(pretext),
        store=store_path, slides=slides, n_patches=n_patches, leaked=tuple(leaked),
        unverifiable=why, seed=int(seed) if isinstance(seed, int) else None,
    )  # fmt: skip


def check_pretraining(pre: Pretraining, *, allow: bool) -> list[str]:
    """Refuse (CheckpointError) a checkpoint pretrained on labeled (test) slides, or one whose
    data cannot be checked, unless `allow`; returns notes for table.md."""
    notes = []
    if pre.leaked:
        text = (
            f"{pre.path} was pretrained on {len(pre.leaked)} slide(s) of the labeled store "
            f"({', '.join(pre.leaked[:6])}{', ...' if len(pre.leaked) > 6 else ''}), and every "
            "labeled slide is a test slide in one fold"
        )
        if not allow:
            raise LeakageError(
                f"{text}: pretrain on a separate unlabeled store, or pass "
                "--allow-test-in-pretraining to run anyway (the table will say so)"
            )
        notes.append(f"{text} (allowed by --allow-test-in-pretraining: optimistic).")
    if pre.unverifiable:
        if not allow:
            raise LeakageError(
                f"cannot check that no test slide pretrained {pre.path}: "
                f"{pre.unverifiable}; pass --allow-test-in-pretraining to run anyway"
            )
        notes.append(f"{pre.path}: not checked for test slides ({pre.unverifiable}).")
    if pre.stage != "pretrain":
        warnings.warn(
            f"{pre.path} is a {pre.stage!r} checkpoint, not a reconstruction pretraining "
            "(`lymph train --stage pretrain`): the pretrained condition starts from it anyway",
            stacklevel=3,
        )
        notes.append(f"{pre.path} is a {pre.stage!r} checkpoint, not a pretraining.")
    return notes


def corpus_note(pre: Pretraining, largest: int) -> str | None:
    """A note when the pretraining corpus is under PRETRAIN_RATIO x the largest labeled set."""
    if pre.n_patches is None or pre.n_patches >= PRETRAIN_RATIO * largest:
        return None
    return (
        f"{pre.condition}: pretrained on {pre.n_patches} patches = "
        f"{pre.n_patches / largest:.1f}x the largest labeled set ({largest}); the paper's was "
        f"~{PRETRAIN_RATIO}x."
    )


def _check_architectures(pres: Sequence[Pretraining], base_width: int | None) -> dict[str, Any]:
    arch = pres[0].arch
    for p in pres[1:]:
        if p.arch != arch:
            raise CheckpointError(
                f"{p.path} has architecture {p.arch}, {pres[0].path} has {arch}: the pretexts "
                "compare only on one architecture; pretrain them with the same model settings"
            )
    if base_width is not None and base_width != arch.get("base_width"):
        raise CheckpointError(
            f"{pres[0].path} has base width {arch.get('base_width')}, --base-width "
            f"{base_width} asks for another: every condition uses the pretrained "
            "architecture; drop --base-width or pretrain at that width"
        )
    return arch


# --- one run ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunContext:
    """What every run of one study shares (picklable: it travels to the worker processes)."""

    config: StudyConfig
    arch: dict[str, Any]
    inits: dict[str, tuple[Path, ...]]  # condition -> its init checkpoints (repeat r: r mod n)
    pretexts: dict[str, str]  # condition -> reconstruction pretext of its fine-tune
    pretrain: dict[str, tuple[str | None, tuple[str, ...]]]  # checkpoint -> (store, slides)
    settings: dict[str, Any]  # what a finished run must share to be reused
    pretrain_seeds: dict[str, int | None] = field(default_factory=dict)  # checkpoint -> seed


def init_for(ctx: RunContext, spec: RunSpec) -> Path | None:
    """The checkpoint a run starts from: repeat r uses its condition's checkpoint r mod n, so
    the pairs span every pretraining seed."""
    paths = ctx.inits.get(spec.condition)
    return paths[spec.repeat % len(paths)] if paths else None


def train_options(config: StudyConfig, arch: Mapping[str, Any], fields: set[str]) -> dict:
    """TrainConfig keywords of a study run (those the trainer knows)."""
    steps = config.resolved("steps")
    opts: dict[str, Any] = {
        "steps": steps, "batch_size": config.resolved("batch_size"),
        "crop": config.resolved("crop"), "workers": config.resolved("workers"),
        "lr": config.lr, "eval_every": min(config.resolved("eval_every"), steps),
        "checkpoint_every": steps, "val_patches": config.resolved("val_patches"),
        "patience": config.resolved("patience"), "threads": config.threads,
        "device": config.device, "select": "best_f1", "precision": config.precision,
    }  # fmt: skip
    opts.update({k: v for k, v in arch.items() if k in fields and k != "kind"})
    if config.crop is None and opts.get("crop") is not None:  # a profile's crop: fit the model
        multiple = 2 ** int(arch.get("depth", 4))
        opts["crop"] = max(multiple, round(opts["crop"] / multiple) * multiple)
    return {k: v for k, v in opts.items() if v is not None and k in fields}


def _train_config(ctx: RunContext, spec: RunSpec, out: Path) -> Any:
    from lymph.model.train import TrainConfig

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    opts = train_options(ctx.config, ctx.arch, fields)
    if spec.condition == SEG_ONLY:
        opts["recon_weight"] = 0.0
    elif ctx.config.recon_weight is not None:
        opts["recon_weight"] = ctx.config.recon_weight
    if spec.condition in ctx.inits:
        opts["init"] = init_for(ctx, spec)
        for key in ctx.arch:  # fine-tuning inherits the architecture from the checkpoint
            opts.pop(key, None)
    else:
        opts["from_scratch"] = True
    if "pretext" in fields:
        opts["pretext"] = ctx.pretexts.get(spec.condition, "identity")
    opts["train_slide_ids"] = tuple(spec.train_slides)
    opts["val_slide_ids"] = tuple(spec.val_slides)
    opts["labeled_patches"] = tuple(spec.subset)
    return TrainConfig(
        store=ctx.config.store, out=out, stage="finetune", labeled=len(spec.subset),
        val_slides=len(spec.val_slides), seed=spec.train_seed, **opts,
    )  # fmt: skip


def run_one(ctx: RunContext, spec: RunSpec) -> dict[str, Any]:
    """Fine-tune one run, score it on its test slides (threshold from its inner-validation
    slides) and return its results.csv row; its checkpoints go unless keep_checkpoints."""
    from lymph.model.checkpoint import load_checkpoint
    from lymph.model.evaluate import AUTO, EvalConfig
    from lymph.model.evaluate import run as evaluate
    from lymph.model.train import run

    config = ctx.config
    train_dir = config.out / "runs" / spec.run_id / "train"
    if train_dir.exists():  # a run killed before done.json: start it over
        shutil.rmtree(train_dir)
    t0, c0 = time.perf_counter(), time.process_time()
    result = run(_train_config(ctx, spec, train_dir), progress=False)
    t1 = time.perf_counter()
    scored = result.best or result.last
    best_step = getattr(result, "best_step", None) or int(load_checkpoint(scored)["step"])
    auto = config.threshold == AUTO
    scores = evaluate(
        EvalConfig(
            store=config.store, checkpoint=scored, threshold=config.threshold,
            slides=spec.test_slides, val_slides=spec.val_slides if auto else None,
            batch_size=config.resolved("eval_batch_size"), device=config.device,
            max_patches_per_slide=config.max_test_patches, seed=config.seed, progress=False,
            precision=config.precision,
        )  # fmt: skip
    ).to_dict()
    t2 = time.perf_counter()
    if not config.keep_checkpoints:
        for ckpt in train_dir.rglob("*.pt"):
            ckpt.unlink()
    init = init_for(ctx, spec)
    pre_store, pre_slides = ctx.pretrain.get(str(init), (None, ()))
    seed = ctx.pretrain_seeds.get(str(init))
    return {
        "run_id": spec.run_id, "size": spec.size, "fold": spec.fold, "repeat": spec.repeat,
        "condition": spec.condition, "init": str(init or ""),
        "pretrain_seed": "" if seed is None else seed,
        "recon_weight": 0.0 if spec.condition == SEG_ONLY else config.recon_weight,
        **{k: scores[k] for k in ("precision", "recall", "f1", "dice", "iou",
                                  "tp", "fp", "fn", "tn", "threshold")},
        "ap": scores["average_precision"], "best_step": best_step,
        "best_val_f1": result.best_f1, "pretext": ctx.pretexts.get(spec.condition, ""),
        "stopped_step": getattr(result, "stopped_step", None) or result.steps,
        "steps_cap": config.resolved("steps"),
        "n_tumor_patches": spec.n_tumor_patches, "n_normal_patches": spec.n_normal_patches,
        "subset_sha": subset_sha(spec.subset), "train_seed": spec.train_seed,
        "pretrain_store": pre_store or "", "pretrain_slides": ";".join(pre_slides),
        "train_slides": ";".join(spec.train_slides), "val_slides": ";".join(spec.val_slides),
        "test_slides": ";".join(spec.test_slides), "n_test_patches": scores["n_patches"],
        "train_seconds": round(t1 - t0, 2), "eval_seconds": round(t2 - t1, 2),
        "cpu_seconds": round(time.process_time() - c0, 2),
    }  # fmt: skip


def _set_threads(n: int) -> int:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    return before


def _worker_init(threads: int) -> None:
    """Spawned worker: `threads` torch threads (and OpenMP / BLAS told the same)."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    _set_threads(threads)
    warnings.simplefilter("ignore")  # per-run warnings would interleave over the progress bar


def execute(ctx: RunContext, spec: RunSpec) -> dict[str, Any]:
    """Run one spec with ctx.config.threads torch threads and write its done.json (last)."""
    before = _set_threads(ctx.config.threads)
    try:
        with warnings.catch_warnings():  # per-run notes (e.g. a short class) are in the row
            warnings.simplefilter("ignore")
            row = run_one(ctx, spec)
    finally:
        _set_threads(before)
    record = {"spec": spec.fingerprint(), "settings": ctx.settings, "row": row}
    atomic_write_json(done_path(ctx.config, spec), record)
    return row


def done_path(config: StudyConfig, spec: RunSpec) -> Path:
    return config.out / "runs" / spec.run_id / "done.json"


# --- the study --------------------------------------------------------------------------------

RUN_SETTINGS = ("store", "folds", "seed", "lr", "recon_weight", "threshold", "max_test_patches")
RESOLVED_SETTINGS = ("steps", "patience", "eval_every", "batch_size", "crop", "val_patches")


def _run_settings(config: StudyConfig, inits: Mapping[str, Sequence[Path]]) -> dict[str, Any]:
    """The settings a finished run must share to be reused: those that change its result.
    (Sizes, repeats and conditions may be added to a study; device, jobs and scoring batch
    size change no result.)"""
    return {
        **{k: str(v) if isinstance(v, Path) else v for k, v in
           ((k, getattr(config, k)) for k in RUN_SETTINGS)},
        **{k: config.resolved(k) for k in RESOLVED_SETTINGS},
        "folds": config.resolved("folds"),
        "val_slides": config.resolved("val_slides"),
        "inits": {c: str(p[0]) if len(p) == 1 else [str(x) for x in p]
                  for c, p in sorted(inits.items())},
    }  # fmt: skip


def write_results_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    key = lambda r: (-int(r["size"]), int(r["fold"]), int(r.get("repeat", 0)), r["condition"])  # noqa: E731
    for row in sorted(rows, key=key):
        writer.writerow(row)
    atomic_write_text(path, buf.getvalue())


def _world_notes(slides: Sequence[tuple[str, str]], folds: Sequence[tuple[str, ...]]) -> list:
    status = dict(slides)
    thin = [k for k, f in enumerate(folds) if sum(status[s] == "tumor" for s in f) < 2]
    if not thin:
        return []
    return [
        f"test fold(s) {thin} hold fewer than 2 tumor slides: the world is small for the "
        "question (issue 10 asks for >= 2 tumor slides per fold)."
    ]


def _resume(
    config: StudyConfig, runs: Sequence[RunSpec], settings: Mapping[str, Any]
) -> tuple[list[dict[str, Any]], list[RunSpec]]:
    """(rows of finished runs, runs still to do); ConfigError when a finished run differs."""
    from lymph.model.study_checks import read_done

    rows: list[dict[str, Any]] = []
    todo: list[RunSpec] = []
    for spec in runs:
        done = done_path(config, spec)
        if not done.exists():
            todo.append(spec)
            continue
        record = read_done(done, spec)  # ConfigError for anything lymph did not write
        want = {"spec": spec.fingerprint(), "settings": dict(settings)}
        got = {"spec": record.get("spec"), "settings": record.get("settings")}
        if got != want:
            raise ConfigError(
                f"{done}: this finished run was made with other settings ({_diff(got, want)}); "
                "rerun with the same settings to resume, or use a new --out"
            )
        rows.append(record["row"])
    return rows, todo


def _execute_all(ctx: RunContext, todo: Sequence[RunSpec], bar: Any) -> list[dict[str, Any]]:
    """Run `todo`: in this process when jobs is 1, else in `jobs` spawned processes."""
    rows: list[dict[str, Any]] = []
    jobs = min(ctx.config.n_jobs, max(1, len(todo)))
    if jobs == 1:
        for spec in todo:
            bar.set_postfix_str(spec.run_id)
            rows.append(execute(ctx, spec))
            bar.update(1)
        return rows
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    pool = ProcessPoolExecutor(
        max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
        initializer=_worker_init, initargs=(ctx.config.threads,),
    )  # fmt: skip
    with pool:
        futures = {pool.submit(execute, ctx, spec): spec for spec in todo}
        try:
            for fut in as_completed(futures):
                rows.append(fut.result())
                bar.set_postfix_str(futures[fut].run_id)
                bar.update(1)
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise
    return rows


def _prepare(config: StudyConfig) -> dict[str, Any]:
    """Open the store, read the pretraining provenance, plan the grid (no training yet)."""
    from lymph.data.store import PatchStore

    store = PatchStore.open(config.store)
    labeled = [(s.slide_id, s.status) for s in store.slides if s.labeled]
    if not labeled:
        raise StoreError(
            f"{config.store}: no labeled (tumor or normal) slide: a study needs masks; extract "
            "slides with annotations"
        )
    pres = [read_pretraining(n, p, store) for n, p in config.pretrained]
    groups, notes = _group_pretrainings(pres)
    for p in pres:
        notes += check_pretraining(p, allow=config.allow_test_in_pretraining)
    arch = _check_architectures(pres, config.base_width)
    sizes = config.resolved("sizes")
    notes += [n for p in pres if (n := corpus_note(p, max(sizes))) is not None]
    pretexts = {c: g[0].pretext for c, g in groups.items()}
    baselines: list[str] = []
    for b in config.conditions or BASELINES:
        baselines += [scratch_for(t) for t in dict.fromkeys(pretexts.values())] if b == SCRATCH \
            else [b]  # fmt: skip
    conditions = [*baselines, *groups]
    labels = {sid: store.labels(sid) for sid, _ in labeled}
    runs = plan_runs(
        labeled, labels, sizes=sizes, n_folds=config.resolved("folds"), seed=config.seed,
        repeats=config.resolved("repeats"), conditions=conditions,
        n_val=config.resolved("val_slides"),
    )  # fmt: skip
    folds = make_folds(labeled, config.resolved("folds"), seed=config.seed)
    notes += _world_notes(labeled, folds)
    return {
        "store": store, "labeled": labeled, "pres": pres, "arch": arch, "runs": runs,
        "conditions": conditions, "folds": folds, "notes": notes, "sizes": sizes,
        "groups": groups, "pretexts": pretexts,
    }  # fmt: skip


def _group_pretrainings(pres: Sequence[Pretraining]) -> tuple[dict, list[str]]:
    """{pretrained condition: its checkpoints} in the order given, and notes; ConfigError when
    checkpoints of one name were pretrained with different pretexts."""
    groups: dict[str, list[Pretraining]] = {}
    for p in pres:
        groups.setdefault(p.condition, []).append(p)
    notes = []
    for cond, group in groups.items():
        kinds = sorted({p.pretext for p in group})
        if len(kinds) > 1:
            paths = ", ".join(str(p.path) for p in group)
            raise ConfigError(
                f"the checkpoints named {cond[len(PRETRAINED) :]!r} ({paths})"
                " were pretrained with different pretexts {kinds}: give each pretext its own "
                "name, e.g. --pretrained identity=a.pt --pretrained genesis=b.pt"
            )
        seeds = [p.seed for p in group]
        if len(group) < 2:
            notes.append(
                f"{cond}: one pretraining checkpoint, so pretraining randomness is not "
                "replicated (give >= 2 seeds: --pretrained NAME=a.pt --pretrained NAME=b.pt)."
            )
        elif None not in seeds and len(set(seeds)) < len(seeds):
            notes.append(f"{cond}: its checkpoints record the same pretraining seed {seeds}.")
    return groups, notes


def _protocol(config: StudyConfig, plan: Mapping[str, Any]) -> dict[str, Any]:
    """What table.md declares before any run; its sha256 is recorded (protocol.json)."""
    from lymph.model.train import TrainConfig

    sizes = plan["sizes"]
    comparisons = comparisons_for(plan["conditions"], plan["pretexts"])
    labeled = plan["labeled"]
    n_tumor = sum(st == "tumor" for _, st in labeled)
    n_patches = sum(plan["store"].slide(s).n_patches for s, _ in labeled)
    world = (
        f"{len(labeled)} labeled slides ({n_tumor} tumor, {len(labeled) - n_tumor} normal, "
        f"{n_patches} patches) in {config.store}; pretraining: "
        + "; ".join(f"{c} from {len(g)} checkpoint(s) (seeds "
                    f"{', '.join(str(p.seed) for p in g)}) on {len(g[0].slides)} slides "
                    f"({g[0].n_patches} patches) of {g[0].store}"
                    for c, g in plan["groups"].items())  # fmt: skip
    )
    runs = plan["runs"]
    ratio = float(np.mean([len(r.test_slides) / (len(r.train_slides) + len(r.val_slides))
                           for r in runs])) if runs else 0.0  # fmt: skip
    n_pairs = config.resolved("folds") * config.resolved("repeats")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    return {
        "primary": {
            "comparison": list(comparisons[0]),
            "size": PRIMARY_SIZE if PRIMARY_SIZE in sizes else min(sizes),
        },
        "secondary": [list(c) for c in comparisons],
        "profile": config.profile or "none",
        "profile_note": PROFILE_NOTES[config.profile],
        "world": world, "conditions": plan["conditions"],
        "condition_labels": [condition_label(c, _pretexts(plan)) for c in plan["conditions"]],
        "pretrained": {c: [str(p.path) for p in g] for c, g in plan["groups"].items()},
        "sizes": list(sizes), "seed": config.seed,
        "steps": config.resolved("steps"), "eval_every": config.resolved("eval_every"),
        "patience": config.resolved("patience"), "early_stopping": "patience" in fields,
        "folds": config.resolved("folds"), "repeats": config.resolved("repeats"),
        "resamples": config.resamples, "alpha": ALPHA, "margin": config.margin,
        "min_pairs": MIN_PAIRS,
        "power": {
            "n": n_pairs, "sd": config.pilot_sd, "ratio": ratio,
            "sd_source": "the recorded standard study's paired sd at 40 labels, identity − "
                         "scratch" if abs(config.pilot_sd - PILOT_SD) < 1e-12 else "--pilot-sd",
            "mde": _finite(min_detectable_effect(config.pilot_sd, n_pairs, ratio=ratio)),
            "mde_independent": _finite(min_detectable_effect(config.pilot_sd, n_pairs)),
        },
    }  # fmt: skip


def _finite(value: float) -> float | None:
    """None for NaN: the protocol compares equal to itself when read back."""
    return None if value != value else value


def _pretexts(plan: Mapping[str, Any]) -> dict[str, str]:
    """condition -> the pretext of its fine-tuning loss: each pretrained condition keeps its
    checkpoints' pretext, each scratch condition has its own, seg_only (recon weight 0) the
    first one's."""
    pretexts = dict(plan["pretexts"])
    for c in plan["conditions"]:
        if c == SCRATCH or c.startswith(SCRATCH + "_"):
            pretexts[c] = c[len(SCRATCH) + 1 :] or "identity"
    pretexts[SEG_ONLY] = next(iter(plan["pretexts"].values()))
    return pretexts


def study_context(config: StudyConfig) -> tuple[dict[str, Any], RunContext]:
    """(the plan: store, slides, checkpoints, runs, folds, notes; the context every run shares)
    without running anything: `execute(ctx, plan["runs"][i])` runs one of them."""
    plan = _prepare(config)
    inits = {c: tuple(p.path for p in g) for c, g in plan["groups"].items()}
    pretexts = _pretexts(plan)
    ctx = RunContext(
        config=config, arch=plan["arch"], inits=inits, pretexts=pretexts,
        settings={**_run_settings(config, inits), "pretexts": dict(sorted(pretexts.items()))},
        pretrain={str(p.path): (p.store, p.slides) for p in plan["pres"]},
        pretrain_seeds={str(p.path): p.seed for p in plan["pres"]},
    )  # fmt: skip
    return plan, ctx


def _precision_record(config: StudyConfig) -> dict[str, Any]:
    """The precision asked for, the one its runs use on this machine, and the CPU's bf16 flags."""
    from lymph.model.infer import resolve_device
    from lymph.model.precision import describe

    return describe(config.precision, resolve_device(config.device))


def run_study(config: StudyConfig) -> dict[str, Any]:
    """Run (or resume) the grid; returns {"rows", "summary", "files", "skipped", "ran", ...}.
    One study per folder: a second `lymph study` on the same --out is refused (OutputError
    naming the holder)."""
    from lymph.data.lock import run_folder_lock

    with run_folder_lock(config.out, what="this study folder"):
        return _run_study(config)


def _run_study(config: StudyConfig) -> dict[str, Any]:
    from lymph.data.progress import progress_bar

    plan, ctx = study_context(config)
    protocol = _protocol(config, plan)
    config.out.mkdir(parents=True, exist_ok=True)
    rows, todo = _resume(config, plan["runs"], ctx.settings)
    declared = _declare(config, plan, protocol)
    skipped = len(rows)
    bar = progress_bar(
        total=len(plan["runs"]), initial=skipped, desc="study runs", unit="run",
        enabled=config.progress, dynamic_ncols=True,
    )  # fmt: skip
    with bar:
        rows += _execute_all(ctx, todo, bar)
    write_results_csv(config.out / "results.csv", rows)
    summary = summarize(
        rows, conditions=plan["conditions"], seed=config.seed, resamples=config.resamples,
        comparisons=[tuple(c) for c in protocol["secondary"]], primary=protocol["primary"],
        margin=config.margin,
    )  # fmt: skip
    cap = cap_fractions(rows)
    table = protocol_markdown(protocol) + results_markdown(
        summary, protocol=protocol, notes=plan["notes"], cap=cap,
        deviations=deviation_lines(declared["protocol_record"]),
    )  # fmt: skip
    atomic_write_text(config.out / "table.md", table)
    st = primary_stats(summary, protocol["primary"])
    declared["results"] = {
        "step_cap": {**cap, "text": cap_line(cap, protocol["steps"])},
        "primary": None if st is None else {k: v for k, v in st.items() if k != "diffs"},
    }  # fmt: skip
    atomic_write_json(config.out / "study.json", declared)
    _plot(summary, protocol, config.out / "f1_vs_size.png")
    files = {n: str(config.out / n) for n in ("results.csv", "table.md", "f1_vs_size.png",
                                               "study.json", "protocol.json")}  # fmt: skip
    return {
        "rows": rows, "summary": summary, "files": files, "skipped": skipped, "ran": len(todo),
        "folds": plan["folds"], "protocol": protocol, "notes": plan["notes"], "step_cap": cap,
    }  # fmt: skip


def _declare(config: StudyConfig, plan: Mapping[str, Any], protocol: Mapping[str, Any]) -> dict:
    """Before any new run: record the protocol (protocol.json: hash, amendments after the first
    result), write study.json, and table.md's protocol when no result exists yet."""
    finished = len(list((config.out / "runs").glob("*/done.json")))
    protocol_record = record_protocol(config.out / "protocol.json", protocol, n_results=finished)
    record = {
        **config.to_dict(), "protocol": protocol, "protocol_sha256": protocol_sha256(protocol),
        "protocol_record": protocol_record, "folds_slides": [list(f) for f in plan["folds"]],
        "pretraining": [p.to_dict() for p in plan["pres"]], "notes": plan["notes"],
        **_precision_record(config),
    }  # fmt: skip
    atomic_write_json(config.out / "study.json", record)
    if not finished:  # declared before any result exists
        atomic_write_text(
            config.out / "table.md", protocol_markdown(protocol) + "\n(results pending)\n"
        )
    return record


def _plot(summary: Sequence[Mapping[str, Any]], protocol: Mapping[str, Any], path: Path) -> None:
    from lymph.model.figures import plot_study_pairs

    ordered = sorted(summary, key=lambda e: e["size"])
    sizes = [e["size"] for e in ordered]
    points = {
        c: [e["conditions"].get(c, {}).get("f1s", []) for e in ordered]
        for c in protocol["conditions"]
    }
    deltas: dict[str, list[tuple[list[float], tuple[float, float]]]] = {}
    for (a, b) in ordered[0]["comparisons"] if ordered else []:
        deltas[f"{a} − {b}"] = [
            (e["comparisons"][a, b]["diffs"], e["comparisons"][a, b]["ci"]) for e in ordered
        ]
    a, b = protocol["primary"]["comparison"]
    plot_study_pairs(sizes, points, deltas, path, primary=f"{a} − {b}")


def _diff(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> str:
    parts = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, Mapping) and isinstance(y, Mapping):
            inner = _diff(x, y, f"{prefix}{key}.")
            if inner:
                parts.append(inner)
        elif x != y:
            parts.append(f"{prefix}{key}: {x!r} then, {y!r} now")
    return "; ".join(parts)
