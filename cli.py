"""The `lymph` command line. Commands only parse arguments, build a config and call one
library function; all the work lives in `lymph.pipeline`, `lymph.model` and `lymph.data`."""

from __future__ import annotations

from pathlib import Path

import click

from lymph import __version__


class _Group(click.Group):
    """One exit convention for every command, never a traceback for a lymph error (a bug still
    shows one):

    - a bad setting (``ConfigError``, raised by a config's ``__post_init__``) is a usage error:
      ``Error: <message>`` and exit status 2, as click gives for a bad option;
    - every other lymph error (bad slide, store, checkpoint, output) is ``Error: <message>`` and
      exit status 1.
    """

    def invoke(self, ctx: click.Context) -> object:
        from lymph.data.errors import ConfigError, LymphError

        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            raise click.UsageError(str(exc)) from exc
        except LymphError as exc:
            raise click.ClickException(str(exc)) from exc


# The one --device option of train, eval, study and predict.
device_option = click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto",
    show_default=True, help="auto: CUDA, then MPS, then CPU.",
)
# The one --precision option of train, eval patches, study and predict (model/precision.py).
precision_option = click.option(
    "--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto",
    show_default=True, help="auto: bf16 autocast on CUDA and on CPUs with AMX-BF16 (measured "
    "faster there), fp32 elsewhere; the one used is recorded in the outputs.",
)


# auto_envvar_prefix: every option can also come from LYMPH_<COMMAND>_<OPTION> (an option on the
# command line wins), e.g. LYMPH_TRAIN_STEPS=20: the README's toy-size run of its pipeline.
@click.group(cls=_Group,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100,
                               "auto_envvar_prefix": "LYMPH"})
@click.version_option(__version__, prog_name="lymph")
def main() -> None:
    """Find breast-cancer metastases in gigapixel lymph-node slides with very few pixel labels.

    \b
    A typical run:
      lymph synth   --out slides/                 # or bring CAMELYON16
      lymph extract --slides slides/ --out store.zarr
      lymph train   --store store.zarr --out runs/pre --stage pretrain
      lymph train   --store store.zarr --out runs/ft --stage finetune --init runs/pre/last.pt
      lymph eval    --store store.zarr --checkpoint runs/ft/best.pt
      lymph predict --slides slides/ --checkpoint runs/ft/best.pt --out maps/
      lymph view    --slides slides/ --predictions maps/   # look at them in the browser
    """


# --- synth (data/synth.py) ---------------------------------------------------------------------


def _parse_size(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, int]:
    try:
        w_text, h_text = value.lower().split("x")
        w, h = int(w_text), int(h_text)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not WIDTHxHEIGHT; write e.g. --size 20000x15000"
        ) from None
    if w <= 0 or h <= 0:
        raise click.BadParameter(f"{value!r} has a zero or negative side; use e.g. 20000x15000")
    if w < 256 or h < 256:
        raise click.BadParameter(
            f"{value!r} is smaller than one 256 px tile; use at least 256x256 (e.g. 4096x3072)"
        )
    return w, h


@main.command()
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder to write the slides, XML, masks and reference.csv into.",
)
@click.option("--tumor", "n_tumor", default=2, show_default=True, type=click.IntRange(min=0),
              help="Number of tumor slides (tumor_001, ...).")
@click.option("--normal", "n_normal", default=1, show_default=True, type=click.IntRange(min=0),
              help="Number of normal slides (normal_001, ...).")
@click.option("--size", default="20000x15000", show_default=True, callback=_parse_size,
              help="Level-0 size WIDTHxHEIGHT in pixels (CAMELYON16 is ~100000x100000).")
@click.option("--seed", default=0, show_default=True, type=int,
              help="Random seed; the same seed gives the same bytes.")
@click.option("--format", "fmt", default="tiff", show_default=True,
              type=click.Choice(["tiff", "svs"]),
              help="tiff: generic pyramidal TIFF (.tif); svs: Aperio SVS layout (.svs).")
@click.option("--mpp", default=0.243, show_default=True, type=click.FloatRange(min=0.05, max=20),
              help="Microns per level-0 pixel (0.243 = CAMELYON16 at 40x).")
@click.option("--quality", default=85, show_default=True, type=click.IntRange(1, 100),
              help="JPEG quality of the slide tiles.")
@click.option("--threads", "workers", default=1, show_default=True, type=click.IntRange(min=1),
              help="Threads encoding tiles.")
@click.option("--prefix", default="", show_default=True,
              help="Start every slide id with this (e.g. pre_: pre_tumor_001), so that two "
                   "worlds never share an id.")
@click.option("--world", default="default", show_default=True,
              type=click.Choice(["default", "camelyon"]),
              help="camelyon: a harder node (mimics, ITCs, infiltrative and lobular tumor, "
                   "folds, blur, pen, bubbles, a scanning centre); README, lymph synth.")
@click.option("--centre", default="auto", show_default=True,
              type=click.Choice(["auto", "A", "B", "C"]),
              help="camelyon world: the scanning centre (stain, sharpness, JPEG quality, which "
                   "replaces --quality); auto: drawn from the seed.")
