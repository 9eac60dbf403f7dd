"""The `lymph` command line. Commands only parse arguments, build a config and call one
library function; all the work lives in `lymph.pipeline`, `lymph.model` and `lymph.data`."""

from __future__ import annotations

import click

from lymph import __version__


class _Group(click.Group):
    """Every lymph error (bad slide, store, checkpoint or setting) ends the command with its
    message and exit status 1, never a traceback; a bug still shows one."""

    def invoke(self, ctx: click.Context) -> object:
        from lymph.data.errors import LymphError

        try:
            return super().invoke(ctx)
        except LymphError as exc:
            raise click.ClickException(str(exc)) from exc


@click.group(cls=_Group,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
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
    type=click.Path(file_okay=False, path_type=str),
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
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1),
              help="Threads encoding tiles.")
def synth(out: str, n_tumor: int, n_normal: int, size: tuple[int, int], seed: int, fmt: str,
          mpp: float, quality: int, workers: int) -> None:
    """Make a synthetic CAMELYON16-like slide set: pyramidal slides OpenSlide opens, ASAP XML
    and mask TIFFs for tumor slides, and reference.csv.

    \b
    Example:
      lymph synth --out slides/ --tumor 3 --normal 2 --size 12000x9000 --seed 0
    """
    import os
    from pathlib import Path

    from lymph.data.errors import ConfigError
    from lymph.data.synth import synth_slides

    if n_tumor + n_normal == 0:
        raise click.BadParameter("nothing to make; ask for at least one slide",
                                 param_hint="--tumor/--normal")
    out_path = Path(out)
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
    try:
        slides = synth_slides(out_path, n_tumor=n_tumor, n_normal=n_normal, size=size, seed=seed,
                              fmt=fmt, mpp=mpp, progress=True, quality=quality, workers=workers)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
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
              type=click.Path(exists=True, file_okay=False, path_type=str),
              help="Folder of slides (searched recursively; any format OpenSlide reads, DICOM "
                   "series folders too).")
@click.option("--out", required=True, type=click.Path(path_type=str),
              help="Zarr store to create or resume.")
@click.option("--annotations", "annotations_dir", default=None,
              type=click.Path(exists=True, file_okay=False, path_type=str),
              help="Folder of S.xml / S.geojson / S_mask.tif  [default: beside each slide]")
@click.option("--labels", "labels_csv", default=None,
              type=click.Path(exists=True, dir_okay=False, path_type=str),
              help="CAMELYON16 reference.csv (name,Tumor|Normal): marks normal slides.")
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
@click.option("--thumb-size", default=2048, show_default=True, type=int,
              help="Long side of the tissue-detection thumbnail in pixels.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def extract_cmd(slides_dir: str, out: str, annotations_dir: str | None, labels_csv: str | None,
                patch_size: int, level: int, patches_per_slide: int, seed: int, workers: int,
                scheduler: str | None, thumb_size: int, as_json: bool, quiet: bool) -> None:
    """Draw class-balanced random patches (and tumor masks) from every slide into a Zarr store.

    Resumable: complete slides are skipped, partial ones redone. Exit status 1 if any slide
    failed (each is listed with its cause); the other slides are still extracted.

    \b
    Example:
      lymph extract --slides slides/ --out store.zarr --labels slides/reference.csv \\
                    --patches-per-slide 200 --workers 2
    """
    import json
    from pathlib import Path

    from lymph.data.errors import ConfigError, LymphError
    from lymph.pipeline.extract import ExtractConfig, extract

    try:
        config = ExtractConfig(
            slides=Path(slides_dir), out=Path(out),
            annotations=Path(annotations_dir) if annotations_dir else None,
            labels=Path(labels_csv) if labels_csv else None, patch_size=patch_size,
            level=level, patches_per_slide=patches_per_slide, seed=seed, workers=workers,
            scheduler=scheduler, thumb_size=thumb_size, progress=not quiet)
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from exc
    try:
        summary = extract(config)
    except LymphError as exc:
        raise click.ClickException(str(exc)) from exc
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
    click.echo(f"slides: {len(summary.done)} done, {len(summary.skipped)} skipped, "
               f"{len(summary.failed)} failed; patches: {n} ({nt} tumor, {n - nt} other) in "
               f"{summary.seconds:.1f} s = {summary.patches_per_second:.1f} patches/s; "
               f"store {summary.store}")
    if summary.failed:
        click.echo("failed:", err=True)
        for _, error in summary.failed:
            click.echo(f"  {error}", err=True)


