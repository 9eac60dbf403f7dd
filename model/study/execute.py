"""One run of the study: fine-tune it (`lymph.model.train.run`), score it on its test slides
(`lymph.model.evaluate.run`, threshold from its inner-validation slides) and write its
`runs/<run_id>/done.json` last, so a killed study resumes where it stopped."""

from __future__ import annotations

import dataclasses
import shutil
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from lymph.data.io import atomic_write_json
from lymph.model.study.conditions import SEG_ONLY
from lymph.model.study.config import StudyConfig
from lymph.model.study.plan import RunSpec, subset_sha
from lymph.model.study.pretraining import Arch

if TYPE_CHECKING:
    from lymph.model.train import TrainConfig

Row = dict[str, object]
"""A run's results.csv row (CSV_FIELDS; its done.json "row")."""


@dataclass(frozen=True)
class RunContext:
    """What every run of one study shares (picklable: it travels to the worker processes)."""

    config: StudyConfig
    arch: Arch
    inits: dict[str, tuple[Path, ...]]  # condition -> its init checkpoints (repeat r: r mod n)
    pretexts: dict[str, str]  # condition -> reconstruction pretext of its fine-tune
    pretrain: dict[str, tuple[str | None, tuple[str, ...]]]  # checkpoint -> (store, slides)
    settings: dict[str, object]  # what a finished run must share to be reused
    pretrain_seeds: dict[str, int | None] = field(default_factory=dict)  # checkpoint -> seed


def init_for(ctx: RunContext, spec: RunSpec) -> Path | None:
    """The checkpoint a run starts from: repeat r uses its condition's checkpoint r mod n, so
    the pairs span every pretraining seed."""
    paths = ctx.inits.get(spec.condition)
    return paths[spec.repeat % len(paths)] if paths else None


def train_options(
    config: StudyConfig, arch: Mapping[str, object], fields: set[str]
) -> dict[str, Any]:
    """TrainConfig keywords of a study run (`fields`: TrainConfig's; the checkpoint's model
    settings that are not TrainConfig fields are dropped). TrainConfig checks their values."""
    settings = config.resolved
    steps = settings.steps
    opts: dict[str, Any] = {
        "steps": steps, "batch_size": settings.batch_size,
        "crop": settings.crop, "workers": settings.workers,
        "lr": config.lr, "eval_every": min(settings.eval_every, steps),
        "checkpoint_every": steps, "val_patches": settings.val_patches,
        "patience": settings.patience, "min_steps": settings.min_steps,
        "threads": config.threads,
        "device": config.device, "select": "best_f1", "precision": config.precision,
    }  # fmt: skip
    opts.update({k: v for k, v in arch.items() if k in fields and k != "kind"})
    if config.crop is None and opts.get("crop") is not None:  # a profile's crop: fit the model
        multiple = 2 ** int(cast(int, arch.get("depth", 4)))
        opts["crop"] = max(multiple, round(opts["crop"] / multiple) * multiple)
    return {k: v for k, v in opts.items() if v is not None and k in fields}


def _train_config(ctx: RunContext, spec: RunSpec, out: Path) -> TrainConfig:
    """The fine-tune of one run: its condition's init and loss, its slides, subset and seed."""
    from lymph.model.train import TrainConfig

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    opts = train_options(ctx.config, ctx.arch, fields)
    if spec.condition == SEG_ONLY:
        opts["recon_weight"] = 0.0
    elif ctx.config.recon_weight is not None:
        opts["recon_weight"] = ctx.config.recon_weight
    if spec.condition in ctx.inits:
        opts["init"] = init_for(ctx, spec)
        for key in ctx.arch:  # fine-tuning inherits the architecture from the checkpoint
            opts.pop(key, None)
    else:
        opts["from_scratch"] = True
    opts["pretext"] = ctx.pretexts.get(spec.condition, "identity")
    opts["train_slide_ids"] = tuple(spec.train_slides)
    opts["val_slide_ids"] = tuple(spec.val_slides)
    opts["labeled_patches"] = tuple(spec.subset)
    return TrainConfig(
        store=ctx.config.store, out=out, stage="finetune", labeled=len(spec.subset),
        val_slides=len(spec.val_slides), seed=spec.train_seed, **opts,
    )  # fmt: skip


