"""Slide roles and labeled sets: which slides validate, which train, which patches are labeled.

``pick_val_slides`` is lymph's one validation-slide rule (``choose_val_slides``, the trainer's
default split; eval's threshold 'auto' split and the study's inner validation call it too).
``balanced_subset`` is lymph's one class-balanced draw (the trainer's labeled set, the study's
subsets).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np

from lymph.data.errors import ConfigError, StoreError
from lymph.data.store import PatchStore
from lymph.model.train.config import TrainConfig


def pick_val_slides(
    slides: Sequence[tuple[str, str]], count: int, *, rng: np.random.Generator, keep_tumor: bool
) -> list[str]:
    """``count`` validation slide ids among (slide_id, status) pairs, sorted: lymph's one
    validation-slide rule (the trainer's split, eval's threshold 'auto' split, the study's
    inner validation; each passes its own count and ``rng``).

    Tumor slides first (validation F1 needs tumor pixels), drawn by ``rng.permutation`` of the
    tumor slides then of the others (each in the order given); normal slides fill the rest.
    ``keep_tumor``: at least one slide, and one
    tumor slide when there is one, stays outside validation. ConfigError for a count that is not
    an integer >= 0, a repeated slide id, or a count that leaves too few slides.
    """
    if isinstance(count, bool) or not isinstance(count, int | np.integer) or count < 0:
        raise ConfigError(f"the number of validation slides must be an integer >= 0, got {count!r}")
    ids = [sid for sid, _ in slides]
    if len(set(ids)) != len(ids):
        repeated = sorted({sid for sid in ids if ids.count(sid) > 1})
        raise ConfigError(f"slide ids {repeated} are listed more than once")
    if count == 0:
        return []
    tumor = [sid for sid, status in slides if status == "tumor"]
    normal = [sid for sid, status in slides if status != "tumor"]
    tumor = [tumor[i] for i in rng.permutation(len(tumor))]
    normal = [normal[i] for i in rng.permutation(len(normal))]
    if count > len(slides) - keep_tumor:
        raise ConfigError(
            f"{count} validation slide(s) asked of {len(slides)} slide(s), and "
            f"{'at least one must stay outside validation' if keep_tumor else 'there are no more'}"
        )
    n_tumor_val = max(min(count, len(tumor) - 1 if keep_tumor else len(tumor)), 0)
    # never short: count <= len(slides) - keep_tumor leaves enough normal slides to fill
    return sorted(tumor[:n_tumor_val] + normal[: count - n_tumor_val])


def choose_val_slides(store: PatchStore, k: int, *, seed: int, stage: str) -> list[str]:
    """The trainer's K validation slides: ``pick_val_slides`` over the labeled slides (all
    slides when a pretraining store has no labeled one) with ``Generator([seed, 2])``; a slide
    with tumor patches counts as a tumor slide, and fine-tuning keeps one to train on."""
    labeled = store.labeled_slides
    pool = labeled if labeled else (store.slides if stage == "pretrain" else [])
    pairs = [(s.slide_id, "tumor" if s.status == "tumor" or s.n_tumor > 0 else s.status)
             for s in pool]  # fmt: skip
    keep_tumor = stage == "finetune"
    try:
        return pick_val_slides(pairs, k, rng=np.random.default_rng([seed, 2]),
                               keep_tumor=keep_tumor)  # fmt: skip
    except ConfigError as exc:
        raise ConfigError(
            f"--val-slides {k}: {exc}; use --val-slides {max(0, len(pool) - keep_tumor)} or "
            "extract more slides"
        ) from exc


def balanced_subset(
    labels: Mapping[str, np.ndarray], size: int, *, rng: np.random.Generator
) -> list[tuple[str, int]]:
    """``size`` (slide_id, patch index) pairs, half tumor (label 1) and half not, without
    replacement; when one class is short all of it is taken and the other fills the rest.

    The one class-balanced draw of lymph (the trainer's labeled set, the study's subsets): pools
    in (slide_id, index) order, tumor drawn first with ``rng.choice``, result sorted, so it
    depends only on the labels, the size and ``rng``. ConfigError when the slides hold fewer than
    ``size`` patches; a warning when the result is not balanced.
    """
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 1:
        raise ConfigError(f"subset size must be an integer >= 1, got {size!r}")
    pos = [(sid, int(i)) for sid in sorted(labels) for i in np.flatnonzero(labels[sid] == 1)]
    neg = [(sid, int(i)) for sid in sorted(labels) for i in np.flatnonzero(labels[sid] != 1)]
    if len(pos) + len(neg) < size:
        raise ConfigError(
            f"the training slides hold {len(pos) + len(neg)} labeled patches, fewer than the "
            f"subset size {size}; use a smaller size or extract more patches per slide"
        )
    n_pos = min(len(pos), size // 2 + size % 2)
    n_neg = min(len(neg), size - n_pos)
    n_pos = size - n_neg  # fill from the other class when one is short
    if n_pos < size // 2 or n_neg < size // 2:
        warnings.warn(
            f"labeled set not balanced: {n_pos} tumor and {n_neg} non-tumor patches "
            f"(the training slides hold {len(pos)} tumor, {len(neg)} non-tumor)",
            stacklevel=3,
        )
    picks = [pos[i] for i in rng.choice(len(pos), n_pos, replace=False)] if n_pos else []
    picks += [neg[i] for i in rng.choice(len(neg), n_neg, replace=False)] if n_neg else []
    return sorted(picks)


def select_labeled(
    store: PatchStore, slide_ids: Sequence[str], amount: int | str, *, seed: int
) -> list[tuple[str, int]]:
    """N (or P% of the) labeled patches of ``slide_ids``: ``balanced_subset`` of their labels
    drawn with ``Generator([seed, 1])``; sorted."""
    labels = {sid: store.labels(sid) for sid in slide_ids}
    total = sum(len(v) for v in labels.values())
    if total == 0:
        raise StoreError(
            f"{store.path}: the training slides {list(slide_ids)} hold no labeled patch; "
            "finetune needs tumor/normal slides extracted with annotations"
        )
    n = max(1, round(float(amount[:-1]) / 100 * total)) if isinstance(amount, str) else amount
    if n > total:
        raise ConfigError(
            f"--labeled {amount}: the training slides hold only {total} labeled patches; "
            f"use --labeled {total} or less"
        )
    return balanced_subset(labels, n, rng=np.random.default_rng([seed, 1]))


def select_val_patches(
    store: PatchStore, slide_ids: Sequence[str], n: int, *, seed: int
) -> list[tuple[str, int]]:
    """Up to n validation patches of ``slide_ids`` (class-balanced when labeled), seeded."""
    if not slide_ids:
        return []
    if all(store.slide(s).labeled for s in slide_ids):
        total = sum(store.slide(s).n_patches for s in slide_ids)
        return select_labeled(store, slide_ids, min(n, total), seed=seed + 7919)
    rng = np.random.default_rng([seed, 3])
    pool = [(s, i) for s in slide_ids for i in range(store.slide(s).n_patches)]
    return sorted(pool[i] for i in rng.choice(len(pool), min(n, len(pool)), replace=False))


def plan_splits(config: TrainConfig, store: PatchStore) -> tuple[list[str], list[str]]:
    """(training slide ids, validation slide ids) of a new run."""
    if config.val_slide_ids is not None:
        val_ids = list(config.val_slide_ids)
    else:
        val_ids = choose_val_slides(store, config.val_slides, seed=config.seed, stage=config.stage)
    for sid in val_ids:
        store.slide(sid)  # StoreError for an unknown slide
    if config.train_slide_ids is not None:
        train_ids = list(config.train_slide_ids)
        overlap = sorted(set(train_ids) & set(val_ids))
        if overlap:
            raise ConfigError(f"slides {overlap} are both training and validation slides")
    else:
        pool = store.labeled_slides if config.stage == "finetune" else store.slides
        train_ids = [s.slide_id for s in pool if s.slide_id not in set(val_ids)]
    for sid in train_ids:
        store.slide(sid)
    if not train_ids:
        raise ConfigError(
            f"no training slide left after taking the validation slides {val_ids}: use "
            "--val-slides 0 or extract more slides"
        )
    return train_ids, val_ids


def plan_labeled(
    config: TrainConfig, store: PatchStore, train_ids: Sequence[str]
) -> list[tuple[str, int]]:
    """The labeled set of a new fine-tuning run ([] for pretraining)."""
    if config.stage != "finetune":
        return []
    if config.labeled_patches is not None:
        picks = list(config.labeled_patches)
        bad = sorted({s for s, _ in picks} - set(train_ids))
        if bad:
            raise ConfigError(f"labeled patches from non-training slides {bad}")
        return picks
    assert config.labeled is not None
    return select_labeled(store, train_ids, config.labeled, seed=config.seed)
