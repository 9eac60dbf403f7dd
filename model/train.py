"""`lymph train`: one training loop for both stages.

- ``pretrain``: the UNet learns to reconstruct every patch of the store (MSE, see
  ``lymph.model.losses``), streamed chunk by chunk (``lymph.model.stream.StoreStream``).
- ``finetune``: from a pretrain checkpoint (``init``) or from scratch, on a few labeled patches
  (N, or P% of the training slides' labeled patches, class-balanced and seeded; or an explicit
  list) cached in memory; loss = BCE + soft Dice + ``recon_weight`` x reconstruction
  (``recon_weight=0``: the paper's segmentation-only baseline). Validation precision / recall /
  F1 on whole patches of held-out slides every ``eval_every`` steps; the best checkpoint by F1 is
  kept as best.pt; ``patience=K`` stops after K validations without a better F1 (``steps`` is
  the cap).
- ``pretext`` (``lymph.model.augment.corrupt``): ``identity`` reconstructs the input (the paper);
  ``genesis`` restores it from a Models Genesis corruption; ``inpaint`` restores hidden boxes
  (loss on them only). In fine-tuning the reconstruction term is the same pretext (the clean and
  the corrupted batch go through the model as one batch); segmentation always sees the clean one.

``run(config)`` is the one entry: :func:`plan_run` decides everything before the first step (the
slide split, the labeled subset, the architecture, the schedule and the data position) as a
:class:`Plan`; :func:`build` makes the model, optimizer and data from it; :func:`train_loop` is
the short loop. ``train(config, train_slides=, val_slides=, labeled=)`` is the older form.

The run folder holds last.pt (and best.pt), metrics.jsonl, config.json, labeled.json (finetune)
and loss.png. last.pt is rewritten atomically every ``checkpoint_every`` steps with the model,
optimizer, scheduler, step and data position; ``resume=True`` continues from it and, with the same
settings and process layout, gives the same weights as an uninterrupted run.

Under ``torchrun`` (WORLD_SIZE > 1) the loop runs DistributedDataParallel (nccl on CUDA, gloo on
CPU); ranks read disjoint chunks; only rank 0 validates and writes.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lymph.data.errors import CheckpointError, ConfigError, LymphError, OutputError, StoreError
from lymph.data.identity import store_content_digest
from lymph.data.io import atomic_write_json, atomic_write_text
from lymph.data.lock import run_folder_lock
from lymph.data.store import PatchStore
from lymph.model.augment import PRETEXTS, AugmentConfig, corrupt
from lymph.model.checkpoint import (
    RunRecord,
    StoreRecord,
    check_architecture,
    load_checkpoint,
    model_config,
    plain,
    save_checkpoint,
    versions,
)
from lymph.model.infer import DEVICES, predict_probs, reconstruct, resolve_device
from lymph.model.losses import reconstruction_loss, stage_loss
from lymph.model.precision import check_precision, run_in
from lymph.model.precision import describe as describe_precision
from lymph.model.scale import store_training_mpp
from lymph.model.stream import LabeledPatches, Layout, StoreStream, StreamConfig, to_tensors
from lymph.model.unet import UNet, UNetConfig, unwrap
from lymph.model.weights import load_optimizer, load_weights

STAGES = ("pretrain", "finetune")
ARCH_KEYS = ("base_width", "depth", "last_skip", "norm", "upsample", "padding_mode",
             "channels_per_group")
# What best.pt and --patience follow: "f1" at --threshold, or "best_f1", the F1 at the
# F1-best threshold of a 101-step grid on the validation pixels (calibration-free: early in a
# fine-tune the probabilities sit near 0.5, and F1 at a fixed 0.5 scores that, not the features).
SELECT = ("f1", "best_f1")
VAL_BINS = 101
# Settings --resume may change (recorded in the run record's "resumes"): how and where the run
# executes, not what it computes. workers and batch_size change the data order (warned).
RESUME_MAY_CHANGE = frozenset(
    {"resume", "stop_at", "device", "precision", "workers", "batch_size", "log_every",
     "checkpoint_every", "threads", "out", "store"}
)  # fmt: skip
STORE_IDENTITY = ("schema_version", "level", "patch_size")


def parse_labeled(value: int | str | None) -> int | str | None:
    """``200`` -> 200, ``"200"`` -> 200, ``"3%"`` -> "3%"; ConfigError otherwise."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ConfigError(f"labeled must be a count N or a percentage 'P%', got {value!r}")
    if isinstance(value, int | np.integer):
        if value < 1:
            raise ConfigError(f"labeled must be >= 1 patch, got {value}")
        return int(value)
    text = str(value).strip()
    try:
        number = float(text[:-1]) if text.endswith("%") else int(text)
    except ValueError:
        raise ConfigError(
            f"labeled must be a count N (e.g. 200) or a percentage P% (e.g. 3%), got {value!r}"
        ) from None
    if isinstance(number, int):
        return parse_labeled(number)
    if not 0 < number <= 100:
        raise ConfigError(f"labeled percentage must be in (0, 100], got {text!r}")
    return f"{number:g}%"


def _slide_ids(value: Any, name: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str) or not all(isinstance(s, str) for s in value):
        raise ConfigError(f"{name} must be a list of slide ids, got {value!r}")
    return tuple(sorted(value))


