"""`lymph synth`: a synthetic CAMELYON16-like slide set (lymph.data.synth)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from lymph.data.synth import SynthSlide


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


def _check_writable(out: Path) -> None:
    """Create --out and write a probe file into it: a BadParameter naming the folder if not."""
    import os

    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".lymph-write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise click.BadParameter(
            f"cannot write into {out} ({exc.strerror or exc}); choose a writable folder",
            param_hint="--out",
        ) from None


def _print_slides(slides: Sequence[SynthSlide], out: Path) -> None:
    click.echo(f"{'slide':<12} {'status':<7} {'size':>13} {'MB':>7} {'lesions':>7}  largest  files")
    for s in slides:
        mb = s.path.stat().st_size / 1e6
        extra = ", ".join(p.name for p in (s.xml, s.mask) if p is not None)
        click.echo(
            f"{s.name:<12} {s.status:<7} {s.dimensions[0]:>6}x{s.dimensions[1]:<6} {mb:>7.1f} "
            f"{len(s.lesions):>7}  {s.largest or '-':<7}  {s.path.name}"
            + (f", {extra}" if extra else "")
        )
    kept = sum(s.kept for s in slides)
    click.echo(f"wrote {len(slides) - kept} slides, reference.csv and synth.json to {out}"
               + (f"; kept {kept} slide(s) an earlier run with these settings finished"
                  if kept else ""))


@click.command("synth")
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
              type=click.Choice(["auto", "mixed", "A", "B", "C"]),
              help="camelyon world: the scanning centre (stain, sharpness, JPEG quality, which "
                   "replaces --quality); auto: one drawn from the seed for the whole world; "
                   "mixed: one drawn per slide.")
@click.option("--force", is_flag=True,
              help="Overwrite files in --out that lymph did not write (by default such a "
              "file, e.g. a real slide named tumor_001.tif, stops the run before any work).")
def synth_cmd(out: Path, n_tumor: int, n_normal: int, size: tuple[int, int], seed: int,
              fmt: str, mpp: float, quality: int, workers: int, prefix: str, world: str,
              centre: str, force: bool) -> None:
    """Make a synthetic CAMELYON16-like slide set: pyramidal slides OpenSlide opens, ASAP XML
    and mask TIFFs for tumor slides, and reference.csv.

    \b
    Example:
      lymph synth --out slides/ --tumor 3 --normal 2 --size 12000x9000 --seed 0
    """
    from lymph.data.synth import SynthConfig, run

    config = SynthConfig(out=out, n_tumor=n_tumor, n_normal=n_normal, size=size, seed=seed,
                         fmt=fmt, mpp=mpp, quality=quality, workers=workers, prefix=prefix,
                         world=world, centre=centre, progress=True, force=force)
    _check_writable(out)
    slides = run(config).slides
    _print_slides(slides, out)
