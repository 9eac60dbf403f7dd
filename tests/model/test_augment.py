from __future__ import annotations

import numpy as np
import pytest
import torch

from lymph.data.errors import ConfigError
from lymph.model.augment import (
    AugmentConfig,
    bezier_intensity,
    color_jitter,
    corrupt,
    dihedral,
    dihedral_inverse,
    local_pixel_shuffle,
    paint,
)
from lymph.model.stream import random_crops


def _imgs(n: int = 6, size: int = 12, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_eight_distinct_dihedral_transforms_and_inverses() -> None:
    img = _imgs(1)[0]
    outs = [dihedral(img, k, axes=(0, 1)) for k in range(8)]
    assert len({o.tobytes() for o in outs}) == 8
    for k in range(8):
        np.testing.assert_array_equal(dihedral_inverse(outs[k], k, axes=(0, 1)), img)
        t = torch.from_numpy(img.copy())
        np.testing.assert_array_equal(dihedral(t, k, axes=(0, 1)).numpy(), outs[k])
        assert torch.equal(dihedral_inverse(dihedral(t, k, axes=(0, 1)), k, axes=(0, 1)), t)
    with pytest.raises(ValueError, match="0..7"):
        dihedral(img, 8, axes=(0, 1))


def test_random_crops_move_mask_with_image() -> None:
    imgs = _imgs(32)
    masks = (imgs[..., 0] > 127).astype(np.uint8)
    out, out_m = random_crops(imgs, masks, crop=12, rng=np.random.default_rng(1),
                              dihedral_transforms=True)  # fmt: skip
    assert out_m is not None
    np.testing.assert_array_equal(out_m, (out[..., 0] > 127).astype(np.uint8))
    assert not np.array_equal(out, imgs)  # 32 patches: some were transformed


def test_jitter_off_is_identity() -> None:
    imgs = _imgs()
    cfg = AugmentConfig(dihedral=False)
    assert not AugmentConfig.none().jitter and cfg.jitter
    out = color_jitter(imgs, config=cfg, rng=np.random.default_rng(0))
    assert out.dtype == np.uint8 and not np.array_equal(out, imgs)
    zero = AugmentConfig(dihedral=False, brightness=0, contrast=0, saturation=0, hue=0)
    np.testing.assert_array_equal(color_jitter(imgs, config=zero, rng=np.random.default_rng(0)),
                                  imgs)  # fmt: skip


def test_brightness_scales_and_grey_stays_grey() -> None:
    grey = np.full((4, 8, 8, 3), 100, np.uint8)
    cfg = AugmentConfig(dihedral=False, brightness=0.5, contrast=0, saturation=0.5, hue=0.5)
    out = color_jitter(grey, config=cfg, rng=np.random.default_rng(3))
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    levels = out[:, 0, 0, 0].astype(int)
    assert ((levels >= 49) & (levels <= 151)).all() and len(set(levels.tolist())) > 1


def test_contrast_keeps_mean_grey() -> None:
    rng = np.random.default_rng(0)
    imgs = rng.integers(90, 170, (8, 64, 64, 3), dtype=np.uint8)  # no clipping at 1.9x
    cfg = AugmentConfig(dihedral=False, brightness=0, contrast=0.9, saturation=0, hue=0)
    out = color_jitter(imgs, config=cfg, rng=np.random.default_rng(0))
    # contrast keeps each image's mean (estimated on a 1/16 subsample); std changes
    np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), imgs.mean(axis=(1, 2, 3)), atol=3)
    assert not np.allclose(out.std(axis=(1, 2, 3)), imgs.std(axis=(1, 2, 3)), atol=1)


