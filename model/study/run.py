"""`run(StudyConfig) -> StudyResult`: run (or resume) a study and write its outputs.

OUT/study.json (every setting, the folds, the slide provenance), results.csv (one row per run),
table.md (protocol first, then results and verdicts), f1_vs_size.png and protocol.json. The
protocol is declared (protocol.json, study.json, table.md) before any new run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from lymph.data.io import atomic_write_json, atomic_write_text
from lymph.model.study.config import StudyConfig
from lymph.model.study.execute import Row, RunContext
from lymph.model.study.plan import RunSpec
from lymph.model.study.pool import execute_all
from lymph.model.study.prepare import StudyPlan, prepare
from lymph.model.study.protocol import (
    StudyProtocol,
    build_protocol,
    deviation_lines,
    protocol_sha256,
    record_protocol,
)
from lymph.model.study.report import (
    cap_line,
    compute_line,
    plot_pairs_by_size,
    primary_stats,
    protocol_markdown,
    results_markdown,
    write_results_csv,
)
from lymph.model.study.resume import resume
from lymph.model.study.stats import Summary, cap_fractions, summarize

RUN_SETTINGS = ("store", "folds", "seed", "lr", "recon_weight", "threshold", "max_test_patches")
RESOLVED_SETTINGS = (
    "steps",
    "patience",
    "min_steps",
    "eval_every",
    "batch_size",
    "crop",
    "val_patches",
)
OUTPUTS = ("results.csv", "table.md", "f1_vs_size.png", "study.json", "protocol.json")


@dataclass(frozen=True)
class StudyResult:
    """What a study run returns: every run's row (reused and new), the summary table.md was
    written from, the files written, and how many runs were reused (`skipped`) or run now."""

    rows: list[Row]
    summary: Summary
    files: dict[str, Path]  # output name -> its path (OUTPUTS)
    skipped: int
    ran: int
    folds: list[tuple[str, ...]]
    protocol: StudyProtocol
    notes: list[str]
    step_cap: dict[str, float]


def run_settings(config: StudyConfig, inits: Mapping[str, Sequence[Path]]) -> dict[str, object]:
    """The settings a finished run must share to be reused: those that change its result.
    (Sizes, repeats and conditions may be added to a study; device, jobs and scoring batch
    size change no result.)"""
    resolved = config.resolved
    return {
        **{k: str(v) if isinstance(v, Path) else v for k, v in
           ((k, getattr(config, k)) for k in RUN_SETTINGS)},
        **{k: getattr(resolved, k) for k in RESOLVED_SETTINGS},
        "folds": resolved.folds,
        "val_slides": resolved.val_slides,
        "inits": {c: str(p[0]) if len(p) == 1 else [str(x) for x in p]
                  for c, p in sorted(inits.items())},
    }  # fmt: skip


def study_context(config: StudyConfig) -> tuple[StudyPlan, RunContext]:
    """(the plan: store, slides, checkpoints, runs, folds, notes; the context every run shares)
    without running anything: `execute(ctx, plan.runs[i])` runs one of them."""
    plan = prepare(config)
    inits = {c: tuple(p.path for p in g) for c, g in plan.groups.items()}
    pretexts = plan.fine_tune_pretexts()
    ctx = RunContext(
        config=config, arch=plan.arch, inits=inits, pretexts=pretexts,
        settings={**run_settings(config, inits), "pretexts": dict(sorted(pretexts.items()))},
        pretrain={str(p.path): (p.store, p.slides) for p in plan.pres},
        pretrain_seeds={str(p.path): p.seed for p in plan.pres},
    )  # fmt: skip
    return plan, ctx


def _precision_record(config: StudyConfig) -> dict[str, str | list[str]]:
    """The precision asked for, the one its runs use on this machine, and the CPU's bf16 flags."""
    from lymph.model.infer import resolve_device
    from lymph.model.precision import describe

    return describe(config.precision, resolve_device(config.device))


def run(config: StudyConfig) -> StudyResult:
    """Run (or resume) the grid and write OUT's files. One study per folder: a second
    `lymph study` on the same --out is refused (OutputError naming the holder)."""
    from lymph.data.lock import run_folder_lock

    with run_folder_lock(config.out, what="this study folder"):
        return _run(config)


def _run(config: StudyConfig) -> StudyResult:
    from lymph.data.progress import progress_bar

    plan, ctx = study_context(config)
    protocol = build_protocol(config, plan)
    config.out.mkdir(parents=True, exist_ok=True)
    rows, todo = resume(config, plan.runs, ctx.settings)
    declared, deviations = _declare(config, plan, protocol)
    skipped = len(rows)
    bar = progress_bar(
        total=len(plan.runs), initial=skipped, desc="study runs", unit="run",
        enabled=config.progress, dynamic_ncols=True,
    )  # fmt: skip
    written: list[int] = []  # the complete sizes the last interim table.md summarised

    def interim(row: Row | None = None) -> None:
        if row is not None:
            rows.append(row)
        sizes = complete_sizes(plan.runs, rows)
        if sizes and sizes != written and len(rows) < len(plan.runs):
            written[:] = sizes
            _write_results(config, plan, protocol, rows, declared, deviations, interim=True)

    interim()  # a resumed study's complete sizes, before any new run
    with bar:
        execute_all(ctx, todo, bar, on_row=interim)
    summary, cap = _write_results(config, plan, protocol, rows, declared, deviations)
    return StudyResult(
        rows=rows, summary=summary, files={n: config.out / n for n in OUTPUTS},
        skipped=skipped, ran=len(todo), folds=plan.folds, protocol=protocol, notes=plan.notes,
        step_cap=cap,
    )  # fmt: skip


