"""`lymph study`'s outputs: table.md, results.csv and f1_vs_size.png (issue 20).

- `protocol_markdown`: the part of table.md written before any run (question, primary
  endpoint and its decision rule, power line, conditions, rules).
- `results_markdown`: per-condition metrics, the step cap's fractions, the primary endpoint with
  every statistic and its verdict, the secondary estimates with Holm-adjusted p (no verdict
  words), the deviations from the protocol and the notes.
- `write_results_csv`: one row per run (CSV_FIELDS), sorted by size (descending), fold, repeat
  and condition.
- `plot_pairs_by_size`: every pair's F1, the means and ΔF1 with CIs.
"""

from __future__ import annotations

import csv
import io
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

from lymph.data.io import atomic_write_text
from lymph.model.study.protocol import ResultsProtocol, StudyProtocol, protocol_sha256
from lymph.model.study.stats import (
    MIN_PAIRS,
    ComparisonStats,
    PairStats,
    Primary,
    ResultRow,
    Summary,
    verdict_text,
)

CAP_TARGET = 0.10  # at most this fraction of runs may stop at the step cap

# results.csv's columns (the file format). best_val_f1: the scored checkpoint's inner-validation
# F1 (TrainResult.best_f1), under the column's recorded name.
CSV_FIELDS = (
    "run_id", "size", "fold", "repeat", "condition", "init", "pretrain_seed", "pretext",
    "recon_weight",
    "precision", "recall", "f1", "ap", "dice", "iou", "tp", "fp", "fn", "tn", "threshold",
    "best_step", "best_val_f1", "stopped_step", "steps_cap",
    "n_tumor_patches", "n_normal_patches", "subset_sha", "train_seed",
    "pretrain_store", "pretrain_slides", "train_slides", "val_slides", "test_slides",
    "n_test_patches", "train_seconds", "eval_seconds", "cpu_seconds", "cpu",
)  # fmt: skip


def _pct(pair: tuple[float, float]) -> str:
    mean, sd = pair
    if math.isnan(mean):
        return "n/a"
    return f"{100 * mean:.1f} ± {100 * sd:.1f}"


def _pp(value: float | None, *, signed: bool = True) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    v = 100 * value + 0.0  # + 0.0: no "-0.0"
    digits = 2 if 0 < abs(v) < 0.05 else 1  # a CI bound of -0.04 is not "+0.0": keep its sign
    return f"{v:{'+' if signed else ''}.{digits}f}"


def _ci(pair: Sequence[float]) -> str:
    return f"[{_pp(pair[0])}, {_pp(pair[1])}]"


def _p(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}"


# --- the protocol ---------------------------------------------------------------------------


def protocol_markdown(protocol: StudyProtocol) -> str:
    """The part of table.md written before any run: question, endpoint, rules, power."""
    a, b = protocol["primary"]["comparison"]
    margin, alpha = 100 * protocol["margin"], protocol["alpha"]
    power = protocol["power"]
    lines = [
        "# lymph study: does reconstruction pretraining help at few labels?",
        "",
        "## Protocol (written before any run)",
        "",
        f"- Protocol sha256 `{protocol_sha256(protocol)}` (canonical JSON in protocol.json; "
        "changes after the first finished run are listed under Deviations).",
        f"- **Primary endpoint** (pre-declared): ΔF1 = F1({a}) − F1({b}) at "
        f"{protocol['primary']['size']} labeled patches, paired over (fold, repeat). Verdict "
        f'(at least {MIN_PAIRS} pairs, alpha {alpha}): "helps" / "hurts" when the exact '
        f"two-sided Wilcoxon signed-rank p < {alpha} and both the paired t {1 - alpha:.0%} CI "
        f"and the Nadeau-Bengio corrected resampled t {1 - alpha:.0%} CI (test/train ratio "
        f'{power["ratio"]:.2f} from the folds) exclude 0 on that side; "equivalent within '
        f'±{margin:.1f} pp" when the two one-sided corrected t tests (TOST, alpha {alpha}) '
        'put the mean inside that margin; else "inconclusive". The percentile bootstrap CI is '
        "shown, never decides.",
        "- Secondary (every other comparison and size): estimates with Wilcoxon p "
        "Holm-adjusted over that whole family; no verdict.",
        f"- Power: {power['n']} pairs and a pilot sd of {100 * power['sd']:.1f} pp "
        f"({power['sd_source']}): the smallest ΔF1 detected with 80% power is "
        f"{_pp(power['mde'], signed=False)} pp under the corrected variance "
        f"({_pp(power['mde_independent'], signed=False)} pp if the pairs were independent). "
        'Smaller true effects will mostly read "inconclusive".'
        + (" That is more than F1's whole 100 pp range: this design can detect no effect; it "
           "only illustrates." if (power["mde"] or 0) > 1 else ""),
        f"- Profile: {protocol['profile']}. {protocol['profile_note']}",
        f"- World: {protocol['world']}",
        "- Conditions (same labeled subset, stopping rule and training seed per pair):",
        *[f"  - {label}" for label in protocol["condition_labels"]],
        f"- Fine-tunes: at most {protocol['steps']} steps; every {protocol['eval_every']} steps "
        "the F1 at the F1-best threshold on the inner-validation slides (calibration-free), "
        "best checkpoint kept"
        + f", early stop after {protocol['patience']} evaluations without improvement"
        + (f" (never before step {protocol['min_steps']})" if protocol.get("min_steps") else "")
        + f". The cap must not bind: at most {CAP_TARGET:.0%} of runs may stop at it "
        "(reported under Results).",  # fmt: skip
        "- Threshold: F1-best on every pixel of the inner-validation slides (never the test "
        "fold); every patch of every test slide scored; AP is threshold-free.",
        f"- Design: sizes {', '.join(map(str, protocol['sizes']))}; {protocol['folds']} folds "
        f"grouped by slide x {protocol['repeats']} repeats (subset, inner-validation slides "
        "and seed redrawn per repeat; repeat r fine-tunes from pretraining checkpoint "
        "r mod (checkpoints per pretext)); bootstrap "
        f"{protocol['resamples']:,} seeded resamples.",
        "",
        "",
    ]
    return "\n".join(lines)


