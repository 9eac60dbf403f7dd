"""``--resume``: read last.pt, refuse a resume on another store or with other settings, and
find where the loop and its data stream continue (``Start``)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lymph.data.errors import CheckpointError, ConfigError
from lymph.data.identity import store_content_digest
from lymph.data.store import PatchStore
from lymph.model.checkpoint import Checkpoint, StoreRecord, plain, read_checkpoint
from lymph.model.layout import Layout
from lymph.model.train.config import TrainConfig

# Settings --resume may change (recorded in the run record's "resumes"): how and where the run
# executes, not what it computes. workers and batch_size change the data order (warned).
RESUME_MAY_CHANGE = frozenset(
    {"resume", "stop_at", "device", "precision", "workers", "batch_size", "log_every",
     "checkpoint_every", "threads", "out", "store"}
)  # fmt: skip
STORE_IDENTITY = ("schema_version", "level", "patch_size")


@dataclass(frozen=True)
class Start:
    """Where the loop starts: step, best validation so far and the data position."""

    step: int = 0
    best_f1: float | None = None
    best_step: int | None = None
    stream_seed: int = 0
    batches: int = 0
    evals_since_best: int = 0


def resumed_checkpoint(config: TrainConfig) -> Checkpoint | None:
    """last.pt for --resume (None otherwise); refuses a run folder in use."""
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
    resumed = read_checkpoint(last_path)
    if resumed.record.stage != config.stage:
        raise CheckpointError(
            f"--resume: {last_path} is a {resumed.record.stage} run, this is "
            f"--stage {config.stage}"
        )
    return resumed


def check_resume(
    config: TrainConfig, store: PatchStore, resumed: Checkpoint
) -> list[dict[str, object]]:
    """Refuse (CheckpointError, by name) a resume on another store or with another setting than
    ``resumed`` records, except ``RESUME_MAY_CHANGE``; returns the record's resumes plus this
    one ({"step", "changed": {name: [old, new]}}) when one of those changed."""
    record, path = resumed.record, resumed.path
    _check_store_identity(store, record.store, path=path)
    _check_store_content(store, record.store, path=path)
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
        resumes.append({"step": resumed.step, "changed": shown})
    return resumes


def _check_store_identity(store: PatchStore, rec_store: StoreRecord | None, *, path: Path) -> None:
    """Refuse a resume on another store path, schema, level or patch size."""
    if rec_store is None:
        return
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


def _check_store_content(store: PatchStore, rec_store: StoreRecord | None, *, path: Path) -> None:
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


def start_of(config: TrainConfig, resumed: Checkpoint | None, layout: Layout) -> Start:
    """Where a run starts: step 0, or last.pt's step, best F1 and data position (a fresh data
    seed, warned, when the process layout or the batch size changed)."""
    if resumed is None:
        return Start(stream_seed=config.seed)
    step = resumed.step
    extra = resumed.extra
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
