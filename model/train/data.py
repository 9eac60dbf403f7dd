"""The data of a run: the training batches (streamed from the store for pretraining, the
labeled patches cached in memory for fine-tuning) through a DataLoader, and the validation
patches."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import DataLoader

from lymph.data.errors import ConfigError, LymphError
from lymph.data.store import PatchStore
from lymph.model.stream import Batch, LabeledPatches, StoreStream
from lymph.model.train.config import TrainConfig
from lymph.model.train.splits import select_val_patches

if TYPE_CHECKING:
    from lymph.model.train.plan import Plan


def read_patches(
    store: PatchStore, picks: Sequence[tuple[str, int]], *, masks: bool
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
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


def training_data(
    plan: Plan, store: PatchStore
) -> tuple[StoreStream | LabeledPatches, int, np.ndarray | None]:
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
    labeled = LabeledPatches(images, masks, plan.stream, layout=plan.layout, start_batches=start)
    return labeled, len(plan.picks), labels


def validation_patches(
    config: TrainConfig, plan: Plan, store: PatchStore
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The validation images and masks (None when there are no validation slides; masks None
    when pretraining or when a validation slide is unlabeled: reconstruction is scored)."""
    if not plan.val_ids:
        return None, None
    val_picks = select_val_patches(store, plan.val_ids, config.val_patches, seed=config.seed)
    use_masks = config.stage == "finetune" and all(store.slide(s).labeled for s in plan.val_ids)
    images, masks, _ = read_patches(store, val_picks, masks=use_masks)
    return images, masks


def make_loader(
    dataset: StoreStream | LabeledPatches, config: TrainConfig, *, cuda: bool
) -> DataLoader:
    """The DataLoader of the endless stream (batches come whole from the dataset)."""
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=None,
        num_workers=config.workers,
        pin_memory=cuda,
        prefetch_factor=4 if config.workers else None,
        persistent_workers=False,
    )


def next_batch(it: Iterator[Batch]) -> Batch:
    """The loader's next batch. A lymph error raised in a DataLoader worker (a damaged chunk)
    reaches here re-raised by torch with the worker's whole traceback as its message: it is
    raised again with the original one-line message (the file, the chunk and the fix)."""
    try:
        return next(it)
    except LymphError as exc:
        text = str(exc)
        if "DataLoader worker" not in text:
            raise
        lines = re.findall(rf"^(?:[\w.]+\.)?{type(exc).__name__}: (.+)$", text, flags=re.M)
        raise type(exc)(lines[-1].strip() if lines else text) from None
