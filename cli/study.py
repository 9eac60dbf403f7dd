"""`lymph study`: does reconstruction pretraining help at few labels? Folds x repeats x
conditions, one verdict on the declared endpoint (lymph.model.study)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from lymph.cli.common import device_option, echo_files, precision_option


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


@click.command("study")
@click.option("--store", required=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The labeled store: tumor/normal slides with masks from `lymph extract`.")
@click.option("--pretrained", required=True, multiple=True,
              help="A pretraining checkpoint made on a SEPARATE store, as PATH or NAME=PATH "
                   "(e.g. identity=runs/pre/last.pt); repeat to compare pretexts in one run, "
                   "or give one NAME several checkpoints (pretraining seeds: repeat r uses "
                   "checkpoint r mod n).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Study folder: results.csv, table.md, f1_vs_size.png, runs/ (resumable).")
@click.option("--profile", type=click.Choice(["quick", "standard"]), default=None,
              help="quick: the demo (illustrates, does not test); standard: 5 folds x 2 "
                   "repeats (`make study`; its time: README, study section). Options given "
                   "override the profile's values; the defaults below read quick / standard / "
                   "none.")
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
@click.option("--min-steps", type=click.IntRange(min=0), default=None,
              help="Early stopping never ends a run before this step [default: 0 / 800 / 0].")
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
              default=10.9, show_default=True,
              help="Paired ΔF1 sd in pp for the protocol's power line (the default: the c4 "
                   "standard study's observed sd at 40 labels, bench/results/study_c4.md).")
def study_cmd(store: Path, pretrained: tuple[str, ...], out: Path, conditions: tuple[str, ...],
              margin: float, pilot_sd: float, **options: Any) -> None:
    """Does reconstruction pretraining help at few labels? The paper's Figure 3, made to answer.

    \b
    Folds grouped by slide x repeats; per pair every condition (a scratch run per fine-tuning
    loss, seg_only, one pretrained_<name> per --pretrained name; repeat a name for several
    pretraining seeds) fine-tunes on the same labeled subset, stops and picks its threshold on
    inner-validation slides and is scored on every test patch. table.md declares the primary
    endpoint (ΔF1 at 40 labels) before any run and gives it the one verdict (helps / hurts /
    equivalent / inconclusive, >= 10 pairs); the rest are estimates with Holm-adjusted p. A
    rerun with the same --out resumes; protocol changes are listed as deviations.
      lymph study --store lab.zarr --pretrained identity=runs/pre/last.pt --out study/ \\
                  --profile quick
    """
    from lymph.model.study import StudyConfig, parse_pretrained, run

    config = StudyConfig(
        store=store, pretrained=parse_pretrained(pretrained), out=out,
        conditions=conditions or None, margin=margin / 100, pilot_sd=pilot_sd / 100, **options,
    )
    result = run(config)
    click.echo(f"{result.ran} run(s) done now, {result.skipped} reused from {out}")
    click.echo(result.files["table.md"].read_text())
    echo_files(dict(result.files))