def _patch_list(value: Any) -> tuple[tuple[str, int], ...] | None:
    if value is None:
        return None
    try:
        picks = tuple(sorted((str(s), int(i)) for s, i in value))
    except (TypeError, ValueError):
        raise ConfigError(
            f"labeled_patches must be (slide_id, patch index) pairs, got {value!r}"
        ) from None
    if not picks:
        raise ConfigError("labeled= is an empty list")
    return picks


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run; all of it lands in config.json and the checkpoints.

    Architecture (``ARCH_KEYS``: base_width, depth, last_skip, norm, upsample, padding_mode,
    channels_per_group): None means UNetConfig's default for pretrain and --from-scratch, and
    the --init checkpoint's for fine-tuning (a value that differs from it is refused).

    ``patience``: early stopping after that many validations without a better F1 (finetune);
    ``threads``: torch intra-op threads for the run (set, then restored).

    Slide roles: ``val_slide_ids`` names the validation slides (else ``val_slides`` of them are
    drawn, seeded); ``train_slide_ids`` restricts which slides' patches may be trained on (else
    every other slide: labeled ones for finetune, all for pretrain); ``labeled_patches`` gives
    the labeled set explicitly (else ``labeled`` draws it, class-balanced).
    """

    store: Path
    out: Path
    stage: str = "pretrain"
    init: Path | None = None
    from_scratch: bool = False
    labeled: int | str | None = 200
    steps: int = 1000
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int | None = None  # None: min(100, steps // 10)
    grad_clip: float = 1.0
    recon_weight: float = 1.0
    base_width: int | None = None
    depth: int | None = None
    last_skip: bool | None = None
    norm: str | None = None
    crop: int = 256
    val_slides: int = 1
    val_patches: int = 64
    threshold: float = 0.5
    seed: int = 0
    device: str = "auto"
    workers: int = 2
    checkpoint_every: int = 200
    eval_every: int = 200
    log_every: int = 10
    resume: bool = False
    window_chunks: int = 8
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    stop_at: int | None = None  # stop (checkpointed, resumable) at this step: job time slots
    train_slide_ids: tuple[str, ...] | None = None
    val_slide_ids: tuple[str, ...] | None = None
    labeled_patches: tuple[tuple[str, int], ...] | None = None
    upsample: str | None = None
    padding_mode: str | None = None
    channels_per_group: int | None = None
    pretext: str = "identity"
    patience: int | None = None
    threads: int | None = None
    select: str = "f1"
    precision: str = "auto"  # lymph.model.precision: bf16 autocast on CUDA and AMX CPUs

    def __post_init__(self) -> None:
        set_ = partial(object.__setattr__, self)
        set_("store", Path(self.store))
        set_("out", Path(self.out))
        if self.init is not None:
            set_("init", Path(self.init))
        set_("labeled", parse_labeled(self.labeled) if self.stage == "finetune" else None)
        set_("train_slide_ids", _slide_ids(self.train_slide_ids, "train_slide_ids"))
        set_("val_slide_ids", _slide_ids(self.val_slide_ids, "val_slide_ids"))
        set_("labeled_patches", _patch_list(self.labeled_patches))
        self._check_stage()
        self._check_numbers()
        if self.train_slide_ids is not None and self.val_slide_ids is not None:
            overlap = sorted(set(self.train_slide_ids) & set(self.val_slide_ids))
            if overlap:
                raise ConfigError(f"slides {overlap} are both training and validation slides")
        arch = {k: getattr(self, k) for k in ARCH_KEYS}
        UNetConfig(**{k: v for k, v in arch.items() if v is not None})  # validates

    def _check_stage(self) -> None:
        if self.stage not in STAGES:
            raise ConfigError(f"stage must be one of {STAGES}, got {self.stage!r}")
        if self.stage == "finetune":
            if (self.init is None) == (not self.from_scratch):
                raise ConfigError(
                    "finetune needs exactly one of --init CKPT (a pretrain checkpoint) or "
                    "--from-scratch (the baseline)"
                )
            if self.labeled is None and self.labeled_patches is None:
                raise ConfigError("finetune needs --labeled N or P%")
        elif self.init is not None or self.from_scratch:
            raise ConfigError(
                "--init / --from-scratch are for --stage finetune; continue a pretraining "
                "with --resume"
            )

    def _check_numbers(self) -> None:
        positive = {
            "steps": self.steps,
            "batch_size": self.batch_size,
            "crop": self.crop,
            "val_patches": self.val_patches,
            "checkpoint_every": self.checkpoint_every,
            "eval_every": self.eval_every,
            "log_every": self.log_every,
            "window_chunks": self.window_chunks,
        }
        for name, v in positive.items():
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {v!r}")
        for name in ("val_slides", "workers", "seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ConfigError(f"{name} must be an integer >= 0, got {v!r}")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise ConfigError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        for name in ("weight_decay", "recon_weight", "grad_clip"):
            v = getattr(self, name)
            if not (v >= 0 and math.isfinite(v)):
                raise ConfigError(f"{name} must be >= 0, got {v}")
        if not 0 < self.threshold < 1:
            raise ConfigError(f"threshold must be in (0, 1), got {self.threshold}")
        if self.device.split(":")[0] not in DEVICES:
            raise ConfigError(f"device must be one of {DEVICES}, got {self.device!r}")
        if self.stop_at is not None and self.stop_at < 1:
            raise ConfigError(f"stop_at must be >= 1, got {self.stop_at}")
        if self.pretext not in PRETEXTS:
            raise ConfigError(f"pretext must be one of {PRETEXTS}, got {self.pretext!r}")
        if self.select not in SELECT:
            raise ConfigError(f"select must be one of {SELECT}, got {self.select!r}")
        check_precision(self.precision)
        for name in ("patience", "threads"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ConfigError(f"{name} must be an integer >= 1 (or unset), got {v!r}")
        if self.patience is not None and self.stage != "finetune":
            raise ConfigError(
                "patience (early stopping on validation F1) is for --stage finetune; pretraining "
                "runs its --steps"
            )

    @property
    def warmup(self) -> int:
        return min(100, self.steps // 10) if self.warmup_steps is None else self.warmup_steps

    @property
    def architecture(self) -> dict[str, Any]:
        """The architecture options given (None ones left out)."""
        return {k: getattr(self, k) for k in ARCH_KEYS if getattr(self, k) is not None}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["augment"] = self.augment.to_dict()
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}


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
    val: dict | None = None  # the last validation
    stopped: bool = False  # stopped at stop_at before `steps`
    train_patches: int = 0  # patches the training slides hold (pretrain) / labeled set size
    train_slides: tuple[str, ...] = ()
    val_slides: tuple[str, ...] = ()
    best_step: int | None = None  # the step of best.pt
    stopped_step: int = 0  # the step the run ended at (early stop, stop_at or steps)
    early_stopped: bool = False  # ended by patience
    start_step: int = 0  # the step a --resume started from (0 for a new run)

    @property
    def best_val_f1(self) -> float | None:
        return self.best_f1


def lr_factor(step: int, *, warmup: int, total: int, floor: float = 0.01) -> float:
    """Linear warmup over ``warmup`` steps, then cosine decay to ``floor`` x lr at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


