"""The statistics of `lymph study` (issue 20, "verdicts that hold").

A study compares conditions over paired (fold, repeat) runs; a pair's ΔF1 is F1(a) − F1(b) on
the same test fold, labeled subset and training seed. The procedure:

- **Primary endpoint** (one comparison at one size, declared before any run): a verdict only
  with at least MIN_PAIRS pairs. "helps" / "hurts" when the exact two-sided Wilcoxon
  signed-rank test gives p < alpha AND both the paired t 95% interval and the dependence-aware
  (Nadeau-Bengio corrected resampled t) 95% interval exclude 0 on the same side;
  "equivalent within ±m" when the two one-sided tests (TOST, corrected t) reject |Δ| >= m;
  else "inconclusive". The percentile bootstrap interval is shown, never decides.
- **Why the corrected interval decides too.** The pairs are not independent: repeats share
  their test fold and training folds overlap. In simulated null studies with a fold effect
  shared by the repeats (intra-fold correlation 0.25, total sd 1.6 pp, 5 folds x 2 repeats),
  Wilcoxon + plain t call "helps"/"hurts" in about 7% of studies; with the corrected interval
  also required, under 1% (`simulate_null`, tests/model/study/test_stats.py).
- **Secondary comparisons**: estimates with Holm-adjusted Wilcoxon p over the whole secondary
  family (every other comparison and size), no verdict words.
- **Power**: the smallest ΔF1 the design detects with 80% power under the deciding interval
  (noncentral t with the corrected variance), from a pilot sd.

Every function takes paired differences along the last axis, so the null simulation runs the
same code on (studies, pairs) arrays.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any, TypedDict

import numpy as np
from numpy.typing import ArrayLike

ALPHA = 0.05
# Fewer pairs: no verdict. An exact two-sided Wilcoxon test can reach p < 0.05 from 6 pairs
# (p = 2/64 when all 6 agree), but with 6-9 pairs only when (nearly) every pair agrees, and the
# corrected interval is then very wide; 10 pairs (5 folds x 2 repeats) is the floor.
MIN_PAIRS = 10
MARGIN = 0.02  # equivalence margin (F1 fraction): "equivalent within ±2 pp"
PILOT_SD = 0.109  # the c4 standard study's paired sd at 40 labels (identity − scratch)
POWER = 0.8
BOOTSTRAP_RESAMPLES = 10_000

Values = float | np.ndarray
"""A statistic: a float for one comparison's 1-d differences, an array for rows of them."""
ResultRow = Mapping[str, Any]
"""A results.csv row: numbers as a run returns them, or strings as read back from the file."""


class Primary(TypedDict):
    """The primary endpoint: ΔF1 = F1(a) - F1(b) at one size."""

    comparison: list[str]
    size: int


class PairStats(TypedDict):
    """Every statistic of one comparison's paired ΔF1 (`paired_stats`)."""

    mean: float
    sd: float
    n: int
    positive: int
    ci_t: tuple[float, float]
    ci: tuple[float, float]
    ci_bootstrap: tuple[float, float]
    p_wilcoxon: float
    p_tost: float
    ratio: float
    verdict: str
    diffs: list[float]


class ComparisonStats(PairStats, total=False):
    """A summary's comparison: whether it is the primary endpoint, and its Holm p (NaN for the
    primary endpoint)."""

    primary: bool
    p_holm: float


class ConditionStats(TypedDict):
    """One condition at one size: (mean, sd) of each metric over its runs."""

    precision: tuple[float, float]
    recall: tuple[float, float]
    f1: tuple[float, float]
    ap: tuple[float, float]
    best_step: tuple[float, float]
    runs: int
    f1s: list[float]  # per (fold, repeat) pair, in pair order


class SizeSummary(TypedDict):
    size: int
    conditions: dict[str, ConditionStats]
    comparisons: dict[tuple[str, str], ComparisonStats]


Summary = list[SizeSummary]
"""`summarize`'s result: one entry per size, descending."""


class NullStudies(TypedDict):
    counts: dict[str, int]  # verdict -> studies
    false_verdicts: float  # the fraction of studies called helps or hurts

HELPS, HURTS, EQUIVALENT, INCONCLUSIVE, TOO_FEW = (
    "helps", "hurts", "equivalent", "inconclusive", "too few pairs",
)  # fmt: skip


