"""The entry of a training run: ``run(TrainConfig) -> TrainResult``."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from lymph.data.lock import run_folder_lock
from lymph.data.store import PatchStore
from lymph.model.infer import resolve_device
from lymph.model.layout import join_process_group, leave_process_group
from lymph.model.threads import torch_threads
from lymph.model.train.config import TrainConfig
from lymph.model.train.loop import LoopStats, train_loop
from lymph.model.train.plan import Plan, plan_run
from lymph.model.train.session import Session, build, prepare_run_folder, write_loss_plot


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    last: Path
    best: Path | None
    steps: int
    best_f1: float | None
    seconds: float
    patches_per_s: float = 0.0
    data_wait: float = 0.0  # fraction of the loop's time spent waiting for batches
    final_loss: float | None = None
    val: dict[str, float] | None = None  # the last validation
    stopped: bool = False  # stopped at stop_at before `steps`
    train_patches: int = 0  # patches the training slides hold (pretrain) / labeled set size
    train_slides: tuple[str, ...] = ()
    val_slides: tuple[str, ...] = ()
    best_step: int | None = None  # the step of best.pt
    stopped_step: int = 0  # the step the run ended at (early stop, stop_at or steps)
    early_stopped: bool = False  # ended by patience
    start_step: int = 0  # the step a --resume started from (0 for a new run)


def run(config: TrainConfig, *, progress: bool = True) -> TrainResult:
    """Run (or resume) one training run; see the package docstring. Only rank 0 writes.
    ``config.threads`` sets torch's intra-op threads for the run and restores them after."""
    with torch_threads(config.threads):
        t_start = time.perf_counter()
        device = resolve_device(config.device)
        layout = join_process_group(device.type, workers=config.workers)
        if device.type == "cuda":
            device = torch.device("cuda", layout.local_rank)
            torch.cuda.set_device(device)
        with run_folder_lock(config.out, main=layout.main, what="this run folder"):
            store = PatchStore.open(config.store)
            plan = plan_run(config, store, layout=layout)
            session, lab_labels = build(config, plan, store, device=device)
            prepare_run_folder(session, lab_labels)
            stats = train_loop(session, progress=progress)
            write_loss_plot(session)
            leave_process_group(layout)
        return _result(config, plan, session, stats, seconds=time.perf_counter() - t_start)


def _result(config: TrainConfig, plan: Plan, session: Session, stats: LoopStats, *,
            seconds: float) -> TrainResult:  # fmt: skip
    done = session.step - plan.start.step
    best_path = config.out / "best.pt"
    world = plan.layout.world_size
    return TrainResult(
        run_dir=config.out,
        last=config.out / "last.pt",
        best=best_path if best_path.exists() and session.best_f1 is not None else None,
        steps=session.step,
        best_f1=session.best_f1,
        seconds=seconds,
        patches_per_s=done * config.batch_size * world / max(stats.seconds, 1e-9),
        data_wait=stats.wait / max(stats.seconds, 1e-9),
        final_loss=stats.final_loss,
        val=session.last_val,
        stopped=session.step < config.steps and not session.early_stopped,
        train_patches=session.n_train,
        train_slides=plan.train_ids,
        val_slides=plan.val_ids,
        best_step=session.best_step,
        stopped_step=session.step,
        early_stopped=session.early_stopped,
        start_step=plan.start.step,
    )