# ----------------------------------------------------------------------------- splits and data


def choose_val_slides(store: PatchStore, k: int, *, seed: int, stage: str) -> list[str]:
    """K validation slides among the labeled ones, seeded. Tumor slides first (validation F1
    needs tumor pixels), but fine-tuning keeps at least one tumor slide for training."""
    if k == 0:
        return []
    labeled = store.labeled_slides
    pool = labeled if labeled else (store.slides if stage == "pretrain" else [])
    rng = np.random.default_rng([seed, 2])
    tumor = [s.slide_id for s in pool if s.status == "tumor" or s.n_tumor > 0]
    normal = [s.slide_id for s in pool if s.slide_id not in set(tumor)]
    tumor = [tumor[i] for i in rng.permutation(len(tumor))]
    normal = [normal[i] for i in rng.permutation(len(normal))]
    need_train = 1 if stage == "finetune" else 0
    if k > len(pool) - need_train:
        raise ConfigError(
            f"--val-slides {k}: the store has {len(pool)} labeled slide(s) and "
            f"{'finetune needs at least one for training' if need_train else 'no more'}; "
            f"use --val-slides {max(0, len(pool) - need_train)} or extract more slides"
        )
    n_tumor_val = min(k, len(tumor) - 1) if stage == "finetune" else min(k, len(tumor))
    n_tumor_val = max(n_tumor_val, 0)
    picks = tumor[:n_tumor_val] + normal[: k - n_tumor_val]
    if len(picks) < k:  # not enough normal slides: more tumor slides
        picks += tumor[n_tumor_val : n_tumor_val + k - len(picks)]
    return sorted(picks)


def slide_labels(store: PatchStore, slide_id: str) -> np.ndarray:
    """Per-patch labels (uint8) of a labeled slide, without reading its images."""
    return store.labels(slide_id)