# --- the exact Wilcoxon signed-rank test ------------------------------------------------------


@lru_cache(maxsize=256)
def _signed_rank_counts(ranks2: tuple[int, ...]) -> np.ndarray:
    """counts[t] = number of sign assignments whose positive doubled-rank sum is t."""
    counts = np.zeros(sum(ranks2) + 1)
    counts[0] = 1.0
    for r in ranks2:
        counts[r:] = counts[r:] + counts[: len(counts) - r].copy()
    return counts


def _doubled_ranks(diffs: np.ndarray) -> np.ndarray:
    """Twice the average ranks of |d| among the nonzero d of each row (0 for zeros): integers,
    so ties stay exact."""
    from scipy.stats import rankdata

    absd = np.round(np.abs(diffs), 12)
    ranks2 = np.rint(2 * rankdata(absd, axis=-1)).astype(np.int64)
    zeros = (absd == 0).sum(axis=-1, keepdims=True)
    return np.where(absd == 0, 0, ranks2 - 2 * zeros)


def wilcoxon_exact_p(diffs: ArrayLike) -> Values:
    """Two-sided exact Wilcoxon signed-rank p of paired differences along the last axis (zeros
    dropped, ties by average ranks; the null distribution enumerated exactly by counting sign
    assignments). A row whose differences are all zero gets 1.0; NaN with fewer than 2 pairs.
    A 1-d input gives a float."""
    d = np.asarray(diffs, dtype=float)
    flat = d.reshape(-1, d.shape[-1]) if d.ndim else d.reshape(1, 1)
    out = np.full(flat.shape[0], math.nan)
    if flat.shape[1] >= 2:
        ranks2 = _doubled_ranks(flat)
        t_obs = (ranks2 * (flat > 0)).sum(axis=1)
        keys = np.sort(ranks2, axis=1)
        uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
        for i, key in enumerate(uniq):
            rows = np.flatnonzero(inverse.ravel() == i)
            nonzero = tuple(int(r) for r in key if r > 0)
            if not nonzero:
                out[rows] = 1.0
                continue
            counts = _signed_rank_counts(nonzero)
            cdf = np.cumsum(counts) / counts.sum()
            sf = 1.0 - np.concatenate([[0.0], cdf[:-1]])  # P(T >= t)
            t = t_obs[rows]
            out[rows] = np.minimum(1.0, 2 * np.minimum(cdf[t], sf[t]))
    result = out.reshape(d.shape[:-1]) if d.ndim > 1 else out[0]
    return float(result) if np.ndim(result) == 0 else result


# --- t intervals, the corrected resampled t, TOST ---------------------------------------------


def _mean_sd_n(diffs: ArrayLike) -> tuple[np.ndarray, np.ndarray, int]:
    d = np.asarray(diffs, dtype=float)
    n = d.shape[-1]
    if n == 0:
        return np.asarray(math.nan), np.asarray(math.nan), 0
    mean = d.mean(axis=-1)
    sd = d.std(axis=-1, ddof=1) if n > 1 else np.zeros_like(mean)
    return mean, sd, n


def variance_factor(n: int, ratio: float = 0.0) -> float:
    """Var(mean ΔF1) / sd²: 1/n for independent pairs; Nadeau & Bengio (2003) corrected
    resampled t: 1/n + n_test/n_train for n resampled train/test splits whose test/train size
    ratio is `ratio` (the training sets' overlap makes the pairs correlated)."""
    return 1.0 / n + ratio


def t_interval(
    diffs: ArrayLike, *, level: float = 0.95, ratio: float = 0.0
) -> tuple[Values, Values]:
    """The t interval of the mean difference, df = n − 1; `ratio` > 0: the Nadeau-Bengio
    corrected interval. (NaN, NaN) with fewer than 2 pairs."""
    from scipy.stats import t as student

    mean, sd, n = _mean_sd_n(diffs)
    if n < 2:
        return math.nan, math.nan
    half = student.ppf(0.5 + level / 2, n - 1) * sd * math.sqrt(variance_factor(n, ratio))
    low, high = mean - half, mean + half
    return (float(low), float(high)) if np.ndim(low) == 0 else (low, high)


