"""Streaming patch batches for training: whole store chunks, shuffled, sharded, resumable.

The stream of one shard is a pure function of (seed, epoch, shard layout), so a run resumed at
step S yields exactly the batches an uninterrupted run would have yielded from step S on:

1. Epoch ``e`` shuffles the list of whole storage chunks with ``Generator([seed, e])`` (the same
   order in every process). Chunk ``i`` of that order goes to shard ``i % n_shards`` where
   ``n_shards = world_size * max(workers, 1)`` and ``shard = rank * max(workers, 1) + worker``:
   no chunk is read twice within an epoch, whatever the number of processes and workers.
2. A shard groups its chunks into windows of ``window_chunks`` chunks: the bounded shuffle
   buffer. A window is read chunk by chunk (whole zarr chunks, the fast path), each patch is
   randomly cropped and dihedrally transformed as it arrives (one copy; only the crop is kept),
   colour-jittered in blocks, then emitted in a random order, all drawn from
   ``Generator([seed, e, shard, window])``. Memory is at most one window of
   crops plus one raw chunk, however large the store.
3. Batches are consecutive ``batch_size`` patches of the shard's endless stream (windows, then
   the next epoch), so every batch is full. DataLoader workers deliver in order, round robin, so
   after ``g`` batches of one rank, worker ``w`` has delivered ``ceil((g - w) / workers)``.
   Resuming skips that many batches per shard by counting window sizes (no reads) and only
   re-reads the window it resumes inside; the resumed DataLoader's worker ``w`` plays the role
   of worker ``(w + g) % workers``, since its round robin starts again at worker 0.

``LabeledPatches`` is the fine-tuning source: the few labeled patches, cached in memory, with the
same sharding, per-epoch shuffling, crops and augmentation (one window per epoch).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from lymph.data.errors import ConfigError
from lymph.data.store import ChunkRef, PatchStore
from lymph.model.augment import AugmentConfig, color_jitter, dihedral
from lymph.model.layout import Layout

# A batch: "images" (B, crop, crop, 3) uint8 and, with masks, "masks" (B, crop, crop) uint8;
# numpy arrays as the streams yield them, tensors once a DataLoader has converted them.
Batch = Mapping[str, np.ndarray | torch.Tensor]
W = TypeVar("W")  # one window of a stream: what it reads and shuffles at once

# patches colour-jittered at once: the float32 scratch of 4 crops of 256 px (3 MB) stays in
# cache; measured here 2x faster than blocks of 16-64
AUGMENT_BLOCK = 4


@dataclass(frozen=True)
class StreamConfig:
    """How patches become batches. Recorded in the checkpoint."""

    batch_size: int
    crop: int
    seed: int
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    window_chunks: int = 8
    masks: bool = False

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.crop < 1:
            raise ConfigError(f"crop must be >= 1, got {self.crop}")
        if self.window_chunks < 1:
            raise ConfigError(f"window_chunks must be >= 1, got {self.window_chunks}")

    def to_dict(self) -> dict[str, object]:
        return {
            "batch_size": self.batch_size,
            "crop": self.crop,
            "seed": self.seed,
            "augment": self.augment.to_dict(),
            "window_chunks": self.window_chunks,
            "masks": self.masks,
        }


def consumed_by_worker(batches: int, worker: int, workers: int) -> int:
    """Batches worker ``worker`` delivered when a rank consumed ``batches`` in DataLoader order."""
    w = max(workers, 1)
    return max(0, -(-(batches - worker) // w))


def shard_chunks(
    chunks: Sequence[ChunkRef], *, seed: int, epoch: int, shard: int, n_shards: int
) -> list[ChunkRef]:
    """This shard's chunks of epoch ``epoch``, in its shuffled order (see module docstring)."""
    order = np.random.default_rng([seed, epoch]).permutation(len(chunks))
    return [chunks[i] for i in order[shard::n_shards]]


