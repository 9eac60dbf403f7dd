"""The live objects of a run (model, optimizer, schedule, data loader, validation patches) and
its run folder: built from the plan, written by rank 0 (config.json, labeled.json,
metrics.jsonl, the checkpoints, loss.png)."""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader

from lymph.data.errors import OutputError
from lymph.data.io import atomic_write_json, atomic_write_text
from lymph.data.store import PatchStore
from lymph.model.checkpoint import save_checkpoint, versions
from lymph.model.layout import Layout
from lymph.model.precision import describe as describe_precision
from lymph.model.stream import Batch
from lymph.model.train.config import TrainConfig
from lymph.model.train.data import make_loader, training_data, validation_patches
from lymph.model.train.plan import Plan, lr_factor
from lymph.model.unet import UNet
from lymph.model.weights import load_optimizer, load_weights


@dataclass
class Session:
    """The live objects of a run and its counters; the loop mutates ``step`` and ``best_*``."""

    config: TrainConfig
    plan: Plan
    device: torch.device
    model: UNet  # the plain model (checkpoints, validation)
    ddp_model: torch.nn.Module
    opt: torch.optim.Optimizer
    sched: LambdaLR
    loader: DataLoader[Batch]
    val_images: np.ndarray | None
    val_masks: np.ndarray | None
    n_train: int
    step: int = 0
    best_f1: float | None = None
    best_step: int | None = None
    last_val: dict[str, float] | None = None
    evals_since_best: int = 0
    early_stopped: bool = False

    @property
    def run(self) -> Path:
        return self.config.out

    @property
    def layout(self) -> Layout:
        return self.plan.layout

    def log(self, record: Mapping[str, object]) -> None:
        """Append one record to metrics.jsonl (a torn last line is skipped by its readers)."""
        if not self.layout.main:
            return
        path = self.run / "metrics.jsonl"
        try:
            with open(path, "a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as exc:
            raise OutputError(
                f"cannot write {path}: {exc.strerror or exc}; free space or fix the folder, "
                "then continue with --resume (last.pt is intact)"
            ) from exc

    def checkpoint(self, path: Path, val: dict[str, float] | None = None) -> None:
        start = self.plan.start
        data_pos = {
            "batches": start.batches + (self.step - start.step),
            "stream_seed": start.stream_seed,
            "batch_size": self.config.batch_size,
            **self.layout.to_dict(),
        }
        save_checkpoint(
            path,
            model=self.model,
            config=self.plan.record.to_dict(),
            step=self.step,
            optimizer=self.opt,
            scheduler=self.sched,
            extra={
                "data": data_pos,
                "best_f1": self.best_f1,
                "best_step": self.best_step,
                "evals_since_best": self.evals_since_best,
                "val": val,
                **describe_precision(self.config.precision, self.device),
            },
        )


def _model_and_optimizer(
    config: TrainConfig, plan: Plan, device: torch.device
) -> tuple[UNet, torch.optim.Optimizer, LambdaLR]:
    """The UNet (seeded init, then --init or last.pt weights) on ``device``, AdamW and the
    warmup-cosine schedule (restored from last.pt on --resume)."""
    model = UNet(plan.arch, generator=torch.Generator().manual_seed(config.seed))
    if plan.init is not None:
        load_weights(model, plan.init.weights, path=plan.init.path, what="--init")
    model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = LambdaLR(opt, partial(lr_factor, warmup=config.warmup, total=config.steps))
    resumed = plan.resumed
    if resumed is not None:
        load_weights(model, resumed.weights, path=resumed.path, what="--resume")
        if resumed.optimizer:
            load_optimizer(opt, resumed.optimizer, path=resumed.path, what="--resume")
        if resumed.scheduler:
            load_optimizer(sched, resumed.scheduler, path=resumed.path, what="--resume")
    return model, opt, sched


def _parallel(model: UNet, config: TrainConfig, plan: Plan,
              device: torch.device) -> torch.nn.Module:  # fmt: skip
    """The model as the loop calls it: DistributedDataParallel over several ranks."""
    if plan.layout.world_size <= 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(
        model,
        device_ids=[device.index] if device.type == "cuda" else None,
        # pretraining leaves the segmentation head out of the loss
        find_unused_parameters=config.stage == "pretrain",
    )


def build(
    config: TrainConfig, plan: Plan, store: PatchStore, *, device: torch.device
) -> tuple[Session, np.ndarray | None]:
    """Model, optimizer and schedule, the training data loader and the validation patches
    (rank 0); also the labeled set's labels."""
    model, opt, sched = _model_and_optimizer(config, plan, device)
    ddp_model = _parallel(model, config, plan, device)
    dataset, n_train, lab_labels = training_data(plan, store)
    val_images = val_masks = None
    if plan.layout.main:
        val_images, val_masks = validation_patches(config, plan, store)
    loader = make_loader(dataset, config, cuda=device.type == "cuda")
    start = plan.start
    session = Session(config, plan, device, model, ddp_model, opt, sched, loader,
                      val_images, val_masks, n_train, start.step, start.best_f1,
                      start.best_step, evals_since_best=start.evals_since_best)  # fmt: skip
    return session, lab_labels


def prepare_run_folder(s: Session, lab_labels: np.ndarray | None) -> None:
    """config.json, labeled.json (a new fine-tuning) and metrics.jsonl (truncated to the resumed
    step, or removed for a new run); rank 0 only."""
    config, plan, run = s.config, s.plan, s.run
    if not s.layout.main:
        return
    record = plan.record.to_dict()
    atomic_write_json(run / "config.json", {**record, "labeled": len(plan.picks),
                                      "versions": versions(), "world_size": s.layout.world_size,
                                      **describe_precision(config.precision, s.device)})
    if config.stage == "finetune" and plan.resumed is None:
        assert lab_labels is not None
        atomic_write_json(
            run / "labeled.json",
            {
                "patches": [[sid, i] for sid, i in plan.picks],
                "n": len(plan.picks),
                "n_tumor": int(np.count_nonzero(lab_labels)),
                "train_slides": list(plan.train_ids),
                "val_slides": list(plan.val_ids),
                "seed": config.seed,
                "requested": config.labeled if config.labeled_patches is None else "explicit",
            },
        )
    metrics_path = run / "metrics.jsonl"
    if plan.resumed is not None:
        truncate_metrics(metrics_path, s.step)
    elif metrics_path.exists():
        metrics_path.unlink()


def truncate_metrics(path: Path, step: int) -> None:
    """On resume drop the records a killed run wrote after its last checkpoint."""
    from lymph.model.figures import read_metrics_lines  # matplotlib: imported when needed

    records, bad = read_metrics_lines(path)
    n_lines = len(records) + len(bad)
    damaged = [n for n in bad if n != n_lines]  # a torn last line is a kill's, not damage
    if damaged:
        warnings.warn(f"{path}: {len(damaged)} line(s) are not a record (damaged; lines "
                      f"{damaged[:5]}): left out of the resumed log and its loss.png",
                      stacklevel=2)
    keep = [r for r in records if _step(r) <= step]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in keep))


def _step(record: dict) -> float:
    """A record's step (0 when it has none; a non-number sorts after every checkpoint)."""
    value = record.get("step", 0)
    return value if isinstance(value, int | float) else float("inf")


def write_loss_plot(s: Session) -> None:
    """loss.png (rank 0); a failed plot never loses a finished run (warned)."""
    if not s.layout.main:
        return
    try:
        from lymph.model.figures import plot_loss

        # the run's folder and its parent: a study's runs are all `<run id>/train`
        where = f"{s.run.parent.name}/{s.run.name}" if s.run.parent.name else s.run.name
        c = s.config
        task = c.pretext if c.stage == "pretrain" or c.recon_weight else "segmentation only"
        what = task + (f", {c.labeled} labeled" if c.stage == "finetune" else "")
        plot_loss(s.run / "metrics.jsonl", s.run / "loss.png",
                  title=f"{s.config.stage} ({what}): {where}")  # fmt: skip
    except Exception as exc:
        warnings.warn(f"loss.png not written: {exc}", stacklevel=3)
