from __future__ import annotations

import numpy as np
import pytest
import torch

from lymph.data.errors import ConfigError
from lymph.model.augment import dihedral
from lymph.model.infer import pad_to_multiple, predict_probs, reconstruct, resolve_device
from lymph.model.unet import UNet, UNetConfig


def _model() -> UNet:
    torch.manual_seed(0)
    return UNet(UNetConfig(base_width=4, depth=3))


def _images(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("h,w", [(300, 300), (13, 29), (3, 5), (8, 8)])
def test_any_size_pads_and_crops_back(h: int, w: int) -> None:
    imgs = _images(3, h, w)
    probs = predict_probs(_model(), imgs, batch_size=2)
    assert probs.shape == (3, h, w) and probs.dtype == np.float32
    assert ((probs >= 0) & (probs <= 1)).all()
    rec = reconstruct(_model(), imgs, batch_size=2)
    assert rec.shape == (3, h, w, 3) and rec.dtype == np.uint8


def test_batching_and_padding_do_not_change_the_result() -> None:
    model = _model()
    imgs = _images(5, 24, 16)  # already a multiple of 8
    a = predict_probs(model, imgs, batch_size=1)
    b = predict_probs(model, imgs, batch_size=5)
    np.testing.assert_allclose(a, b, atol=1e-5)
    # the padded result's crop equals the model on the explicitly reflect-padded input
    odd = _images(2, 21, 19)
    padded, h, w = pad_to_multiple(odd, 8)
    assert padded.shape[1:3] == (24, 24) and (h, w) == (21, 19)
    np.testing.assert_array_equal(padded[:, :21, :19], odd)
    direct = predict_probs(model, padded)[:, :21, :19]
    np.testing.assert_allclose(predict_probs(model, odd), direct, atol=1e-6)


def test_tta_is_the_mean_over_dihedral_transforms() -> None:
    model = _model()
    imgs = _images(2, 16, 16)
    want = np.mean(
        [
            dihedral(
                predict_probs(model, np.ascontiguousarray(dihedral(imgs, k, axes=(1, 2)))),
                (4 - k % 4) % 4 if k < 4 else k,
                axes=(1, 2),
            )
            for k in range(8)
        ],
        axis=0,
    )
    got = predict_probs(model, imgs, tta=True)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert not np.allclose(got, predict_probs(model, imgs), atol=1e-4)


def test_mode_restored_and_empty_batch() -> None:
    model = _model()
    model.train()
    out = predict_probs(model, np.zeros((0, 20, 20, 3), np.uint8))
    assert out.shape == (0, 20, 20) and model.training


@pytest.mark.parametrize(
    "imgs,match",
    [
        (np.zeros((2, 16, 16, 3), np.float32), "uint8"),
        (np.zeros((16, 16, 3), np.uint8), r"\(N,H,W,3\)"),
        (np.zeros((1, 16, 16, 4), np.uint8), r"\(N,H,W,3\)"),
    ],
)
def test_bad_images_refused(imgs: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        predict_probs(_model(), imgs)


def test_bad_batch_size() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        predict_probs(_model(), _images(1, 8, 8), batch_size=0)


def test_resolve_device() -> None:
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in {"cpu", "cuda", "mps"}
    with pytest.raises(ConfigError, match="not one of"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")