def tost_p(diffs: ArrayLike, margin: float, *, ratio: float = 0.0) -> Values:
    """Two one-sided t tests of H0: |mean| >= margin (p = the larger one-sided p); `ratio` > 0
    uses the corrected variance. Small p: the mean lies within ±margin."""
    from scipy.stats import t as student

    mean, sd, n = _mean_sd_n(diffs)
    if n < 2:
        return math.nan
    se = sd * math.sqrt(variance_factor(n, ratio))
    with np.errstate(divide="ignore", invalid="ignore"):
        p_low = student.sf((mean + margin) / se, n - 1)  # H0: mean <= -margin
        p_high = student.cdf((mean - margin) / se, n - 1)  # H0: mean >= +margin
    p = np.maximum(p_low, p_high)
    p = np.where(se == 0, np.where(np.abs(mean) < margin, 0.0, 1.0), p)
    return float(p) if np.ndim(p) == 0 else p


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p (NaN entries stay NaN and are not counted in the family)."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, math.nan)
    idx = np.flatnonzero(~np.isnan(p))
    m = len(idx)
    running = 0.0
    for rank, i in enumerate(idx[np.argsort(p[idx], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return [float(v) for v in out]


def _pair(values: tuple[Values, Values]) -> tuple[float, float]:
    """One comparison's interval as two floats."""
    return float(values[0]), float(values[1])


def bootstrap_ci(
    diffs: ArrayLike, *, rng: np.random.Generator, resamples: int = BOOTSTRAP_RESAMPLES
) -> tuple[float, float]:
    """Percentile bootstrap 95% CI of the mean of `diffs` (pairs resampled with replacement).
    Shown for comparison only: at 8 pairs it excludes 0 in 10-12% of null studies."""
    arr = np.asarray(diffs, dtype=float)
    if arr.size < 2:
        return math.nan, math.nan
    means = arr[rng.integers(0, arr.size, size=(resamples, arr.size))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


# --- the verdict ------------------------------------------------------------------------------


def verdict_codes(
    diffs: ArrayLike, *, ratio: float, alpha: float = ALPHA, margin: float = MARGIN
) -> np.ndarray:
    """The primary endpoint's verdict per row of `diffs` (pairs on the last axis): HELPS,
    HURTS, EQUIVALENT, INCONCLUSIVE or TOO_FEW (see the module docstring)."""
    d = np.atleast_2d(np.asarray(diffs, dtype=float))
    n = d.shape[-1]
    if n < MIN_PAIRS:
        return np.full(d.shape[:-1], TOO_FEW, dtype=object)
    p = np.asarray(wilcoxon_exact_p(d))
    t_lo, t_hi = (np.asarray(v) for v in t_interval(d, level=1 - alpha))
    c_lo, c_hi = (np.asarray(v) for v in t_interval(d, level=1 - alpha, ratio=ratio))
    equiv = np.asarray(tost_p(d, margin, ratio=ratio)) < alpha
    helps = (p < alpha) & (t_lo > 0) & (c_lo > 0)
    hurts = (p < alpha) & (t_hi < 0) & (c_hi < 0)
    out = np.full(d.shape[:-1], INCONCLUSIVE, dtype=object)
    out[equiv] = EQUIVALENT
    out[helps] = HELPS
    out[hurts] = HURTS
    return out


def verdict_text(code: str, *, n: int, margin: float = MARGIN) -> str:
    if code == TOO_FEW:
        return f"no verdict: {n} pairs < {MIN_PAIRS}"
    if code == EQUIVALENT:
        return f"equivalent within ±{100 * margin:.1f} pp"
    return str(code)


def paired_stats(
    diffs: Sequence[float],
    *,
    rng: np.random.Generator,
    ratio: float,
    resamples: int = BOOTSTRAP_RESAMPLES,
    alpha: float = ALPHA,
    margin: float = MARGIN,
) -> PairStats:
    """Every statistic of one comparison's paired ΔF1 (`ratio`: the folds' test/train ratio)."""
    arr = np.asarray(diffs, dtype=float)
    n = arr.size
    mean = float(arr.mean()) if n else math.nan
    sd = float(arr.std(ddof=1)) if n > 1 else (0.0 if n else math.nan)
    level = 1 - alpha
    code = str(verdict_codes(arr, ratio=ratio, alpha=alpha, margin=margin)[0]) if n else TOO_FEW
    return {
        "mean": mean, "sd": sd, "n": n, "positive": int((arr > 0).sum()),
        "ci_t": _pair(t_interval(arr, level=level)),
        "ci": _pair(t_interval(arr, level=level, ratio=ratio)),
        "ci_bootstrap": bootstrap_ci(arr, rng=rng, resamples=resamples),
        "p_wilcoxon": float(wilcoxon_exact_p(arr)) if n >= 2 else math.nan,
        "p_tost": float(tost_p(arr, margin, ratio=ratio)), "ratio": ratio, "verdict": code,
        "diffs": [float(x) for x in arr],
    }  # fmt: skip


# --- design: power, the null simulation, the step cap -----------------------------------------


def min_detectable_effect(
    sd: float, n: int, *, ratio: float = 0.0, alpha: float = ALPHA, power: float = POWER
) -> float:
    """The smallest true mean ΔF1 a two-sided t test at `alpha` on n pairs detects with
    probability `power` when the mean's variance is sd² x variance_factor(n, ratio)."""
    from scipy.optimize import brentq
    from scipy.stats import nct
    from scipy.stats import t as student

    if n < 2 or not sd > 0:
        return math.nan
    df, se = n - 1, sd * math.sqrt(variance_factor(n, ratio))
    crit = student.ppf(1 - alpha / 2, df)

    def short(delta: float) -> float:
        nc = delta / se
        lower = float(np.nan_to_num(nct.cdf(-crit, df, nc)))  # NaN far in the tail: 0
        return float(nct.sf(crit, df, nc)) + lower - power

    high = 12 * se
    while short(high) < 0:  # few pairs: heavy tails, 80% power lies far out
        high *= 2
        if high > 1e4 * se:
            return math.nan
    return float(brentq(short, 0.0, high))


def simulate_null(
    *,
    rng: np.random.Generator,
    studies: int = 1000,
    folds: int = 5,
    repeats: int = 2,
    fold_sd: float = 0.008,
    pair_sd: float = 0.014,
    seed_sd: float = 0.0,
    n_seeds: int = 2,
    effect: float = 0.0,
) -> NullStudies:
    """`studies` null studies of identical conditions: pair (k, r)'s ΔF1 = a fold effect shared
    by the repeats of fold k + a pretraining-seed effect shared by the pairs using seed
    r mod n_seeds + pair noise (+ a true `effect`: 0 is the null). Returns the verdict counts
    and the rate of helps/hurts."""
    fold = rng.normal(0.0, fold_sd, (studies, folds, 1))
    seed = rng.normal(0.0, seed_sd, (studies, 1, n_seeds))[:, :, np.arange(repeats) % n_seeds]
    diffs = (effect + fold + seed + rng.normal(0.0, pair_sd, (studies, folds, repeats))).reshape(
        studies, folds * repeats
    )
    codes = verdict_codes(diffs, ratio=1.0 / (folds - 1))
    counts = {c: int((codes == c).sum()) for c in (HELPS, HURTS, EQUIVALENT, INCONCLUSIVE)}
    return {"counts": counts, "false_verdicts": (counts[HELPS] + counts[HURTS]) / studies}


def cap_fractions(rows: Sequence[ResultRow]) -> dict[str, float]:
    """How often the step cap bound: the fraction of runs that never early-stopped (stopped at
    the cap) and of runs whose scored (best-validation) checkpoint is the one at the cap."""
    capped = best_last = counted = 0
    for r in rows:
        try:
            cap, stopped, best = (int(float(r[k])) for k in ("steps_cap", "stopped_step",
                                                              "best_step"))  # fmt: skip
        except (KeyError, TypeError, ValueError):
            continue
        counted += 1
        capped += stopped >= cap
        best_last += best >= cap
    if not counted:
        return {"runs": 0, "at_cap": math.nan, "best_at_cap": math.nan}
    return {"runs": counted, "at_cap": capped / counted, "best_at_cap": best_last / counted}


# --- a study's summary ------------------------------------------------------------------------


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return math.nan, math.nan
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def _by_pair(
    rows: Sequence[ResultRow], size: int, condition: str
) -> dict[tuple[int, int], ResultRow]:
    return {
        (int(r["fold"]), int(r.get("repeat", 0) or 0)): r
        for r in rows
        if int(r["size"]) == size and r["condition"] == condition
    }


def fold_ratio(rows: Sequence[ResultRow]) -> float:
    """The folds' mean test/train size ratio (slides: test / (train + inner validation)) for the
    corrected resampled t; from the fold count (1 / (K − 1)) when rows name no slides."""
    ratios = []
    for r in rows:
        test, train, val = (str(r.get(k) or "") for k in ("test_slides", "train_slides",
                                                           "val_slides"))  # fmt: skip
        n_train = len([s for s in train.split(";") if s]) + len([s for s in val.split(";") if s])
        if test and n_train:
            ratios.append(len(test.split(";")) / n_train)
    if ratios:
        return float(np.mean(ratios))
    folds = len({int(r["fold"]) for r in rows})
    return 1.0 / (folds - 1) if folds > 1 else 0.0


def _zlib_key(*names: str) -> int:
    import zlib

    return zlib.crc32("|".join(names).encode())


def summarize(
    rows: Sequence[ResultRow],
    *,
    conditions: Sequence[str] | None = None,
    comparisons: Sequence[tuple[str, str]] = (),
    primary: Primary | None = None,
    seed: int = 0,
    resamples: int = BOOTSTRAP_RESAMPLES,
    margin: float = MARGIN,
    alpha: float = ALPHA,
) -> Summary:
    """Per size (descending): per condition mean and sd of P, R, F1, AP and the stopping step;
    per comparison (a, b) the paired ΔF1 statistics over (fold, repeat) pairs (`paired_stats`),
    with "p_holm": the Wilcoxon p Holm-adjusted over every comparison but the `primary` one
    ({"comparison": [a, b], "size": n}), which alone gets a verdict."""
    conditions = list(conditions or dict.fromkeys(r["condition"] for r in rows))
    out: Summary = []
    for size in sorted({int(r["size"]) for r in rows}, reverse=True):
        entry: SizeSummary = {"size": size, "conditions": {}, "comparisons": {}}
        by = {c: _by_pair(rows, size, c) for c in conditions}
        for c in conditions:
            entry["conditions"][c] = _condition_stats(by[c])
        for a, b in comparisons:
            if a not in by or b not in by:
                continue
            pairs = sorted(set(by[a]) & set(by[b]))
            diffs = [float(by[a][p]["f1"]) - float(by[b][p]["f1"]) for p in pairs]
            rng = np.random.default_rng([seed, size, _zlib_key(a, b)])
            entry["comparisons"][a, b] = ComparisonStats(**paired_stats(
                diffs, rng=rng, resamples=resamples, margin=margin, alpha=alpha,
                ratio=fold_ratio([by[a][p] for p in pairs]),
            ))  # fmt: skip
        out.append(entry)
    _holm_secondary(out, primary)
    return out


def _condition_stats(pairs: Mapping[tuple[int, int], ResultRow]) -> ConditionStats:
    """(mean, sd) of P, R, F1, AP and the stopping step over one condition's runs."""

    def mean_sd(m: str) -> tuple[float, float]:
        return _mean_sd([float(r[m]) for r in pairs.values() if r.get(m) not in (None, "")])

    return {
        "precision": mean_sd("precision"), "recall": mean_sd("recall"), "f1": mean_sd("f1"),
        "ap": mean_sd("ap"), "best_step": mean_sd("best_step"), "runs": len(pairs),
        "f1s": [float(pairs[k]["f1"]) for k in sorted(pairs)],
    }  # fmt: skip


def _holm_secondary(summary: Summary, primary: Primary | None) -> None:
    key = (tuple(primary["comparison"]), int(primary["size"])) if primary else None
    family: list[ComparisonStats] = []
    for e in summary:
        for ab, st in e["comparisons"].items():
            st["primary"] = (tuple(ab), e["size"]) == key
            if not st["primary"]:
                family.append(st)
            else:
                st["p_holm"] = math.nan
    for st, p in zip(family, holm([f["p_wilcoxon"] for f in family]), strict=True):
        st["p_holm"] = p