def synth(out: Path, n_tumor: int, n_normal: int, size: tuple[int, int], seed: int, fmt: str,
          mpp: float, quality: int, workers: int, prefix: str, world: str, centre: str) -> None:
    """Make a synthetic CAMELYON16-like slide set: pyramidal slides OpenSlide opens, ASAP XML
    and mask TIFFs for tumor slides, and reference.csv.

    \b
    Example:
      lymph synth --out slides/ --tumor 3 --normal 2 --size 12000x9000 --seed 0
    """
    import os

    from lymph.data.synth import synth_slides

    if n_tumor + n_normal == 0:
        raise click.BadParameter("nothing to make; ask for at least one slide",
                                 param_hint="--tumor/--normal")
    out_path = out
    try:
        out_path.mkdir(parents=True, exist_ok=True)
        probe = out_path / f".lymph-write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise click.BadParameter(
            f"cannot write into {out} ({exc.strerror or exc}); choose a writable folder",
            param_hint="--out",
        ) from None
    slides = synth_slides(out_path, n_tumor=n_tumor, n_normal=n_normal, size=size, seed=seed,
                          fmt=fmt, mpp=mpp, progress=True, quality=quality, workers=workers,
                          prefix=prefix, world=world, centre=centre)
    click.echo(f"{'slide':<12} {'status':<7} {'size':>13} {'MB':>7} {'lesions':>7}  largest  files")
    for s in slides:
        mb = s.path.stat().st_size / 1e6
        extra = ", ".join(p.name for p in (s.xml, s.mask) if p is not None)
        click.echo(
            f"{s.name:<12} {s.status:<7} {s.dimensions[0]:>6}x{s.dimensions[1]:<6} {mb:>7.1f} "
            f"{len(s.lesions):>7}  {s.largest or '-':<7}  {s.path.name}"
            + (f", {extra}" if extra else "")
        )
    click.echo(f"wrote {len(slides)} slides, reference.csv and synth.json to {out_path}")

# --- extract, info (pipeline/) -----------------------------------------------------------------


@main.command("extract")
@click.option("--slides", "slides_dir", required=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder of slides (searched recursively; any format OpenSlide reads, DICOM "
                   "series folders too).")
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="Zarr store to create or resume.")
@click.option("--annotations", "annotations_dir", default=None,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder of S.xml / S.geojson / S_mask.tif  [default: beside each slide]")
@click.option("--labels", "labels_csv", default=None,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="CAMELYON16 reference.csv (name,Tumor|Normal or name,1|0 or name,true|false; "
                   "extra columns ignored): marks normal slides.")
@click.option("--patch-size", default=300, show_default=True, type=int,
              help="Patch side in pixels at --level.")
@click.option("--level", default=0, show_default=True, type=int,
              help="Pyramid level to read (0 = full resolution).")
@click.option("--patches-per-slide", default=200, show_default=True, type=int)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=int,
              help="Worker processes (a local dask cluster when > 1).")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Submit to an existing dask cluster (tcp://host:8786) instead.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Decode threads per worker, beside one writer thread [default: the CPUs "
                   "divided among --workers]; the store is the same for any count.")
@click.option("--thumb-size", default=2048, show_default=True, type=int,
              help="Long side of the tissue-detection thumbnail in pixels.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def extract_cmd(slides_dir: Path, out: Path, annotations_dir: Path | None,
                labels_csv: Path | None,
                patch_size: int, level: int, patches_per_slide: int, seed: int, workers: int,
                scheduler: str | None, threads: int | None, thumb_size: int, as_json: bool,
                quiet: bool) -> None:
    """Draw class-balanced random patches (and tumor masks) from every slide into a Zarr store.

    Resumable: complete slides are skipped, partial ones redone. Exit status 1 if any slide
    failed (each is listed with its cause); the other slides are still extracted.

    \b
    Example:
      lymph extract --slides slides/ --out store.zarr --labels slides/reference.csv \\
                    --patches-per-slide 200 --workers 2
    """
    import json

    from lymph.pipeline.extract import ExtractConfig, run

    summary = run(ExtractConfig(
        slides=slides_dir, out=out, annotations=annotations_dir, labels=labels_csv,
        patch_size=patch_size, level=level, patches_per_slide=patches_per_slide, seed=seed,
        workers=workers, scheduler=scheduler, thumb_size=thumb_size, progress=not quiet,
        threads=threads))
    if as_json:
        click.echo(json.dumps(summary.to_dict(), indent=2))
    else:
        _print_extract_summary(summary)
    if summary.failed:
        raise SystemExit(1)


def _print_extract_summary(summary: object) -> None:
    from lymph.pipeline.extract import ExtractSummary

    assert isinstance(summary, ExtractSummary)
    rows = [(r.slide_id, r.status, r.n_patches, r.n_tumor, f"{r.seconds:.1f}", "done")
            for r in summary.done]
    rows += [(r.slide_id, r.status, r.n_patches, r.n_tumor, "-", "skipped (complete)")
             for r in summary.skipped]
    if rows:
        click.echo(f"{'slide':<28} {'status':<10} {'patches':>8} {'tumor':>6} {'s':>7}  result")
        for sid, status, n, nt, sec, res in rows:
            click.echo(f"{sid:<28} {status:<10} {n:>8} {nt:>6} {sec:>7}  {res}")
    for r in summary.done:
        for w in r.warnings:
            click.echo(f"warning: {w}")
    n, nt = summary.n_patches, summary.n_tumor
    nu = sum(r.n_patches for r in summary.done if r.status == "unlabeled")  # as `lymph info`
    click.echo(f"slides: {len(summary.done)} done, {len(summary.skipped)} skipped, "
               f"{len(summary.failed)} failed; patches: {n} ({nt} tumor, {n - nt - nu} "
               f"non-tumor, {nu} unlabeled) in "
               f"{summary.seconds:.1f} s = {summary.patches_per_second:.1f} patches/s; "
               f"store {summary.store}")
    if summary.failed:
        click.echo("failed:", err=True)
        for _, error in summary.failed:
            click.echo(f"  {error}", err=True)