@main.command("info")
@click.argument("store", type=click.Path(exists=True, path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print everything as JSON.")
def info_cmd(store: str, as_json: bool) -> None:
    """Show a patch store: schema version, settings, and per slide its status, patches per
    class and whether it is complete."""
    import json

    from lymph.data.errors import StoreError
    from lymph.data.store import describe_store

    try:
        info = describe_store(store)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(f"store {info['path']}  schema version {info['schema_version']}")
    for key, value in info["settings"].items():
        click.echo(f"  {key}: {value}")
    click.echo(f"{'slide':<28} {'status':<10} {'patches':>8} {'tumor':>6} {'other':>6}  complete")
    for s in info["slides"]:
        nt = "-" if s["n_tumor"] is None else s["n_tumor"]
        no = "-" if s["n_non_tumor"] is None else s["n_non_tumor"]
        click.echo(f"{s['slide_id']:<28} {s['status']:<10} {s['n_patches']:>8} {nt:>6} "
                   f"{no:>6}  {'yes' if s['complete'] else 'NO (rerun lymph extract)'}")
    t = info["totals"]
    click.echo(f"{t['complete_slides']}/{t['slides']} slides complete; {t['patches']} patches "
               f"({t['tumor']} tumor, {t['non_tumor']} non-tumor, {t['unlabeled']} unlabeled)")

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
              help="finetune: weight W of the reconstruction loss.")
@click.option("--base-width", type=click.IntRange(min=1), default=None,
              help="UNet width of the first level [default: 32, or the --init checkpoint's].")
@click.option("--depth", type=click.IntRange(1, 7), default=None,
              help="UNet levels [default: 4, or the --init checkpoint's].")
@click.option("--last-skip/--no-last-skip", default=None,
              help="Keep the highest-resolution skip connection [default: removed, as in the "
              "paper, or the --init checkpoint's].")
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
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto",
              show_default=True, help="auto: CUDA, then MPS, then CPU.")
@click.option("--workers", type=click.IntRange(min=0), default=2, show_default=True,
              help="Data loader processes per training process (0: load in the main process).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last.pt.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train_cmd(store: str, out: str, stage: str, init: str | None, from_scratch: bool,
              labeled: int | str | None, steps: int, batch_size: int, lr: float,
              recon_weight: float, base_width: int | None, depth: int | None,
              last_skip: bool | None, crop: int,
              val_slides: int, val_patches: int, eval_every: int, checkpoint_every: int,
              seed: int, device: str, workers: int, resume: bool, quiet: bool) -> None:
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
    from lymph.model.train import TrainConfig, train

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
            seed=seed, device=device, workers=workers, resume=resume,
        )
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    result = train(config, progress=not quiet)
    if int(os.environ.get("RANK", "0")) != 0:
        return
    click.echo(
        f"{stage}: {result.steps} steps in {result.seconds:.1f} s "
        f"({result.patches_per_s:.1f} patches/s, {100 * result.data_wait:.1f}% waiting for data)"
        + (" [stopped early]" if result.stopped else "")
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
        click.echo(f"  best: {result.best} (F1 {result.best_f1:.4f})")
    click.echo(f"  last: {result.last}")

# --- eval, study (model/metrics.py, model/study.py) --------------------------------------------

_EVAL_PATCH_OPTS = ("store", "checkpoint")
_EVAL_SLIDE_OPTS = ("slides", "annotations", "predictions", "labels")


def _fmt_pct(value: float) -> str:
    return f"{100 * value:6.2f}%"


def _print_eval_patch(result: dict) -> None:
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


@main.command("eval")
@click.option("--store", type=click.Path(exists=True, file_okay=False),
              help="Patch mode: a store from `lymph extract` (its labeled slides are scored).")
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False),
              help="Patch mode: a checkpoint from `lymph train` (best.pt or last.pt).")
@click.option("--threshold", default="0.5", show_default=True,
              help="Patch mode: a probability in [0, 1], or 'auto' (F1-best and 0.9-recall "
                   "thresholds chosen on validation slides, never on the scored ones).")
