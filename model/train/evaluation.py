"""Validation during training: pixel precision / recall / F1 on whole validation patches (or
the reconstruction error when they have no masks), and keeping best.pt when it improved."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from lymph.model.infer import predict_probs, reconstruct
from lymph.model.unet import UNet

if TYPE_CHECKING:
    from lymph.model.train.session import Session

VAL_BINS = 101  # the threshold grid of "best_f1" (see lymph.model.train.config.SELECT)


def validate(
    model: UNet,
    images: np.ndarray,
    masks: np.ndarray | None,
    *,
    device: torch.device,
    threshold: float,
    batch_size: int,
    precision: str = "auto",
) -> dict[str, float]:
    """Pixel precision / recall / F1 of the plain ``model`` (not its DDP wrapper) pooled over
    whole validation patches (padded to the model's multiple, never resized); reconstruction
    MSE when there are no masks."""
    if masks is None:
        rec = reconstruct(model, images, device=device, batch_size=batch_size, precision=precision)
        diff = rec.astype(np.float32) / 255 - images.astype(np.float32) / 255
        return {"recon_mse": float(np.mean(diff**2)), "n": len(images)}
    from lymph.model.metrics import PRAccumulator, pixel_counts

    probs = predict_probs(model, images, device=device, batch_size=batch_size, precision=precision)
    counts = pixel_counts(probs >= threshold, masks)  # 0/1, IGNORE (255) skipped
    acc = PRAccumulator(bins=VAL_BINS)
    acc.update(probs, masks)
    best = acc.best_f1_threshold()  # the rule `--threshold auto` then uses
    return {
        "precision": counts.precision,
        "recall": counts.recall,
        "f1": counts.f1,
        **counts.to_dict(),
        "best_f1": acc.counts_at(best).f1,
        "best_threshold": best,
        "ap": acc.curve().average_precision(),
        "n": len(images),
    }


def evaluate_now(s: Session) -> None:
    """Validate, log, and keep best.pt when the F1 improved (rank 0)."""
    c = s.config
    assert s.val_images is not None
    s.last_val = validate(s.model, s.val_images, s.val_masks, device=s.device,
                          threshold=c.threshold, batch_size=c.batch_size,
                          precision=c.precision)  # fmt: skip
    s.log({"kind": "val", "step": s.step, **s.last_val})
    if c.select not in s.last_val:
        return
    if s.best_f1 is None or s.last_val[c.select] > s.best_f1:
        s.best_f1, s.best_step, s.evals_since_best = float(s.last_val[c.select]), s.step, 0
        s.checkpoint(s.run / "best.pt", s.last_val)
    else:
        s.evals_since_best += 1
        s.early_stopped = (c.patience is not None and s.evals_since_best >= c.patience
                           and s.step >= c.min_steps)
