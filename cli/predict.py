"""`lymph predict`: whole-slide tumor maps, lesion detections and slide scores
(lymph.model.predict)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from lymph.cli.common import device_option, precision_option

if TYPE_CHECKING:
    from lymph.data.cluster import TaskResult


def _print_results(results: Sequence[TaskResult[Any]], out: Path) -> None:
    ok = [r.value for r in results if r.value is not None]
    failed = [r for r in results if r.error is not None]
    kept = [r for r in ok if r.reused]
    click.echo(f"{len(ok)} of {len(results)} slide(s) predicted into {out}"
               + (f" ({len(kept)} kept from an earlier run with this checkpoint and these "
                  "settings; --redo predicts them again)" if kept else ""))
    for r in ok:
        if r.reused:
            click.echo(f"  {r.slide:<24} p={r.probability:.3f}  {r.n_detections:>4} "
                       "detection(s)  kept (finished earlier, outputs unchanged)")
            continue
        t = r.timings
        click.echo(
            f"  {r.slide:<24} p={r.probability:.3f}  {r.n_detections:>4} detection(s)  "
            f"{r.n_windows}/{r.n_windows_total} windows  "
            f"{r.tissue_mpx:.1f}/{r.slide_tissue_mpx:.1f} Mpx tissue inferred "
            f"({r.inferred_mpx / max(r.tissue_mpx, 1e-9):.2f} px per tissue px)  "
            f"{r.seconds:.1f} s (model {t.get('model', 0):.1f}, read {t.get('read', 0):.1f})"
        )
        if r.scale:
            click.echo(f"    scale: {r.scale}")
    for r in failed:
        click.echo(f"  FAILED {r.error}", err=True)
    if ok:
        click.echo(f"scores: {out / 'scores.csv'}")
    if failed:
        raise SystemExit(1)


@click.command("predict")
@click.option("--slides", required=True, type=click.Path(exists=True, path_type=Path),
              help="A slide file, or a folder of slides (masks are skipped).")
@click.option("--checkpoint", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A fine-tuned checkpoint from `lymph train` (best.pt or last.pt).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
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
@click.option("--redo", is_flag=True,
              help="Predict every slide again (by default a rerun keeps the slides an earlier "
              "run finished with the same checkpoint and settings, outputs unchanged).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def predict_cmd(slides: Path, checkpoint: Path, out: Path, level: int | None, mpp: float | None,
                window: int | None,
                overlap: str, margin: int | None, stride: int | None, tta: bool,
                batch_size: int, device: str, precision: str,
                map_downsample: float, threshold: float, workers: int, scheduler: str | None,
                threads: int | None, read_threads: int | None, force: bool, redo: bool,
                quiet: bool) -> None:
    """Whole-slide tumor maps, lesion detections and slide scores.

    \b
      lymph predict --slides slides/ --checkpoint runs/ft/best.pt --out maps/
      lymph predict --slides slides/tumor_001.tif --checkpoint best.pt --out maps/ --tta
      lymph eval slides --slides slides/ --predictions maps/ --out maps/eval  # FROC, AUC

    \b
    The map (S_tumor_map.tif, uint8 0-255 probability) opens in QuPath, ASAP or OpenSlide;
    S.geojson imports into QuPath (File > Import objects), S.xml into ASAP; S.csv and
    scores.csv are in the CAMELYON16 submission form.
    """
    from lymph.model.predict import PredictConfig, run

    config = PredictConfig(
        checkpoint=checkpoint, out=out, slides=slides, level=level, mpp=mpp, window=window,
        stride=stride, overlap=overlap, margin=margin, tta=tta,
        batch_size=batch_size, device=device, precision=precision,
        map_downsample=map_downsample, threshold=threshold, workers=workers,
        scheduler=scheduler, threads=threads, read_threads=read_threads, progress=not quiet,
        force=force, redo=redo,
    )
    _print_results(run(config).tasks, out)
