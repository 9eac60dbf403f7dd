"""One slide, end to end: plan tiles -> infer -> post-process -> export, and what it measured
(``SlidePrediction``).

Peak RSS on a 100,000 x 100,000 slide: see bench/bench_predict.py.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from lymph.data.errors import ConfigError
from lymph.model.predict.config import PredictConfig
from lymph.model.predict.detect import SlideMaps, postprocess
from lymph.model.predict.grid import tissue_area_mpx
from lymph.model.predict.outputs import check_outputs, export_slide, slide_name, write_meta
from lymph.model.predict.pipeline import infer_map
from lymph.model.predict.plan import (
    LoadedModel,
    TilePlan,
    batch_windows,
    load_for_predict,
    plan_slide,
    resolve_read_threads,
    resolve_threads,
)
from lymph.model.scale import scale_for_predict

if TYPE_CHECKING:
    from lymph.data.slides import SlideReader


@dataclass(frozen=True)
class SlidePrediction:
    """What ``predict_slide`` wrote and measured for one slide."""

    slide: str
    path: Path
    probability: float
    n_detections: int
    map_path: Path
    overlay_path: Path
    csv_path: Path
    geojson_path: Path
    xml_path: Path
    map_downsample: float
    map_size: tuple[int, int]  # (width, height)
    level: int
    window: int
    stride: int
    n_windows: int  # windows inferred (at full resolution)
    n_tissue_windows: int  # windows holding tissue (more than n_windows only with max_windows)
    n_windows_total: int  # windows of the whole level
    tissue_mpx: float  # level-0 Mpx of tissue under the inferred windows' stride cells
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    overlap: str = "half"  # "half": Hann-blended windows; "margin": centre-cropped tiles
    margin: int = 0  # level px cut off each side of a tile (overlap "margin")
    scale: str = ""  # the level or resampling chosen for the training mpp (model/scale.py)
    slide_tissue_mpx: float = 0.0  # level-0 Mpx of the slide's whole thumbnail tissue mask
    inferred_mpx: float = 0.0  # level-0 Mpx given to the model (trimmed tiles count their part)
    reused: bool = False  # outputs of an earlier run with the same settings (predict/reuse.py)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, Path):
                d[k] = str(v)
        return d


def _result(plan: TilePlan, maps: SlideMaps, paths: dict[str, Path], *, reader_path: Path,
            level: int, seconds: float, timings: dict[str, float]) -> SlidePrediction:
    grid = plan.grid
    return SlidePrediction(
        slide=plan.name,
        path=reader_path,
        probability=maps.probability,
        n_detections=len(maps.detections),
        map_path=paths["map"],
        overlay_path=paths["overlay"],
        csv_path=paths["csv"],
        geojson_path=paths["geojson"],
        xml_path=paths["xml"],
        map_downsample=grid.map_downsample,
        map_size=(grid.map_width, grid.map_height),
        level=level,
        window=grid.window,
        stride=grid.stride,
        n_windows=len(plan.origins),
        n_tissue_windows=plan.n_tissue_windows,
        n_windows_total=len(grid.xs_lvl) * len(grid.ys_lvl),
        tissue_mpx=tissue_area_mpx(grid, plan.origins, plan.tissue, plan.thumb_downsample),
        seconds=seconds,
        timings={k: round(v, 4) for k, v in timings.items()},
        overlap="half" if grid.mode == "blend" else "margin",
        margin=grid.margin,
        slide_tissue_mpx=float(np.count_nonzero(plan.tissue)) * plan.thumb_downsample**2 / 1e6,
        inferred_mpx=plan.inferred_mpx,
    )


@contextlib.contextmanager
def _reader(slide: str | Path | SlideReader) -> Iterator[SlideReader]:
    """An open reader for a path (closed after), or the given SlideReader as it is."""
    from lymph.data.slides import open_slide

    if isinstance(slide, str | os.PathLike):
        with open_slide(slide) as reader:
            # an OpenSlideReader is a SlideReader (its attributes' annotations are looser)
            yield cast("SlideReader", reader)
    else:
        yield slide


def infer_slide(reader: SlideReader, loaded: LoadedModel, plan: TilePlan, config: PredictConfig,
                timings: dict[str, float]) -> np.ndarray:
    """The raw map of one slide (before tissue masking): every window of the plan."""
    return infer_map(
        reader, loaded.model, plan.grid, plan.origins, device=loaded.device,
        batch_size=batch_windows(config, plan.grid, loaded), tta=config.tta,
        progress=config.progress, timings=timings,
        read_threads=resolve_read_threads(config, loaded.device),
        channels_last=config.channels_last, precision=config.precision, rects=plan.rects,
    )


def predict_slide(slide: str | Path | SlideReader, config: PredictConfig) -> SlidePrediction:
    """Tumor map, overlay, detections (CSV, GeoJSON, XML) and slide score of one slide.

    ``slide``: a slide path (opened with OpenSlide) or any ``lymph.data.slides.SlideReader``
    (e.g. an in-memory ``ArraySlide``). Plan tiles -> infer -> post-process -> export; torch
    runs with ``config.threads`` CPU threads (restored after). SlideError when the slide cannot
    be opened or read; CheckpointError for a bad checkpoint; ConfigError for a slide level the
    slide lacks or an ``--out`` that is the slide's own folder.
    """
    import torch

    from lymph.model.threads import torch_threads  # the one owner of torch threads

    t_start = time.perf_counter()
    out_dir = config.out
    if isinstance(slide, str | os.PathLike) and out_dir.resolve() == Path(slide).resolve().parent:
        raise ConfigError(
            f"--out {out_dir} is the folder of {Path(slide).name}: S.xml there would overwrite "
            "the slide's annotations; write predictions to another folder"
        )
    loaded = load_for_predict(config)
    timings: dict[str, float] = {}
    with _reader(slide) as reader:
        check_outputs(config, [slide_name(Path(reader.path))])
        reader, loaded, scale = scale_for_predict(reader, loaded, config)
        t0 = time.perf_counter()
        plan = plan_slide(reader, config, loaded)
        timings["tissue"] = time.perf_counter() - t0
        with torch.inference_mode(), torch_threads(resolve_threads(config, loaded.device)):
            prob_map = infer_slide(reader, loaded, plan, config, timings)
        maps = postprocess(prob_map, plan, threshold=config.threshold)
        reader_path = Path(reader.path)
    paths = export_slide(plan, maps, config, timings, slide_path=reader_path)
    result = _result(plan, maps, paths, reader_path=reader_path, level=loaded.level,
                     seconds=time.perf_counter() - t_start, timings=timings)
    result = replace(result, scale=scale)
    write_meta(paths["meta"], reader_path=reader_path, plan=plan, loaded=loaded,
                config=config, result=result)
    return result

