"""Scoring a checkpoint on a store's patches, streamed one storage chunk at a time: the seeded
patch sample, the threshold chosen on the validation slides ("auto"), and the pooled and
per-slide counts with the patches the figures show.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from tqdm.auto import tqdm

from lymph.data.errors import ConfigError
from lymph.data.store import PatchBatch, PatchStore
from lymph.model.evaluate.config import AUTO, RECALL_TARGET, EvalConfig
from lymph.model.infer import predict_probs
from lymph.model.metrics import PixelCounts, PRAccumulator, binarize, pixel_counts
from lymph.model.unet import UNet


class FigurePatch(NamedTuple):
    """A patch the figures show: where it is, its image, ground truth and prediction."""

    slide_id: str
    x: int
    y: int
    image: np.ndarray
    truth: np.ndarray
    pred: np.ndarray


@dataclass
class Reservoir:
    """Uniform sample of k items from a stream (Algorithm R) with an explicit Generator."""

    k: int
    rng: np.random.Generator
    items: list[FigurePatch] = field(default_factory=list)
    seen: int = 0

    def offer(self, item: FigurePatch) -> None:
        self.seen += 1
        if len(self.items) < self.k:
            self.items.append(item)
        else:
            j = int(self.rng.integers(self.seen))
            if j < self.k:
                self.items[j] = item


def _masks(batch: PatchBatch) -> np.ndarray:
    """The masks of a batch of a labeled slide (read with ``masks=True``: always there)."""
    assert batch.masks is not None, "a labeled slide's patches are read with their masks"
    return batch.masks


def _progress(total: int, desc: str, enabled: bool) -> tqdm:
    return tqdm(total=total, desc=desc, unit="patch", disable=None if enabled else True)


def sample_patches(n_patches: int, k: int | None, *, seed: int, slide_id: str) -> np.ndarray:
    """Sorted indices of the patches of one slide to score: all of them when `k` is None or
    >= n_patches, else a uniform sample of k seeded by (seed, slide id) only, so two models
    scored with the same seed see the same patches."""
    if k is None or k >= n_patches:
        return np.arange(n_patches)
    rng = np.random.default_rng([seed, 2, zlib.crc32(slide_id.encode())])
    return np.sort(rng.choice(n_patches, size=k, replace=False))


def _stream(
    store: PatchStore,
    slide_ids: Iterable[str],
    model: UNet,
    config: EvalConfig,
    desc: str,
) -> Iterator[tuple[str, PatchBatch, np.ndarray]]:
    """Yield (slide_id, batch, probs) chunk by chunk (only the sampled patches of each chunk)."""
    slide_ids = list(slide_ids)
    keep = {
        sid: sample_patches(store.slide(sid).n_patches, config.max_patches_per_slide,
                            seed=config.seed, slide_id=sid)
        for sid in slide_ids
    }  # fmt: skip
    with _progress(sum(len(k) for k in keep.values()), desc, config.progress) as bar:
        for ref in store.chunks(slide_ids):
            idx = keep[ref.slide_id]
            idx = idx[(idx >= ref.start) & (idx < ref.stop)] - ref.start
            if len(idx) == 0:
                continue
            batch = store.read(ref.slide_id, ref.start, ref.stop, masks=True)
            if len(idx) < len(batch):
                batch = PatchBatch(
                    images=batch.images[idx], coords=batch.coords[idx],
                    labels=None if batch.labels is None else batch.labels[idx],
                    masks=None if batch.masks is None else batch.masks[idx],
                )  # fmt: skip
            probs = predict_probs(
                model,
                batch.images,
                device=config.device,
                batch_size=config.batch_size,
                tta=config.tta,
                precision=config.precision,
            )
            yield ref.slide_id, batch, probs
            bar.update(len(batch))


def choose_threshold(
    config: EvalConfig, store: PatchStore, model: UNet, val: list[str], source: str
) -> tuple[float, float | None, dict[str, object]]:
    """(threshold, 0.9-recall threshold or None, the "validation" block or {})."""
    if config.threshold != AUTO:
        return float(config.threshold), None, {}
    val_acc = PRAccumulator(bins=config.bins)
    for _, batch, probs in _stream(store, val, model, config, "eval: validation"):
        val_acc.update(probs, _masks(batch))
    if val_acc.hist_pos.sum() == 0:
        raise ConfigError(
            f"the validation slides {val} hold no tumor pixels, so no threshold can be "
            "chosen on them; pass --threshold 0.5, or a store with more tumor slides"
        )
    threshold = val_acc.best_f1_threshold()
    recall_threshold = val_acc.threshold_at_recall(RECALL_TARGET)
    block: dict[str, object] = {
        "slides": val,
        "source": source,
        "f1_best_threshold": threshold,
        f"recall_{RECALL_TARGET:g}_threshold": recall_threshold,
        "at_f1_best": val_acc.counts_at(threshold).to_dict(),
        f"at_recall_{RECALL_TARGET:g}": val_acc.counts_at(recall_threshold).to_dict(),
    }
    return threshold, recall_threshold, {"validation": block}


@dataclass
class Tally:
    """What scoring accumulates: pooled histograms, per-slide counts, figure picks."""

    acc: PRAccumulator
    per_slide: dict[str, PixelCounts]
    n_patches: dict[str, int]
    picks: dict[int, Reservoir]


def score(config: EvalConfig, store: PatchStore, model: UNet, scored: list[str],
          threshold: float) -> Tally:  # fmt: skip
    """Counts of ``scored`` at ``threshold``, the pooled histograms, and (``config.figures``)
    a seeded sample of tumor and normal patches."""
    sample_rng = np.random.default_rng([config.seed, 1])
    k = config.n_figure_patches
    tally = Tally(
        PRAccumulator(bins=config.bins),
        {sid: PixelCounts() for sid in scored},
        dict.fromkeys(scored, 0),
        {1: Reservoir(k - k // 2, sample_rng), 0: Reservoir(k // 2, sample_rng)},
    )
    for sid, batch, probs in _stream(store, scored, model, config, "eval: scoring"):
        pred = binarize(probs, threshold)
        masks = _masks(batch)
        tally.per_slide[sid] = tally.per_slide[sid] + pixel_counts(pred, masks)
        tally.acc.update(probs, masks)
        tally.n_patches[sid] += len(batch)
        if config.figures:
            for i in range(len(batch)):
                tally.picks[1 if (masks[i] == 1).any() else 0].offer(FigurePatch(
                    sid, int(batch.coords[i, 0]), int(batch.coords[i, 1]),
                    batch.images[i].copy(), (masks[i] == 1).astype(np.uint8), pred[i].copy()
                ))  # copies: a view would pin its chunk  # fmt: skip
    return tally

