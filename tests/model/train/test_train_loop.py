"""The loop's losses: restoration pretexts, the segmentation-only baseline, and what
pretraining learns."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from lymph.data.store import create_store, write_slide
from lymph.model.checkpoint import load_checkpoint, load_model
from lymph.model.train import TrainConfig, run

Cfg = Callable[..., TrainConfig]


@pytest.mark.parametrize("pretext", ["genesis", "inpaint"])
def test_restoration_pretexts_pretrain_and_finetune(
    store: Path, tmp_path: Path, pretext: str, cfg: Cfg
) -> None:
    pre = run(cfg(store, tmp_path / "pre", pretext=pretext, steps=3), progress=False)
    rec = load_checkpoint(pre.last)["config"]
    assert rec["train"]["pretext"] == pretext and pre.final_loss is not None
    assert np.isfinite(pre.final_loss) and pre.final_loss > 0
    ft = run(cfg(store, tmp_path / "ft", stage="finetune", init=pre.last, pretext=pretext,
                   base_width=None, depth=None, labeled=8, steps=2), progress=False)  # fmt: skip
    assert load_checkpoint(ft.last)["config"]["init"]["stage"] == "pretrain"
    again = run(cfg(store, tmp_path / "pre2", pretext=pretext, steps=3), progress=False)
    a, _ = load_model(pre.last)
    b, _ = load_model(again.last)  # the corruption is seeded: the same run twice is the same
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k


def test_segmentation_only_baseline_records_recon_weight_0(
    store: Path, tmp_path: Path, cfg: Cfg
) -> None:
    res = run(cfg(store, tmp_path / "b", stage="finetune", from_scratch=True, recon_weight=0.0,
                    labeled=8, steps=2), progress=False)  # fmt: skip
    ck = load_checkpoint(res.last)
    assert ck["config"]["train"]["recon_weight"] == 0.0
    recs = [json.loads(x) for x in (tmp_path / "b/metrics.jsonl").read_text().splitlines()]
    r = next(r for r in recs if r["kind"] == "train")
    assert r["loss"] == pytest.approx(r["bce"] + r["dice"], rel=1e-5)


def _tissue(n: int, rng: np.random.Generator, key: int, size: int = 64) -> np.ndarray:
    """H&E-like patches: fractal-noise pink/purple stroma with dark round nuclei."""
    from lymph.data.synth.texture import fractal_noise

    yy, xx = np.mgrid[:size, :size].astype(float)
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        ox, oy = rng.uniform(0, 5000, 2)
        f = fractal_noise(xx + ox, yy + oy, scale=12.0, key=key + i, octaves=3)
        g = fractal_noise(xx + ox, yy + oy, scale=5.0, key=key + 999 + i, octaves=2)
        img = np.stack([230 - 40 * f, 150 - 60 * f, 200 - 30 * g], -1)
        for _ in range(rng.integers(6, 16)):
            cy, cx = rng.uniform(0, size, 2)
            r = rng.uniform(1.5, 3.5)
            img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = (80 + 20 * rng.random(), 40, 130)
        out[i] = np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)
    return out


@pytest.mark.slow
def test_pretrained_reconstruction_beats_a_4px_blur(tmp_path: Path) -> None:
    """Issue 10: the old UNet's held-out reconstruction MSE equalled a 4 px Gaussian blur's.
    Width 16, 150 steps, 1 thread (25 s idle, 75 s on a busy 2-core machine): measured MSE
    0.0024 (BatchNorm, the default; GroupNorm 0.0021) vs the blur's 0.0044 (the
    transposed-conv, zero-padded UNet: 0.0044)."""
    from scipy import ndimage

    from lymph.model.infer import reconstruct

    rng = np.random.default_rng(0)
    path = tmp_path / "tissue.zarr"
    create_store(path, {"patch_size": 64, "level": 0, "seed": 0})
    for j, sid in enumerate(["a", "b", "c"]):
        write_slide(path, sid, attrs={"status": "unlabeled"}, images=_tissue(64, rng, 1000 * j),
                    coords=np.zeros((64, 2), np.int64))  # fmt: skip
    held = _tissue(16, np.random.default_rng(9), 77777)  # never in the store
    c = TrainConfig(store=path, out=tmp_path / "pre", steps=150, batch_size=8, crop=64,
                    base_width=16, depth=3, workers=0, device="cpu", val_slides=0,
                    eval_every=1000, checkpoint_every=1000, lr=3e-3, threads=1)  # fmt: skip
    model, _ = load_model(run(c, progress=False).last)
    x = held.astype(np.float64) / 255
    rec = reconstruct(model, held, device="cpu", batch_size=16).astype(np.float64) / 255
    blur = np.stack([ndimage.gaussian_filter(h, sigma=(4, 4, 0)) for h in x])
    mse, blur_mse = float(np.mean((rec - x) ** 2)), float(np.mean((blur - x) ** 2))
    print(f"held-out reconstruction MSE {mse:.5f}, 4 px Gaussian blur {blur_mse:.5f}")
    assert mse < 0.8 * blur_mse
