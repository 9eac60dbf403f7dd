"""The statistics of `lymph study` against scipy and hand cases, and the verdict procedure on
simulated null studies (issue 20)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from lymph.model.study.stats import (
    EQUIVALENT,
    HELPS,
    HURTS,
    INCONCLUSIVE,
    MIN_PAIRS,
    TOO_FEW,
    bootstrap_ci,
    cap_fractions,
    fold_ratio,
    holm,
    min_detectable_effect,
    simulate_null,
    summarize,
    t_interval,
    tost_p,
    verdict_codes,
    wilcoxon_exact_p,
)


@pytest.mark.parametrize("n", [6, 8, 10, 13, 20])
def test_exact_wilcoxon_matches_scipy(n: int) -> None:
    rng = np.random.default_rng(n)
    for shift in (0.0, 0.5, 1.5):
        d = rng.normal(shift, 1.0, n)
        want = stats.wilcoxon(d, method="exact", alternative="two-sided").pvalue
        assert wilcoxon_exact_p(d) == pytest.approx(want, rel=1e-12)


def test_exact_wilcoxon_with_ties_and_zeros_matches_enumeration() -> None:
    d = np.array([1, 1, 2, -2, 3, 0, 4, -1.0, 5, 6])
    nz = d[d != 0]
    ranks = stats.rankdata(np.abs(nz))
    t_obs = ranks[nz > 0].sum()
    null = np.array([ranks[np.array(s, bool)].sum() for s in itertools.product([0, 1], repeat=9)])
    want = min(1.0, 2 * min(np.mean(null <= t_obs + 1e-9), np.mean(null >= t_obs - 1e-9)))
    assert wilcoxon_exact_p(d) == pytest.approx(want)
    assert wilcoxon_exact_p([0.0, 0.0, 0.0]) == 1.0
    assert math.isnan(wilcoxon_exact_p([0.3]))
    assert wilcoxon_exact_p([0.01 * i for i in range(1, 7)]) == pytest.approx(2 / 64)


def test_exact_wilcoxon_rows_equal_one_at_a_time() -> None:
    d = np.random.default_rng(0).normal(0.2, 1, (50, 10))
    d[3, 2] = 0.0  # a zero and a tie take the general path
    d[4, 1] = d[4, 0]
    rows = wilcoxon_exact_p(d)
    assert rows.shape == (50,)
    assert all(rows[i] == pytest.approx(wilcoxon_exact_p(d[i])) for i in range(50))


def test_t_interval_matches_scipy_and_the_corrected_one_is_wider() -> None:
    d = np.array([0.01, -0.02, 0.03, 0.015, 0.0, 0.02, -0.01, 0.025, 0.01, 0.005])
    low, high = t_interval(d)
    want = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
    assert (low, high) == pytest.approx(want)
    c_low, c_high = t_interval(d, ratio=0.25)
    half = stats.t.ppf(0.975, 9) * d.std(ddof=1) * math.sqrt(1 / 10 + 0.25)
    assert (c_low, c_high) == pytest.approx((d.mean() - half, d.mean() + half))
    assert c_low < low and c_high > high
    assert all(math.isnan(v) for v in t_interval([0.1]))


def test_tost_is_two_one_sided_t_tests() -> None:
    d = np.random.default_rng(3).normal(0.002, 0.01, 12)
    lower = stats.ttest_1samp(d, -0.02, alternative="greater").pvalue
    upper = stats.ttest_1samp(d, 0.02, alternative="less").pvalue
    assert tost_p(d, 0.02) == pytest.approx(max(lower, upper))
    assert tost_p(d, 0.02, ratio=0.25) > tost_p(d, 0.02)  # the corrected variance is larger
    assert tost_p(d + 0.05, 0.02) > 0.5  # far outside the margin: not equivalent
    assert tost_p([0.0] * 10, 0.02) == 0.0 and tost_p([0.25] * 10, 0.02) == 1.0  # sd 0


def test_holm_hand_example() -> None:
    # sorted p 0.005, 0.01, 0.03, 0.04 (m = 4): 0.02, 0.03, 0.06, then max(0.06, 0.04) = 0.06
    adjusted = holm([0.01, 0.04, 0.03, float("nan"), 0.005])
    assert adjusted[:3] == pytest.approx([0.03, 0.06, 0.06])
    assert math.isnan(adjusted[3]) and adjusted[4] == pytest.approx(0.02)
    assert holm([0.9, 0.8]) == [1.0, 1.0] and holm([0.04, 0.02]) == [0.04, 0.04]
    assert holm([]) == []


def test_bootstrap_is_seeded_and_brackets_the_mean() -> None:
    diffs = [0.01, 0.03, 0.02, 0.05, 0.04, 0.02]
    ci = bootstrap_ci(diffs, rng=np.random.default_rng(1), resamples=2000)
    assert ci == bootstrap_ci(diffs, rng=np.random.default_rng(1), resamples=2000)
    assert 0.01 < ci[0] < np.mean(diffs) < ci[1] < 0.05


def test_verdicts_need_ten_pairs_and_agreement() -> None:
    rng = np.random.default_rng(5)
    clear = 0.05 + rng.normal(0, 0.01, MIN_PAIRS)
    assert verdict_codes(clear, ratio=0.25)[0] == HELPS
    assert verdict_codes(-clear, ratio=0.25)[0] == HURTS
    assert verdict_codes(clear[: MIN_PAIRS - 1], ratio=0.25)[0] == TOO_FEW
    tight = rng.normal(0, 0.002, MIN_PAIRS)
    assert verdict_codes(tight, ratio=0.25)[0] == EQUIVALENT  # within ±2 pp, shown by TOST
    noisy = rng.normal(0, 0.04, MIN_PAIRS)
    assert verdict_codes(noisy, ratio=0.25)[0] == INCONCLUSIVE  # never "no effect"
    # 8 of 10 pairs positive: Wilcoxon p = 2 x 5/1024 and the plain t CI lies above 0, but the
    # corrected interval (dependent pairs) spans 0: inconclusive, not "helps"
    weak = np.array([0.03, 0.025, 0.02, 0.015, 0.01, 0.008, 0.005, 0.003, -0.002, -0.001])
    assert wilcoxon_exact_p(weak) == pytest.approx(10 / 1024) and t_interval(weak)[0] > 0
    assert t_interval(weak, ratio=0.25)[0] < 0
    assert verdict_codes(weak, ratio=0.25)[0] == INCONCLUSIVE
    assert verdict_codes(weak, ratio=0.0)[0] == HELPS  # were the pairs independent


@pytest.mark.parametrize(
    ("fold_sd", "pair_sd", "seed_sd"),
    [(0.008, 0.014, 0.0), (0.0113, 0.0113, 0.0), (0.008, 0.014, 0.006)],
)
def test_null_studies_rarely_get_a_helps_or_hurts(fold_sd, pair_sd, seed_sd) -> None:
    # 1,000 studies of identical conditions, 5 folds x 2 repeats, total sd ~1.6 pp (the
    # recorded one): a fold effect shared by the repeats (intra-fold correlation 0.25 / 0.5),
    # and a pretraining-seed effect shared by every pair of one seed
    out = simulate_null(rng=np.random.default_rng(2026), studies=1000, fold_sd=fold_sd,
                        pair_sd=pair_sd, seed_sd=seed_sd)  # fmt: skip
    assert sum(out["counts"].values()) == 1000
    assert out["false_verdicts"] <= 0.05


def test_a_true_effect_at_the_margin_is_rarely_called_equivalent() -> None:
    out = simulate_null(rng=np.random.default_rng(7), studies=1000, effect=0.02)
    assert out["counts"][EQUIVALENT] <= 50


def test_the_plain_paired_rule_fails_the_same_null_simulation() -> None:
    # the reason the corrected interval decides too: Wilcoxon + plain t alone, same studies
    rng = np.random.default_rng(2026)
    fold = rng.normal(0, 0.0113, (1000, 5, 1))
    d = (fold + rng.normal(0, 0.0113, (1000, 5, 2))).reshape(1000, 10)
    low, high = t_interval(d)
    plain = (wilcoxon_exact_p(d) < 0.05) & ((low > 0) | (high < 0))
    assert plain.mean() > 0.05


def test_power_line_matches_a_simulated_power() -> None:
    mde = min_detectable_effect(0.016, 10)
    assert 0.012 < mde < 0.02
    d = np.random.default_rng(1).normal(mde, 0.016, (4000, 10))
    t = d.mean(1) / (d.std(1, ddof=1) / math.sqrt(10))
    assert np.mean(np.abs(t) > stats.t.ppf(0.975, 9)) == pytest.approx(0.8, abs=0.03)
    assert min_detectable_effect(0.016, 10, ratio=0.25) > mde
    assert math.isnan(min_detectable_effect(0.016, 1))


def test_cap_fractions_and_fold_ratio() -> None:
    rows = [
        {"steps_cap": 1200, "stopped_step": 1200, "best_step": 1200, "fold": 0},
        {"steps_cap": 1200, "stopped_step": 1200, "best_step": 900, "fold": 1},
        {"steps_cap": 1200, "stopped_step": 800, "best_step": 500, "fold": 2},
        {"steps_cap": 1200, "stopped_step": 700, "best_step": 400, "fold": 3},
    ]
    assert cap_fractions(rows) == {"runs": 4, "at_cap": 0.5, "best_at_cap": 0.25}
    assert fold_ratio(rows) == pytest.approx(1 / 3)  # no slide lists: 1 / (K - 1)
    named = [{"test_slides": "a;b", "train_slides": "c;d;e", "val_slides": "f", "fold": 0}]
    assert fold_ratio(named) == 0.5


def _rows(f1s: dict[str, list[float]], size: int = 40) -> list[dict]:
    return [
        {"size": size, "fold": i // 2, "repeat": i % 2, "condition": cond, "precision": f1,
         "recall": 1.0, "f1": f1, "ap": f1, "best_step": 100}
        for cond, values in f1s.items() for i, f1 in enumerate(values)
    ]  # fmt: skip


def test_summary_gives_only_the_primary_a_verdict_and_holm_to_the_rest() -> None:
    base = [0.50, 0.40, 0.60, 0.55, 0.45, 0.52, 0.48, 0.58, 0.51, 0.47]
    gain = [0.04, 0.05, 0.05, 0.03, 0.06, 0.05, 0.04, 0.05, 0.06, 0.04]
    rows = _rows({"scratch": base, "seg_only": [0.7] * 10,
                  "pretrained_identity": [b + g for b, g in zip(base, gain, strict=True)]})
    rows += _rows({"scratch": base, "pretrained_identity": base}, size=80)
    comps = [("pretrained_identity", "scratch"), ("pretrained_identity", "seg_only")]
    summary = summarize(rows, comparisons=comps, resamples=500,
                        primary={"comparison": list(comps[0]), "size": 40})  # fmt: skip
    by_size = {e["size"]: e for e in summary}
    primary = by_size[40]["comparisons"][comps[0]]
    assert primary["primary"] and primary["verdict"] == HELPS and primary["n"] == 10
    assert primary["mean"] == pytest.approx(np.mean(gain))
    family = [by_size[40]["comparisons"][comps[1]], by_size[80]["comparisons"][comps[0]]]
    assert not any(st["primary"] for st in family)
    assert family[0]["p_holm"] == pytest.approx(min(1, 2 * family[0]["p_wilcoxon"]))
    assert family[1]["p_holm"] == 1.0  # all-zero differences


def test_recorded_study_reanalysis_reaches_no_verdict(tmp_path) -> None:
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[3] / "bench" / "reanalyse_study.py"
    spec = importlib.util.spec_from_file_location("reanalyse_study", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.main(["--out", str(tmp_path / "re")])
    assert result["pairs"] == 8 and result["primary"]["verdict"] == TOO_FEW
    assert result["primary"]["p_wilcoxon"] == pytest.approx(0.546875)
    assert result["step_cap"]["at_cap"] == pytest.approx(99 / 160)
    assert all(s["p_holm"] >= s["p_wilcoxon"] for s in result["secondary"])
    assert "size 20 was added after" in (tmp_path / "re.md").read_text()