@main.command("info")
@click.argument("store", type=click.Path(exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print everything as JSON.")
@click.option("--verify", is_flag=True,
              help="Also read every chunk and check its checksum; list each bad one (exit 1).")
def info_cmd(store: Path, as_json: bool, verify: bool) -> None:
    """Show a patch store: schema version, settings, and per slide its status, patches per
    class and whether it is complete (marked complete and every array and chunk file there).

    \b
    Example:
      lymph info store.zarr --verify
    """
    import json

    from lymph.data.store import describe_store, verify_store

    info = describe_store(store)
    if verify:
        checked, bad = verify_store(store)
        info["verify"] = {"chunks_checked": checked, "bad": [
            {"slide_id": b.slide_id, "array": b.array, "chunk": b.chunk, "error": b.error}
            for b in bad]}
    if as_json:
        click.echo(json.dumps(info, indent=2))
    else:
        _print_info(info)
    if verify and info["verify"]["bad"]:
        raise SystemExit(1)


def _print_info(info: dict) -> None:
    click.echo(f"store {info['path']}  schema version {info['schema_version']}")
    for key, value in info["settings"].items():
        click.echo(f"  {key}: {value}")
    click.echo(f"{'slide':<28} {'status':<10} {'patches':>8} {'tumor':>6} {'other':>6}  complete")
    for s in info["slides"]:
        nt = "-" if s["n_tumor"] is None else s["n_tumor"]
        no = "-" if s["n_non_tumor"] is None else s["n_non_tumor"]
        state = ("yes" if s["complete"] else f"NO, damaged: {s['damage']} (rerun lymph extract)"
                 if s.get("damage") else "NO (rerun lymph extract)")
        click.echo(f"{s['slide_id']:<28} {s['status']:<10} {s['n_patches']:>8} {nt:>6} "
                   f"{no:>6}  {state}")
    t = info["totals"]
    click.echo(f"{t['complete_slides']}/{t['slides']} slides complete; {t['patches']} patches "
               f"({t['tumor']} tumor, {t['non_tumor']} non-tumor, {t['unlabeled']} unlabeled)")
    if "verify" in info:
        v = info["verify"]
        for b in v["bad"]:
            click.echo(f"bad: {b['error']}", err=True)
        click.echo(f"verify: {v['chunks_checked']} chunks checked, {len(v['bad'])} bad")

# --- train (model/train.py) --------------------------------------------------------------------


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


@main.command("train")
@click.option("--store", required=True, type=click.Path(exists=True, file_okay=False),
              help="The patch store from `lymph extract`.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Run folder: last.pt, best.pt, metrics.jsonl, config.json, loss.png.")
@click.option("--stage", type=click.Choice(["pretrain", "finetune"]), default="pretrain",
              show_default=True, help="pretrain: reconstruction on every patch; finetune: "
              "segmentation + reconstruction on a few labeled patches.")
@click.option("--init", type=click.Path(exists=True, dir_okay=False), default=None,
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
def train_cmd(store: str, out: str, stage: str, init: str | None, from_scratch: bool,
              labeled: int | str | None, steps: int, batch_size: int, lr: float,
              recon_weight: float, pretext: str, patience: int | None, select: str,
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
    from pathlib import Path

    from lymph.data.errors import ConfigError
    from lymph.model.train import TrainConfig, run

    if stage == "finetune" and (init is None) == (not from_scratch):
        raise click.UsageError("--stage finetune needs exactly one of --init CKPT or "
                               "--from-scratch")
    if stage == "pretrain" and (init or from_scratch):
        raise click.UsageError("--init/--from-scratch are for --stage finetune; continue a "
                               "pretraining with --resume")
    try:
        config = TrainConfig(
            store=Path(store), out=Path(out), stage=stage,
            init=Path(init) if init else None, from_scratch=from_scratch,
            labeled=labeled if stage == "finetune" else None, steps=steps,
            batch_size=batch_size, lr=lr, recon_weight=recon_weight, base_width=base_width,
            depth=depth, last_skip=last_skip, crop=crop, val_slides=val_slides,
            val_patches=val_patches, eval_every=eval_every, checkpoint_every=checkpoint_every,
            seed=seed, device=device, workers=workers, resume=resume, pretext=pretext,
            patience=patience, norm=norm, channels_per_group=channels_per_group,
            upsample=upsample, padding_mode=padding_mode, threads=threads, select=select,
            precision=precision,
        )
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    result = run(config, progress=not quiet)
    if int(os.environ.get("RANK", "0")) != 0:
        return
    done = result.steps - result.start_step
    if result.start_step and not done:  # a --resume of a finished run: say so, no fake rate
        headline = (f"{stage}: nothing to train: {result.last} is already at step "
                    f"{result.steps} (--steps {steps})")
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
        + (f" [early stop: no better F1 for {patience} validations]"
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

# --- eval, study (model/metrics.py, model/study.py) --------------------------------------------

_EVAL_PATCH_OPTS = ("store", "checkpoint")
_EVAL_SLIDE_OPTS = ("slides", "annotations", "predictions", "labels")
_EVAL_HOW = ("patch mode: `lymph eval patches --store S --checkpoint C`; slide mode: `lymph eval "
             "slides --slides DIR --predictions DIR` (the old `lymph eval --store ...` and "
             "`lymph eval --slides ...` forms work too)")


def _fmt_pct(value: float) -> str:
    return f"{100 * value:6.2f}%"


def _print_eval_patch(result: dict) -> None:
    if "threshold" not in result:  # a pretraining checkpoint with --figures: Figure 4 alone
        mse = result["recon_mse"]
        click.echo(f"{result['n_patches']} patches reconstructed by the pretraining checkpoint"
                   + ("" if mse is None else f": mean MSE {mse:.4f} (0-1 intensities)"))
        for name, path in result.get("files", {}).items():
            click.echo(f"{name}: {path}")
        return
    mode = result["threshold_mode"]
    click.echo(
        f"{result['n_patches']} patches of {result['n_slides']} slide(s), threshold "
        f"{result['threshold']:.3f} ({mode}; tumor where probability >= threshold)"
    )
    click.echo(f"{'slide':<24} {'status':<7} {'patches':>7} {'P':>7} {'R':>7} {'F1':>7} {'IoU':>7}")
    rows = [(sid, r) for sid, r in result["slides"].items()]
    rows.append(("POOLED", {**result, "status": "", "n_patches": result["n_patches"]}))
    for sid, r in rows:
        click.echo(
            f"{sid:<24} {r['status']:<7} {r['n_patches']:>7} {_fmt_pct(r['precision'])} "
            f"{_fmt_pct(r['recall'])} {_fmt_pct(r['f1'])} {_fmt_pct(r['iou'])}"
        )
    click.echo(f"average precision (PR area): {result['average_precision']:.3f}")
    if "validation" in result:
        v = result["validation"]
        at = result["at_recall_0.9_threshold"]
        click.echo(
            f"thresholds chosen on {len(v['slides'])} validation slide(s) ({v['source']}): "
            f"F1-best {v['f1_best_threshold']:.3f}, 0.9 recall {v['recall_0.9_threshold']:.3f} "
            f"-> on the scored slides P {_fmt_pct(at['precision'])} R {_fmt_pct(at['recall'])} "
            f"F1 {_fmt_pct(at['f1'])}"
        )
    for note in result.get("notes", []):
        click.echo(f"note: {note}")
    for name, path in result.get("files", {}).items():
        click.echo(f"{name}: {path}")


def _print_eval_slides(result: dict) -> None:
    def num(value: object) -> str:
        return "undefined" if value is None else f"{value:.4f}"

    click.echo(f"FROC {num(result['froc'])} ({result['rules']} rules, the headline); "
               f"slide AUC {num(result['auc'])} over {result['n_slides']} slide(s)")
    click.echo(f"  official rules: FROC {num(result['froc_official'])}")
    click.echo(f"  lymph rules:    FROC {num(result['froc_lymph'])} (interpolated), "
               f"{num(result['froc_stepwise'])} (step-wise)")
    for rate, sens in result.get("sensitivity_at", {}).items():
        if isinstance(sens, dict):
            sens = ", ".join(f"{k} {num(v)}" for k, v in sens.items())
        else:
            sens = num(sens)
        click.echo(f"  sensitivity at {rate} FP/slide ({result['rules']}): {sens}")
    for note in result.get("notes", []):
        click.echo(f"note: {note}")
    for name, path in result.get("files", {}).items():
        click.echo(f"{name}: {path}")


_PATCH_OPTIONS = [
    click.option("--store", type=click.Path(exists=True, file_okay=False, path_type=Path),
                 help="Patch mode: a store from `lymph extract` (its labeled slides are scored)."),
    click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                 help="Patch mode: a fine-tuned checkpoint from `lymph train` (best.pt)."),
    click.option("--threshold", default="auto", show_default=True,
                 help="Patch mode: 'auto' (F1-best and 0.9-recall thresholds chosen on "
                      "validation slides, never on the scored ones; as `lymph study`), or a "
                      "probability in [0, 1]."),
    click.option("--slide-id", "slide_ids", multiple=True,
                 help="Patch mode: score only this slide id (repeatable); default every "
                      "labeled one."),
    click.option("--figures", is_flag=True,
                 help="Patch mode: also write Figure 4/5-style PNGs (reconstructions, outlines)."),
    click.option("--tta", is_flag=True, help="Patch mode: average the 8 dihedral transforms."),
    click.option("--max-patches-per-slide", type=click.IntRange(min=1), default=None,
                 help="Patch mode: score a seeded sample of this many patches per slide "
                      "[default: all]."),
    click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True),
    device_option,
    precision_option,
    click.option("--seed", type=int, default=0, show_default=True,
                 help="Patch mode: seeds the validation split (auto) and the figure patches."),
]
_SLIDE_OPTIONS = [
    click.option("--slides", type=click.Path(exists=True, path_type=Path),
                 help="Slide mode: the slides folder (searched recursively) or one slide."),
    click.option("--annotations", type=click.Path(exists=True, file_okay=False, path_type=Path),
                 help="Slide mode: ground truth (ASAP XML or mask TIFFs); default beside the "
                      "slides."),
    click.option("--predictions", type=click.Path(exists=True, file_okay=False, path_type=Path),
                 help="Slide mode: the --out folder of `lymph predict`."),
    click.option("--labels", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                 help="Slide mode: tumor/normal from a reference CSV (CAMELYON16 reference.csv: "
                      "slide,Tumor|Normal), never from slide names."),
    click.option("--rules", type=click.Choice(["official", "lymph"]), default="official",
                 show_default=True,
                 help="Slide mode: the rule set of the headline FROC (both are reported). "
                      "official: the CAMELYON16 Evaluation_FROC.py numbers, comparable with "
                      "published ones; lymph: the corrected rules (see README)."),
    click.option("--exclude", "exclude", multiple=True,
                 help="Slide mode: leave this slide id out (repeatable)."),
    click.option("--camelyon16-test", "camelyon16_test", is_flag=True,
                 help="Slide mode: the CAMELYON16 test-set convention: leave out Test_049 and "
                      "Test_114."),
    click.option("--score-missing", is_flag=True,
                 help="Slide mode: score a slide without a detection file as all-missed "
                      "(probability 0, no detections) with a warning, instead of an error."),
]
_COMMON_OPTIONS = [
    click.option("--out", type=click.Path(path_type=Path),
                 help="Write metrics.json and the PNG plots into this folder."),
    click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON on stdout."),
]


def _with(options: list) -> object:
    def apply(f: object) -> object:
        for option in reversed(options):
            f = option(f)
        return f
    return apply


def _option_names(options: list) -> set[str]:
    probe = _with(options)(lambda: None)
    return {p.name for p in probe.__click_params__}  # type: ignore[attr-defined]


def _run_eval_patches(store: Path | None, checkpoint: Path | None, threshold: str,
                      slide_ids: tuple[str, ...], figures: bool, tta: bool,
                      max_patches_per_slide: int | None, batch_size: int, device: str,
                      precision: str, seed: int, out: Path | None, as_json: bool) -> None:
    import json

    from lymph.model.evaluate import EvalConfig, run

    missing = [f"--{o}" for o, v in (("store", store), ("checkpoint", checkpoint)) if v is None]
    if missing:
        raise click.UsageError(f"patch mode also needs {', '.join(missing)}: {_EVAL_HOW}")
    config = EvalConfig(
        store=store, checkpoint=checkpoint, threshold=threshold, out=out,
        slides=slide_ids or None, batch_size=batch_size, device=device, tta=tta,
        figures=figures, seed=seed, max_patches_per_slide=max_patches_per_slide,
        progress=not as_json, precision=precision,
    )
    result = run(config)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        _print_eval_patch(result)


def _run_eval_slides(slides: Path | None, annotations: Path | None, predictions: Path | None,
                     labels: Path | None, rules: str, exclude: tuple[str, ...],
                     camelyon16_test: bool, score_missing: bool, out: Path | None,
                     as_json: bool) -> None:
    import json

    from lymph.model.camelyon import CAMELYON16_TEST_EXCLUDED, SlideEvalConfig, run

    missing = [f"--{o}" for o, v in (("slides", slides), ("predictions", predictions)) if v is None]
    if missing:
        raise click.UsageError(f"slide mode also needs {', '.join(missing)}: {_EVAL_HOW}")
    config = SlideEvalConfig(
        slides=slides, predictions=predictions, annotations=annotations, labels=labels, out=out,
        rules=rules, missing="missed" if score_missing else "error",
        exclude=tuple(exclude) + (CAMELYON16_TEST_EXCLUDED if camelyon16_test else ()),
    )
    result = run(config)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        _print_eval_slides(result)


@main.group("eval", cls=_Group, invoke_without_command=True)
@_with(_PATCH_OPTIONS + _SLIDE_OPTIONS + _COMMON_OPTIONS)
@click.pass_context
def eval_cmd(ctx: click.Context, **options: object) -> None:
    """Score a model: pixel metrics on a store's patches, or CAMELYON16 FROC/AUC on slides.

    \b
    Patch mode (pixel precision, recall, F1, Dice, IoU, pooled and per slide):
      lymph eval patches --store store.zarr --checkpoint runs/ft/best.pt [--threshold auto]
    Slide mode (lesion FROC by the official CAMELYON16 rules and lymph's, slide AUC):
      lymph eval slides --slides slides/ --predictions maps/ [--labels reference.csv]
    The one-command forms `lymph eval --store ...` and `lymph eval --slides ...` work too.
    """
    defaults = {p.name: p.default for p in ctx.command.params}
    given = {k for k, v in options.items() if v != defaults.get(k) and v not in (None, (), False)}
    if ctx.invoked_subcommand is not None:
        if given:
            raise click.UsageError(
                f"put the options after `{ctx.invoked_subcommand}`: "
                f"lymph eval {ctx.invoked_subcommand} {' '.join('--' + g for g in sorted(given))}"
            )
        return
    patch_names, slide_names = _option_names(_PATCH_OPTIONS), _option_names(_SLIDE_OPTIONS)
    patch, slide = given & set(_EVAL_PATCH_OPTS), given & set(_EVAL_SLIDE_OPTS)
    if patch and slide:
        raise click.UsageError(f"options of both modes given: {_EVAL_HOW}")
    if not patch and not slide:
        raise click.UsageError(f"choose a mode: {_EVAL_HOW}")
    mode_names, other = (patch_names, slide_names) if patch else (slide_names, patch_names)
    stray = sorted(given & other)
    if stray:
        mode = "patch" if patch else "slide"
        raise click.UsageError(
            f"{', '.join('--' + s.replace('_', '-') for s in stray)} do not apply in {mode} "
            f"mode: {_EVAL_HOW}"
        )
    keep = mode_names | {"out", "as_json"}
    run = _run_eval_patches if patch else _run_eval_slides
    run(**{k: v for k, v in options.items() if k in keep})


@eval_cmd.command("patches")
@_with(_PATCH_OPTIONS + _COMMON_OPTIONS)
def eval_patches_cmd(**options: object) -> None:
    """Pixel precision, recall, F1, Dice and IoU of a checkpoint on a store's labeled patches."""
    _run_eval_patches(**options)  # type: ignore[arg-type]


@eval_cmd.command("slides")
@_with(_SLIDE_OPTIONS + _COMMON_OPTIONS)
def eval_slides_cmd(**options: object) -> None:
    """Lesion FROC (official CAMELYON16 rules and lymph's) and slide AUC of `lymph predict`
    outputs, or of any CAMELYON16-style submission (S.csv detections, scores.csv)."""
    _run_eval_slides(**options)  # type: ignore[arg-type]


def _parse_sizes(ctx: click.Context, param: click.Parameter, value: str | None
                 ) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        sizes = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a comma-separated list of integers; e.g. --sizes 200,120,80,40"
        ) from None
    if not sizes or min(sizes) < 2 or len(set(sizes)) != len(sizes):
        raise click.BadParameter(
            f"{value!r}: give distinct sizes >= 2, e.g. --sizes 200,120,80,40"
        )
    return sizes


@main.command("study")
@click.option("--store", required=True, type=click.Path(exists=True, file_okay=False),
              help="The labeled store: tumor/normal slides with masks from `lymph extract`.")
@click.option("--pretrained", required=True, multiple=True,
              help="A pretraining checkpoint made on a SEPARATE store, as PATH or NAME=PATH "
                   "(e.g. identity=runs/pre/last.pt); repeat to compare pretexts in one run, "
                   "or give one NAME several checkpoints (pretraining seeds: repeat r uses "
                   "checkpoint r mod n).")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Study folder: results.csv, table.md, f1_vs_size.png, runs/ (resumable).")
@click.option("--profile", type=click.Choice(["quick", "standard"]), default=None,
              help="quick: the demo (illustrates, does not test); standard: 5 folds x 2 "
                   "repeats (`make study`; its time: README, study section). Options given "
                   "override the profile's values; the defaults below read quick / standard / "
                   "none.")
@click.option("--quick", is_flag=True, help="Same as --profile quick.")
@click.option("--sizes", default=None, callback=_parse_sizes,
              help="Labeled-set sizes (patches), comma-separated [default: 80,40 / "
                   "40,200,120,80,20 / 200,120,80,40].")
@click.option("--folds", type=click.IntRange(min=2), default=None,
              help="Cross-validation folds grouped by slide [default: 2 / 5 / 5].")
@click.option("--repeats", type=click.IntRange(min=1), default=None,
              help="Repeats per fold (subset, inner-validation slides and seed redrawn) "
                   "[default: 2 / 2 / 3].")
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="Cap on fine-tuning steps (early stopping on inner validation decides) "
                   "[default: 600 / 3200 / 3000].")
@click.option("--patience", type=click.IntRange(min=1), default=None,
              help="Stop after this many validations without a better F1 [default: 3 / 3 / "
                   "5].")
@click.option("--eval-every", type=click.IntRange(min=1), default=None,
              help="Validate on the inner-validation slides every N steps [default: 100].")
@click.option("--val-slides", type=click.IntRange(min=1), default=None,
              help="Inner-validation slides per fold and repeat (tumor first) [default: 2 / "
                   "4 / 2].")
@click.option("--val-patches", type=click.IntRange(min=1), default=None,
              help="Patches of the inner-validation slides the trainer validates on "
                   "[default: 96 / 128 / 256].")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Fine-tuning batch size [default: 8 / 8 / the trainer's].")
@click.option("--crop", type=click.IntRange(min=1), default=None,
              help="Training crop in px [default: 64 / 64 / the trainer's].")
@click.option("--base-width", type=click.IntRange(min=1), default=None,
              help="Must equal the pretrained checkpoint's (all conditions use its architecture).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Learning rate [default: the trainer's].")
@click.option("--recon-weight", type=click.FloatRange(min=0), default=None,
              help="Reconstruction weight of scratch and pretrained (seg_only: always 0).")
@click.option("--threshold", default="auto", show_default=True,
              help="'auto': F1-best on the inner-validation slides; or a fixed number.")
@click.option("--condition", "conditions", multiple=True,
              type=click.Choice(["scratch", "seg_only"]),
              help="Baselines to run (repeatable) [default: both].")
@device_option
@precision_option
@click.option("--jobs", type=click.IntRange(min=1), default=None,
              help="Runs in parallel processes, one torch thread each [default: the cores].")
@click.option("--eval-batch-size", type=click.IntRange(min=1), default=None,
              help="Batch size for scoring [default: 32 / 32 / 16].")
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="Data-loader processes per run (as train's --workers) [default: 0].")
@click.option("--max-test-patches", type=click.IntRange(min=1), default=None,
              help="Score a seeded sample per test slide [default: every patch].")
@click.option("--allow-test-in-pretraining", is_flag=True,
              help="Run even when a labeled (test) slide pretrained a checkpoint, or when that "
                   "cannot be checked; table.md says so.")
@click.option("--keep-checkpoints", is_flag=True,
              help="Keep every run's checkpoints (deleted after scoring by default).")
@click.option("--margin", type=click.FloatRange(min=0, max=100, min_open=True, max_open=True),
              default=2.0, show_default=True,
              help="Equivalence margin in percentage points of F1: 'equivalent within ±m' "
                   "needs the TOST to reject |ΔF1| >= m (declared in the protocol).")
@click.option("--pilot-sd", type=click.FloatRange(min=0, max=100, min_open=True, max_open=True),
              default=1.6, show_default=True,
              help="Paired ΔF1 sd in pp for the protocol's power line (the default is the "
                   "recorded standard study's, 40 labels).")
def study_cmd(store: str, pretrained: tuple[str, ...], out: str, **options: object) -> None:
    """Does reconstruction pretraining help at few labels? The paper's Figure 3, made to answer.

    \b
    Folds grouped by slide x repeats; per pair every condition (a scratch run per fine-tuning
    loss, seg_only, one pretrained_<name> per --pretrained name; repeat a name for several
    pretraining seeds) fine-tunes on the same labeled subset, stops and picks its threshold on
    inner-validation slides and is scored on every test patch. table.md declares the primary
    endpoint (ΔF1 at 40 labels) before any run and gives it the one verdict (helps / hurts /
    equivalent / inconclusive, >= 10 pairs); the rest are estimates with Holm-adjusted p. A
    rerun with the same --out resumes; protocol changes are listed as deviations.
      lymph study --store lab.zarr --pretrained identity=runs/pre/last.pt --out study/ --quick
    """
    from pathlib import Path

    from lymph.model.study import StudyConfig, parse_pretrained, run_study

    options["margin"] = float(options["margin"]) / 100  # type: ignore[arg-type]
    options["pilot_sd"] = float(options["pilot_sd"]) / 100  # type: ignore[arg-type]
    config = StudyConfig(
        store=Path(store), pretrained=parse_pretrained(pretrained), out=Path(out),
        conditions=options.pop("conditions") or None, **options,  # type: ignore[arg-type]
    )
    result = run_study(config)
    click.echo(f"{result['ran']} run(s) done now, {result['skipped']} reused from {out}")
    click.echo(Path(result["files"]["table.md"]).read_text())
    for name, path in result["files"].items():
        click.echo(f"{name}: {path}")

# --- predict (model/predict.py, model/camelyon.py) ---------------------------------------------


@main.command("predict")
@click.option("--slides", required=True, type=click.Path(exists=True),
              help="A slide file, or a folder of slides (masks are skipped).")
@click.option("--checkpoint", required=True, type=click.Path(exists=True, dir_okay=False),
              help="A fine-tuned checkpoint from `lymph train` (best.pt or last.pt).")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Output folder (not the slides folder): per slide S_tumor_map.tif, "
              "S_overlay.png, S.csv, S.geojson, S.xml; and scores.csv.")
