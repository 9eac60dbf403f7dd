"""`lymph train`: one training loop for both stages.

- ``pretrain``: the UNet learns to reconstruct every patch of the store (MSE, see
  ``lymph.model.losses``), streamed chunk by chunk (``lymph.model.stream.StoreStream``).
- ``finetune``: from a pretrain checkpoint (``init``) or from scratch, on a few labeled patches
  (N, or P% of the training slides' labeled patches, class-balanced and seeded; or an explicit
  list) cached in memory; loss = BCE + soft Dice + ``recon_weight`` x reconstruction. Validation
  precision / recall / F1 on whole patches of held-out slides every ``eval_every`` steps; the
  best checkpoint by F1 is kept as best.pt.

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
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lymph.data.errors import CheckpointError, ConfigError, StoreError
from lymph.data.store import PatchStore
from lymph.model.augment import AugmentConfig
from lymph.model.checkpoint import (
    check_architecture,
    load_checkpoint,
    model_config,
    save_checkpoint,
    versions,
)
from lymph.model.infer import DEVICES, predict_probs, reconstruct, resolve_device
from lymph.model.losses import stage_loss
from lymph.model.stream import LabeledPatches, Layout, StoreStream, StreamConfig, to_tensors
from lymph.model.unet import UNet, UNetConfig, unwrap

STAGES = ("pretrain", "finetune")
DEFAULT_ARCH = UNetConfig()


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


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run; all of it lands in config.json and the checkpoints.

    Architecture (base_width, depth, last_skip, norm): None means the default (32, 4, False,
    "group") for pretrain and --from-scratch, and the --init checkpoint's for fine-tuning (a
    value that differs from it is refused).
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

    def __post_init__(self) -> None:
        set_ = partial(object.__setattr__, self)
        set_("store", Path(self.store))
        set_("out", Path(self.out))
        if self.init is not None:
            set_("init", Path(self.init))
        set_("labeled", parse_labeled(self.labeled))
        if self.stage not in STAGES:
            raise ConfigError(f"stage must be one of {STAGES}, got {self.stage!r}")
        if self.stage == "finetune":
            if (self.init is None) == (not self.from_scratch):
                raise ConfigError(
                    "finetune needs exactly one of --init CKPT (a pretrain checkpoint) or "
                    "--from-scratch (the baseline)"
                )
            if self.labeled is None:
                raise ConfigError("finetune needs --labeled N or P%")
        elif self.init is not None or self.from_scratch:
            raise ConfigError(
                "--init / --from-scratch are for --stage finetune; continue a pretraining "
                "with --resume"
            )
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
        arch = {k: getattr(self, k) for k in ("base_width", "depth", "last_skip", "norm")}
        UNetConfig(**{k: v for k, v in arch.items() if v is not None})  # validates

    @property
    def warmup(self) -> int:
        return min(100, self.steps // 10) if self.warmup_steps is None else self.warmup_steps

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


def select_labeled(
    store: PatchStore, slide_ids: Sequence[str], amount: int | str, *, seed: int
) -> list[tuple[str, int]]:
    """N (or P% of the) labeled patches of ``slide_ids``, half tumor and half non-tumor by the
    patch's label when there are enough of each, drawn with ``Generator([seed, 1])``; sorted."""
    pool_t: list[tuple[str, int]] = []
    pool_n: list[tuple[str, int]] = []
    for sid in slide_ids:
        labels = slide_labels(store, sid)
        pool_t += [(sid, int(i)) for i in np.flatnonzero(labels == 1)]
        pool_n += [(sid, int(i)) for i in np.flatnonzero(labels != 1)]
    total = len(pool_t) + len(pool_n)
    if total == 0:
        raise StoreError(
            f"{store.path}: the training slides {list(slide_ids)} hold no labeled patch; "
            "finetune needs tumor/normal slides extracted with annotations"
        )
    if isinstance(amount, str):
        n = max(1, round(float(amount[:-1]) / 100 * total))
    else:
        n = amount
    if n > total:
        raise ConfigError(
            f"--labeled {amount}: the training slides hold only {total} labeled patches; "
            f"use --labeled {total} or less"
        )
    n_t = min(len(pool_t), n // 2 + n % 2)
    n_n = min(len(pool_n), n - n_t)
    n_t = n - n_n  # fill from the other class when one is short
    if n_t < n // 2 or n_n < n // 2:
        warnings.warn(
            f"labeled set not balanced: {n_t} tumor and {n_n} non-tumor patches "
            f"(the training slides hold {len(pool_t)} tumor, {len(pool_n)} non-tumor)",
            stacklevel=2,
        )
    rng = np.random.default_rng([seed, 1])
    picks = [pool_t[i] for i in rng.choice(len(pool_t), n_t, replace=False)] if n_t else []
    picks += [pool_n[i] for i in rng.choice(len(pool_n), n_n, replace=False)] if n_n else []
    return sorted(picks)


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


# ----------------------------------------------------------------------------- the run


def _resolve_architecture(
    config: TrainConfig,
) -> tuple[UNetConfig, dict | None]:
    given = {
        k: getattr(config, k)
        for k in ("base_width", "depth", "last_skip", "norm")
        if getattr(config, k) is not None
    }
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


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _truncate_metrics(path: Path, step: int) -> None:
    """On resume drop the records a killed run wrote after its last checkpoint."""
    from lymph.model.plots import read_metrics

    keep = [r for r in read_metrics(path) if r.get("step", 0) <= step]
    _write_json_lines(path, keep)


def _write_json_lines(path: Path, records: list[dict]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    os.replace(tmp, path)


def validate(
    model: torch.nn.Module,
    images: np.ndarray,
    masks: np.ndarray | None,
    *,
    device: torch.device,
    threshold: float,
    batch_size: int,
) -> dict[str, float]:
    """Pixel precision / recall / F1 pooled over whole validation patches (padded to the
    model's multiple, never resized); reconstruction MSE when there are no masks."""
    net = unwrap(model)
    if masks is None:
        rec = reconstruct(net, images, device=device, batch_size=batch_size)
        diff = rec.astype(np.float32) / 255 - images.astype(np.float32) / 255
        return {"recon_mse": float(np.mean(diff**2)), "n": len(images)}
    from lymph.model.metrics import pixel_counts

    probs = predict_probs(net, images, device=device, batch_size=batch_size)
    counts = pixel_counts(probs >= threshold, masks > 0)
    return {
        "precision": counts.precision,
        "recall": counts.recall,
        "f1": counts.f1,
        **counts.to_dict(),
        "n": len(images),
    }


def train(
    config: TrainConfig,
    *,
    train_slides: Sequence[str] | None = None,
    val_slides: Sequence[str] | None = None,
    labeled: Sequence[tuple[str, int]] | None = None,
    progress: bool = True,
) -> TrainResult:
    """Run (or resume) one training run; see the module docstring. Only rank 0 writes."""
    t_start = time.perf_counter()
    device = resolve_device(config.device)
    dist = init_distributed(device.type)
    if device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    cuda = device.type == "cuda"
    store = PatchStore.open(config.store)
    run = config.out
    last_path, best_path = run / "last.pt", run / "best.pt"

    # --- resume or start: the splits, labeled picks and layout come from last.pt on resume
    resumed: dict | None = None
    if config.resume:
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
    elif last_path.exists():
        raise ConfigError(f"{run} already holds a run (last.pt): pass --resume or a new --out")

    if config.stage == "finetune" and not store.labeled_slides:
        raise StoreError(
            f"{config.store}: no labeled (tumor or normal) slide; finetune needs patches with "
            "masks: extract with annotations, or run --stage pretrain"
        )
    arch, init_ckpt = _resolve_architecture(config)
    if resumed is not None:
        check_architecture(model_config(resumed, path=last_path), arch, path=last_path)
        splits = resumed["config"]["splits"]
        train_ids, val_ids = list(splits["train"]), list(splits["val"])
        picks = [(str(s), int(i)) for s, i in resumed["config"].get("labeled") or []]
    else:
        val_ids = (
            sorted(val_slides)
            if val_slides is not None
            else choose_val_slides(store, config.val_slides, seed=config.seed, stage=config.stage)
        )
        for sid in val_ids:
            store.slide(sid)  # StoreError for an unknown slide
        if train_slides is not None:
            train_ids = sorted(train_slides)
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
        picks = []
        if config.stage == "finetune":
            if labeled is not None:
                picks = sorted((str(s), int(i)) for s, i in labeled)
                bad = sorted({s for s, _ in picks} - set(train_ids))
                if bad:
                    raise ConfigError(f"labeled patches from non-training slides {bad}")
                if not picks:
                    raise ConfigError("labeled= is an empty list")
            else:
                assert config.labeled is not None
                picks = select_labeled(store, train_ids, config.labeled, seed=config.seed)
    if config.crop % arch.multiple or config.crop > store.patch_size:
        raise ConfigError(
            f"crop {config.crop} must be a multiple of {arch.multiple} (2**depth) and at most "
            f"the store's patch size {store.patch_size}: e.g. "
            f"{store.patch_size - store.patch_size % arch.multiple}"
        )
    layout = Layout(rank=dist.rank, world_size=dist.world_size, workers=config.workers)

    # --- model, optimizer, schedule
    model = UNet(arch, generator=torch.Generator().manual_seed(config.seed))
    if init_ckpt is not None:
        model.load_state_dict(init_ckpt["model"])
    model.to(device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, partial(lr_factor, warmup=config.warmup, total=config.steps)
    )
    step, best_f1, best_step = 0, None, None
    stream_seed, start_batches = config.seed, 0
    if resumed is not None:
        model.load_state_dict(resumed["model"])
        if resumed.get("optimizer"):
            opt.load_state_dict(resumed["optimizer"])
        if resumed.get("scheduler"):
            sched.load_state_dict(resumed["scheduler"])
        step = int(resumed["step"])
        extra = resumed.get("extra", {})
        best_f1, best_step = extra.get("best_f1"), extra.get("best_step")
        data = extra.get("data", {})
        stream_seed = int(data.get("stream_seed", config.seed))
        same = all(
            data.get(k) == v
            for k, v in {**layout.to_dict(), "batch_size": config.batch_size}.items()
        )
        if same:
            start_batches = int(data.get("batches", step))
        else:
            warnings.warn(
                f"resuming with another process layout or batch size than {last_path} "
                f"(was {data}); the data order continues with a fresh seed, not the original "
                "sequence",
                stacklevel=2,
            )
            stream_seed = int(np.random.SeedSequence([stream_seed, step]).generate_state(1)[0])
    ddp_model: torch.nn.Module = model
    if dist.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        ddp_model = DistributedDataParallel(
            model,
            device_ids=[device.index] if cuda else None,
            # pretraining leaves the segmentation head out of the loss
            find_unused_parameters=config.stage == "pretrain",
        )

    # --- data
    stream_cfg = StreamConfig(
        batch_size=config.batch_size,
        crop=config.crop,
        seed=stream_seed,
        augment=config.augment,
        window_chunks=config.window_chunks,
        masks=config.stage == "finetune",
    )
    if config.stage == "pretrain":
        dataset: Any = StoreStream(
            store.path,
            store.chunks(train_ids),
            stream_cfg,
            layout=layout,
            start_batches=start_batches,
        )
        n_train = sum(store.slide(s).n_patches for s in train_ids)
    else:
        lab_images, lab_masks, lab_labels = read_patches(store, picks, masks=True)
        assert lab_masks is not None
        dataset = LabeledPatches(
            lab_images, lab_masks, stream_cfg, layout=layout, start_batches=start_batches
        )
        n_train = len(picks)
    val_images = val_masks = None
    if dist.main and val_ids:
        val_picks = select_val_patches(store, val_ids, config.val_patches, seed=config.seed)
        use_masks = config.stage == "finetune" and all(store.slide(s).labeled for s in val_ids)
        val_images, val_masks, _ = read_patches(store, val_picks, masks=use_masks)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=None,
        num_workers=config.workers,
        pin_memory=cuda,
        prefetch_factor=4 if config.workers else None,
        persistent_workers=False,
    )

    # --- the run folder (rank 0)
    settings: dict[str, Any] = {
        "model": arch.to_dict(),
        "store": {**store.settings, "path": str(store.path)},
        "train": config.to_dict(),
        "stage": config.stage,
        "stream": stream_cfg.to_dict(),
        "splits": {"train": train_ids, "val": val_ids},
        "labeled": [[s, i] for s, i in picks],
        "init": None
        if config.init is None
        else {
            "path": str(config.init),
            "step": init_ckpt["step"] if init_ckpt else None,
            "stage": init_ckpt["config"].get("stage") if init_ckpt else None,
        },
    }
    metrics_path = run / "metrics.jsonl"
    if dist.main:
        run.mkdir(parents=True, exist_ok=True)
        _write_json(
            run / "config.json",
            {
                **settings,
                "labeled": len(picks),
                "versions": versions(),
                "world_size": dist.world_size,
            },
        )
        if config.stage == "finetune" and resumed is None:
            _write_json(
                run / "labeled.json",
                {
                    "patches": [[s, i] for s, i in picks],
                    "n": len(picks),
                    "n_tumor": int(np.count_nonzero(lab_labels)),
                    "train_slides": train_ids,
                    "val_slides": val_ids,
                    "seed": config.seed,
                    "requested": config.labeled if labeled is None else "explicit",
                },
            )
        if resumed is not None:
            _truncate_metrics(metrics_path, step)
        elif metrics_path.exists():
            metrics_path.unlink()

    def log(record: dict) -> None:
        if dist.main:
            with open(metrics_path, "a") as f:
                f.write(json.dumps(record) + "\n")

    def checkpoint(path: Path, val: dict | None = None) -> None:
        data_pos = {
            "batches": start_batches + (step - start_step),
            "stream_seed": stream_seed,
            "batch_size": config.batch_size,
            **layout.to_dict(),
        }
        save_checkpoint(
            path,
            model=model,
            config=settings,
            step=step,
            optimizer=opt,
            scheduler=sched,
            extra={"data": data_pos, "best_f1": best_f1, "best_step": best_step, "val": val},
        )

    # --- the loop
    from tqdm.auto import tqdm

    start_step = step
    end = min(config.steps, config.stop_at) if config.stop_at else config.steps
    bar = tqdm(
        total=config.steps,
        initial=step,
        desc=f"{config.stage}",
        unit="step",
        disable=(not progress or not dist.main) or None,
        dynamic_ncols=True,
    )
    model.train()
    it = iter(loader)
    wait = 0.0
    t_loop = time.perf_counter()
    t_log, n_log = t_loop, 0
    sums: dict[str, torch.Tensor] = {}
    last_val: dict | None = None
    final_loss: float | None = None
    while step < end:
        t0 = time.perf_counter()
        batch = next(it)
        wait += time.perf_counter() - t0
        images, masks = to_tensors(batch, device, channels_last=cuda)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            out = ddp_model(images)
        losses = stage_loss(config.stage, out, images, masks, recon_weight=config.recon_weight)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        opt.step()
        sched.step()
        step += 1
        n_log += 1
        for k, v in losses.items():
            sums[k] = sums.get(k, 0) + v.detach()
        if step % config.log_every == 0 or step == end:
            now = time.perf_counter()
            rec = {k: float(v) / n_log for k, v in sums.items()}
            final_loss = rec["loss"]
            rate = n_log * config.batch_size * dist.world_size / max(now - t_log, 1e-9)
            log(
                {
                    "kind": "train",
                    "step": step,
                    **rec,
                    "lr": sched.get_last_lr()[0],
                    "patches_per_s": rate,
                }
            )
            bar.set_postfix(loss=f"{rec['loss']:.4f}", patches_s=f"{rate:.1f}")
            sums, n_log, t_log = {}, 0, now
        # not at stop_at: a stopped-and-resumed run then validates exactly like an unbroken one
        due = step % config.eval_every == 0 or step == config.steps
        if dist.main and val_images is not None and due:
            last_val = validate(
                model,
                val_images,
                val_masks,
                device=device,
                threshold=config.threshold,
                batch_size=config.batch_size,
            )
            log({"kind": "val", "step": step, **last_val})
            if "f1" in last_val and (best_f1 is None or last_val["f1"] > best_f1):
                best_f1, best_step = float(last_val["f1"]), step
                checkpoint(best_path, last_val)
        if dist.main and (step % config.checkpoint_every == 0 or step == end):
            checkpoint(last_path, last_val)
        bar.update(1)
    bar.close()
    seconds_loop = time.perf_counter() - t_loop
    del it
    if dist.main:
        try:
            from lymph.model.plots import plot_loss

            plot_loss(metrics_path, run / "loss.png", title=f"{config.stage}: {run.name}")
        except Exception as exc:  # a plot must never lose a finished run
            warnings.warn(f"loss.png not written: {exc}", stacklevel=2)
    if dist.world_size > 1:
        import torch.distributed as tdist

        tdist.barrier()
        tdist.destroy_process_group()
    done = step - start_step
    return TrainResult(
        run_dir=run,
        last=last_path,
        best=best_path if best_path.exists() and best_f1 is not None else None,
        steps=step,
        best_f1=best_f1,
        seconds=time.perf_counter() - t_start,
        patches_per_s=done * config.batch_size * dist.world_size / max(seconds_loop, 1e-9),
        data_wait=wait / max(seconds_loop, 1e-9),
        final_loss=final_loss,
        val=last_val,
        stopped=step < config.steps,
        train_patches=n_train,
        train_slides=tuple(train_ids),
        val_slides=tuple(val_ids),
    )
