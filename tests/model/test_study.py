from __future__ import annotations

import numpy as np
import pytest
from lymph.model.study import (
    CONDITIONS,
    StudyConfig,
    balanced_subset,
    make_folds,
    plan_runs,
    summarize,
    table_markdown,
)
from lymph.pipeline.errors import ConfigError

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
    subset = balanced_subset(labels, 6, rng=np.random.default_rng(0))
    assert sum(int(labels["t"][i]) for _, i in subset) == 2  # all tumor patches, rest normal
    assert len(subset) == 6


def test_balanced_subset_too_large() -> None:
    with pytest.raises(ConfigError, match="fewer than the subset size 9"):
        balanced_subset({"t": np.array([1, 0, 1], np.uint8)}, 9, rng=np.random.default_rng(0))


def test_plan_pairs_conditions_on_identical_subsets() -> None:
    labels = _labels()
    runs = plan_runs(SLIDES, labels, sizes=(40, 20), n_folds=4, seed=7)
    assert len(runs) == 2 * 4 * len(CONDITIONS)
    by_key: dict[tuple[int, int], list] = {}
    for r in runs:
        by_key.setdefault((r.size, r.fold), []).append(r)
        # training subset only from training slides; test fold disjoint from training
        assert not set(r.train_slides) & set(r.test_slides)
        assert {s for s, _ in r.subset} <= set(r.train_slides)
    for pair in by_key.values():
        scratch, pre = sorted(pair, key=lambda r: r.condition)[::-1]
        assert (scratch.condition, pre.condition) == ("scratch", "pretrained")
        assert scratch.subset == pre.subset
        assert scratch.train_seed == pre.train_seed
        assert scratch.fingerprint()["subset_sha"] == pre.fingerprint()["subset_sha"]
        assert scratch.run_id != pre.run_id
    # different folds or sizes draw different subsets
    assert by_key[(40, 0)][0].subset != by_key[(40, 1)][0].subset
    assert by_key[(40, 0)][0].train_seed != by_key[(20, 0)][0].train_seed


def test_summary_and_table_hand_case() -> None:
    rows = []
    for fold, (f_s, f_p) in enumerate([(0.5, 0.6), (0.4, 0.3)]):
        for cond, f1 in (("scratch", f_s), ("pretrained", f_p)):
            rows.append(
                {
                    "size": 40,
                    "fold": fold,
                    "condition": cond,
                    "precision": f1,
                    "recall": 1.0,
                    "f1": f1,
                }
            )
    (entry,) = summarize(rows)
    assert entry["scratch_f1"] == pytest.approx((0.45, np.std([0.5, 0.4], ddof=1)))
    assert entry["pretrained_f1"][0] == pytest.approx(0.45)
    # paired differences: +0.1 and -0.1 -> mean 0, sd 0.1414
    assert entry["f1_diff"] == pytest.approx((0.0, np.std([0.1, -0.1], ddof=1)), abs=1e-12)
    assert entry["f1_diff_positive"] == 1 and entry["f1_diff_folds"] == 2
    md = table_markdown([entry])
    assert "| 40 | 45.00 ± 7.07 | 100.00 ± 0.00 | 45.00 ± 7.07 |" in md
    assert "+0.00 ± 14.14 | 1/2 |" in md


def test_study_config_validation(tmp_path) -> None:
    with pytest.raises(ConfigError, match="sizes must be integers >= 2"):
        StudyConfig(store=tmp_path, pretrained=tmp_path / "p.pt", out=tmp_path, sizes=(0,))
    with pytest.raises(ConfigError, match="sizes repeat"):
        StudyConfig(store=tmp_path, pretrained=tmp_path / "p.pt", out=tmp_path, sizes=(4, 4))
    with pytest.raises(ConfigError, match="threshold must be within"):
        StudyConfig(store=tmp_path, pretrained=tmp_path / "p.pt", out=tmp_path, threshold=2.0)
    quick = StudyConfig(store=tmp_path, pretrained=tmp_path / "p.pt", out=tmp_path, quick=True)
    assert quick.resolved("steps") is not None and quick.resolved("crop") is not None
    paper = StudyConfig(store=tmp_path, pretrained=tmp_path / "p.pt", out=tmp_path, steps=7)
    assert paper.resolved("steps") == 7 and paper.resolved("crop") is None
