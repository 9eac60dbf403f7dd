"""What predict writes for slide ``S`` in ``out``, and the bookkeeping that keeps it safe:
``S_tumor_map.tif`` (pyramidal uint8 0-255, mpp = slide mpp x map_downsample),
``S_overlay.png``, ``S.csv`` / ``S.geojson`` / ``S.xml`` (detections, ``exports.py``),
``S_predict.json`` (settings and result), and ``S``'s row in ``scores.csv``; every file written
atomically and recorded in ``out``'s ``OutputManifest`` (a file lymph did not write is never
overwritten without ``force``).
"""

from __future__ import annotations

import contextlib
import csv
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lymph.data.io import OutputManifest
from lymph.model.overlay import draw_overlay, overlay_title, truth_on_thumb
from lymph.model.precision import describe as describe_precision
from lymph.model.predict.config import SCORES_CSV, SMOOTH_SIGMA_PX, PredictConfig
from lymph.model.predict.exports import write_asap_xml, write_camelyon_csv, write_geojson
from lymph.model.predict.grid import Grid

if TYPE_CHECKING:
    from lymph.model.predict.detect import SlideMaps
    from lymph.model.predict.plan import LoadedModel, TilePlan
    from lymph.model.predict.slide import SlidePrediction


def slide_name(slide_path: Path) -> str:
    """``S`` of the output files: the slide's id (``lymph.data.slides.slide_id``)."""
    from lymph.data.slides import slide_id

    return slide_id(slide_path)


def output_paths(out_dir: Path, name: str) -> dict[str, Path]:
    """Every file ``predict_slide`` writes for slide ``name`` (scores.csv aside)."""
    return {
        "map": out_dir / f"{name}_tumor_map.tif",
        "overlay": out_dir / f"{name}_overlay.png",
        "csv": out_dir / f"{name}.csv",
        "geojson": out_dir / f"{name}.geojson",
        "xml": out_dir / f"{name}.xml",
        "meta": out_dir / f"{name}_predict.json",
    }


def check_outputs(config: PredictConfig, names: Sequence[str]) -> OutputManifest:
    """The manifest of ``config.out``, after checking that ``--out`` is writable and that
    nothing the slides ``names`` would write there (and scores.csv) is a file lymph did not
    write (OutputError naming it, unless ``config.force``)."""
    manifest = OutputManifest(config.out, force=config.force)
    manifest.ensure_writable()
    paths = [p for n in names for p in output_paths(config.out, n).values()]
    manifest.check(*paths, config.out / SCORES_CSV)
    return manifest


def update_scores(
    out_dir: Path, scores: dict[str, float], *, manifest: OutputManifest | None = None
) -> Path:
    """Merge ``{slide: probability}`` into ``out_dir/scores.csv`` (header ``slide,probability``,
    rows sorted by slide; other slides' rows kept), atomically and under a lock; with a
    ``manifest``, only a scores.csv lymph wrote is merged into (OutputError otherwise)."""
    import io

    from lymph.data.io import atomic_write_text, file_lock

    out_dir = Path(out_dir)
    path = out_dir / SCORES_CSV
    writing = manifest.writing(path) if manifest is not None else contextlib.nullcontext(path)
    with file_lock(out_dir / f".{SCORES_CSV}.lock"), writing:
        rows: dict[str, str] = {}
        if path.is_file():
            with path.open(newline="") as fh:
                for row in csv.reader(fh):
                    if len(row) >= 2 and row[0] != "slide":
                        rows[row[0]] = row[1]
        rows.update({k: f"{v:.6f}" for k, v in scores.items()})
        buf = io.StringIO(newline="")
        writer = csv.writer(buf)
        writer.writerow(["slide", "probability"])
        for name in sorted(rows):
            writer.writerow([name, rows[name]])
        atomic_write_text(path, buf.getvalue())
    return path


def _write_map(path: Path, prob_map: np.ndarray, grid: Grid, mpp: float | None) -> None:
    from lymph.data.pyramid import write_pyramidal_tiff

    tile = 256

    def rows(i: int) -> np.ndarray:
        return prob_map[i * tile : (i + 1) * tile]

    write_pyramidal_tiff(path, rows, width=grid.map_width, height=grid.map_height, channels=1,
                         tile=tile, compression="deflate",
                         mpp=mpp * grid.map_downsample if mpp else None, min_size=512)


def export_slide(plan: TilePlan, maps: SlideMaps, config: PredictConfig,
                 timings: dict[str, float], *, slide_path: Path | None = None
                 ) -> dict[str, Path]:
    """The map TIFF, detections (CSV, GeoJSON, XML), overlay and, with ``write_score``, the
    slide's row in scores.csv; every file written atomically. Returns the paths by kind."""
    out_dir, name = config.out, plan.name
    paths = output_paths(out_dir, name)
    manifest = OutputManifest(out_dir, force=config.force)
    t0 = time.perf_counter()
    with manifest.writing(paths["map"]):
        _write_map(paths["map"], maps.prob_map, plan.grid, plan.mpp)
    timings["write_map"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    with manifest.writing(paths["csv"]):
        write_camelyon_csv(paths["csv"], maps.detections)
    with manifest.writing(paths["geojson"]):
        write_geojson(paths["geojson"], maps.detections, slide=name)
    with manifest.writing(paths["xml"]):
        write_asap_xml(paths["xml"], maps.detections)
    with manifest.writing(paths["overlay"]):
        truth = truth_on_thumb(slide_path, shape=plan.thumb.shape[:2],
                               thumb_downsample=plan.thumb_downsample)
        draw_overlay(plan.thumb, maps.prob_map, paths["overlay"], truth=truth,
                     title=overlay_title(name, maps, config.threshold))
    if config.write_score:
        update_scores(out_dir, {name: maps.probability}, manifest=manifest)
    timings["write_outputs"] = time.perf_counter() - t0
    return paths


def write_meta(path: Path, *, reader_path: Path, plan: TilePlan, loaded: LoadedModel,
                config: PredictConfig, result: SlidePrediction) -> None:
    from lymph.data.identity import file_identity
    from lymph.data.io import atomic_write_json
    from lymph.model.predict.plan import resolve_threads  # plan names slides by slide_name
    from lymph.model.predict.reuse import output_states, resume_key

    manifest = OutputManifest(config.out, force=config.force)

    grid = plan.grid
    meta = {
        "slide": str(reader_path),
        "checkpoint": str(config.checkpoint.resolve()),  # absolute: the file outlives the cwd
        "checkpoint_step": loaded.step,
        "settings": {
            "level": loaded.level,
            "level_downsample": grid.level_downsample,
            "window": grid.window,
            "stride": grid.stride,
            "cell": grid.cell,
            "map_downsample": grid.map_downsample,
            "threshold": config.threshold,
            "tta": config.tta,
            "batch_size": config.batch_size,
            "device": str(loaded.device),
            "thumb_size": config.thumb_size,
            "overlap": "half" if grid.mode == "blend" else "margin",
            "margin": grid.margin,
            "channels_last": config.channels_last,
            "threads": resolve_threads(config, loaded.device),
            "precision": config.precision,
            **describe_precision(config.precision, loaded.device),
            "slide_score": f"max of the map after a Gaussian blur of sigma {SMOOTH_SIGMA_PX} px",
        },
        "mpp": plan.mpp,
        "result": result.to_dict(),
        "source_identity": file_identity(reader_path) if Path(reader_path).exists() else None,
        "resume_key": resume_key(config),
        "outputs": output_states(result, manifest),  # as written: reused only unchanged
    }
    with manifest.writing(path):
        atomic_write_json(path, meta, indent=2, sort_keys=False)

