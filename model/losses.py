"""Training losses.

Reconstruction: mean squared error between the reconstruction head (a sigmoid, so in [0, 1]) and
the augmented input. MSE rather than L1 because its gradient shrinks with the error: during
fine-tuning, where reconstruction is only an auxiliary term kept so the pretrained features are
not destroyed (seed paper, Wiehman et al. 2016), a well-reconstructed image contributes almost
no gradient and the segmentation loss leads; L1's constant-magnitude gradient would keep pulling
at the shared weights. It is also what Wiehman et al.'s pretraining used.

Pretexts (``lymph.model.augment.corrupt``): ``identity`` reconstructs the input (the paper);
``genesis`` restores the original from a Models Genesis corruption (MSE over every pixel);
``inpaint`` restores hidden boxes, the MSE taken on the hidden pixels only (``masked_mse``), so
copying the visible pixels through the remaining skips earns nothing.

Segmentation: binary cross-entropy on the logits plus the soft Dice loss of the probabilities,
pooled over the whole batch (a batch of only normal patches still has a defined Dice), so BCE
gives well-calibrated per-pixel gradients and Dice counters the tumor/non-tumor pixel imbalance.
Mask pixels holding IGNORE (255: outside every reviewed region of a partially annotated slide,
``lymph.data.partial``) count in neither term; a batch without them is computed exactly as before.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lymph.data.partial import IGNORE
from lymph.model.unet import UNetOutput


def reconstruction_loss(
    reconstruction: Tensor, target: Tensor, mask: Tensor | None = None
) -> Tensor:
    """MSE between the reconstruction and the target image, both in [0, 1]; over the pixels
    where ``mask`` (B, 1, H, W) is 1 when given."""
    if mask is None:
        return F.mse_loss(reconstruction.float(), target.float())
    return masked_mse(reconstruction, target, mask)


def masked_mse(reconstruction: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean squared error over the masked pixels (all channels); 0 for an empty mask."""
    m = mask.float().expand_as(target)
    sq = (reconstruction.float() - target.float()) ** 2 * m
    return sq.sum() / m.sum().clamp_min(1.0)


def soft_dice_loss(logits: Tensor, target: Tensor, *, smooth: float = 1.0) -> Tensor:
    """1 - soft Dice of sigmoid(logits) against 0/1 targets, pooled over the batch.

    ``smooth`` keeps it defined (and 0) for an empty target predicted empty.
    """
    probs = torch.sigmoid(logits.float())
    target = target.float()
    inter = (probs * target).sum()
    return 1 - (2 * inter + smooth) / (probs.sum() + target.sum() + smooth)


def segmentation_loss(logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """(BCE, soft Dice) of mask logits (N,1,H,W) against 0/1 masks (N,1,H,W); pixels holding
    IGNORE are skipped by both (``masked_segmentation_loss``)."""
    if logits.shape != target.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and masks {tuple(target.shape)} differ")
    ignore = target == IGNORE
    if bool(ignore.any()):
        return masked_segmentation_loss(logits, target, ~ignore)
    bce = F.binary_cross_entropy_with_logits(logits.float(), target.float())
    return bce, soft_dice_loss(logits, target)


def masked_segmentation_loss(logits: Tensor, target: Tensor, valid: Tensor
                             ) -> tuple[Tensor, Tensor]:
    """(BCE, soft Dice) over the ``valid`` pixels only: BCE is their mean (0 when none is
    valid, so a batch of unreviewed pixels adds no gradient), Dice pools their probabilities and
    targets over the batch."""
    v = valid.float()
    t = target.float() * v
    bce = F.binary_cross_entropy_with_logits(logits.float(), t, reduction="none")
    bce = (bce * v).sum() / v.sum().clamp_min(1.0)
    probs = torch.sigmoid(logits.float()) * v
    dice = 1 - (2 * (probs * t).sum() + 1.0) / (probs.sum() + t.sum() + 1.0)
    return bce, dice


def stage_loss(
    stage: str,
    out: UNetOutput,
    images: Tensor,
    masks: Tensor | None,
    *,
    recon_weight: float,
    recon: Tensor | None = None,
) -> dict[str, Tensor]:
    """The loss of one batch and its parts: pretrain = reconstruction; finetune = BCE + Dice +
    recon_weight x reconstruction. ``recon``: the reconstruction term when the caller computed
    it (a restoration pretext's, on a corrupted input); else the MSE of ``out`` to ``images``."""
    if recon is None:
        recon = reconstruction_loss(out.reconstruction, images)
    if stage == "pretrain":
        return {"loss": recon, "recon": recon}
    if masks is None:
        raise ValueError("finetune needs masks in the batch")
    bce, dice = segmentation_loss(out.mask_logits, masks)
    loss = bce + dice + recon_weight * recon if recon_weight else bce + dice
    return {"loss": loss, "bce": bce, "dice": dice, "recon": recon}