@click.option("--slide-id", "slide_ids", multiple=True,
              help="Patch mode: score only this slide id (repeatable); default every labeled one.")
@click.option("--figures", is_flag=True,
              help="Patch mode: also write Figure 4/5-style PNGs (reconstructions, outlines).")
@click.option("--tta", is_flag=True, help="Patch mode: average the 8 dihedral transforms.")
@click.option("--max-patches-per-slide", type=click.IntRange(min=1), default=None,
              help="Patch mode: score a seeded sample of this many patches per slide "
                   "[default: all].")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto",
              show_default=True)
@click.option("--seed", type=int, default=0, show_default=True,
              help="Patch mode: seeds the validation split (auto) and the figure patches.")
@click.option("--slides", type=click.Path(exists=True),
              help="Slide mode: the slides folder (or one slide).")
@click.option("--annotations", type=click.Path(exists=True, file_okay=False),
              help="Slide mode: ground truth (ASAP XML or mask TIFFs); default beside the slides.")
@click.option("--predictions", type=click.Path(exists=True, file_okay=False),
              help="Slide mode: the --out folder of `lymph predict`.")
@click.option("--labels", type=click.Path(exists=True, dir_okay=False),
              help="Slide mode: CSV of slide,label (tumor/normal) for slides without annotations.")
@click.option("--out", type=click.Path(file_okay=False),
              help="Write metrics.json and the PNG plots here.")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON on stdout.")
def eval_cmd(store: str | None, checkpoint: str | None, threshold: str,
             slide_ids: tuple[str, ...], figures: bool, tta: bool,
             max_patches_per_slide: int | None, batch_size: int, device: str,
             seed: int, slides: str | None, annotations: str | None, predictions: str | None,
             labels: str | None, out: str | None, as_json: bool) -> None:
    """Score a model: pixel metrics on a store's patches, or CAMELYON16 FROC/AUC on slides.

    \b
    Patch mode (pixel precision, recall, F1, Dice, IoU, pooled and per slide):
      lymph eval --store store.zarr --checkpoint runs/ft/best.pt [--threshold auto] [--out DIR]
    Slide mode (lesion FROC and slide AUC by the CAMELYON16 rules):
      lymph eval --slides slides/ --annotations ann/ --predictions maps/ [--out DIR]
    """
    import json
    from pathlib import Path

    given = {k for k, v in {"store": store, "checkpoint": checkpoint, "slides": slides,
                            "annotations": annotations, "predictions": predictions,
                            "labels": labels}.items() if v is not None}
    patch, slide = given & set(_EVAL_PATCH_OPTS), given & set(_EVAL_SLIDE_OPTS)
    how = ("patch mode needs --store and --checkpoint; slide mode needs --slides and "
           "--predictions (plus --annotations and/or --labels)")
    if patch and slide:
        raise click.BadParameter(
            f"options of both modes given ({', '.join('--' + o for o in sorted(given))}): {how}"
        )
    if not given:
        raise click.BadParameter(f"choose a mode: {how}")
    if patch:
        missing = [f"--{o}" for o in _EVAL_PATCH_OPTS if o not in patch]
        if missing:
            raise click.BadParameter(f"patch mode also needs {', '.join(missing)}: {how}")
        from lymph.data.errors import ConfigError
        from lymph.model.evaluate import EvalConfig, evaluate, parse_threshold

        try:
            parsed = parse_threshold(threshold)
        except ConfigError as exc:
            raise click.BadParameter(str(exc), param_hint="--threshold") from None
        if figures and out is None:
            raise click.BadParameter("--figures needs --out DIR to write the PNGs into")
        config = EvalConfig(
            store=Path(store), checkpoint=Path(checkpoint), threshold=parsed,
            out=None if out is None else Path(out), slides=slide_ids or None,
            batch_size=batch_size, device=device, tta=tta, figures=figures, seed=seed,
            max_patches_per_slide=max_patches_per_slide, progress=not as_json,
        )
        result = evaluate(config)
        if as_json:
            click.echo(json.dumps(result, indent=2))
        else:
            _print_eval_patch(result)
        return
    missing = [f"--{o}" for o in ("slides", "predictions") if o not in slide]
    if missing:
        raise click.BadParameter(f"slide mode also needs {', '.join(missing)}: {how}")
    patch_only = [name for name, used in (("--figures", figures), ("--tta", tta),
                                          ("--slide-id", bool(slide_ids)),
                                          ("--max-patches-per-slide",
                                           max_patches_per_slide is not None),
                                          ("--threshold", threshold != "0.5")) if used]
    if patch_only:
        raise click.BadParameter(f"{', '.join(patch_only)} only apply in patch mode: {how}")
    from lymph.model.camelyon import evaluate_predictions

    result = evaluate_predictions(
        slides_dir=Path(slides), annotations_dir=None if annotations is None else Path(annotations),
        predictions_dir=Path(predictions), labels_csv=None if labels is None else Path(labels),
        out_dir=None if out is None else Path(out),
    )
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    def num(value: object) -> str:
        return "undefined" if value is None else f"{value:.4f}"

    click.echo(f"FROC {num(result.get('froc'))} (interpolated "
               f"{num(result.get('froc_interpolated'))}, step-wise "
               f"{num(result.get('froc_stepwise'))}); slide AUC {num(result.get('auc'))} "
               f"over {result.get('n_slides', 0)} slide(s)")
    for rate, sens in result.get("sensitivity_at", {}).items():
        if isinstance(sens, dict):
            sens = ", ".join(f"{k} {num(v)}" for k, v in sens.items())
        else:
            sens = num(sens)
        click.echo(f"  sensitivity at {rate} FP/slide: {sens}")
    for note in result.get("notes", []):
        click.echo(f"note: {note}")
    if out is not None:
        click.echo(f"written into {out}: metrics.json, froc.png, roc.png (when defined)")


