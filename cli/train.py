"""`lymph train`: pretraining on reconstruction, or fine-tuning on a few labeled patches
(lymph.model.train)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from lymph.cli.common import device_option, precision_option

if TYPE_CHECKING:
    from lymph.model.train import TrainConfig, TrainResult


def _labeled_option(
    _ctx: click.Context, _param: click.Parameter, value: str | None
) -> int | str | None:
    if value is None:
        return None
    from lymph.data.errors import ConfigError
    from lymph.model.train import parse_labeled

    try:
        return parse_labeled(value)
    except ConfigError as exc:
        raise click.BadParameter(f"{exc} (e.g. --labeled 200 or --labeled 3%)") from None


def _print_result(result: TrainResult, config: TrainConfig) -> None:
    stage = config.stage
    done = result.steps - result.start_step
    if result.start_step and not done:  # a --resume of a finished run: say so, no fake rate
        headline = (f"{stage}: nothing to train: {result.last} is already at step "
                    f"{result.steps} (--steps {config.steps})")
    else:
        resumed = f", resumed at step {result.start_step}" if result.start_step else ""
        headline = (
            f"{stage}: {done} steps in {result.seconds:.1f} s{resumed} "
            f"({result.patches_per_s:.1f} patches/s, {100 * result.data_wait:.1f}% waiting "
            "for data)"
        )
    click.echo(
        headline
        + (" [stopped before --steps]" if result.stopped else "")
        + (f" [early stop: no better F1 for {config.patience} validations]"
           if result.early_stopped else "")
    )
    click.echo(f"  training slides: {', '.join(result.train_slides)} "
               f"({result.train_patches} {'labeled ' if stage == 'finetune' else ''}patches)")
    click.echo(f"  validation slides: {', '.join(result.val_slides) or 'none'}")
    if result.final_loss is not None:
        click.echo(f"  final training loss: {result.final_loss:.4f}")
    if result.val:
        shown = {k: result.val[k] for k in ("precision", "recall", "f1", "recon_mse")
                 if k in result.val}
        click.echo("  last validation: " + ", ".join(f"{k} {v:.4f}" for k, v in shown.items()))
    if result.best is not None:
        click.echo(f"  best: {result.best} (F1 {result.best_f1:.4f} at step {result.best_step})")
    click.echo(f"  last: {result.last}")


@click.command("train")
@click.option("--store", required=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The patch store from `lymph extract`.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Run folder: last.pt, best.pt, metrics.jsonl, config.json, loss.png.")
@click.option("--stage", type=click.Choice(["pretrain", "finetune"]), default="pretrain",
              show_default=True, help="pretrain: reconstruction on every patch; finetune: "
              "segmentation + reconstruction on a few labeled patches.")
@click.option("--init", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None,
              help="finetune: start from this pretrain checkpoint (its architecture is kept).")
@click.option("--from-scratch", is_flag=True, help="finetune: random initialisation (baseline).")
@click.option("--labeled", callback=_labeled_option, default="200", show_default=True,
              help="finetune: N labeled patches or P% of them, class-balanced, seeded.")
@click.option("--steps", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Optimizer steps (one batch per process each).")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True,
              help="Patches per step and process.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3,
              show_default=True, help="Peak AdamW learning rate (warmup, then cosine).")
@click.option("--recon-weight", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="finetune: weight W of the reconstruction loss (0: segmentation only, the "
              "paper's baseline).")
@click.option("--pretext", type=click.Choice(["identity", "genesis", "inpaint"]),
              default="identity", show_default=True,
              help="Reconstruction task: identity (the paper: reconstruct the input), genesis "
              "(restore a Models Genesis corruption), inpaint (restore hidden boxes).")
@click.option("--patience", type=click.IntRange(min=1), default=None,
              help="finetune: stop after K validations without a better F1 (--steps is the "
              "cap; best.pt keeps the best).")
@click.option("--min-steps", type=click.IntRange(min=0), default=0, show_default=True,
              help="finetune: --patience never stops the run before this step (early "
              "validations are noisy).")
@click.option("--select", type=click.Choice(["f1", "best_f1"]), default="f1", show_default=True,
              help="finetune: what best.pt and --patience follow: f1 at probability 0.5, or "
              "best_f1, the F1 at the validation's F1-best threshold (calibration-free).")
@click.option("--base-width", type=click.IntRange(min=1), default=None,
              help="UNet width of the first level [default: 32, or the --init checkpoint's].")
@click.option("--depth", type=click.IntRange(1, 7), default=None,
              help="UNet levels [default: 4, or the --init checkpoint's].")
@click.option("--last-skip/--no-last-skip", default=None,
              help="Keep the highest-resolution skip connection [default: removed, as in the "
              "paper, or the --init checkpoint's].")
@click.option("--norm", type=click.Choice(["group", "batch", "none"]), default=None,
              help="UNet normalisation [default: batch (window-independent: fast whole-slide "
              "prediction), or the --init checkpoint's].")
@click.option("--channels-per-group", type=click.IntRange(min=4), default=None,
              help="GroupNorm channels per group [default: 8, or the --init checkpoint's].")
@click.option("--upsample", type=click.Choice(["bilinear", "transpose"]), default=None,
              help="Decoder upsampling [default: bilinear (no checkerboard), or the --init "
              "checkpoint's].")
@click.option("--padding-mode", type=click.Choice(["reflect", "zeros"]), default=None,
              help="3x3 conv padding [default: reflect (no fixed-position artefacts), or the "
              "--init checkpoint's].")
@click.option("--crop", type=click.IntRange(min=1), default=256, show_default=True,
              help="Random training crop in px; a multiple of 2**depth, at most the patch size.")
@click.option("--val-slides", type=click.IntRange(min=0), default=1, show_default=True,
              help="Labeled slides held out for validation (never trained on); 0: none.")
@click.option("--val-patches", type=click.IntRange(min=1), default=64, show_default=True,
              help="Validation patches drawn from the validation slides.")
@click.option("--eval-every", type=click.IntRange(min=1), default=200, show_default=True,
              help="Validate every N steps (finetune: best.pt keeps the best F1).")
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=200, show_default=True,
              help="Rewrite last.pt (atomically) every N steps.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seeds weights, slide split, labeled subset, data order and augmentation.")
@device_option
@precision_option
@click.option("--workers", type=click.IntRange(min=0), default=2, show_default=True,
              help="Data loader processes per training process (0: load in the main process).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch threads for this run [default: torch's]; 1 when running several.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last.pt "
              "(same store and settings; only --device, --precision, --workers, --batch-size, "
              "--threads "
              "and the cadences may change, and the change is recorded).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train_cmd(store: Path, out: Path, stage: str, init: Path | None, from_scratch: bool,
              labeled: int | str | None, steps: int, batch_size: int, lr: float,
              recon_weight: float, pretext: str, patience: int | None, min_steps: int, select: str,
              base_width: int | None, depth: int | None, last_skip: bool | None, norm: str | None,
              channels_per_group: int | None, upsample: str | None, padding_mode: str | None,
              crop: int, val_slides: int, val_patches: int, eval_every: int,
              checkpoint_every: int, seed: int, device: str, precision: str, workers: int,
              threads: int | None, resume: bool, quiet: bool) -> None:
    """Pretrain the UNet on reconstruction, or fine-tune it on a few labeled patches.

    \b
      lymph train --store store.zarr --out runs/pre --stage pretrain --steps 2000
      lymph train --store store.zarr --out runs/ft --stage finetune \\
                  --init runs/pre/last.pt --labeled 200
      lymph train --store store.zarr --out runs/base --stage finetune --from-scratch

    \b
    Several processes or GPUs (DistributedDataParallel; only rank 0 writes):
      torchrun --nproc-per-node 2 -m lymph.cli train --store store.zarr --out runs/pre
    """
    import os

    from lymph.model.train import TrainConfig, run

    config = TrainConfig(
        store=store, out=out, stage=stage, init=init, from_scratch=from_scratch,
        labeled=labeled, steps=steps, batch_size=batch_size, lr=lr, recon_weight=recon_weight,
        base_width=base_width, depth=depth, last_skip=last_skip, crop=crop,
        val_slides=val_slides, val_patches=val_patches, eval_every=eval_every,
        checkpoint_every=checkpoint_every, seed=seed, device=device, workers=workers,
        resume=resume, pretext=pretext, patience=patience, min_steps=min_steps, norm=norm,
        channels_per_group=channels_per_group, upsample=upsample, padding_mode=padding_mode,
        threads=threads, select=select, precision=precision,
    )
    result = run(config, progress=not quiet)
    if int(os.environ.get("RANK", "0")) == 0:
        _print_result(result, config)
