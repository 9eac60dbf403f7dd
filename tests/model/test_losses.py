from __future__ import annotations

import pytest
import torch

from lymph.model.losses import (
    masked_mse,
    reconstruction_loss,
    segmentation_loss,
    soft_dice_loss,
    stage_loss,
)
from lymph.model.unet import UNetOutput


def test_reconstruction_is_mse() -> None:
    a, b = torch.zeros(1, 3, 2, 2), torch.full((1, 3, 2, 2), 0.5)
    assert float(reconstruction_loss(a, b)) == pytest.approx(0.25)
    assert float(reconstruction_loss(b, b)) == 0.0


def test_dice_perfect_empty_and_wrong() -> None:
    target = torch.zeros(2, 1, 4, 4)
    target[0, 0, :2] = 1
    perfect = torch.where(target > 0, 50.0, -50.0)
    assert float(soft_dice_loss(perfect, target)) == pytest.approx(0.0, abs=1e-6)
    empty = torch.zeros(1, 1, 4, 4)
    assert float(soft_dice_loss(torch.full_like(empty, -50.0), empty)) == pytest.approx(0, abs=1e-6)
    assert float(soft_dice_loss(-perfect, target)) > 0.9


def test_segmentation_loss_parts_and_gradient() -> None:
    logits = torch.zeros(2, 1, 4, 4, requires_grad=True)
    target = torch.ones(2, 1, 4, 4)
    bce, dice = segmentation_loss(logits, target)
    assert float(bce.detach()) == pytest.approx(0.6931, abs=1e-3)  # log 2 at p = 0.5
    (bce + dice).backward()
    assert logits.grad is not None and (logits.grad < 0).all()  # pushes towards tumor
    with pytest.raises(ValueError, match="differ"):
        segmentation_loss(logits, torch.ones(2, 1, 4, 5))


def test_stage_loss() -> None:
    out = UNetOutput(torch.zeros(1, 1, 4, 4), torch.full((1, 3, 4, 4), 0.5))
    img = torch.zeros(1, 3, 4, 4)
    pre = stage_loss("pretrain", out, img, None, recon_weight=1.0)
    assert set(pre) == {"loss", "recon"} and float(pre["loss"]) == pytest.approx(0.25)
    masks = torch.zeros(1, 1, 4, 4)
    ft = stage_loss("finetune", out, img, masks, recon_weight=2.0)
    want = ft["bce"] + ft["dice"] + 2.0 * ft["recon"]
    assert float(ft["loss"]) == pytest.approx(float(want))
    ft0 = stage_loss("finetune", out, img, masks, recon_weight=0.0)
    assert float(ft0["loss"]) == pytest.approx(float(ft0["bce"] + ft0["dice"]))
    with pytest.raises(ValueError, match="needs masks"):
        stage_loss("finetune", out, img, None, recon_weight=1.0)


def test_masked_mse_counts_only_the_hidden_pixels() -> None:
    target = torch.zeros(2, 3, 4, 4)
    rec = torch.zeros(2, 3, 4, 4)
    rec[:, :, :2] = 1.0  # wrong in the top half only
    mask = torch.zeros(2, 1, 4, 4)
    mask[:, :, 2:] = 1  # the loss looks at the bottom half
    assert float(masked_mse(rec, target, mask)) == 0.0
    mask[:, :, 1:] = 1  # one wrong row of the three hidden ones
    assert float(reconstruction_loss(rec, target, mask)) == pytest.approx(1 / 3)
    assert float(masked_mse(rec, target, torch.zeros(2, 1, 4, 4))) == 0.0  # empty: defined


def test_stage_loss_takes_a_given_reconstruction_term() -> None:
    out = UNetOutput(torch.zeros(1, 1, 4, 4), torch.zeros(1, 3, 4, 4))
    images, masks = torch.ones(1, 3, 4, 4), torch.zeros(1, 1, 4, 4)
    given = torch.tensor(0.125)
    pre = stage_loss("pretrain", out, images, None, recon_weight=1.0, recon=given)
    assert float(pre["loss"]) == 0.125
    ft = stage_loss("finetune", out, images, masks, recon_weight=2.0, recon=given)
    assert float(ft["loss"]) == pytest.approx(float(ft["bce"] + ft["dice"]) + 0.25)
    base = stage_loss("finetune", out, images, masks, recon_weight=0.0)
    assert float(base["loss"]) == pytest.approx(float(base["bce"] + base["dice"]))
