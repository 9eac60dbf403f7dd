"""Predict's blending thread (model/predict/pipeline.py): same maps as the serial loop."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from lymph.data.slides import ArraySlide
from lymph.model.checkpoint import save_checkpoint
from lymph.model.predict import pipeline as predict_pipeline
from lymph.model.predict.config import PredictConfig
from lymph.model.predict.pipeline import SinkThread
from lymph.model.predict.slide import predict_slide
from lymph.model.unet import UNet, UNetConfig


def _slide() -> ArraySlide:
    rng = np.random.default_rng(0)
    rgb = np.full((512, 640, 3), 240, np.uint8)
    rgb[40:480, 60:600] = rng.integers(60, 200, (440, 540, 3), dtype=np.uint8)
    return ArraySlide(rgb, downsamples=(1, 2, 4), path="s")


@pytest.mark.parametrize("norm", ["group", "batch"])  # blended half windows; margin tiles
def test_maps_are_identical_with_and_without_the_blend_thread(
        norm: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    ckpt = tmp_path / f"{norm}.pt"
    save_checkpoint(ckpt, model=UNet(UNetConfig(base_width=4, depth=2, norm=norm)),
                    config={"store": {"patch_size": 64, "level": 0}, "stage": "finetune"})
    digests, n_windows = {}, {}
    for enabled in (False, True):
        monkeypatch.setattr(predict_pipeline, "ENABLED", enabled)
        res = predict_slide(_slide(), PredictConfig(
            checkpoint=ckpt, out=tmp_path / f"{norm}_{enabled}", device="cpu", batch_size=3,
            window=128,
            thumb_size=256, map_downsample=4, threads=1, precision="fp32", progress=False))
        import tifffile

        digests[enabled] = hashlib.sha256(tifffile.imread(res.map_path).tobytes()).hexdigest()
        n_windows[enabled] = res.n_windows
        assert res.timings["blend_busy"] > 0 and res.timings["blend"] > 0
    assert n_windows[True] == n_windows[False] > 3
    assert digests[True] == digests[False]


class _Sink:
    def __init__(self, fail_at: int | None = None) -> None:
        self.added: list[tuple[int, int]] = []
        self.windows: list[tuple[int, int] | None] = []
        self.emitted: list[int] = []
        self.fail_at = fail_at

    def add(self, probs: np.ndarray, x: int, y: int,
            origin: tuple[int, int] | None = None) -> None:
        if self.fail_at is not None and len(self.added) == self.fail_at:
            raise MemoryError("cannot grow the band")
        self.added.append((x, y))
        self.windows.append(origin)

    def emit(self, row: int) -> None:
        self.emitted.append(row)


def test_batches_are_applied_in_order_and_errors_reach_the_loop() -> None:
    sink = _Sink()
    bg = SinkThread(sink, depth=1, enabled=True)
    for i in range(20):
        bg.put([(i, i)], np.zeros((1, 2, 2)), i)
    bg.put([], np.zeros((0,)), None)
    bg.close()
    assert sink.added == [(i, i) for i in range(20)] and sink.emitted == list(range(20))
    assert sink.windows == [None] * 20
    trimmed = _Sink()
    bg = SinkThread(trimmed, depth=1, enabled=True)
    bg.put([(0, 0), (8, 0)], np.zeros((2, 2, 2)), None, windows=[(1, 2), (9, 3)])
    bg.close()
    assert trimmed.added == [(0, 0), (8, 0)] and trimmed.windows == [(1, 2), (9, 3)]
    bad = SinkThread(_Sink(fail_at=2), depth=1, enabled=True)
    with pytest.raises(MemoryError, match="cannot grow the band"):
        for i in range(50):
            bad.put([(i, i)], np.zeros((1, 2, 2)), None)
        bad.close()
    bad.abort()


def _islands() -> ArraySlide:
    """Glass with two small tissue islands: most of each tile is glass."""
    rng = np.random.default_rng(1)
    rgb = np.full((768, 896, 3), 240, np.uint8)
    rgb[100:180, 120:220] = rng.integers(60, 200, (80, 100, 3), dtype=np.uint8)
    rgb[500:640, 600:700] = rng.integers(60, 200, (140, 100, 3), dtype=np.uint8)
    return ArraySlide(rgb, downsamples=(1, 2, 4), path="islands")


def test_trimmed_tiles_give_the_full_tiles_map_on_tissue_for_less(tmp_path: Path) -> None:
    import tifffile

    torch.manual_seed(0)
    ckpt = tmp_path / "batch.pt"
    save_checkpoint(ckpt, model=UNet(UNetConfig(base_width=4, depth=2, norm="batch")),
                    config={"store": {"patch_size": 64, "level": 0}, "stage": "finetune"})
    res, maps = {}, {}
    for trim in (False, True):
        res[trim] = predict_slide(_islands(), PredictConfig(
            checkpoint=ckpt, out=tmp_path / f"trim_{trim}", device="cpu", window=256,
            thumb_size=224, map_downsample=4, threads=1, precision="fp32", progress=False,
            trim=trim, write_score=False))
        maps[trim] = tifffile.imread(res[trim].map_path).astype(int)
    assert res[True].n_windows == res[False].n_windows
    assert res[True].inferred_mpx < 0.5 * res[False].inferred_mpx  # mostly glass trimmed away
    tissue = np.zeros(maps[True].shape, bool)
    tissue[25:45, 30:55] = tissue[125:160, 150:175] = True  # the islands' map cells
    diff = np.abs(maps[True] - maps[False])
    assert diff[tissue].max() <= 2  # the same map where there is tissue (uint8 levels)