def _parse_sizes(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
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
              help="A store with labeled (tumor/normal) slides from `lymph extract`.")
@click.option("--pretrained", required=True, type=click.Path(exists=True, dir_okay=False),
              help="The reconstruction-pretrained checkpoint (`lymph train --stage pretrain`).")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Study folder: results.csv, table.md, f1_vs_size.png, runs/ (resumable).")
@click.option("--sizes", default="200,120,80,40", show_default=True, callback=_parse_sizes,
              help="Labeled-set sizes (patches), comma-separated.")
@click.option("--folds", type=click.IntRange(min=2), default=5, show_default=True,
              help="Cross-validation folds, grouped by slide (needs as many labeled slides).")
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="Fine-tuning steps per run [default: the trainer's; --quick: 300].")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--quick", is_flag=True,
              help="Demo profile for a small CPU: 300 steps, batch 8, 64 px crops, 0 workers, 64 "
                   "scored patches per held-out slide (each unless given).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Fine-tuning batch size [default: the trainer's; --quick: 8].")
@click.option("--crop", type=click.IntRange(min=1), default=None,
              help="Training crop in px [default: the trainer's; --quick: 64].")
@click.option("--base-width", type=click.IntRange(min=1), default=None,
              help="Must equal the pretrained checkpoint's (both conditions use its architecture).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Learning rate [default: the trainer's].")
@click.option("--recon-weight", type=click.FloatRange(min=0), default=None,
              help="Weight of the reconstruction loss while fine-tuning [default: the trainer's].")
@click.option("--threshold", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Probability threshold for scoring held-out folds (never tuned on them).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto",
              show_default=True)
@click.option("--eval-batch-size", type=click.IntRange(min=1), default=None,
              help="Batch size for scoring [default 16].")
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="Trainer data-loader processes [default: the trainer's; --quick: 0].")
@click.option("--max-test-patches", type=click.IntRange(min=1), default=None,
              help="Score a seeded sample of this many patches per held-out slide, the same "
                   "for both conditions [default: all; --quick: 64].")
@click.option("--keep-checkpoints", is_flag=True,
              help="Keep every run's checkpoints (deleted after scoring by default).")
