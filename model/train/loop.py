"""The training loop: one optimizer step per batch; log, validate and checkpoint on schedule."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from lymph.model.augment import corrupt
from lymph.model.layout import broadcast_flag
from lymph.model.losses import reconstruction_loss, stage_loss
from lymph.model.precision import run_in
from lymph.model.stream import Batch, to_tensors
from lymph.model.train.data import next_batch
from lymph.model.train.evaluation import evaluate_now
from lymph.model.train.session import Session


@dataclass
class LoopStats:
    seconds: float = 0.0
    wait: float = 0.0
    final_loss: float | None = None


def pretext_generator(s: Session) -> torch.Generator:
    """The generator of this step's pretext corruption: a function of (seed, rank, step)."""
    key = np.random.SeedSequence([s.config.seed, 0x9E7E, s.layout.rank, s.step]).generate_state(2)
    gen = torch.Generator(device=s.device)
    gen.manual_seed(int(key[0]) << 32 | int(key[1]))
    return gen


def forward_losses(
    s: Session, images: torch.Tensor, masks: torch.Tensor | None
) -> dict[str, torch.Tensor]:
    """The model on the batch (and, for a restoration pretext, on its corruption) and the
    stage's loss."""
    c = s.config
    if c.pretext == "identity" or (c.stage == "finetune" and c.recon_weight <= 0):
        with run_in(s.device, c.precision):
            out = s.ddp_model(images)
        return stage_loss(c.stage, out, images, masks, recon_weight=c.recon_weight)
    corrupted, loss_mask = corrupt(c.pretext, images, gen=pretext_generator(s))
    with run_in(s.device, c.precision):
        if c.stage == "pretrain":
            out = s.ddp_model(corrupted)
            restored = out.reconstruction
        else:  # one forward: the clean batch for segmentation, the corrupted for the pretext
            both = s.ddp_model(torch.cat([images, corrupted]))
            n = len(images)
            out = type(both)(both.mask_logits[:n], both.reconstruction[:n])
            restored = both.reconstruction[n:]
    recon = reconstruction_loss(restored, images, loss_mask)
    return stage_loss(c.stage, out, images, masks, recon_weight=c.recon_weight, recon=recon)


def train_step(s: Session, batch: Batch) -> dict[str, torch.Tensor]:
    """One optimizer step on one batch; returns the loss and its parts."""
    images, masks = to_tensors(batch, s.device, channels_last=s.device.type == "cuda")
    losses = forward_losses(s, images, masks)
    s.opt.zero_grad(set_to_none=True)
    losses["loss"].backward()
    if s.config.grad_clip:
        torch.nn.utils.clip_grad_norm_(s.model.parameters(), s.config.grad_clip)
    s.opt.step()
    s.sched.step()
    s.step += 1
    return losses


def train_loop(s: Session, *, progress: bool) -> LoopStats:
    """The loop: step, log every ``log_every``, validate every ``eval_every`` (and at the last
    step), rewrite last.pt every ``checkpoint_every`` (and at the end)."""
    from lymph.data.progress import progress_bar

    c, main = s.config, s.layout.main
    end = min(c.steps, c.stop_at) if c.stop_at else c.steps
    bar = progress_bar(total=c.steps, initial=s.step, desc=c.stage, unit="step",
                       enabled=progress and main, dynamic_ncols=True)  # fmt: skip
    s.model.train()
    it = iter(s.loader)
    stats = LoopStats()
    t_loop = t_log = time.perf_counter()
    n_log, sums = 0, dict[str, torch.Tensor]()
    while s.step < end:
        t0 = time.perf_counter()
        batch = next_batch(it)
        stats.wait += time.perf_counter() - t0
        losses = train_step(s, batch)
        n_log += 1
        for k, v in losses.items():
            sums[k] = sums.get(k, 0) + v.detach()
        if s.step % c.log_every == 0 or s.step == end:
            now = time.perf_counter()
            rec = {k: float(v) / n_log for k, v in sums.items()}
            stats.final_loss = rec["loss"]
            rate = n_log * c.batch_size * s.layout.world_size / max(now - t_log, 1e-9)
            lr = s.sched.get_last_lr()[0]
            s.log({"kind": "train", "step": s.step, **rec, "lr": lr, "patches_per_s": rate})
            bar.set_postfix(loss=f"{rec['loss']:.4f}", patches_s=f"{rate:.1f}")
            sums, n_log, t_log = {}, 0, now
        # not at stop_at: a stopped-and-resumed run then validates exactly like an unbroken one
        due = s.step % c.eval_every == 0 or s.step == c.steps
        if main and s.val_images is not None and due:
            evaluate_now(s)
        if s.layout.world_size > 1 and c.patience is not None and due:
            s.early_stopped = broadcast_flag(s.early_stopped, s.device)
        if main and (s.step % c.checkpoint_every == 0 or s.step == end or s.early_stopped):
            s.checkpoint(s.run / "last.pt", s.last_val)
        bar.update(1)
        if s.early_stopped:
            s.log({"kind": "early_stop", "step": s.step, "best_step": s.best_step,
                   "best_f1": s.best_f1})  # fmt: skip
            break
    bar.close()
    stats.seconds = time.perf_counter() - t_loop
    del it
    return stats
