"""`lymph suggest`: the regions to annotate next, ranked by the model's uncertainty
(lymph.model.suggest)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("suggest")
@click.option("--maps", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None,
              help="The --out folder of `lymph predict` (S_tumor_map.tif + S_predict.json).")
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None,
              help="Instead of --maps: predict --slides with this checkpoint first (into "
              "OUT/maps).")
@click.option("--slides", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None,
              help="The slides (with --checkpoint; with --maps, for the overview thumbnails "
              "and the random strategy's tissue mask).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder: S_suggestions.geojson/.xml/.png, suggestions.csv.")
@click.option("--annotations", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None,
              help="Existing annotations (S.xml / S.geojson): likely misses near their tumor "
              "outlines, no box over reviewed regions, and the outlines copied into the "
              "suggestion files.")
@click.option("--labels", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None,
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
def suggest_cmd(maps: Path | None, checkpoint: Path | None, slides: Path | None, out: Path,
                annotations: Path | None, labels: Path | None, k: int, size: float,
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
    from lymph.model.suggest import SuggestConfig, run

    config = SuggestConfig(
        out=out, maps=maps, checkpoint=checkpoint, slides=slides,
        annotations=annotations, labels=labels, k=k, size=size,
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
