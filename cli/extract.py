"""`lymph extract`: class-balanced patches from every slide into a Zarr store
(lymph.pipeline.extract)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from lymph.pipeline.extract import ExtractSummary


def _print_summary(summary: ExtractSummary) -> None:
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


@click.command("extract")
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

    config = ExtractConfig(
        slides=slides_dir, out=out, annotations=annotations_dir, labels=labels_csv,
        patch_size=patch_size, level=level, patches_per_slide=patches_per_slide, seed=seed,
        workers=workers, scheduler=scheduler, thumb_size=thumb_size, progress=not quiet,
        threads=threads)
    summary = run(config)
    if as_json:
        click.echo(json.dumps(summary.to_dict(), indent=2))
    else:
        _print_summary(summary)
    if summary.failed:
        raise SystemExit(1)
