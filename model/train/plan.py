"""The plan of a run: everything it decides before its first step (the slide split, the
labeled set, the architecture, the data position and what its checkpoints record), and the
learning-rate schedule. Reads the store's labels and the checkpoints; writes nothing."""

from __future__ import annotations

import math
from dataclasses import dataclass

from lymph.data.errors import CheckpointError, ConfigError, StoreError
from lymph.data.identity import store_content_digest
from lymph.data.store import PatchStore
from lymph.model.checkpoint import (
    Checkpoint,
    RunRecord,
    StoreRecord,
    check_architecture,
    read_checkpoint,
    versions,
)
from lymph.model.layout import Layout
from lymph.model.scale import store_training_mpp
from lymph.model.stream import StreamConfig
from lymph.model.train.config import TrainConfig
from lymph.model.train.resume import Start, check_resume, resumed_checkpoint, start_of
from lymph.model.train.splits import plan_labeled, plan_splits
from lymph.model.unet import UNetConfig


def lr_factor(step: int, *, warmup: int, total: int, floor: float = 0.01) -> float:
    """Linear warmup over ``warmup`` steps, then cosine decay to ``floor`` x lr at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@dataclass(frozen=True)
class Plan:
    """Everything a run decides before its first step; ``record`` is what its checkpoints
    record. ``init`` / ``resumed``: the --init checkpoint and last.pt, as read."""

    arch: UNetConfig
    train_ids: tuple[str, ...]
    val_ids: tuple[str, ...]
    picks: tuple[tuple[str, int], ...]
    layout: Layout
    stream: StreamConfig
    start: Start
    record: RunRecord
    init: Checkpoint | None = None
    resumed: Checkpoint | None = None


def plan_run(config: TrainConfig, store: PatchStore, *, layout: Layout) -> Plan:
    """The pure plan of a run (reads the store's labels and the checkpoints, writes nothing)."""
    resumed = resumed_checkpoint(config)
    if config.stage == "finetune" and not store.labeled_slides:
        raise StoreError(
            f"{config.store}: no labeled (tumor or normal) slide; finetune needs patches with "
            "masks: extract with annotations, or run --stage pretrain"
        )
    arch, init = resolve_architecture(config)
    resumes: list[dict[str, object]] = []
    if resumed is not None:
        check_architecture(resumed.record.model, arch, path=resumed.path)
        resumes = check_resume(config, store, resumed)
        train_ids = list(resumed.record.train_slides or ())
        val_ids = list(resumed.record.val_slides or ())
        picks = list(resumed.record.labeled or ())
    else:
        train_ids, val_ids = plan_splits(config, store)
        picks = plan_labeled(config, store, train_ids)
    _check_fit(config, store, arch, val_ids)
    start = start_of(config, resumed, layout)
    stream = StreamConfig(
        batch_size=config.batch_size,
        crop=config.crop,
        seed=start.stream_seed,
        augment=config.augment,
        window_chunks=config.window_chunks,
        masks=config.stage == "finetune",
    )
    record = RunRecord(
        model=arch,
        stage=config.stage,
        store=store_record(store),
        train=config.to_dict(),
        stream=stream.to_dict(),
        train_slides=tuple(train_ids),
        val_slides=tuple(val_ids),
        labeled=tuple(picks),
        init=_init_info(config, init),
        versions=versions(),
        other={"resumes": resumes} if resumes else {},
    )
    return Plan(arch, tuple(train_ids), tuple(val_ids), tuple(picks), layout, stream, start,
                record, init, resumed)  # fmt: skip


def store_record(store: PatchStore) -> StoreRecord:
    """What a run records of its store: its settings, path, content digest and mpp."""
    mpp = store_training_mpp(store.path, int(store.settings["level"]))
    return StoreRecord.from_dict({**store.settings, "path": str(store.path),
                                  "content_digest": store_content_digest(store.slides),
                                  "mpp": mpp})  # fmt: skip


def _check_fit(
    config: TrainConfig, store: PatchStore, arch: UNetConfig, val_ids: list[str]
) -> None:
    """The crop fits the model and the patches; patience has validation slides to stop on."""
    if config.crop % arch.multiple or config.crop > store.patch_size:
        raise ConfigError(
            f"crop {config.crop} must be a multiple of {arch.multiple} (2**depth) and at most "
            f"the store's patch size {store.patch_size}: e.g. "
            f"{store.patch_size - store.patch_size % arch.multiple}"
        )
    if config.patience is not None and not val_ids:
        raise ConfigError(
            "patience needs validation slides to stop on: use --val-slides 1 or more (or "
            "val_slide_ids), or drop --patience"
        )


def _init_info(config: TrainConfig, init: Checkpoint | None) -> dict[str, object] | None:
    if config.init is None:
        return None
    return {
        "path": str(config.init),
        "step": init.step if init else None,
        "stage": init.record.stage if init else None,
    }


def resolve_architecture(config: TrainConfig) -> tuple[UNetConfig, Checkpoint | None]:
    """The run's UNetConfig: the options given, or, fine-tuning from --init, the checkpoint's
    (refusing options that differ from it); also the --init checkpoint as read."""
    given = config.architecture
    if config.stage == "finetune" and config.init is not None:
        init = read_checkpoint(config.init)
        arch = init.record.model
        if init.record.stage not in (None, "pretrain", "finetune"):
            raise CheckpointError(f"{config.init}: unknown stage {init.record.stage}")
        differ = {k: (v, getattr(arch, k)) for k, v in given.items() if getattr(arch, k) != v}
        if differ:
            text = "; ".join(f"{k}: asked {a!r}, checkpoint {b!r}" for k, (a, b) in differ.items())
            raise ConfigError(
                f"fine-tuning inherits the architecture of {config.init} ({text}); drop those "
                "options or pretrain with them"
            )
        return arch, init
    return UNetConfig(**given), None
