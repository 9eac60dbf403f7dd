"""The study's grid: folds of whole slides, inner-validation slides, labeled subsets and
training seeds, and every run (`RunSpec`) they make. Pure functions of the slides, labels and
seed: the same inputs give the same runs, run ids and seeds."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from lymph.data.errors import ConfigError
from lymph.model.study.conditions import PRETRAINED, SCRATCH, SEG_ONLY
from lymph.model.train import (
    balanced_subset,  # the one class-balanced draw
    pick_val_slides,  # the one validation-slide rule
)


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
    """`n_val` inner-validation slides among the training folds' (slide_id, status) pairs, by
    lymph's one rule (``pick_val_slides`` over the pairs sorted by id): tumor slides first but
    one kept to train on (so at least one in validation: two are required), the rest normal."""
    tumor = sorted(s for s, st in train if st == "tumor")
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
    return tuple(pick_val_slides(sorted(train), n_val, rng=rng, keep_tumor=True))


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

    def fingerprint(self) -> dict[str, int | str | list[str]]:
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
