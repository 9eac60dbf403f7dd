"""`lymph view`: slides, tumor maps, detections and ground truth in the browser
(lymph.model.view)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("view")
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

    config = ViewConfig(slides=slides, predictions=predictions, annotations=annotations,
                        labels=labels, suggestions=suggestions, host=host, port=port,
                        export=export, cache_mb=cache_mb, workers=workers, quiet=quiet)
    run(config)