def balanced_subset(
    labels: Mapping[str, np.ndarray], size: int, *, rng: np.random.Generator
) -> list[tuple[str, int]]:
    """``size`` (slide_id, patch index) pairs, half tumor (label 1) and half not, without
    replacement; when one class is short all of it is taken and the other fills the rest.

    The one class-balanced draw of lymph (the trainer's labeled set, the study's subsets): pools
    in (slide_id, index) order, tumor drawn first with ``rng.choice``, result sorted, so it
    depends only on the labels, the size and ``rng``. ConfigError when the slides hold fewer than
    ``size`` patches; a warning when the result is not balanced.
    """
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 1:
        raise ConfigError(f"subset size must be an integer >= 1, got {size!r}")
    pos = [(sid, int(i)) for sid in sorted(labels) for i in np.flatnonzero(labels[sid] == 1)]
    neg = [(sid, int(i)) for sid in sorted(labels) for i in np.flatnonzero(labels[sid] != 1)]
    if len(pos) + len(neg) < size:
        raise ConfigError(
            f"the training slides hold {len(pos) + len(neg)} labeled patches, fewer than the "
            f"subset size {size}; use a smaller size or extract more patches per slide"
        )
    n_pos = min(len(pos), size // 2 + size % 2)
    n_neg = min(len(neg), size - n_pos)
    n_pos = size - n_neg  # fill from the other class when one is short
    if n_pos < size // 2 or n_neg < size // 2:
        warnings.warn(
            f"labeled set not balanced: {n_pos} tumor and {n_neg} non-tumor patches "
            f"(the training slides hold {len(pos)} tumor, {len(neg)} non-tumor)",
            stacklevel=3,
        )
    picks = [pos[i] for i in rng.choice(len(pos), n_pos, replace=False)] if n_pos else []
    picks += [neg[i] for i in rng.choice(len(neg), n_neg, replace=False)] if n_neg else []
    return sorted(picks)


def select_labeled(
    store: PatchStore, slide_ids: Sequence[str], amount: int | str, *, seed: int
) -> list[tuple[str, int]]:
    """N (or P% of the) labeled patches of ``slide_ids``: ``balanced_subset`` of their labels
    drawn with ``Generator([seed, 1])``; sorted."""
    labels = {sid: slide_labels(store, sid) for sid in slide_ids}
    total = sum(len(v) for v in labels.values())
    if total == 0:
        raise StoreError(
            f"{store.path}: the training slides {list(slide_ids)} hold no labeled patch; "
            "finetune needs tumor/normal slides extracted with annotations"
        )
    n = max(1, round(float(amount[:-1]) / 100 * total)) if isinstance(amount, str) else amount
    if n > total:
        raise ConfigError(
            f"--labeled {amount}: the training slides hold only {total} labeled patches; "
            f"use --labeled {total} or less"
        )
    return balanced_subset(labels, n, rng=np.random.default_rng([seed, 1]))


def read_patches(
    store: PatchStore, picks: Sequence[tuple[str, int]], *, masks: bool
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Images (n,P,P,3), masks (n,P,P) and labels of the given (slide_id, index) patches, in
    the given order, reading each needed chunk once (memory: the picks plus one chunk)."""
    p = store.patch_size
    images = np.empty((len(picks), p, p, 3), np.uint8)
    out_m = np.empty((len(picks), p, p), np.uint8) if masks else None
    labels = np.zeros(len(picks), np.uint8)
    by_chunk: dict[tuple[str, int], list[tuple[int, int]]] = {}
    for pos, (sid, idx) in enumerate(picks):
        info = store.slide(sid)
        if not 0 <= idx < info.n_patches:
            raise ConfigError(f"patch {sid}[{idx}] out of range: {sid} has {info.n_patches}")
        if masks and not info.labeled:
            raise ConfigError(f"patch {sid}[{idx}]: slide {sid} is unlabeled (no masks)")
        c0 = idx - idx % store.chunk_patches
        by_chunk.setdefault((sid, c0), []).append((pos, idx))
    for (sid, c0), items in by_chunk.items():
        batch = store.read(sid, c0, c0 + store.chunk_patches, masks=masks)
        for pos, idx in items:
            images[pos] = batch.images[idx - c0]
            if out_m is not None and batch.masks is not None:
                out_m[pos] = batch.masks[idx - c0]
            if batch.labels is not None:
                labels[pos] = batch.labels[idx - c0]
    return images, out_m, labels


def select_val_patches(
    store: PatchStore, slide_ids: Sequence[str], n: int, *, seed: int
) -> list[tuple[str, int]]:
    """Up to n validation patches of ``slide_ids`` (class-balanced when labeled), seeded."""
    if not slide_ids:
        return []
    if all(store.slide(s).labeled for s in slide_ids):
        total = sum(store.slide(s).n_patches for s in slide_ids)
        return select_labeled(store, slide_ids, min(n, total), seed=seed + 7919)
    rng = np.random.default_rng([seed, 3])
    pool = [(s, i) for s in slide_ids for i in range(store.slide(s).n_patches)]
    return sorted(pool[i] for i in rng.choice(len(pool), min(n, len(pool)), replace=False))


# ----------------------------------------------------------------------------- processes


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_kind: str) -> Dist:
    """Join the torchrun process group when WORLD_SIZE > 1 (nccl on CUDA, gloo otherwise)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


# ----------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Start:
    """Where the loop starts: step, best validation so far and the data position."""

    step: int = 0
    best_f1: float | None = None
    best_step: int | None = None
    stream_seed: int = 0
    batches: int = 0
    evals_since_best: int = 0


@dataclass(frozen=True)
class Plan:
    """Everything a run decides before its first step; ``record`` is what its checkpoints
    record. ``init`` / ``resumed``: the payloads of the --init checkpoint and of last.pt."""

    arch: UNetConfig
    train_ids: tuple[str, ...]
    val_ids: tuple[str, ...]
    picks: tuple[tuple[str, int], ...]
    layout: Layout
    stream: StreamConfig
    start: Start
    record: RunRecord
    init: dict | None = None
    resumed: dict | None = None


def plan_run(config: TrainConfig, store: PatchStore, *, dist: Dist) -> Plan:
    """The pure plan of a run (reads the store's labels and the checkpoints, writes nothing)."""
    resumed = _resumed(config)
    if config.stage == "finetune" and not store.labeled_slides:
        raise StoreError(
            f"{config.store}: no labeled (tumor or normal) slide; finetune needs patches with "
            "masks: extract with annotations, or run --stage pretrain"
        )
    arch, init_ckpt = _resolve_architecture(config)
    last_path = config.out / "last.pt"
    resumes: list = []
    if resumed is not None:
        check_architecture(model_config(resumed, path=last_path), arch, path=last_path)
        resumes = check_resume(config, store, resumed, path=last_path)
        rec = resumed["config"]
        train_ids, val_ids = list(rec["splits"]["train"]), list(rec["splits"]["val"])
        picks = [(str(s), int(i)) for s, i in rec.get("labeled") or []]
    else:
        train_ids, val_ids = plan_splits(config, store)
        picks = plan_labeled(config, store, train_ids)
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
    layout = Layout(rank=dist.rank, world_size=dist.world_size, workers=config.workers)
    start = _start(config, resumed, layout)
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
        store=StoreRecord.from_dict({**store.settings, "path": str(store.path),
                                     "content_digest": store_content_digest(store.slides),
                                     "mpp": store_training_mpp(store.path,
                                                               int(store.settings["level"]))}),
        train=config.to_dict(),
        stream=stream.to_dict(),
        train_slides=tuple(train_ids),
        val_slides=tuple(val_ids),
        labeled=tuple(picks),
        init=_init_info(config, init_ckpt),
        versions=versions(),
        other={"resumes": resumes} if resumes else {},
    )
    return Plan(arch, tuple(train_ids), tuple(val_ids), tuple(picks), layout, stream, start,
                record, init_ckpt, resumed)  # fmt: skip


def _resumed(config: TrainConfig) -> dict | None:
    """last.pt's payload for --resume (None otherwise); refuses a run folder in use."""
    last_path = config.out / "last.pt"
    if not config.resume:
        if last_path.exists():
            raise ConfigError(
                f"{config.out} already holds a run (last.pt): pass --resume or a new --out"
            )
        return None
    if not last_path.exists():
        raise CheckpointError(
            f"--resume: {last_path} does not exist; start the run without --resume"
        )
    resumed = load_checkpoint(last_path)
    if resumed["config"].get("stage") != config.stage:
        raise CheckpointError(
            f"--resume: {last_path} is a {resumed['config'].get('stage')} run, this is "
            f"--stage {config.stage}"
        )
    return resumed


def check_resume(
    config: TrainConfig, store: PatchStore, resumed: dict, *, path: Path
) -> list[dict]:
    """Refuse (CheckpointError, by name) a resume on another store or with another setting than
    ``path`` records, except ``RESUME_MAY_CHANGE``; returns the record's resumes plus this one
    ({"step", "changed": {name: [old, new]}}) when one of those changed."""
    record = RunRecord.from_dict(resumed["config"], path=path)
    rec_store = record.store
    if rec_store is not None:
        here = {"path": str(Path(store.path).resolve()), **store.settings}
        there = {**rec_store.settings}
        if rec_store.path is not None:
            there["path"] = str(Path(rec_store.path).resolve())
        keys = ["path", *STORE_IDENTITY]
        diff = [f"{k} {there[k]!r} -> {here.get(k)!r}" for k in keys
                if k in there and there[k] != here.get(k)]  # fmt: skip
        if diff:
            raise CheckpointError(
                f"--resume: {path} was trained on the store {rec_store.path} and --store "
                f"{store.path} differs ({'; '.join(diff)}); resume with --store "
                f"{rec_store.path}, or start a new run in another --out"
            )
    _check_store_content(store, rec_store, path=path)
    old, new = record.settings, plain(config.to_dict())
    changed = {k: [old[k], new[k]] for k in sorted(old.keys() & new.keys()) if old[k] != new[k]}
    ignored = RESUME_MAY_CHANGE | ({"labeled"} if config.stage == "pretrain" else set())
    refused = {k: v for k, v in changed.items() if k not in ignored}
    if refused:
        text = "; ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in refused.items())
        raise CheckpointError(
            f"--resume: {path} was trained with other settings ({text}); resume with the "
            f"recorded settings (only {', '.join(sorted(RESUME_MAY_CHANGE - {'out', 'store'}))} "
            "may change), or start a new run in another --out"
        )
    resumes = list(record.other.get("resumes") or [])
    shown = {k: v for k, v in changed.items() if k not in ("resume", "stop_at")}
    if shown:
        resumes.append({"step": int(resumed["step"]), "changed": shown})
    return resumes


def _check_store_content(store: PatchStore, rec_store: Any, *, path: Path) -> None:
    """Refuse a resume on a store whose content changed since the checkpoint (re-extracted at
    the same path, a slide redone): its content digest differs from the one recorded."""
    there = (rec_store.settings if rec_store is not None else {}).get("content_digest")
    here = store_content_digest(store.slides)
    if there is not None and there != here:
        raise CheckpointError(
            f"--resume: {path} was trained on other content of the store {store.path} (content "
            f"digest {str(there)[:12]}..., now {here[:12]}...: re-extracted or slides redone "
            "since); start a new run in another --out, or resume on the store it was trained on"
        )


def plan_splits(config: TrainConfig, store: PatchStore) -> tuple[list[str], list[str]]:
    """(training slide ids, validation slide ids) of a new run."""
    if config.val_slide_ids is not None:
        val_ids = list(config.val_slide_ids)
    else:
        val_ids = choose_val_slides(store, config.val_slides, seed=config.seed, stage=config.stage)
    for sid in val_ids:
        store.slide(sid)  # StoreError for an unknown slide
    if config.train_slide_ids is not None:
        train_ids = list(config.train_slide_ids)
        overlap = sorted(set(train_ids) & set(val_ids))
        if overlap:
            raise ConfigError(f"slides {overlap} are both training and validation slides")
    else:
        pool = store.labeled_slides if config.stage == "finetune" else store.slides
        train_ids = [s.slide_id for s in pool if s.slide_id not in set(val_ids)]
    for sid in train_ids:
        store.slide(sid)
    if not train_ids:
        raise ConfigError(
            f"no training slide left after taking the validation slides {val_ids}: use "
            "--val-slides 0 or extract more slides"
        )
    return train_ids, val_ids


def plan_labeled(
    config: TrainConfig, store: PatchStore, train_ids: Sequence[str]
) -> list[tuple[str, int]]:
    """The labeled set of a new fine-tuning run ([] for pretraining)."""
    if config.stage != "finetune":
        return []
    if config.labeled_patches is not None:
        picks = list(config.labeled_patches)
        bad = sorted({s for s, _ in picks} - set(train_ids))
        if bad:
            raise ConfigError(f"labeled patches from non-training slides {bad}")
        return picks
    assert config.labeled is not None
    return select_labeled(store, train_ids, config.labeled, seed=config.seed)


def _start(config: TrainConfig, resumed: dict | None, layout: Layout) -> Start:
    if resumed is None:
        return Start(stream_seed=config.seed)
    step = int(resumed["step"])
    extra = resumed.get("extra", {})
    data = extra.get("data", {})
    stream_seed = int(data.get("stream_seed", config.seed))
    same = all(
        data.get(k) == v for k, v in {**layout.to_dict(), "batch_size": config.batch_size}.items()
    )
    if same:
        batches = int(data.get("batches", step))
    else:
        warnings.warn(
            f"resuming with another process layout or batch size than {config.out / 'last.pt'} "
            f"(was {data}); the data order continues with a fresh seed, not the original "
            "sequence",
            stacklevel=3,
        )
        stream_seed = int(np.random.SeedSequence([stream_seed, step]).generate_state(1)[0])
        batches = 0
    since = int(extra.get("evals_since_best") or 0)
    return Start(step, extra.get("best_f1"), extra.get("best_step"), stream_seed, batches, since)


def _init_info(config: TrainConfig, init_ckpt: dict | None) -> dict | None:
    if config.init is None:
        return None
    return {
        "path": str(config.init),
        "step": init_ckpt["step"] if init_ckpt else None,
        "stage": init_ckpt["config"].get("stage") if init_ckpt else None,
    }


def _resolve_architecture(config: TrainConfig) -> tuple[UNetConfig, dict | None]:
    given = config.architecture
    if config.stage == "finetune" and config.init is not None:
        init = load_checkpoint(config.init)
        arch = model_config(init, path=config.init)
        if init["config"].get("stage") not in (None, "pretrain", "finetune"):
            raise CheckpointError(f"{config.init}: unknown stage {init['config'].get('stage')}")
        differ = {k: (v, getattr(arch, k)) for k, v in given.items() if getattr(arch, k) != v}
        if differ:
            text = "; ".join(f"{k}: asked {a!r}, checkpoint {b!r}" for k, (a, b) in differ.items())
            raise ConfigError(
                f"fine-tuning inherits the architecture of {config.init} ({text}); drop those "
                "options or pretrain with them"
            )
        return arch, init
    return UNetConfig(**given), None


# ----------------------------------------------------------------------------- model and data


@dataclass
class Session:
    """The live objects of a run and its counters; the loop mutates ``step`` and ``best_*``."""

    config: TrainConfig
    plan: Plan
    device: torch.device
    dist: Dist
    model: torch.nn.Module
    ddp_model: torch.nn.Module
    opt: torch.optim.Optimizer
    sched: Any
    loader: Any
    val_images: np.ndarray | None
    val_masks: np.ndarray | None
    n_train: int
    step: int = 0
    best_f1: float | None = None
    best_step: int | None = None
    last_val: dict | None = None
    evals_since_best: int = 0
    early_stopped: bool = False

    @property
    def run(self) -> Path:
        return self.config.out

    def log(self, record: dict) -> None:
        """Append one record to metrics.jsonl (a torn last line is skipped by its readers)."""
        if not self.dist.main:
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

    def checkpoint(self, path: Path, val: dict | None = None) -> None:
        start = self.plan.start
        data_pos = {
            "batches": start.batches + (self.step - start.step),
            "stream_seed": start.stream_seed,
            "batch_size": self.config.batch_size,
            **self.plan.layout.to_dict(),
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


def build(
    config: TrainConfig, plan: Plan, store: PatchStore, *, device: torch.device, dist: Dist
) -> tuple[Session, np.ndarray | None]:
    """Model (seeded init, then --init or last.pt weights), AdamW + warmup-cosine schedule, the
    training data loader and the validation patches; also the labeled set's labels."""
    cuda = device.type == "cuda"
    model = UNet(plan.arch, generator=torch.Generator().manual_seed(config.seed))
    if plan.init is not None:
        load_weights(model, plan.init.get("model"), path=config.init, what="--init")
    model.to(device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, partial(lr_factor, warmup=config.warmup, total=config.steps)
    )
    if plan.resumed is not None:
        last = config.out / "last.pt"
        load_weights(model, plan.resumed.get("model"), path=last, what="--resume")
        if plan.resumed.get("optimizer"):
            load_optimizer(opt, plan.resumed["optimizer"], path=last, what="--resume")
        if plan.resumed.get("scheduler"):
            load_optimizer(sched, plan.resumed["scheduler"], path=last, what="--resume")
    ddp_model: torch.nn.Module = model
    if dist.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        ddp_model = DistributedDataParallel(
            model,
            device_ids=[device.index] if cuda else None,
            # pretraining leaves the segmentation head out of the loss
            find_unused_parameters=config.stage == "pretrain",
        )
    dataset, n_train, lab_labels = _training_data(plan, store)
    val_images = val_masks = None
    if dist.main and plan.val_ids:
        val_picks = select_val_patches(store, plan.val_ids, config.val_patches, seed=config.seed)
        use_masks = config.stage == "finetune" and all(store.slide(s).labeled for s in plan.val_ids)
        val_images, val_masks, _ = read_patches(store, val_picks, masks=use_masks)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=None,
        num_workers=config.workers,
        pin_memory=cuda,
        prefetch_factor=4 if config.workers else None,
        persistent_workers=False,
    )
    start = plan.start
    session = Session(config, plan, device, dist, model, ddp_model, opt, sched, loader,
                      val_images, val_masks, n_train, start.step, start.best_f1,
                      start.best_step, evals_since_best=start.evals_since_best)  # fmt: skip
    return session, lab_labels


def _training_data(plan: Plan, store: PatchStore) -> tuple[Any, int, np.ndarray | None]:
    """(dataset, patches it draws from, labels of the labeled set or None)."""
    start = plan.start.batches
    if plan.record.stage == "pretrain":
        chunks = store.chunks(list(plan.train_ids))
        dataset = StoreStream(
            store.path, chunks, plan.stream, layout=plan.layout, start_batches=start
        )
        return dataset, sum(store.slide(s).n_patches for s in plan.train_ids), None
    images, masks, labels = read_patches(store, plan.picks, masks=True)
    assert masks is not None
    dataset = LabeledPatches(images, masks, plan.stream, layout=plan.layout, start_batches=start)
    return dataset, len(plan.picks), labels


def prepare_run_folder(s: Session, lab_labels: np.ndarray | None) -> None:
    """config.json, labeled.json (a new fine-tuning) and metrics.jsonl (truncated to the resumed
    step, or removed for a new run); rank 0 only."""
    config, plan, run = s.config, s.plan, s.run
    if not s.dist.main:
        return
    record = plan.record.to_dict()
    atomic_write_json(run / "config.json", {**record, "labeled": len(plan.picks),
                                      "versions": versions(), "world_size": s.dist.world_size,
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
        _truncate_metrics(metrics_path, s.step)
    elif metrics_path.exists():
        metrics_path.unlink()


def _truncate_metrics(path: Path, step: int) -> None:
    """On resume drop the records a killed run wrote after its last checkpoint."""
    from lymph.model.plots import read_metrics

    keep = [r for r in read_metrics(path) if r.get("step", 0) <= step]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in keep))


def validate(
    model: torch.nn.Module,
    images: np.ndarray,
    masks: np.ndarray | None,
    *,
    device: torch.device,
    threshold: float,
    batch_size: int,
    precision: str = "auto",
) -> dict[str, float]:
    """Pixel precision / recall / F1 pooled over whole validation patches (padded to the
    model's multiple, never resized); reconstruction MSE when there are no masks."""
    net = unwrap(model)
    if masks is None:
        rec = reconstruct(net, images, device=device, batch_size=batch_size, precision=precision)
        diff = rec.astype(np.float32) / 255 - images.astype(np.float32) / 255
        return {"recon_mse": float(np.mean(diff**2)), "n": len(images)}
    from lymph.model.metrics import PRAccumulator, pixel_counts

    probs = predict_probs(net, images, device=device, batch_size=batch_size, precision=precision)
    counts = pixel_counts(probs >= threshold, masks)  # 0/1, IGNORE (255) skipped
    acc = PRAccumulator(bins=VAL_BINS)
    acc.update(probs, masks)
    best = acc.best_f1_threshold()  # the rule `--threshold auto` then uses
    return {
        "precision": counts.precision,
        "recall": counts.recall,
        "f1": counts.f1,
        **counts.to_dict(),
        "best_f1": acc.counts_at(best).f1,
        "best_threshold": best,
        "ap": acc.curve().average_precision(),
        "n": len(images),
    }


# ----------------------------------------------------------------------------- the loop


@dataclass
class LoopStats:
    seconds: float = 0.0
    wait: float = 0.0
    final_loss: float | None = None


def pretext_generator(s: Session) -> torch.Generator:
    """The generator of this step's pretext corruption: a function of (seed, rank, step)."""
    key = np.random.SeedSequence([s.config.seed, 0x9E7E, s.dist.rank, s.step]).generate_state(2)
    gen = torch.Generator(device=s.device)
    gen.manual_seed(int(key[0]) << 32 | int(key[1]))
    return gen


def forward_losses(
    s: Session, images: torch.Tensor, masks: torch.Tensor | None
) -> dict[str, torch.Tensor]:
    """The model on the batch (and, for a restoration pretext, on its corruption) and the
    stage's loss."""
    c = s.config
    corrupting = c.pretext != "identity" and (c.stage == "pretrain" or c.recon_weight > 0)
    loss_mask = None
    if corrupting:
        corrupted, loss_mask = corrupt(c.pretext, images, gen=pretext_generator(s))
    with run_in(s.device, c.precision):
        if not corrupting:
            out = s.ddp_model(images)
        elif c.stage == "pretrain":
            out = s.ddp_model(corrupted)
        else:  # one forward: the clean batch for segmentation, the corrupted for the pretext
            both = s.ddp_model(torch.cat([images, corrupted]))
            n = len(images)
            out = type(both)(both.mask_logits[:n], both.reconstruction[:n])
            restored = both.reconstruction[n:]
    recon = None
    if corrupting:
        rec = out.reconstruction if c.stage == "pretrain" else restored
        recon = reconstruction_loss(rec, images, loss_mask)
    return stage_loss(c.stage, out, images, masks, recon_weight=c.recon_weight, recon=recon)


def train_step(s: Session, batch: dict) -> dict[str, torch.Tensor]:
    """One optimizer step on one batch; returns the loss and its parts."""
    images, masks = to_tensors(batch, s.device, channels_last=s.device.type == "cuda")
    losses = forward_losses(s, images, masks)
    s.opt.zero_grad(set_to_none=True)
    losses["loss"].backward()
    if s.config.grad_clip:
        torch.nn.utils.clip_grad_norm_(s.model.parameters(), s.config.grad_clip)
    s.opt.step()
    s.sched.step()
    s.step += 1
    return losses


def evaluate_now(s: Session) -> None:
    """Validate, log, and keep best.pt when the F1 improved (rank 0)."""
    c = s.config
    s.last_val = validate(s.model, s.val_images, s.val_masks, device=s.device,
                          threshold=c.threshold, batch_size=c.batch_size,
                          precision=c.precision)  # fmt: skip
    s.log({"kind": "val", "step": s.step, **s.last_val})
    if c.select not in s.last_val:
        return
    if s.best_f1 is None or s.last_val[c.select] > s.best_f1:
        s.best_f1, s.best_step, s.evals_since_best = float(s.last_val[c.select]), s.step, 0
        s.checkpoint(s.run / "best.pt", s.last_val)
    else:
        s.evals_since_best += 1
        s.early_stopped = c.patience is not None and s.evals_since_best >= c.patience


def next_batch(it: Any) -> dict:
    """The loader's next batch. A lymph error raised in a DataLoader worker (a damaged chunk)
    reaches here re-raised by torch with the worker's whole traceback as its message: it is
    raised again with the original one-line message (the file, the chunk and the fix)."""
    try:
        return next(it)
    except LymphError as exc:
        text = str(exc)
        if "DataLoader worker" not in text:
            raise
        import re

        lines = re.findall(rf"^(?:[\w.]+\.)?{type(exc).__name__}: (.+)$", text, flags=re.M)
        raise type(exc)(lines[-1].strip() if lines else text) from None


def train_loop(s: Session, *, progress: bool) -> LoopStats:
    """The loop: step, log every ``log_every``, validate every ``eval_every`` (and at the last
    step), rewrite last.pt every ``checkpoint_every`` (and at the end)."""
    from lymph.data.progress import progress_bar

    c, main = s.config, s.dist.main
    end = min(c.steps, c.stop_at) if c.stop_at else c.steps
    bar = progress_bar(total=c.steps, initial=s.step, desc=c.stage, unit="step",
                       enabled=progress and main, dynamic_ncols=True)
    s.model.train()
    it = iter(s.loader)
    stats = LoopStats()
    t_loop = t_log = time.perf_counter()
    n_log, sums = 0, {}
    while s.step < end:
        t0 = time.perf_counter()
        batch = next_batch(it)
        stats.wait += time.perf_counter() - t0
        losses = train_step(s, batch)
        n_log += 1
        for k, v in losses.items():
            sums[k] = sums.get(k, 0) + v.detach()
        if s.step % c.log_every == 0 or s.step == end:
            now = time.perf_counter()
            rec = {k: float(v) / n_log for k, v in sums.items()}
            stats.final_loss = rec["loss"]
            rate = n_log * c.batch_size * s.dist.world_size / max(now - t_log, 1e-9)
            lr = s.sched.get_last_lr()[0]
            s.log({"kind": "train", "step": s.step, **rec, "lr": lr, "patches_per_s": rate})
            bar.set_postfix(loss=f"{rec['loss']:.4f}", patches_s=f"{rate:.1f}")
            sums, n_log, t_log = {}, 0, now
        # not at stop_at: a stopped-and-resumed run then validates exactly like an unbroken one
        due = s.step % c.eval_every == 0 or s.step == c.steps
        if main and s.val_images is not None and due:
            evaluate_now(s)
        if s.dist.world_size > 1 and c.patience is not None and due:
            s.early_stopped = _broadcast_flag(s.early_stopped, s.device)
        if main and (s.step % c.checkpoint_every == 0 or s.step == end or s.early_stopped):
            s.checkpoint(s.run / "last.pt", s.last_val)
        bar.update(1)
        if s.early_stopped:
            s.log({"kind": "early_stop", "step": s.step, "best_step": s.best_step,
                   "best_f1": s.best_f1})  # fmt: skip
            break
    bar.close()
    stats.seconds = time.perf_counter() - t_loop
    del it
    return stats


def _broadcast_flag(flag: bool, device: torch.device) -> bool:
    """Rank 0's early-stop decision on every rank (they must stop at the same step)."""
    import torch.distributed as tdist

    t = torch.tensor([1 if flag else 0], device=device)
    tdist.broadcast(t, src=0)
    return bool(t.item())


# ----------------------------------------------------------------------------- the entry


def run(config: TrainConfig, *, progress: bool = True) -> TrainResult:
    """Run (or resume) one training run; see the module docstring. Only rank 0 writes.
    ``config.threads`` sets torch's intra-op threads for the run and restores them after."""
    threads = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    try:
        return _run(config, progress=progress)
    finally:
        torch.set_num_threads(threads)


def _run(config: TrainConfig, *, progress: bool) -> TrainResult:
    t_start = time.perf_counter()
    device = resolve_device(config.device)
    dist = init_distributed(device.type)
    if device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    with run_folder_lock(config.out, main=dist.main, what="this run folder"):
        store = PatchStore.open(config.store)
        plan = plan_run(config, store, dist=dist)
        session, lab_labels = build(config, plan, store, device=device, dist=dist)
        prepare_run_folder(session, lab_labels)
        stats = train_loop(session, progress=progress)
        _finish(session)
    done = session.step - plan.start.step
    best_path = config.out / "best.pt"
    return TrainResult(
        run_dir=config.out,
        last=config.out / "last.pt",
        best=best_path if best_path.exists() and session.best_f1 is not None else None,
        steps=session.step,
        best_f1=session.best_f1,
        seconds=time.perf_counter() - t_start,
        patches_per_s=done * config.batch_size * dist.world_size / max(stats.seconds, 1e-9),
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


def _finish(s: Session) -> None:
    """loss.png (rank 0; a failed plot never loses a finished run), then leave the group."""
    if s.dist.main:
        try:
            from lymph.model.plots import plot_loss

            # the run's folder and its parent: a study's runs are all `<run id>/train`
            where = f"{s.run.parent.name}/{s.run.name}" if s.run.parent.name else s.run.name
            c = s.config
            task = c.pretext if c.stage == "pretrain" or c.recon_weight else "segmentation only"
            what = task + (f", {c.labeled} labeled" if c.stage == "finetune" else "")
            plot_loss(s.run / "metrics.jsonl", s.run / "loss.png",
                      title=f"{s.config.stage} ({what}): {where}")  # fmt: skip
        except Exception as exc:
            warnings.warn(f"loss.png not written: {exc}", stacklevel=3)
    if s.dist.world_size > 1:
        import torch.distributed as tdist

        tdist.barrier()
        tdist.destroy_process_group()


def train(
    config: TrainConfig,
    *,
    train_slides: Sequence[str] | None = None,
    val_slides: Sequence[str] | None = None,
    labeled: Sequence[tuple[str, int]] | None = None,
    progress: bool = True,
) -> TrainResult:
    """``run`` with the slide roles and labeled set given as arguments (the older form)."""
    changes: dict[str, Any] = {}
    if train_slides is not None:
        changes["train_slide_ids"] = tuple(train_slides)
    if val_slides is not None:
        changes["val_slide_ids"] = tuple(val_slides)
    if labeled is not None:
        changes["labeled_patches"] = tuple((str(s), int(i)) for s, i in labeled)
    return run(replace(config, **changes) if changes else config, progress=progress)