def complete_sizes(runs: Sequence[RunSpec], rows: Sequence[Row]) -> list[int]:
    """The labeled-set sizes (descending) whose planned runs have all finished."""
    have = Counter(int(str(r["size"])) for r in rows)
    planned = Counter(spec.size for spec in runs)
    return sorted((s for s, n in planned.items() if have[s] >= n), reverse=True)


def _pending(plan: StudyPlan, sizes: Sequence[int]) -> list[int]:
    return [s for s in dict.fromkeys(spec.size for spec in plan.runs) if s not in sizes]


def interim_title(plan: StudyPlan, n_rows: int, sizes: Sequence[int]) -> str:
    """f1_vs_size.png's title while a study is unfinished (the figure travels without its
    table)."""
    return (f"INTERIM: {n_rows} of {len(plan.runs)} runs finished; sizes pending: "
            f"{', '.join(map(str, _pending(plan, sizes)))}")


def interim_line(plan: StudyPlan, n_rows: int, sizes: Sequence[int]) -> str:
    """table.md's warning while a study is unfinished."""
    pending = _pending(plan, sizes)
    return (
        f"**Interim: {n_rows} of {len(plan.runs)} runs finished.** Summarised: the sizes whose "
        f"runs are all finished ({', '.join(map(str, sizes))}); pending: "
        f"{', '.join(map(str, pending))}. A verdict on a complete size is final (no run of it "
        "is left, the protocol is fixed); the Holm p cover the complete sizes only and will "
        "change. This file is rewritten as sizes complete and replaced when the study ends."
    )


def _write_results(
    config: StudyConfig,
    plan: StudyPlan,
    protocol: StudyProtocol,
    rows: list[Row],
    declared: dict[str, object],
    deviations: list[str],
    *,
    interim: bool = False,
) -> tuple[Summary, dict[str, float]]:
    """results.csv (every finished run), table.md, study.json's results and f1_vs_size.png
    (every run's row; `interim`: only the sizes whose runs have all finished)."""
    write_results_csv(config.out / "results.csv", rows)
    sizes, n_done = complete_sizes(plan.runs, rows), len(rows)
    if interim:
        rows = [r for r in rows if int(str(r["size"])) in sizes]
    summary = summarize(
        rows, conditions=plan.conditions, seed=config.seed, resamples=config.resamples,
        comparisons=[(a, b) for a, b in protocol["secondary"]], primary=protocol["primary"],
        margin=config.margin,
    )  # fmt: skip
    cap = cap_fractions(rows)
    table = protocol_markdown(protocol) + results_markdown(
        summary, protocol=protocol, notes=plan.notes, cap=cap,
        deviations=deviations, compute=compute_line(rows, config.n_jobs),
        interim=interim_line(plan, n_done, sizes) if interim else "",
    )  # fmt: skip
    atomic_write_text(config.out / "table.md", table)
    st = primary_stats(summary, protocol["primary"])
    declared["results"] = {
        "interim": {"complete_sizes": sizes, "runs": n_done} if interim else None,
        "step_cap": {**cap, "text": cap_line(cap, protocol["steps"])},
        "primary": None if st is None else {k: v for k, v in st.items() if k != "diffs"},
    }  # fmt: skip
    atomic_write_json(config.out / "study.json", declared)
    plot_pairs_by_size(summary, protocol, config.out / "f1_vs_size.png",
                       title=interim_title(plan, n_done, sizes) if interim else "")
    return summary, cap


def _declare(
    config: StudyConfig, plan: StudyPlan, protocol: StudyProtocol
) -> tuple[dict[str, object], list[str]]:
    """Before any new run: record the protocol (protocol.json: hash, amendments after the first
    result), write study.json, and table.md's protocol when no result exists yet. Returns
    study.json's record and the protocol's deviations (table.md's lines)."""
    finished = len(list((config.out / "runs").glob("*/done.json")))
    protocol_record = record_protocol(config.out / "protocol.json", protocol, n_results=finished)
    record: dict[str, object] = {
        **config.to_dict(), "protocol": protocol, "protocol_sha256": protocol_sha256(protocol),
        "protocol_record": protocol_record, "folds_slides": [list(f) for f in plan.folds],
        "pretraining": [p.to_dict() for p in plan.pres], "notes": plan.notes,
        **_precision_record(config),
    }  # fmt: skip
    atomic_write_json(config.out / "study.json", record)
    if not finished:  # declared before any result exists
        atomic_write_text(
            config.out / "table.md", protocol_markdown(protocol) + "\n(results pending)\n"
        )
    return record, deviation_lines(protocol_record)