def random_crops(
    images: np.ndarray,
    masks: np.ndarray | None,
    *,
    crop: int,
    rng: np.random.Generator,
    dihedral_transforms: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """One random ``crop`` x ``crop`` window per patch (uint8 copies; never resized), with a
    random dihedral transform (the same on image and mask) applied in the same copy."""
    n, h, w = images.shape[:3]
    if crop > h or crop > w:
        raise ConfigError(f"crop {crop} is larger than the store's {h}x{w} patches: use <= {h}")
    ys = rng.integers(0, h - crop + 1, size=n)
    xs = rng.integers(0, w - crop + 1, size=n)
    ks = np.asarray(rng.integers(0, 8, size=n)) if dihedral_transforms else np.zeros(n, np.int64)
    out = np.empty((n, crop, crop, images.shape[3]), dtype=np.uint8)
    out_m = None if masks is None else np.empty((n, crop, crop), dtype=np.uint8)
    for i, (y, x, k) in enumerate(zip(ys, xs, ks, strict=True)):
        out[i] = dihedral(images[i, y : y + crop, x : x + crop], int(k), axes=(0, 1))
        if masks is not None and out_m is not None:
            out_m[i] = dihedral(masks[i, y : y + crop, x : x + crop], int(k), axes=(0, 1))
    return out, out_m


def _single_threaded_zarr() -> None:
    """In a DataLoader worker process: decode chunks in one zarr thread.

    Measured here (bench_out store, 64-patch chunks of 300 px): zarr's default thread pool
    gives 1.1-1.5k patches/s and a worker peak RSS that grew 34% from a 2,000- to a 20,000-patch
    store (freed chunk buffers scattered over per-thread malloc arenas as more slides are
    visited); one thread gives 3.6-4.1k patches/s and no growth (363 vs 349 MB). zarr resets its
    pool after fork, so this takes effect in the worker only and before its first read.
    """
    from lymph.data.store import single_threaded_reads

    single_threaded_reads()


class _Batcher:
    """Cuts an endless sequence of windows, each taken in its shuffled ``order``, into full
    batches (one gather copy per patch)."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self.images: list[np.ndarray] = []
        self.masks: list[np.ndarray] = []
        self.count = 0

    def add(
        self, images: np.ndarray, masks: np.ndarray | None, order: np.ndarray
    ) -> Iterator[dict[str, np.ndarray]]:
        pos = 0
        while pos < len(order):
            take = min(self.batch_size - self.count, len(order) - pos)
            idx = order[pos : pos + take]
            self.images.append(images[idx])
            if masks is not None:
                self.masks.append(masks[idx])
            self.count += take
            pos += take
            if self.count == self.batch_size:
                one = len(self.images) == 1
                batch: dict[str, np.ndarray] = {
                    "images": self.images[0] if one else np.concatenate(self.images)
                }
                if masks is not None:
                    batch["masks"] = self.masks[0] if one else np.concatenate(self.masks)
                self.images, self.masks, self.count = [], [], 0
                yield batch


class _ShardedStream(IterableDataset[dict[str, np.ndarray]], Generic[W]):
    """Common machinery: shard discovery, windows over endless epochs, resume by skipping."""

    def __init__(self, config: StreamConfig, *, layout: Layout, start_batches: int) -> None:
        super().__init__()
        self.config = config
        self.layout = layout
        self.start_batches = int(start_batches)

    # subclasses: the windows of one epoch (sizes known without reading) and loading one
    def windows(self, epoch: int, shard: int) -> list[W]:
        raise NotImplementedError

    def window_size(self, window: W) -> int:
        raise NotImplementedError

    def load(self, window: W, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
        """The window's patches, each randomly cropped with ``rng``."""
        raise NotImplementedError

    def _shard(self) -> tuple[int, int]:
        """(shard, role): this process's shard and the worker role it plays."""
        info = get_worker_info()
        worker = 0 if info is None else info.id
        if info is not None and info.num_workers != self.layout.per_rank:
            raise ConfigError(
                f"stream built for {self.layout.workers} workers but the DataLoader has "
                f"{info.num_workers}: pass the same workers to both"
            )
        # A resumed DataLoader starts its round robin at worker 0 again: worker w takes over the
        # role (shard) of the worker whose turn came next in the interrupted run.
        role = (worker + self.start_batches) % self.layout.per_rank
        return self.layout.rank * self.layout.per_rank + role, role

    def window_rng(self, epoch: int, shard: int, index: int) -> np.random.Generator:
        return np.random.default_rng([self.config.seed, epoch, shard, index])

    def prepare(
        self, window: W, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """Read, crop (+ dihedral) and colour-jitter one window; returns uint8 images and masks
        in reading order and the shuffled order to emit them in."""
        images, masks = self.load(window, rng)
        order = rng.permutation(len(images))
        if self.config.augment.jitter:
            for a in range(0, len(images), AUGMENT_BLOCK):
                b = slice(a, a + AUGMENT_BLOCK)
                images[b] = color_jitter(images[b], config=self.config.augment, rng=rng)
        return images, masks, order

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        if get_worker_info() is not None:
            _single_threaded_zarr()
        shard, worker = self._shard()
        skip = consumed_by_worker(self.start_batches, worker, self.layout.workers)
        skip *= self.config.batch_size  # samples to skip in this shard's stream
        batcher = _Batcher(self.config.batch_size)
        epoch = 0
        while True:
            windows = self.windows(epoch, shard)
            if not windows:
                raise ConfigError(
                    f"shard {shard} of {self.layout.n_shards} gets no data: the training set is "
                    "too small for this many ranks x workers; use fewer --workers"
                )
            for index, window in enumerate(windows):
                size = self.window_size(window)
                if skip >= size:
                    skip -= size
                    continue
                images, masks, order = self.prepare(window, self.window_rng(epoch, shard, index))
                yield from batcher.add(images, masks, order[skip:])
                skip = 0
            epoch += 1


class StoreStream(_ShardedStream[list[ChunkRef]]):
    """Endless shuffled batches from whole chunks of a PatchStore (pretraining).

    Yields dicts of uint8 numpy arrays: ``images`` (B, crop, crop, 3) and, with
    ``config.masks``, ``masks`` (B, crop, crop). Use with ``DataLoader(batch_size=None)``.
    """

    def __init__(
        self,
        store_path: str | Path,
        chunks: Sequence[ChunkRef],
        config: StreamConfig,
        *,
        layout: Layout = Layout(),
        start_batches: int = 0,
    ) -> None:
        super().__init__(config, layout=layout, start_batches=start_batches)
        self.store_path = Path(store_path)
        self.chunks = list(chunks)
        if len(self.chunks) < layout.n_shards:
            raise ConfigError(
                f"{len(self.chunks)} chunks of patches cannot feed {layout.n_shards} shards "
                f"({layout.world_size} ranks x {layout.per_rank} workers): use fewer --workers "
                "or a larger store"
            )
        self._store: PatchStore | None = None
        self.reads = 0  # chunks read by this process (tests check chunk-by-chunk reading)

    @property
    def store(self) -> PatchStore:
        if self._store is None:  # opened lazily, once per worker process
            self._store = PatchStore.open(self.store_path)
        return self._store

    def __getstate__(self) -> dict[str, object]:
        state = self.__dict__.copy()
        state["_store"] = None
        return state

    def windows(self, epoch: int, shard: int) -> list[list[ChunkRef]]:
        mine = shard_chunks(
            self.chunks,
            seed=self.config.seed,
            epoch=epoch,
            shard=shard,
            n_shards=self.layout.n_shards,
        )
        w = self.config.window_chunks
        return [mine[i : i + w] for i in range(0, len(mine), w)]

    def window_size(self, window: list[ChunkRef]) -> int:
        return sum(len(c) for c in window)

    def load(
        self, window: list[ChunkRef], rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray | None]:
        crop = self.config.crop
        n = self.window_size(window)
        images = np.empty((n, crop, crop, 3), dtype=np.uint8)
        masks = np.empty((n, crop, crop), dtype=np.uint8) if self.config.masks else None
        pos = 0
        for ref in window:
            batch = self.store.read(ref.slide_id, ref.start, ref.stop, masks=self.config.masks)
            self.reads += 1
            if self.config.masks and batch.masks is None:
                raise ConfigError(f"slide {ref.slide_id} has no masks (unlabeled slide)")
            img, msk = random_crops(
                batch.images,
                batch.masks,
                crop=crop,
                rng=rng,
                dihedral_transforms=self.config.augment.dihedral,
            )
            images[pos : pos + len(img)] = img
            if masks is not None and msk is not None:
                masks[pos : pos + len(img)] = msk
            pos += len(img)
        return images, masks


class LabeledPatches(_ShardedStream[np.ndarray]):
    """Endless shuffled batches from patches held in memory (the few labeled ones).

    Each epoch permutes the patches with ``Generator([seed, epoch])`` and gives patch ``i`` of
    that order to shard ``i % n_shards``; one window per shard and epoch.
    """

    def __init__(
        self,
        images: np.ndarray,
        masks: np.ndarray,
        config: StreamConfig,
        *,
        layout: Layout = Layout(),
        start_batches: int = 0,
    ) -> None:
        super().__init__(config, layout=layout, start_batches=start_batches)
        if len(images) != len(masks) or len(images) == 0:
            raise ConfigError(
                f"need as many masks as images (> 0), got {len(images)}, {len(masks)}"
            )
        if len(images) < layout.n_shards:
            raise ConfigError(
                f"{len(images)} labeled patches cannot feed {layout.n_shards} shards: "
                "use fewer --workers or more --labeled patches"
            )
        self.images = images
        self.masks = masks

    def windows(self, epoch: int, shard: int) -> list[np.ndarray]:
        order = np.random.default_rng([self.config.seed, epoch]).permutation(len(self.images))
        return [order[shard :: self.layout.n_shards]]

    def window_size(self, window: np.ndarray) -> int:
        return len(window)

    def load(
        self, window: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray | None]:
        return random_crops(
            self.images[window],
            self.masks[window],
            crop=self.config.crop,
            rng=rng,
            dihedral_transforms=self.config.augment.dihedral,
        )


def to_tensors(
    batch: Batch, device: torch.device, *, channels_last: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """uint8 batch -> float images (B,3,H,W) in [0,1] and float masks (B,1,H,W) on ``device``."""
    images = batch["images"]
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    x = images.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    else:
        x = x.contiguous()
    y = None
    if "masks" in batch:
        m = batch["masks"]
        if isinstance(m, np.ndarray):
            m = torch.from_numpy(m)
        y = m.to(device, non_blocking=True).unsqueeze(1).float()
    return x, y
