"""``lymph predict`` over many slides: discovery, the batch (in process or dask workers, one
failed slide never stops the others), scores.csv written once at the end, and
``run(PredictConfig) -> PredictResult``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

from lymph.data.cluster import TaskResult
from lymph.data.errors import ConfigError, SlideError
from lymph.model.predict.config import SCORES_CSV, PredictConfig
from lymph.model.predict.outputs import check_outputs, slide_name, update_scores
from lymph.model.predict.plan import check_memory, checkpoint_geometry
from lymph.model.predict.slide import SlidePrediction, predict_slide


@dataclass(frozen=True)
class PredictResult:
    """What ``run`` did: one TaskResult per slide, in the batch's order (``value``: the
    slide's ``SlidePrediction``; ``error``: why it failed), then one failed TaskResult per file
    discovery could not use."""

    out: Path
    tasks: tuple[TaskResult[SlidePrediction], ...]

    @property
    def predicted(self) -> list[SlidePrediction]:
        """The slides that were predicted."""
        return [t.value for t in self.tasks if t.value is not None]

    @property
    def failed(self) -> list[TaskResult[SlidePrediction]]:
        """The slides (and discovered files) that failed, each with its error."""
        return [t for t in self.tasks if t.error is not None]


def find_slides(slides: str | Path) -> tuple[list[Path], list[tuple[str, str]]]:
    """(slides, problems): a slide file (or DICOM folder) as a one-item list, or the slides of a
    folder (masks and lymph's own maps excluded), and the (source, "file: cause") of what
    discovery could not use (a dangling link, an id collision). SlideError when nothing is
    found."""
    from lymph.data.slides import discover_slides

    path = Path(slides)
    if not path.exists():
        raise SlideError(f"{path}: no such slide file or folder; check the path")
    if path.is_file():
        return [path], []
    discovery = discover_slides(path)
    found = discovery.paths
    if not found and discovery.failed():  # e.g. Tumor_002.tif beside tumor_002.tif
        raise SlideError(f"{path}: no slide can be predicted: "
                         + "; ".join(msg for _, msg in discovery.failed()[:3]))
    if not found:
        raise SlideError(f"{path}: no slides in this folder (looked for .svs, .tif, .ndpi, ...)")
    return found, discovery.failed()


def _per_slide_config(config: PredictConfig, *, progress: bool) -> PredictConfig:
    """The config each slide of a batch runs with: torch threads divided among the workers,
    progress bars only in process, scores.csv written once at the end."""
    threads = config.threads
    if threads is None and (config.workers > 1 or config.scheduler):
        threads = max(1, (os.cpu_count() or 1) // config.workers)
    single = config.workers == 1 and config.scheduler is None
    return replace(config, threads=threads, progress=progress and single, write_score=False)


def predict_slides(
    slides: Sequence[str | Path], config: PredictConfig, *, progress: bool = True
) -> list[TaskResult[SlidePrediction]]:
    """``predict_slide`` over ``slides`` through ``lymph.data.cluster.map_slides`` (in
    process, or dask workers). A slide that fails is reported in its TaskResult.error and the
    batch goes on; ``scores.csv`` gets the rows of the slides that succeeded. A slide an
    earlier run finished with this checkpoint and these settings is kept, not predicted again
    (``predict/reuse.py``; ``config.redo`` predicts it anyway). The checkpoint is checked once
    before any slide starts (CheckpointError)."""
    from lymph.data.cluster import map_slides
    from lymph.model.checkpoint import load_run_record

    record = load_run_record(config.checkpoint)
    _, patch = checkpoint_geometry(record, config.checkpoint, config.level)
    check_memory(record, config, patch)
    items = [Path(s) for s in slides]
    clash = [p for p in items if slide_name(p).casefold() == Path(SCORES_CSV).stem.casefold()]
    items = [p for p in items if p not in clash]  # the batch goes on without them
    folded = [slide_name(p).casefold() for p in items]
    shared = [p for p, n in zip(items, folded, strict=True) if folded.count(n) > 1]
    items = [p for p in items if p not in shared]  # a/x.tif beside b/x.tif: those two fail
    names = [slide_name(p) for p in items]
    manifest = check_outputs(config, names)
    kept = _finished(items, config)
    fn = partial(predict_slide, config=_per_slide_config(config, progress=progress))
    todo = [p for p in items if p not in kept]
    computed = iter(map_slides(fn, todo, workers=config.workers, scheduler=config.scheduler,
                               desc="predict", progress=progress) if todo else [])
    results = [TaskResult(item=p, value=kept[p], error=None) if p in kept else next(computed)
               for p in items]
    scores = {r.value.slide: r.value.probability for r in results if r.value is not None}
    if scores:
        update_scores(config.out, scores, manifest=manifest)
    return [*results, *_refused(clash, shared)]


def _finished(items: Sequence[Path], config: PredictConfig) -> dict[Path, SlidePrediction]:
    """The slides of `items` an earlier run finished with this checkpoint and these settings
    (their outputs unchanged), unless ``config.redo``: they are kept, not predicted again."""
    from lymph.model.predict.reuse import finished, resume_key

    if config.redo:
        return {}
    key = resume_key(config)
    kept = {p: finished(p, config.out / f"{slide_name(p)}_predict.json", key) for p in items}
    return {p: r for p, r in kept.items() if r is not None}


def _refused(clash: list[Path], shared: list[Path]) -> list[TaskResult[SlidePrediction]]:
    """Failed TaskResults for slides whose outputs would collide: with predict's own
    scores.csv, or with another slide's (the rest of the batch goes on)."""
    out: list[TaskResult[SlidePrediction]] = [TaskResult(item=p, value=None, error=(
        f"{p}: a slide named {slide_name(p)!r} would write its detections over predict's own "
        f"{SCORES_CSV}; rename the slide file")) for p in clash]
    for p in shared:
        key = slide_name(p).casefold()
        others = [str(q) for q in shared if q != p and slide_name(q).casefold() == key]
        out.append(TaskResult(item=p, value=None, error=(
            f"{p}: shares its output name {slide_name(p)!r} with {others}; the outputs would "
            "overwrite each other: predict them into separate --out folders, or rename one")))
    return out


def run(config: PredictConfig) -> PredictResult:
    """``lymph predict``: every slide of ``config.slides`` (a file or a folder) into
    ``config.out``; the result holds one TaskResult per slide (see ``predict_slides``), then one
    failed TaskResult per file discovery could not use."""
    if config.slides is None:
        raise ConfigError("PredictConfig.slides is not set: pass --slides (a slide or a folder)")
    from lymph.data.lock import run_folder_lock
    from lymph.data.store import enclosing_store

    store = enclosing_store(Path(config.out).absolute())
    if store is not None:
        raise ConfigError(f"--out {config.out} is inside the patch store {store}: predict's maps "
                          "would be mixed into the store; choose a folder outside it")
    found, problems = find_slides(config.slides)
    from lymph.data.io import MANIFEST_NAME, remove_idle_locks

    with run_folder_lock(config.out, what="this predict folder"):
        results = predict_slides(found, config, progress=config.progress)
        # every worker is done and no other run can be here: the per-file locks go
        remove_idle_locks(config.out, (f".{SCORES_CSV}.lock", f"{MANIFEST_NAME}.lock"))
    # what discovery could not use is a failed slide of the batch, listed with the others
    return PredictResult(out=config.out, tasks=(
        *results, *(TaskResult(item=src, value=None, error=msg) for src, msg in problems)))

