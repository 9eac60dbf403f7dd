from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from torch.utils.data import DataLoader

from lymph.data.errors import ConfigError
from lymph.data.store import PatchStore, create_store, write_slide
from lymph.model.augment import AugmentConfig
from lymph.model.layout import Layout
from lymph.model.stream import (
    LabeledPatches,
    StoreStream,
    StreamConfig,
    consumed_by_worker,
    random_crops,
    shard_chunks,
)

P = 20  # patch size of the test stores


def _ids_images(slide: int, n: int) -> np.ndarray:
    """Constant patches that encode (slide, index): R = index % 256, G = index // 256, B = slide."""
    idx = np.arange(n)
    img = np.zeros((n, P, P, 3), np.uint8)
    img[..., 0] = (idx % 256)[:, None, None]
    img[..., 1] = (idx // 256)[:, None, None]
    img[..., 2] = slide
    return img


def _ids(batch_images: np.ndarray) -> list[tuple[int, int]]:
    px = batch_images[:, 0, 0].astype(int)
    return [(int(b), int(r + 256 * g)) for r, g, b in px]


def make_store(path: Path, sizes: list[int], *, labeled: bool = False) -> Path:
    create_store(path, {"patch_size": P, "level": 0, "seed": 0})
    for s, n in enumerate(sizes):
        kw = {}
        if labeled:
            kw = {
                "labels": (np.arange(n) % 2).astype(np.uint8),
                "masks": np.broadcast_to(
                    (np.arange(n) % 2).astype(np.uint8)[:, None, None], (n, P, P)
                ).copy(),
            }
        write_slide(
            path,
            f"s{s}",
            images=_ids_images(s, n),
            coords=np.zeros((n, 2), np.int64),
            attrs={},
            **kw,
        )
    return path


def _cfg(**kw: object) -> StreamConfig:
    base: dict = {
        "batch_size": 5,
        "crop": 16,
        "seed": 3,
        "augment": AugmentConfig.none(),
        "window_chunks": 2,
    }
    base.update(kw)
    return StreamConfig(**base)


def _take(it, n: int) -> list[dict]:  # noqa: ANN001
    return [next(it) for _ in range(n)]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 3 slides, 64 + 64 + 40 / 130 / 70 patches -> 3 + 3 + 2 = 8 chunks, 330 patches
    return make_store(tmp_path_factory.mktemp("s") / "store.zarr", [168, 130, 70][:3])


def test_chunks_shard_without_overlap_across_ranks_and_workers(store: Path) -> None:
    chunks = PatchStore.open(store).chunks()
    for n_shards in (1, 3, 4):
        for epoch in (0, 1):
            parts = [
                shard_chunks(chunks, seed=3, epoch=epoch, shard=s, n_shards=n_shards)
                for s in range(n_shards)
            ]
            flat = [c for p in parts for c in p]
            assert sorted(flat, key=str) == sorted(chunks, key=str)  # each chunk exactly once
    e0 = shard_chunks(chunks, seed=3, epoch=0, shard=0, n_shards=1)
    e1 = shard_chunks(chunks, seed=3, epoch=1, shard=0, n_shards=1)
    assert e0 != e1  # reshuffled each epoch


def test_one_epoch_over_all_shards_is_every_patch_once(store: Path) -> None:
    ps = PatchStore.open(store)
    chunks = ps.chunks()
    n_total = sum(s.n_patches for s in ps.slides)
    seen: list[tuple[int, int]] = []
    for rank in range(2):
        for worker in range(2):
            ds = StoreStream(
                store, chunks, _cfg(batch_size=1), layout=Layout(rank=rank, world_size=2, workers=2)
            )
            shard = rank * 2 + worker
            n = sum(ds.window_size(w) for w in ds.windows(0, shard))
            ds._shard = lambda shard=shard, worker=worker: (shard, worker)  # type: ignore
            seen += [i for b in _take(iter(ds), n) for i in _ids(b["images"])]
    assert len(seen) == n_total and len(set(seen)) == n_total


def test_batches_full_shapes_and_deterministic(store: Path) -> None:
    chunks = PatchStore.open(store).chunks()
    cfg = _cfg(augment=AugmentConfig())
    a = _take(iter(StoreStream(store, chunks, cfg)), 80)  # > one epoch (330 / 5 = 66)
    b = _take(iter(StoreStream(store, chunks, cfg)), 80)
    for x, y in zip(a, b, strict=True):
        assert x["images"].shape == (5, 16, 16, 3) and x["images"].dtype == np.uint8
        np.testing.assert_array_equal(x["images"], y["images"])
    c = _take(iter(StoreStream(store, chunks, _cfg(augment=AugmentConfig(), seed=4))), 3)
    assert not np.array_equal(a[0]["images"], c[0]["images"])


@pytest.mark.parametrize("start", [1, 7, 13, 70])
def test_resume_at_a_step_gives_the_same_batches(store: Path, start: int) -> None:
    chunks = PatchStore.open(store).chunks()
    cfg = _cfg(augment=AugmentConfig())
    full = _take(iter(StoreStream(store, chunks, cfg)), start + 4)
    resumed = _take(iter(StoreStream(store, chunks, cfg, start_batches=start)), 4)
    for x, y in zip(full[start:], resumed, strict=True):
        np.testing.assert_array_equal(x["images"], y["images"])


def test_resume_with_dataloader_workers(store: Path) -> None:
    chunks = PatchStore.open(store).chunks()
    cfg = _cfg(augment=AugmentConfig())
    lay = Layout(workers=2)

    def loader(start: int) -> DataLoader:
        ds = StoreStream(store, chunks, cfg, layout=lay, start_batches=start)
        return DataLoader(ds, batch_size=None, num_workers=2)

    full = _take(iter(loader(0)), 9)
    resumed = _take(iter(loader(5)), 4)
    for x, y in zip(full[5:], resumed, strict=True):
        np.testing.assert_array_equal(x["images"].numpy(), y["images"].numpy())
    # the two workers read disjoint chunks
    ids = [set(_ids(b["images"].numpy())) for b in full[:2]]
    assert not ids[0] & ids[1]


def test_consumed_by_worker() -> None:
    assert [consumed_by_worker(5, w, 2) for w in range(2)] == [3, 2]
    assert [consumed_by_worker(1, w, 3) for w in range(3)] == [1, 0, 0]
    assert consumed_by_worker(4, 0, 0) == 4


def test_reads_whole_chunks_one_window_at_a_time(store: Path, monkeypatch) -> None:  # noqa: ANN001
    calls: list[tuple[str, int, int]] = []
    orig = PatchStore.read

    def spy(self, slide_id, start, stop, *, masks=True):  # noqa: ANN001, ANN202
        calls.append((slide_id, start, stop))
        return orig(self, slide_id, start, stop, masks=masks)

    monkeypatch.setattr(PatchStore, "read", spy)
    chunks = PatchStore.open(store).chunks()
    it = iter(StoreStream(store, chunks, _cfg(window_chunks=2)))
    next(it)
    assert len(calls) == 2  # the first window only, not the store
    assert all((s, a, b) in {(c.slide_id, c.start, c.stop) for c in chunks} for s, a, b in calls)


def test_crop_is_a_window_of_the_patch() -> None:
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (10, 30, 30, 3), dtype=np.uint8)
    masks = (imgs[..., 0] > 128).astype(np.uint8)
    out, out_m = random_crops(imgs, masks, crop=16, rng=np.random.default_rng(1))
    assert out.shape == (10, 16, 16, 3) and out_m is not None
    np.testing.assert_array_equal(out_m, (out[..., 0] > 128).astype(np.uint8))
    out, out_m = random_crops(
        imgs, masks, crop=16, rng=np.random.default_rng(1), dihedral_transforms=True
    )
    assert out_m is not None  # the same transform on image and mask
    np.testing.assert_array_equal(out_m, (out[..., 0] > 128).astype(np.uint8))
    with pytest.raises(ConfigError, match="larger than the store's 30x30"):
        random_crops(imgs, masks, crop=31, rng=rng)