@click.option("--level", type=click.IntRange(min=0), default=None,
              help="Slide level to run at [default: the level whose microns per pixel match "
              "the checkpoint's training mpp within 10%, else a resampled one].")
@click.option("--mpp", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Microns per level-0 pixel of slides that record none (e.g. 0.25 at 40x, "
              "0.5 at 20x) [default: such a slide runs at the checkpoint's level, warned].")
@click.option("--window", type=click.IntRange(min=16), default=None,
              help="Window (tile) in px of that level [default: the patch size, rounded up to "
              "a multiple of the model's and the map's grid; up to 1024 px for a BatchNorm "
              "model, whose output does not depend on the window].")
@click.option("--overlap", type=click.Choice(["auto", "margin", "half"]), default="auto",
              show_default=True, help="margin: tiles overlap by --margin, which is cut off "
              "(each pixel computed ~1.2 times); half: windows every half window blended with "
              "a Hann window (4 times; the old tiling); auto: margin for a BatchNorm model, "
              "half for a GroupNorm one (its output depends on the window).")
@click.option("--margin", type=click.IntRange(min=0), default=None,
              help="--overlap margin: px of that level cut off each side of a tile "
              "[default: 4.5% of the window, at least one map cell].")
@click.option("--stride", type=click.IntRange(min=1), default=None,
              help="--overlap half: step between windows in px of that level [default: half "
              "the window], at most the window.")
@click.option("--tta", is_flag=True, help="Average the 8 dihedral transforms (8x slower).")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@device_option
@precision_option
@click.option("--map-downsample", type=click.FloatRange(1, 1024), default=16.0,
              show_default=True, help="Downsample of the tumor map vs level 0.")
@click.option("--threshold", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=0.5, show_default=True, help="Map probability from which pixels form "
              "lesion detections (a fixed cut on the map, unlike eval's and study's 'auto', "
              "which choose one on validation patches).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Slides in parallel (local dask processes, CPU threads divided among them).")
@click.option("--scheduler", default=None,
              help="Address of a running dask scheduler (tcp://host:8786) to spread slides over.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch CPU threads per slide [default: every core this process may use, "
              "divided among --workers].")
@click.option("--read-threads", type=click.IntRange(min=1), default=None,
              help="Threads reading windows ahead of the model [default: 1 on CPU, up to 8 "
              "on a GPU].")
@click.option("--force", is_flag=True,
              help="Overwrite files in --out that lymph did not write (by default such a file, "
              "e.g. an annotation S.xml, stops the run before any work).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def predict_cmd(slides: str, checkpoint: str, out: str, level: int | None, mpp: float | None,
                window: int | None,
                overlap: str, margin: int | None, stride: int | None, tta: bool,
                batch_size: int, device: str, precision: str,
                map_downsample: float, threshold: float, workers: int, scheduler: str | None,
                threads: int | None, read_threads: int | None, force: bool,
                quiet: bool) -> None:
    """Whole-slide tumor maps, lesion detections and slide scores.

    \b
      lymph predict --slides slides/ --checkpoint runs/ft/best.pt --out maps/
      lymph predict --slides slides/tumor_001.tif --checkpoint best.pt --out maps/ --tta
      lymph eval --slides slides/ --predictions maps/ --out maps/eval    # FROC and AUC

    \b
    The map (S_tumor_map.tif, uint8 0-255 probability) opens in QuPath, ASAP or OpenSlide;
    S.geojson imports into QuPath (File > Import objects), S.xml into ASAP; S.csv and
    scores.csv are in the CAMELYON16 submission form.
    """
    from pathlib import Path

    from lymph.data.errors import ConfigError
    from lymph.model.predict import PredictConfig, run

    try:
        config = PredictConfig(
            checkpoint=Path(checkpoint), out=Path(out), slides=Path(slides), level=level,
            mpp=mpp, window=window, stride=stride, overlap=overlap, margin=margin, tta=tta,
            batch_size=batch_size, device=device, precision=precision,
            map_downsample=map_downsample, threshold=threshold, workers=workers,
            scheduler=scheduler, threads=threads, read_threads=read_threads, progress=not quiet,
            force=force,
        )
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    results = run(config).tasks
    ok = [r.value for r in results if r.value is not None]
    failed = [r for r in results if r.error is not None]
    click.echo(f"{len(ok)} of {len(results)} slide(s) predicted into {out}")
    for r in ok:
        t = r.timings
        click.echo(
            f"  {r.slide:<24} p={r.probability:.3f}  {r.n_detections:>4} detection(s)  "
            f"{r.n_windows}/{r.n_windows_total} windows  "
            f"{r.tissue_mpx:.1f}/{r.slide_tissue_mpx:.1f} Mpx tissue inferred  "
            f"{r.seconds:.1f} s (model {t.get('model', 0):.1f}, read {t.get('read', 0):.1f})"
        )
        if r.scale:
            click.echo(f"    scale: {r.scale}")
    for r in failed:
        click.echo(f"  FAILED {r.error}", err=True)
    if ok:
        click.echo(f"scores: {Path(out) / 'scores.csv'}")
    if failed:
        raise SystemExit(1)



# --- suggest (model/suggest.py) ---------------------------------------------------------------


@main.command("suggest")
@click.option("--maps", type=click.Path(exists=True, file_okay=False), default=None,
              help="The --out folder of `lymph predict` (S_tumor_map.tif + S_predict.json).")
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Instead of --maps: predict --slides with this checkpoint first (into "
              "OUT/maps).")
@click.option("--slides", type=click.Path(exists=True, file_okay=False), default=None,
              help="The slides (with --checkpoint; with --maps, for the overview thumbnails "
              "and the random strategy's tissue mask).")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Output folder: S_suggestions.geojson/.xml/.png, suggestions.csv.")
@click.option("--annotations", type=click.Path(exists=True, file_okay=False), default=None,
              help="Existing annotations (S.xml / S.geojson): likely misses near their tumor "
              "outlines, no box over reviewed regions, and the outlines copied into the "
              "suggestion files.")
@click.option("--labels", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Labels CSV: likely false positives on slides labelled normal.")
@click.option("-k", "k", type=click.IntRange(1, 10000), default=20, show_default=True,
              help="Regions to propose over all slides.")
@click.option("--size", type=float, default=1200.0, show_default=True,
              help="Box side in level-0 px (4 patches of 300 px).")
@click.option("--size-um", type=float, default=None, help="Box side in microns (instead of "
              "--size; needs the slide's mpp).")
@click.option("--per-slide", type=click.IntRange(min=1), default=None,
              help="At most this many boxes per slide [default: ceil(2 K / slides)].")
@click.option("--spacing", type=click.FloatRange(0, 10), default=1.0, show_default=True,
              help="Least distance between two boxes, in box sides (0: only no overlap).")
@click.option("--score", type=click.Choice(["entropy", "margin"]), default="entropy",
              show_default=True, help="Uncertainty of a map cell's probability.")
@click.option("--strategy", type=click.Choice(["uncertainty", "random"]),
              default="uncertainty", show_default=True,
              help="random: boxes drawn uniformly on tissue (a baseline of equal area).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--force", is_flag=True, help="Overwrite files in --out that lymph did not write "
              "or that were edited since (by default such a file stops the run).")
def suggest_cmd(maps: str | None, checkpoint: str | None, slides: str | None, out: str,
                annotations: str | None, labels: str | None, k: int, size: float,
                size_um: float | None, per_slide: int | None, spacing: float, score: str,
                strategy: str, seed: int, force: bool) -> None:
    """Propose the K regions to annotate next, ranked by the model's uncertainty.

    \b
      lymph predict --slides slides/ --checkpoint runs/ft/best.pt --out maps/
      lymph suggest --maps maps/ --slides slides/ --labels reference.csv \\
                    --annotations slides/ --out next/ -k 20 --size-um 300

    \b
    Open S_suggestions.geojson in QuPath (File > Import objects) or S_suggestions.xml in ASAP:
    outline tumor inside each box (class Tumor), set the box's class (group in ASAP) from
    Suggested to Reviewed, and save the whole file as the slide's annotations (S.geojson /
    S.xml in the --annotations folder of `lymph extract`). Extract then samples only inside
    reviewed boxes; unreviewed pixels are ignored by training.
    """
    from pathlib import Path

    from lymph.model.suggest import SuggestConfig, run

    config = SuggestConfig(
        out=Path(out), maps=maps, checkpoint=checkpoint, slides=slides,
        annotations=annotations, labels=labels, k=k, size=None if size_um else size,
        size_um=size_um, per_slide=per_slide, spacing=spacing, score=score,
        strategy=strategy, seed=seed, force=force)
    summary = run(config)
    click.echo(summary.table())
    click.echo(f"{len(summary.suggestions)} region(s) from {summary.n_maps} map(s) (at most "
               f"{summary.cap} per slide) into {out}")
    for _, error in summary.failed:
        click.echo(f"  FAILED {error}", err=True)
    if summary.failed:
        raise SystemExit(1)
# --- view (model/view/) --------------------------------------------------------------------------


@main.command("view")
@click.option("--slides", required=True, type=click.Path(exists=True, path_type=Path),
              help="A slide file, or a folder of slides (searched as predict does).")
@click.option("--predictions", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="The --out of `lymph predict` (S_tumor_map.tif, S.csv, "
              "scores.csv; S_suggestions.geojson from `lymph suggest`).")
@click.option("--annotations", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="Ground truth S.xml / S.geojson / S_mask.tif [default: beside "
              "each slide].")
@click.option("--labels", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="reference.csv: marks normal slides (every detection a false "
              "positive in the FROC counts).")
@click.option("--suggestions", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="The --out of `lymph suggest` (S_suggestions.geojson) "
              "[default: the --predictions folder].")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0: every interface; anyone who can reach it "
              "sees the slides).")
@click.option("--port", type=int, default=8000, show_default=True, help="0: any free port.")
@click.option("--export", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write the viewer as a static folder (tiles + HTML, opens from file://) "
              "instead of serving.")
@click.option("--cache-mb", type=int, default=256, show_default=True,
              help="Size of the server's tile cache.")
@click.option("--workers", type=int, default=2, show_default=True,
              help="Threads writing tiles with --export.")
@click.option("--quiet", is_flag=True, help="No progress bar (--export).")
def view_cmd(slides: Path, predictions: Path | None, annotations: Path | None,
             labels: Path | None, suggestions: Path | None, host: str, port: int,
             export: Path | None, cache_mb: int, workers: int, quiet: bool) -> None:
    """Look at slides, tumor maps, detections and ground truth in the browser.

    \b
      lymph view --slides slides/ --predictions maps/           # then open http://127.0.0.1:8000/
      ssh -L 8000:127.0.0.1:8000 gpu-host                       # from your laptop, for a remote run
      lymph view --slides slides/ --predictions maps/ --export site/   # static copy, no server
    """
    from lymph.model.view.catalog import ViewConfig
    from lymph.model.view.server import run

    run(ViewConfig(slides=slides, predictions=predictions, annotations=annotations,
                   labels=labels, suggestions=suggestions, host=host, port=port,
                   export=export, cache_mb=cache_mb, workers=workers, quiet=quiet))


if __name__ == "__main__":  # `python -m lymph.cli` (torchrun uses this)
    main()