def test_hue_shift_changes_colour_not_luma() -> None:
    red = np.zeros((3, 4, 4, 3), np.uint8)
    red[..., 0] = 200
    red[..., 1] = 60
    cfg = AugmentConfig(dihedral=False, brightness=0, contrast=0, saturation=0, hue=0.3)
    out = color_jitter(red, config=cfg, rng=np.random.default_rng(0))
    luma = np.array([0.299, 0.587, 0.114])
    assert not np.array_equal(out, red)
    np.testing.assert_allclose(out.astype(float) @ luma, red.astype(float) @ luma, atol=40)


def test_seeded_and_reproducible() -> None:
    imgs = _imgs()
    a = color_jitter(imgs, config=AugmentConfig(), rng=np.random.default_rng(5))
    b = color_jitter(imgs, config=AugmentConfig(), rng=np.random.default_rng(5))
    c = color_jitter(imgs, config=AugmentConfig(), rng=np.random.default_rng(6))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"brightness": 1.0}, "brightness"),
        ({"contrast": -0.1}, "contrast"),
        ({"saturation": 2}, "saturation"),
        ({"hue": 0.6}, "hue"),
        ({"dihedral": 1}, "dihedral"),
    ],
)
def test_bad_settings(kw: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        AugmentConfig(**kw)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match=r"\(B,H,W,3\)"):
        color_jitter(
            np.zeros((1, 4, 4), np.uint8), config=AugmentConfig(), rng=np.random.default_rng(0)
        )


def _batch(seed: int = 0, n: int = 4, size: int = 32) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("pretext", ["genesis", "inpaint"])
def test_corruptions_are_seeded_pure_and_in_range(pretext: str) -> None:
    x = _batch()
    keep = x.clone()
    a, ma = corrupt(pretext, x, gen=_gen(1))
    b, mb = corrupt(pretext, x, gen=_gen(1))
    c, _ = corrupt(pretext, x, gen=_gen(2))
    assert torch.equal(x, keep)  # the input is not modified
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and 0 <= float(a.min()) and float(a.max()) <= 1
    assert (ma is None) == (pretext == "genesis")
    if ma is not None and mb is not None:
        assert torch.equal(ma, mb) and 0.03 < float(ma.mean()) < 0.5
        assert torch.equal(a[ma.expand_as(a) == 0], x[ma.expand_as(x) == 0])  # only boxes hidden
        assert torch.all(a[ma.expand_as(a) == 1] == 0.5)
    assert corrupt("identity", x, gen=_gen(1)) == (x, None)
    with pytest.raises(ConfigError, match="pretext must be one of"):
        corrupt("jigsaw", x, gen=_gen(1))


def test_local_pixel_shuffle_only_permutes_pixels() -> None:
    x = _batch(3)
    y = local_pixel_shuffle(x, gen=_gen(0), blocks=50)
    assert not torch.equal(x, y)
    for i in range(len(x)):  # the same pixels (RGB triples) in another arrangement
        a = x[i].reshape(3, -1).T.tolist()
        b = y[i].reshape(3, -1).T.tolist()
        assert sorted(map(tuple, a)) == sorted(map(tuple, b))
    moved = (x != y).any(dim=1).float().mean()
    assert 0 < float(moved) < 0.8  # local: most pixels stay


def test_bezier_intensity_is_a_monotonic_map_per_image() -> None:
    x = torch.linspace(0, 1, 64).repeat(4, 3, 64, 1)  # (4, 3, 64, 64), a ramp in every image
    y = bezier_intensity(x, gen=_gen(7))
    assert 0 <= float(y.min()) and float(y.max()) <= 1
    for i in range(4):
        row = y[i, 0, 0]
        d = row[1:] - row[:-1]
        assert bool((d >= -1e-5).all()) or bool((d <= 1e-5).all())  # monotonic (or reversed)
    assert not torch.allclose(y, x, atol=0.02)


def test_genesis_painting_hides_with_noise() -> None:
    x = torch.full((8, 3, 32, 32), 0.5)
    y = paint(x, gen=_gen(4))
    changed = (y != x).any(dim=1).float().mean(dim=(1, 2))
    assert bool((changed > 0.05).all())  # every image painted somewhere
