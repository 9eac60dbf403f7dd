"""`lymph train`: one training loop for both stages.

- ``pretrain``: the UNet learns to reconstruct every patch of the store (MSE, see
  ``lymph.model.losses``), streamed chunk by chunk (``lymph.model.stream.StoreStream``).
- ``finetune``: from a pretrain checkpoint (``init``) or from scratch, on a few labeled patches
  (N, or P% of the training slides' labeled patches, class-balanced and seeded; or an explicit
  list) cached in memory; loss = BCE + soft Dice + ``recon_weight`` x reconstruction
  (``recon_weight=0``: the paper's segmentation-only baseline). Validation precision / recall /
  F1 on whole patches of held-out slides every ``eval_every`` steps; the best checkpoint by F1 is
  kept as best.pt; ``patience=K`` stops after K validations without a better F1 (``steps`` is
  the cap).
- ``pretext`` (``lymph.model.augment.corrupt``): ``identity`` reconstructs the input (the paper);
  ``genesis`` restores it from a Models Genesis corruption; ``inpaint`` restores hidden boxes
  (loss on them only). In fine-tuning the reconstruction term is the same pretext (the clean and
  the corrupted batch go through the model as one batch); segmentation always sees the clean one.

``run(TrainConfig) -> TrainResult`` is the one entry. The package, by job:

- ``config``: ``TrainConfig``, every setting, validated; ``from_dict`` reads back ``to_dict``.
- ``splits``: slide roles and labeled sets (``pick_val_slides``, lymph's validation-slide
  rule, and ``choose_val_slides``, the trainer's use of it; ``balanced_subset``, its
  class-balanced draw).
- ``resume``: reading last.pt, refusing a resume that changes what the run computes, ``Start``.
- ``plan``: ``plan_run`` decides everything before the first step as a ``Plan``; the schedule.
- ``data``: the training batches (DataLoader) and the validation patches.
- ``session``: the live model, optimizer and loader (``build``) and the run folder's files.
- ``evaluation``: validation during training and best.pt.
- ``loop``: ``train_loop``, the short loop.
- ``runner``: ``run``.

The run folder holds last.pt (and best.pt), metrics.jsonl, config.json, labeled.json (finetune)
and loss.png. last.pt is rewritten atomically every ``checkpoint_every`` steps with the model,
optimizer, scheduler, step and data position; ``resume=True`` continues from it and, with the same
settings and process layout, gives the same weights as an uninterrupted run.

Under ``torchrun`` (WORLD_SIZE > 1) the loop runs DistributedDataParallel (nccl on CUDA, gloo on
CPU; ``lymph.model.layout``); ranks read disjoint chunks; only rank 0 validates and writes.
"""

from lymph.model.train.config import TrainConfig, parse_labeled
from lymph.model.train.runner import TrainResult, run
from lymph.model.train.splits import (
    balanced_subset,
    choose_val_slides,
    pick_val_slides,
    select_labeled,
)

__all__ = [
    "TrainConfig",
    "TrainResult",
    "balanced_subset",
    "choose_val_slides",
    "pick_val_slides",
    "parse_labeled",
    "run",
    "select_labeled",
]