def run_one(ctx: RunContext, spec: RunSpec) -> Row:
    """Fine-tune one run, score it on its test slides (threshold from its inner-validation
    slides) and return its results.csv row; its checkpoints go unless keep_checkpoints."""
    from lymph.model.checkpoint import read_checkpoint
    from lymph.model.evaluate import AUTO, EvalConfig
    from lymph.model.evaluate import run as evaluate
    from lymph.model.precision import cpu_name
    from lymph.model.train import run

    config = ctx.config
    train_dir = config.out / "runs" / spec.run_id / "train"
    if train_dir.exists():  # a run killed before done.json: start it over
        shutil.rmtree(train_dir)
    t0, c0 = time.perf_counter(), time.process_time()
    result = run(_train_config(ctx, spec, train_dir), progress=False)
    t1 = time.perf_counter()
    scored = result.best or result.last
    best_step = result.best_step  # None without a best.pt: the scored last.pt's step
    if best_step is None:
        best_step = read_checkpoint(scored).step
    auto = config.threshold == AUTO
    scores = evaluate(
        EvalConfig(
            store=config.store, checkpoint=scored, threshold=config.threshold,
            slides=spec.test_slides, val_slides=spec.val_slides if auto else None,
            batch_size=config.resolved.eval_batch_size, device=config.device,
            max_patches_per_slide=config.max_test_patches, seed=config.seed, progress=False,
            precision=config.precision,
        )  # fmt: skip
    ).to_dict()
    t2 = time.perf_counter()
    if not config.keep_checkpoints:
        for ckpt in train_dir.rglob("*.pt"):
            ckpt.unlink()
    init = init_for(ctx, spec)
    pre_store, pre_slides = ctx.pretrain.get(str(init), (None, ()))
    seed = ctx.pretrain_seeds.get(str(init))
    return {
        "run_id": spec.run_id, "size": spec.size, "fold": spec.fold, "repeat": spec.repeat,
        "condition": spec.condition, "init": str(init or ""),
        "pretrain_seed": "" if seed is None else seed,
        "recon_weight": 0.0 if spec.condition == SEG_ONLY else config.recon_weight,
        **{k: scores[k] for k in ("precision", "recall", "f1", "dice", "iou",
                                  "tp", "fp", "fn", "tn", "threshold")},
        "ap": scores["average_precision"], "best_step": best_step,
        "best_val_f1": result.best_f1, "pretext": ctx.pretexts.get(spec.condition, ""),
        "stopped_step": result.stopped_step, "steps_cap": config.resolved.steps,
        "n_tumor_patches": spec.n_tumor_patches, "n_normal_patches": spec.n_normal_patches,
        "subset_sha": subset_sha(spec.subset), "train_seed": spec.train_seed,
        "pretrain_store": pre_store or "", "pretrain_slides": ";".join(pre_slides),
        "train_slides": ";".join(spec.train_slides), "val_slides": ";".join(spec.val_slides),
        "test_slides": ";".join(spec.test_slides), "n_test_patches": scores["n_patches"],
        "train_seconds": round(t1 - t0, 2), "eval_seconds": round(t2 - t1, 2),
        "cpu_seconds": round(time.process_time() - c0, 2), "cpu": cpu_name(),
    }  # fmt: skip


def execute(ctx: RunContext, spec: RunSpec) -> Row:
    """Run one spec with ctx.config.threads torch threads and write its done.json (last)."""
    from lymph.model.threads import torch_threads

    # per-run warnings (e.g. a short class) are suppressed
    with torch_threads(ctx.config.threads), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        row = run_one(ctx, spec)
    record = {"spec": spec.fingerprint(), "settings": ctx.settings, "row": row}
    atomic_write_json(done_path(ctx.config, spec), record)
    return row


def done_path(config: StudyConfig, spec: RunSpec) -> Path:
    """Where a finished run's record goes (written last: its presence means finished)."""
    return config.out / "runs" / spec.run_id / "done.json"
