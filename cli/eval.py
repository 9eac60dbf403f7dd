"""`lymph eval patches` (pixel metrics of a checkpoint on a store's patches,
lymph.model.evaluate) and `lymph eval slides` (CAMELYON16 FROC and slide AUC of predictions,
lymph.model.camelyon)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from lymph.cli.common import device_option, echo_files, precision_option

# The two options both subcommands share, each with the same meaning in both.
out_option = click.option("--out", type=click.Path(path_type=Path),
                          help="Write metrics.json and the PNG plots into this folder.")
json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print the metrics as JSON on stdout.")


def _pct(value: float) -> str:
    return f"{100 * value:6.2f}%"


def _print_patches(result: dict[str, Any]) -> None:
    if "threshold" not in result:  # a pretraining checkpoint with --figures: Figure 4 alone
        mse = result["recon_mse"]
        click.echo(f"{result['n_patches']} patches reconstructed by the pretraining checkpoint"
                   + ("" if mse is None else f": mean MSE {mse:.4f} (0-1 intensities)"))
        echo_files(result.get("files", {}))
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
            f"{sid:<24} {r['status']:<7} {r['n_patches']:>7} {_pct(r['precision'])} "
            f"{_pct(r['recall'])} {_pct(r['f1'])} {_pct(r['iou'])}"
        )
    click.echo(f"average precision (PR area): {result['average_precision']:.3f}")
    if "validation" in result:
        v = result["validation"]
        at = result["at_recall_0.9_threshold"]
        click.echo(
            f"thresholds chosen on {len(v['slides'])} validation slide(s) ({v['source']}): "
            f"F1-best {v['f1_best_threshold']:.3f} (the table above); at the 0.9-recall one, "
            f"{v['recall_0.9_threshold']:.3f}, the scored slides pool to P "
            f"{_pct(at['precision']).strip()} R {_pct(at['recall']).strip()} "
            f"F1 {_pct(at['f1']).strip()}"
        )
    for note in result.get("notes", []):
        click.echo(f"note: {note}")
    echo_files(result.get("files", {}))


def _print_slides(result: dict[str, Any]) -> None:
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
    echo_files(result.get("files", {}))


def _echo_result(result: dict[str, Any], *, as_json: bool,
                 table: Callable[[dict[str, Any]], None]) -> None:
    import json

    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        table(result)


@click.group("eval", invoke_without_command=True)
@click.pass_context
def eval_cmd(ctx: click.Context) -> None:
    """Score a model: pixel metrics on a store's patches, or CAMELYON16 FROC/AUC on slides.

    \b
    Pixel precision, recall, F1, Dice, IoU, pooled and per slide:
      lymph eval patches --store store.zarr --checkpoint runs/ft/best.pt [--threshold auto]
    Lesion FROC by the official CAMELYON16 rules and lymph's, slide AUC:
      lymph eval slides --slides slides/ --predictions maps/ [--labels reference.csv]
    """
    if ctx.invoked_subcommand is None:  # `lymph eval` alone: its help, as for --help
        click.echo(ctx.get_help())


@eval_cmd.command("patches")
@click.option("--store", required=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A store from `lymph extract` (its labeled slides are scored).")
@click.option("--checkpoint", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A fine-tuned checkpoint from `lymph train` (best.pt).")
@click.option("--threshold", default="auto", show_default=True,
              help="'auto' (F1-best and 0.9-recall thresholds chosen on validation slides, "
                   "never on the scored ones; as `lymph study`), or a probability in [0, 1].")
@click.option("--slide-id", "slide_ids", multiple=True,
              help="Score only this slide id (repeatable); default every labeled one.")
@click.option("--figures", is_flag=True,
              help="Also write Figure 4/5-style PNGs (reconstructions, outlines).")
@click.option("--tta", is_flag=True, help="Average the 8 dihedral transforms.")
@click.option("--max-patches-per-slide", type=click.IntRange(min=1), default=None,
              help="Score a seeded sample of this many patches per slide [default: all].")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@device_option
@precision_option
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seeds the validation split (auto) and the figure patches.")
@out_option
@json_option
def eval_patches_cmd(store: Path, checkpoint: Path, threshold: str, slide_ids: tuple[str, ...],
                     figures: bool, tta: bool, max_patches_per_slide: int | None,
                     batch_size: int, device: str, precision: str, seed: int, out: Path | None,
                     as_json: bool) -> None:
    """Pixel precision, recall, F1, Dice and IoU of a checkpoint on a store's labeled patches.

    \b
    Example:
      lymph eval patches --store store.zarr --checkpoint runs/ft/best.pt --out eval/ --figures
    """
    from lymph.model.evaluate import EvalConfig, run

    config = EvalConfig(
        store=store, checkpoint=checkpoint, threshold=threshold, out=out,
        slides=slide_ids or None, batch_size=batch_size, device=device, tta=tta,
        figures=figures, seed=seed, max_patches_per_slide=max_patches_per_slide,
        progress=not as_json, precision=precision,
    )
    result = run(config).to_dict()
    _echo_result(result, as_json=as_json, table=_print_patches)


@eval_cmd.command("slides")
@click.option("--slides", required=True, type=click.Path(exists=True, path_type=Path),
              help="The slides folder (searched recursively) or one slide.")
@click.option("--annotations", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Ground truth (ASAP XML or mask TIFFs); default beside the slides.")
@click.option("--predictions", required=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The --out folder of `lymph predict`.")
@click.option("--labels", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Tumor/normal from a reference CSV (CAMELYON16 reference.csv: "
                   "slide,Tumor|Normal), never from slide names.")
@click.option("--rules", type=click.Choice(["official", "lymph"]), default="official",
              show_default=True,
              help="The rule set of the headline FROC (both are reported). official: the "
                   "CAMELYON16 Evaluation_FROC.py numbers, comparable with published ones; "
                   "lymph: the corrected rules (see README).")
@click.option("--exclude", "exclude", multiple=True,
              help="Leave this slide id out (repeatable).")
@click.option("--camelyon16-test", "camelyon16_test", is_flag=True,
              help="The CAMELYON16 test-set convention: leave out Test_049 and Test_114.")
@click.option("--score-missing", is_flag=True,
              help="Score a slide without a detection file as all-missed (probability 0, no "
                   "detections) with a warning, instead of an error.")
@out_option
@json_option
def eval_slides_cmd(slides: Path, annotations: Path | None, predictions: Path,
                    labels: Path | None, rules: str, exclude: tuple[str, ...],
                    camelyon16_test: bool, score_missing: bool, out: Path | None,
                    as_json: bool) -> None:
    """Lesion FROC (official CAMELYON16 rules and lymph's) and slide AUC of `lymph predict`
    outputs, or of any CAMELYON16-style submission (S.csv detections, scores.csv).

    \b
    Example:
      lymph eval slides --slides slides/ --predictions maps/ --labels slides/reference.csv \\
                        --out maps/eval
    """
    from lymph.model.camelyon import CAMELYON16_TEST_EXCLUDED, SlideEvalConfig, run

    config = SlideEvalConfig(
        slides=slides, predictions=predictions, annotations=annotations, labels=labels, out=out,
        rules=rules, missing="missed" if score_missing else "error",
        exclude=tuple(exclude) + (CAMELYON16_TEST_EXCLUDED if camelyon16_test else ()),
    )
    result = run(config).to_dict()
    _echo_result(result, as_json=as_json, table=_print_slides)