# --- the results ------------------------------------------------------------------------------


def _condition_rows(summary: Summary) -> list[str]:
    lines = [
        "| Labeled | Condition | P (%) | R (%) | F1 (%) | AP (%) | stop step | runs |",
        "|---:|:---|---:|---:|---:|---:|---:|---:|",
    ]
    for e in summary:
        for c, s in e["conditions"].items():
            step = s["best_step"]
            step_text = "n/a" if math.isnan(step[0]) else f"{step[0]:.0f} ± {step[1]:.0f}"
            lines.append(
                f"| {e['size']} | {c} | {_pct(s['precision'])} | {_pct(s['recall'])} | "
                f"{_pct(s['f1'])} | {_pct(s['ap'])} | {step_text} | {s['runs']} |"
            )
    return lines


def cap_line(cap: Mapping[str, float], steps: int) -> str:
    """The step cap's line: how often runs stopped at it, and whether it bound."""
    if not cap.get("runs"):
        return f"Step cap {steps}: no run recorded its stopping step."
    text = (
        f"Step cap {steps}: {cap['at_cap']:.0%} of {cap['runs']} runs never early-stopped "
        f"(stopped at the cap); {cap['best_at_cap']:.0%} scored their checkpoint at the cap."
    )
    if cap["at_cap"] > CAP_TARGET:
        text += (
            f" **The cap bound** (more than {CAP_TARGET:.0%}): conditions that converge more "
            "slowly are cut short; raise --steps."
        )
    return text


def compute_line(rows: Sequence[Mapping[str, object]], jobs: int) -> str:
    """The runs' compute: their own time summed (train + score), their CPU time, and the wall
    time that makes with ``jobs`` runs in parallel (pretraining not included)."""

    def total(key: str) -> float:
        values = (_float(r.get(key)) for r in rows)
        return sum(v for v in values if v is not None)

    run_h = (total("train_seconds") + total("eval_seconds")) / 3600
    return (
        f"Compute: {len(rows)} runs, {run_h:.2f} h of run time summed over runs "
        f"({total('cpu_seconds') / 3600:.2f} CPU-h); {jobs} at a time makes about "
        f"{run_h / max(1, jobs):.2f} h of wall time (pretraining not included; a run's "
        "time depends on what else the machine ran)." + machines_note(rows)
    )


def machines_note(rows: Sequence[Mapping[str, object]]) -> str:
    """The compute line's sentence on machines when the runs were made on more than one CPU
    (results.csv's "cpu"; rows from before it was recorded count as "not recorded"), else "".
    """
    counts = Counter(str(r.get("cpu") or "not recorded") for r in rows)
    if len(counts) < 2:
        return ""
    each = "; ".join(f"{n} on {cpu}" for cpu, n in counts.most_common())
    return (f" **Runs on {len(counts)} CPUs** ({each}): a run reproduces to the bit on its own "
            "CPU only (kernels round differently), so this table is not one machine's; the "
            "pretraining checkpoints, if made again on another, are another realisation too.")


def _float(value: object) -> float | None:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _primary_rows(st: PairStats, size: int, a: str, b: str, margin: float) -> list[str]:
    return [
        "| Labeled | ΔF1 = F1(a) − F1(b) | mean | sd | corrected 95% CI | t 95% CI | "
        "bootstrap 95% CI (shown only) | Wilcoxon exact p | TOST p | pairs > 0 | verdict |",
        "|---:|:---|---:|---:|:---|:---|:---|---:|---:|---:|:---|",
        f"| {size} | {a} − {b} | {_pp(st['mean'])} | {_pp(st['sd'], signed=False)} | "
        f"{_ci(st['ci'])} | {_ci(st['ci_t'])} | {_ci(st['ci_bootstrap'])} | "
        f"{_p(st['p_wilcoxon'])} | {_p(st['p_tost'])} | {st['positive']}/{st['n']} | "
        f"{verdict_text(st['verdict'], n=st['n'], margin=margin)} |",
    ]