def test_masks_stream(tmp_path: Path) -> None:
    path = make_store(tmp_path / "l.zarr", [70], labeled=True)
    chunks = PatchStore.open(path).chunks()
    b = next(iter(StoreStream(path, chunks, _cfg(masks=True, augment=AugmentConfig()))))
    ids = _ids(b["images"])  # unchanged pixel ids? jitter changes colour, so check the mask only
    assert b["masks"].shape == (5, 16, 16) and set(np.unique(b["masks"])) <= {0, 1}
    assert len(ids) == 5


def test_unlabeled_slide_has_no_masks(store: Path) -> None:
    chunks = PatchStore.open(store).chunks()
    with pytest.raises(ConfigError, match="no masks"):
        next(iter(StoreStream(store, chunks, _cfg(masks=True))))


def test_too_few_chunks_for_shards(store: Path) -> None:
    chunks = PatchStore.open(store).chunks()[:3]
    with pytest.raises(ConfigError, match="fewer --workers"):
        StoreStream(store, chunks, _cfg(), layout=Layout(world_size=2, workers=2))


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"batch_size": 0}, "batch_size"),
        ({"crop": 0}, "crop"),
        ({"window_chunks": 0}, "window_chunks"),
    ],
)
def test_bad_stream_config(kw: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        _cfg(**kw)


def test_labeled_patches_shard_and_resume() -> None:
    imgs = _ids_images(0, 23)
    masks = np.zeros((23, P, P), np.uint8)
    seen = []
    for shard in range(3):
        ds = LabeledPatches(imgs, masks, _cfg(batch_size=1), layout=Layout(workers=3))
        ds._shard = lambda shard=shard: (shard, shard)  # type: ignore
        n = len(ds.windows(0, shard)[0])
        seen += [i for b in _take(iter(ds), n) for i in _ids(b["images"])]
    assert sorted(seen) == [(0, i) for i in range(23)]
    cfg = _cfg(augment=AugmentConfig())
    full = _take(iter(LabeledPatches(imgs, masks, cfg)), 12)
    res = _take(iter(LabeledPatches(imgs, masks, cfg, start_batches=9)), 3)
    for x, y in zip(full[9:], res, strict=True):
        np.testing.assert_array_equal(x["images"], y["images"])
        np.testing.assert_array_equal(x["masks"], y["masks"])
    with pytest.raises(ConfigError, match="more --labeled"):
        LabeledPatches(imgs[:2], masks[:2], cfg, layout=Layout(workers=3))
