"""The study's grid (model/study/plan.py): folds of whole slides, inner validation, labeled
subsets (the trainer's class-balanced draw) and the runs they make."""

from __future__ import annotations

import numpy as np
import pytest

from lymph.data.errors import ConfigError
from lymph.model.study import SCRATCH, SEG_ONLY, inner_val_slides, make_folds, plan_runs
from lymph.model.train import balanced_subset, pick_val_slides

CONDITIONS = (SCRATCH, SEG_ONLY, "pretrained_identity")

SLIDES = [(f"tumor_{i:03d}", "tumor") for i in range(7)] + [
    (f"normal_{i:03d}", "normal") for i in range(5)
]


def _labels(seed: int = 0, n: int = 30) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        sid: (rng.random(n) < 0.4).astype(np.uint8) if st == "tumor" else np.zeros(n, np.uint8)
        for sid, st in SLIDES
    }


def test_folds_never_share_a_slide_and_cover_all() -> None:
    folds = make_folds(SLIDES, 5, seed=1)
    assert len(folds) == 5
    flat = [s for f in folds for s in f]
    assert sorted(flat) == sorted(s for s, _ in SLIDES)  # each slide exactly once
    assert len(set(flat)) == len(flat)
    assert max(map(len, folds)) - min(map(len, folds)) <= 1
    # 7 tumor slides over 5 folds: every held-out fold holds a tumor slide
    assert all(any(s.startswith("tumor") for s in f) for f in folds)
    assert make_folds(SLIDES, 5, seed=1) == folds
    assert make_folds(SLIDES, 5, seed=2) != folds


def test_too_few_slides_for_folds() -> None:
    with pytest.raises(ConfigError, match="cannot make 5 folds grouped by slide.*--folds 3"):
        make_folds(SLIDES[:3], 5, seed=0)


def test_one_fold_is_not_cross_validation() -> None:
    with pytest.raises(ConfigError, match="folds must be >= 2"):
        make_folds(SLIDES, 1, seed=0)


def test_balanced_subset_is_balanced_seeded_and_unique() -> None:
    labels = _labels()
    a = balanced_subset(labels, 40, rng=np.random.default_rng([0, 1, 40]))
    assert a == balanced_subset(labels, 40, rng=np.random.default_rng([0, 1, 40]))
    assert len(a) == 40 and len(set(a)) == 40
    assert sum(int(labels[s][i]) for s, i in a) == 20


def test_balanced_subset_fills_a_short_class() -> None:
    labels = {"t": np.array([1, 1, 0, 0, 0, 0, 0, 0], np.uint8)}
    with pytest.warns(UserWarning, match="not balanced: 2 tumor and 4 non-tumor"):
        subset = balanced_subset(labels, 6, rng=np.random.default_rng(0))
    assert sum(int(labels["t"][i]) for _, i in subset) == 2  # all tumor patches, rest normal
    assert len(subset) == 6


def test_balanced_subset_too_large() -> None:
    with pytest.raises(ConfigError, match="fewer than the subset size 9"):
        balanced_subset({"t": np.array([1, 0, 1], np.uint8)}, 9, rng=np.random.default_rng(0))


def test_inner_validation_takes_tumor_first_and_keeps_one_to_train() -> None:
    train = [("tumor_a", "tumor"), ("tumor_b", "tumor"), ("normal_a", "normal")]
    val = inner_val_slides(train, 2, rng=np.random.default_rng(0))
    assert len(val) == 2 and "normal_a" in val
    assert sum(v.startswith("tumor") for v in val) == 1  # one tumor slide is left to train on
    only_tumor = [("t1", "tumor"), ("t2", "tumor"), ("t3", "tumor")]
    assert len(inner_val_slides(only_tumor, 2, rng=np.random.default_rng(0))) == 2
    # lymph's one rule (pick_val_slides): tumor slides fill validation before normal ones
    more = [("t1", "tumor"), ("t2", "tumor"), ("t3", "tumor"), ("n1", "normal"), ("n2", "normal")]
    val = inner_val_slides(more, 2, rng=np.random.default_rng(0))
    assert all(v.startswith("t") for v in val)
    assert val == tuple(pick_val_slides(sorted(more), 2, rng=np.random.default_rng(0),
                                        keep_tumor=True))  # fmt: skip


def test_inner_validation_needs_two_tumor_slides() -> None:
    with pytest.raises(ConfigError, match="training folds hold 1 tumor slide.*fewer --folds"):
        inner_val_slides([("t", "tumor"), ("n", "normal")], 1, rng=np.random.default_rng(0))


def test_plan_pairs_conditions_and_redraws_per_repeat() -> None:
    labels = _labels()
    runs = plan_runs(SLIDES, labels, sizes=(40, 20), n_folds=3, seed=7, repeats=2,
                     conditions=CONDITIONS)  # fmt: skip
    assert len(runs) == 2 * 3 * 2 * len(CONDITIONS)
    by_pair: dict[tuple, list] = {}
    for r in runs:
        by_pair.setdefault(r.pair, []).append(r)
        # no slide on two sides: train, inner validation and test are disjoint
        assert not set(r.train_slides) & set(r.test_slides)
        assert not set(r.val_slides) & (set(r.train_slides) | set(r.test_slides))
        assert {s for s, _ in r.subset} <= set(r.train_slides)
        assert any(s.startswith("tumor") for s in r.val_slides)
    for pair in by_pair.values():
        assert sorted(r.condition for r in pair) == sorted(CONDITIONS)
        assert len({r.subset for r in pair}) == 1  # identical labeled subsets
        assert len({r.train_seed for r in pair}) == 1
        assert len({r.val_slides for r in pair}) == 1
        assert len({r.run_id for r in pair}) == len(CONDITIONS)
    # the subset, seed and validation slides are redrawn per repeat
    r0, r1 = by_pair[(40, 0, 0)][0], by_pair[(40, 0, 1)][0]
    assert r0.subset != r1.subset and r0.train_seed != r1.train_seed
    assert r0.test_slides == r1.test_slides
    assert by_pair[(40, 0, 0)][0].train_seed != by_pair[(20, 0, 0)][0].train_seed


def test_plan_refuses_a_test_fold_without_tumor() -> None:
    slides = [("tumor_001", "tumor"), ("tumor_002", "tumor"), ("normal_001", "normal")]
    labels = {s: np.zeros(10, np.uint8) for s, _ in slides}
    with pytest.raises(ConfigError, match="test fold 2 .* holds no tumor slide"):
        plan_runs(slides, labels, sizes=(4,), n_folds=3, seed=0, conditions=CONDITIONS)