def _secondary_rows(summary: Summary) -> list[str]:
    lines = [
        "| Labeled | ΔF1 = F1(a) − F1(b) | mean | sd | corrected 95% CI | t 95% CI | "
        "Wilcoxon exact p | Holm p | pairs > 0 |",
        "|---:|:---|---:|---:|:---|:---|---:|---:|---:|",
    ]
    for e in summary:
        for (a, b), st in e["comparisons"].items():
            if st.get("primary"):
                continue
            lines.append(
                f"| {e['size']} | {a} − {b} | {_pp(st['mean'])} | "
                f"{_pp(st['sd'], signed=False)} | {_ci(st['ci'])} | {_ci(st['ci_t'])} | "
                f"{_p(st['p_wilcoxon'])} | {_p(st['p_holm'])} | {st['positive']}/{st['n']} |"
            )
    return lines


def primary_stats(summary: Summary, primary: Primary) -> ComparisonStats | None:
    """The primary endpoint's statistics, None before its runs exist."""
    a, b = primary["comparison"]
    key = (a, b)
    for e in summary:
        if e["size"] == primary["size"] and key in e["comparisons"]:
            return e["comparisons"][key]
    return None


def results_markdown(
    summary: Summary,
    *,
    protocol: ResultsProtocol,
    notes: Sequence[str] = (),
    deviations: Sequence[str] = (),
    cap: Mapping[str, float] | None = None,
    compute: str = "",
    interim: str = "",
) -> str:
    """The results part of table.md (``compute``: `compute_line`'s, when given; ``interim``:
    the warning an unfinished study's table carries)."""
    primary, margin = protocol["primary"], protocol["margin"]
    a, b = primary["comparison"]
    lines = [
        "## Results",
        "",
        *([interim, ""] if interim else []),
        "Percent, mean ± sd over (fold, repeat) pairs; each run pooled over the pixels of its "
        "test slides. Stop = the step of the scored (best-validation) checkpoint.",
        "",
        *_condition_rows(summary),
        "",
        cap_line(cap or {}, protocol["steps"]),
        "",
        *([compute, ""] if compute else []),
        "### Primary endpoint (ΔF1, percentage points)",
        "",
    ]
    st = primary_stats(summary, primary)
    if st is None:
        lines.append(f"No result yet for {a} − {b} at {primary['size']} labels.")
    else:
        lines += _primary_rows(st, primary["size"], a, b, margin)
    lines += [
        "",
        "### Secondary comparisons (estimates; no verdict)",
        "",
        "Holm p: the exact Wilcoxon p adjusted over every secondary comparison and size.",
        "",
        *_secondary_rows(summary),
        "",
        "## Verdict",
        "",
    ]
    if st is not None:
        lines.append(
            f"- **Primary endpoint**: {verdict_text(st['verdict'], n=st['n'], margin=margin)}"
            f" — ΔF1 {a} − {b} {_pp(st['mean'])} pp at {primary['size']} labels, corrected 95% "
            f"CI {_ci(st['ci'])}, t 95% CI {_ci(st['ci_t'])}, Wilcoxon exact p "
            f"{_p(st['p_wilcoxon'])}, TOST (±{100 * margin:.1f} pp) p {_p(st['p_tost'])}, "
            f"{st['n']} pairs."
        )
    lines += ["", "## Deviations from the protocol", ""]
    lines += [f"- {d}" for d in deviations] or ["- none"]
    if notes:
        lines += ["", "## Notes", "", *[f"- {n}" for n in notes]]
    return "\n".join(lines) + "\n"


# --- results.csv and the figure ---------------------------------------------------------------


def write_results_csv(path: Path, rows: Sequence[ResultRow]) -> None:
    """results.csv: CSV_FIELDS of every row, by size (descending), fold, repeat, condition."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    key = lambda r: (-int(r["size"]), int(r["fold"]), int(r.get("repeat", 0)), r["condition"])  # noqa: E731
    for row in sorted(rows, key=key):
        writer.writerow(row)
    atomic_write_text(path, buf.getvalue())


def plot_pairs_by_size(summary: Summary, protocol: StudyProtocol, path: Path, *,
                       title: str = "") -> None:
    """f1_vs_size.png: every pair's F1 and the means per condition; ΔF1 with CIs; `title`
    above both panels (an unfinished study's interim line)."""
    from lymph.model.figures import plot_study_pairs

    ordered = sorted(summary, key=lambda e: e["size"])
    sizes = [e["size"] for e in ordered]
    points = {
        c: [e["conditions"][c]["f1s"] if c in e["conditions"] else [] for e in ordered]
        for c in protocol["conditions"]
    }
    deltas: dict[str, list[tuple[list[float], tuple[float, float]]]] = {}
    for a, b in ordered[0]["comparisons"] if ordered else []:
        deltas[f"{a} − {b}"] = [
            (e["comparisons"][a, b]["diffs"], e["comparisons"][a, b]["ci"]) for e in ordered
        ]
    a, b = protocol["primary"]["comparison"]
    plot_study_pairs(sizes, points, deltas, path, primary=f"{a} − {b}", title=title)
