"""Running the study's runs: in this process when jobs is 1, else in `jobs` spawned worker
processes (one torch thread each by default), reporting each finished run to a progress bar."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from typing import Protocol

from lymph.model.study.execute import Row, RunContext, execute
from lymph.model.study.plan import RunSpec


class ProgressBar(Protocol):
    """The part of a tqdm bar `execute_all` uses."""

    def set_postfix_str(self, s: str, /) -> None: ...

    def update(self, n: int, /) -> object: ...


def worker_init(threads: int) -> None:
    """Spawned worker: `threads` torch threads (and OpenMP / BLAS told the same)."""
    from lymph.model.threads import set_torch_threads

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    set_torch_threads(threads)
    warnings.simplefilter("ignore")  # per-run warnings would interleave over the progress bar


def execute_all(
    ctx: RunContext,
    todo: Sequence[RunSpec],
    bar: ProgressBar,
    on_row: Callable[[Row], None] | None = None,
) -> list[Row]:
    """Run `todo`: in this process when jobs is 1, else in `jobs` spawned processes.
    `on_row` is called with each finished run's row, in the order they finish."""
    rows: list[Row] = []

    def finished(row: Row, run_id: str) -> None:
        rows.append(row)
        bar.set_postfix_str(run_id)
        bar.update(1)
        if on_row is not None:
            on_row(row)

    jobs = min(ctx.config.n_jobs, max(1, len(todo)))
    if jobs == 1:
        for spec in todo:
            bar.set_postfix_str(spec.run_id)
            finished(execute(ctx, spec), spec.run_id)
        return rows
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    pool = ProcessPoolExecutor(
        max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
        initializer=worker_init, initargs=(ctx.config.threads,),
    )  # fmt: skip
    with pool:
        futures = {pool.submit(execute, ctx, spec): spec for spec in todo}
        try:
            for fut in as_completed(futures):
                finished(fut.result(), futures[fut].run_id)
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise
    return rows