def study_cmd(store: str, pretrained: str, out: str, sizes: tuple[int, ...], folds: int,
              steps: int | None, seed: int, quick: bool, batch_size: int | None,
              crop: int | None, base_width: int | None, lr: float | None,
              recon_weight: float | None, threshold: float, device: str,
              eval_batch_size: int | None, workers: int | None, max_test_patches: int | None,
              keep_checkpoints: bool) -> None:
    """The paper's Figure 3: fine-tune from pretrained weights vs from scratch on N labels.

    \b
    For every size and fold (folds grouped by slide), both conditions fine-tune on the same
    class-balanced subset with the same steps and seed and are scored on the held-out slides.
    A rerun with the same --out skips finished runs.
      lymph study --store store.zarr --pretrained runs/pre/last.pt --out study/ --quick
    """
    from pathlib import Path

    from lymph.model.study import StudyConfig, run_study

    config = StudyConfig(
        store=Path(store), pretrained=Path(pretrained), out=Path(out), sizes=sizes, folds=folds,
        steps=steps, seed=seed, quick=quick, batch_size=batch_size, crop=crop,
        base_width=base_width, lr=lr, recon_weight=recon_weight, threshold=threshold,
        device=device, eval_batch_size=eval_batch_size, workers=workers,
        max_test_patches=max_test_patches, keep_checkpoints=keep_checkpoints,
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
              help="Slide level to run at [default: the checkpoint's extraction level].")
@click.option("--window", type=click.IntRange(min=16), default=None,
              help="Window (tile) in px of that level [default: the patch size, rounded up to "
              "a multiple of the model's and the map's grid; up to 1024 px for a BatchNorm "
              "model, whose output does not depend on the window].")
@click.option("--overlap", type=click.Choice(["margin", "half"]), default="margin",
              show_default=True, help="margin: tiles overlap by --margin, which is cut off "
              "(each pixel computed ~1.2 times); half: the old tiling, windows every half "
              "window blended with a Hann window (4 times; slower, for comparison).")
@click.option("--margin", type=click.IntRange(min=0), default=None,
              help="--overlap margin: px of that level cut off each side of a tile "
              "[default: 4.5% of the window, at least one map cell].")
@click.option("--stride", type=click.IntRange(min=1), default=None,
              help="--overlap half: step between windows in px of that level [default: half "
              "the window], at most the window.")
@click.option("--screen", type=click.IntRange(min=2), default=None,
              help="Coarse to fine: screen at this many times the level's downsample, then "
              "infer full resolution only where the screen's probability reaches "
              "--screen-threshold (grown by --screen-margin).")
@click.option("--screen-threshold", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=0.1, show_default=True, help="Screen probability that sends a region "
              "to full resolution.")
@click.option("--screen-margin", type=click.IntRange(min=0), default=None,
              help="Map px the screened regions grow by [default: half a window].")
@click.option("--tta", is_flag=True, help="Average the 8 dihedral transforms (8x slower).")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto",
              show_default=True, help="auto: CUDA, then MPS, then CPU.")
@click.option("--map-downsample", type=click.FloatRange(1, 1024), default=16.0,
              show_default=True, help="Downsample of the tumor map vs level 0.")
@click.option("--threshold", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=0.5, show_default=True, help="Probability above which map pixels form "
              "lesion detections.")
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
def predict_cmd(slides: str, checkpoint: str, out: str, level: int | None, window: int | None,
                overlap: str, margin: int | None, stride: int | None, screen: int | None,
                screen_threshold: float, screen_margin: int | None, tta: bool,
                batch_size: int, device: str,
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
            window=window, stride=stride, overlap=overlap, margin=margin, screen=screen,
            screen_threshold=screen_threshold, screen_margin=screen_margin, tta=tta,
            batch_size=batch_size, device=device,
            map_downsample=map_downsample, threshold=threshold, workers=workers,
            scheduler=scheduler, threads=threads, read_threads=read_threads, progress=not quiet,
            force=force,
        )
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    results = run(config)
    ok = [r.value for r in results if r.value is not None]
    failed = [r for r in results if r.error is not None]
    click.echo(f"{len(ok)} of {len(results)} slide(s) predicted into {out}")
    for r in ok:
        t = r.timings
        click.echo(
            f"  {r.slide:<24} p={r.probability:.3f}  {r.n_detections:>4} detection(s)  "
            f"{r.n_windows}/{r.n_windows_total} windows  {r.tissue_mpx:.1f} Mpx tissue  "
            f"{r.seconds:.1f} s (model {t.get('model', 0):.1f}, read {t.get('read', 0):.1f})"
        )
    for r in failed:
        click.echo(f"  FAILED {r.error}", err=True)
    if ok:
        click.echo(f"scores: {Path(out) / 'scores.csv'}")
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":  # `python -m lymph.cli` (torchrun uses this)
    main()
