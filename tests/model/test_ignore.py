"""The IGNORE mask value (partial annotations) in the losses and the pixel metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lymph.data.partial import IGNORE
from lymph.model.losses import segmentation_loss
from lymph.model.metrics import PRAccumulator, pixel_counts


def _pair(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 1, 8, 8, generator=g)
    target = (torch.rand(2, 1, 8, 8, generator=g) > 0.5).float()
    return logits, target


def test_loss_without_ignore_is_unchanged():
    logits, target = _pair()
    bce, dice = segmentation_loss(logits, target)
    ref = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    assert torch.equal(bce, ref)
    p = torch.sigmoid(logits)
    assert torch.equal(dice, 1 - (2 * (p * target).sum() + 1) / (p.sum() + target.sum() + 1))


def test_loss_skips_ignored_pixels_exactly():
    logits, target = _pair(1)
    keep = torch.zeros_like(target, dtype=torch.bool)
    keep[:, :, :, :4] = True
    masked = torch.where(keep, target, torch.full_like(target, IGNORE))
    bce, dice = segmentation_loss(logits, masked)
    lk, tk = logits[keep], target[keep]
    assert bce.item() == pytest.approx(
        torch.nn.functional.binary_cross_entropy_with_logits(lk, tk).item(), rel=1e-6)
    pk = torch.sigmoid(lk)
    ref = 1 - (2 * (pk * tk).sum() + 1) / (pk.sum() + tk.sum() + 1)
    assert dice.item() == pytest.approx(ref.item(), rel=1e-6)
    # whatever the logits say on ignored pixels, neither the loss nor its gradient moves
    wild = logits.clone()
    wild[~keep] = 50.0
    wild.requires_grad_(True)
    b2, d2 = segmentation_loss(wild, masked)
    (b2 + d2).backward()
    assert b2.item() == pytest.approx(bce.item(), rel=1e-6)
    assert d2.item() == pytest.approx(dice.item(), rel=1e-6)
    assert (wild.grad[~keep] == 0).all()


def test_loss_all_ignored_is_zero_bce_and_finite():
    logits, _ = _pair(2)
    bce, dice = segmentation_loss(logits, torch.full_like(logits, IGNORE))
    assert bce.item() == 0.0 and torch.isfinite(dice)


def test_pixel_counts_and_pr_skip_ignore():
    target = np.array([[0, 1, IGNORE], [1, IGNORE, 0]], np.uint8)
    pred = np.array([[1, 1, 1], [0, 1, 0]], bool)
    c = pixel_counts(pred, target)
    assert (c.tp, c.fp, c.fn, c.tn) == (1, 1, 1, 1)
    probs = np.array([[0.9, 0.8, 1.0], [0.1, 0.99, 0.2]])
    acc = PRAccumulator(bins=11)
    acc.update(probs, target)
    assert acc.n_pixels == 4
    assert acc.counts_at(0.5) == c
    with pytest.raises(ValueError, match="only 0 and 1"):
        pixel_counts(pred, np.array([[0, 2, 0], [1, 0, 0]], np.uint8))
