"""`lymph extract`: class-balanced random patches (with pixel masks) from every slide in a folder
into the Zarr patch store, one task per slide, resumable and distributable.

Per slide: open it (never whole), detect tissue on a thumbnail, find its annotations, draw the
classes and centres (`sampling`), then read patches in store order, rasterize each patch's mask
at the patch's own resolution, and stream 64-patch chunks into the slide's group, which is marked
`complete` last. A rerun skips complete slides and redoes partial ones.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lymph.data import store as store_mod
from lymph.data.annotations import (
    Annotations,
    check_inside,
    find_annotations,
    read_annotations,
    read_labels_csv,
)
from lymph.data.errors import ConfigError, NoTissueError, SlideError
from lymph.data.io import as_paths
from lymph.data.partial import is_partial
from lymph.data.partial import patch_mask as partial_mask
from lymph.data.polygon_index import gc_paused, index_for
from lymph.data.slides import SlideReader, discover_slides, open_slide, slide_id
from lymph.data.tissue import dilate, tissue_mask
from lymph.pipeline import partial as partial_mod
from lymph.pipeline.mask_source import MaskSource
from lymph.pipeline.overlap import PatchPipeline, default_threads
from lymph.pipeline.sampling import (
    PatchGeometry,
    TumorMaps,
    plan_classes,
    sample_top_left,
    slide_rng,
    tumor_capacity,
)

SAMPLER_VERSION = 1
"""Bumped whenever the draw changes for the same settings; recorded so that stores mix never."""

MAX_PATCHES_PER_SLIDE = 100_000
"""Refused above this, up front: a 100,000 x 100,000 px slide holds about 111,000
non-overlapping 300 px patches, so more are near-duplicates, and the draw's memory grows with
the number asked (200,000,000 was OOM-killed after 108 s)."""


@dataclass(frozen=True)
class ExtractConfig:
    slides: Path
    out: Path
    annotations: Path | None = None
    labels: Path | None = None
    patch_size: int = 300
    level: int = 0
    patches_per_slide: int = 200
    seed: int = 0
    workers: int = 1
    scheduler: str | None = None
    thumb_size: int = 2048
    progress: bool = True
    direct_tiles: bool = True  # TIFF tiles decoded directly when identical to OpenSlide's
    threads: int | None = None  # decode threads per worker (+1 writer); None: CPUs / workers

    def __post_init__(self) -> None:
        as_paths(self, ("slides", "out", "annotations", "labels"))
        if not 16 <= self.patch_size <= 4096:
            raise ConfigError(f"patch_size {self.patch_size} out of range 16..4096; the paper "
                              "uses --patch-size 300")
        if self.level < 0:
            raise ConfigError(f"level {self.level} must be >= 0 (0 is full resolution)")
        if not 1 <= self.patches_per_slide <= MAX_PATCHES_PER_SLIDE:
            raise ConfigError(f"patches_per_slide {self.patches_per_slide} out of range "
                              f"1..{MAX_PATCHES_PER_SLIDE:,} (a 100,000 px square slide holds "
                              "about 111,000 non-overlapping 300 px patches); ask for fewer")
        if self.seed < 0:
            raise ConfigError(f"seed {self.seed} must be >= 0")
        if self.workers < 1:
            raise ConfigError(f"workers {self.workers} must be >= 1")
        t = self.threads
        if t is not None and (isinstance(t, bool) or not isinstance(t, int) or t < 1):
            raise ConfigError(f"threads {t!r} must be an integer >= 1 (decode threads per "
                              "worker); e.g. --threads 2")
        if self.scheduler is not None and self.workers != 1:
            raise ConfigError("give either --workers K (a local cluster) or --scheduler ADDRESS "
                              "(an existing cluster), not both")
        if not 64 <= self.thumb_size <= 16384:
            raise ConfigError(f"thumb_size {self.thumb_size} out of range 64..16384")

    def check_paths(self) -> None:
        """The folders exist (checked by `run`, not at construction: a config touches no file)."""
        if not self.slides.is_dir():
            raise ConfigError(f"--slides {self.slides}: not a folder; pass the folder of slides")
        if self.annotations is not None and not self.annotations.is_dir():
            raise ConfigError(f"--annotations {self.annotations}: not a folder")

    def settings(self) -> dict[str, Any]:
        """Every setting that shapes the store's content, as recorded in attrs['lymph']."""
        return {
            "patch_size": self.patch_size,
            "level": self.level,
            "seed": self.seed,
            "patches_per_slide": self.patches_per_slide,
            "thumb_size": self.thumb_size,
            "chunk_patches": store_mod.CHUNK_PATCHES,
            "sampler_version": SAMPLER_VERSION,
            "slides_dir": str(self.slides.resolve()),
            "annotations_dir": None if self.annotations is None else str(
                self.annotations.resolve()),
            "labels_csv": None if self.labels is None else str(self.labels.resolve()),
            "workers": self.workers,
            "scheduler": self.scheduler,
            "direct_tiles": self.direct_tiles,
        }


@dataclass(frozen=True)
class SlideResult:
    slide_id: str
    source: str
    status: str
    n_patches: int
    n_tumor: int
    seconds: float
    skipped: bool = False
    tissue_fraction: float | None = None
    warnings: tuple[str, ...] = ()
    cpu_seconds: float = 0.0  # CPU time of the process that extracted it


@dataclass(frozen=True)
class ExtractSummary:
    store: Path
    done: tuple[SlideResult, ...]
    skipped: tuple[SlideResult, ...]
    failed: tuple[tuple[str, str], ...]  # (source, "file: cause")
    seconds: float

    @property
    def n_patches(self) -> int:
        return sum(r.n_patches for r in self.done)

    @property
    def n_tumor(self) -> int:
        return sum(r.n_tumor for r in self.done)

    @property
    def patches_per_second(self) -> float:
        return self.n_patches / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "store": str(self.store), "seconds": self.seconds,
            "patches": self.n_patches, "tumor_patches": self.n_tumor,
            "patches_per_second": self.patches_per_second,
            "done": [asdict(r) for r in self.done], "skipped": [asdict(r) for r in self.skipped],
            "failed": [{"source": s, "error": e} for s, e in self.failed],
        }


# --- labels ---------------------------------------------------------------------------------


def slide_status(name: str, *, has_annotations: bool, labels: Mapping[str, bool] | None
                 ) -> tuple[str, str | None]:
    """(status, reference label from the CSV or None)."""
    stem = slide_id(name).lower()
    flag = labels.get(name) if labels else None
    ref = None if flag is None else "tumor" if flag else "normal"
    if has_annotations:
        return "tumor", ref
    if ref == "normal" or stem.startswith("normal"):
        return "normal", ref
    return "unlabeled", ref


# --- one slide ------------------------------------------------------------------------------


# --- the plan: numpy in, numpy out -----------------------------------------------------------


@dataclass(frozen=True)
class PatchPlan:
    """The patches of one slide in store order: level-0 top-left corners and drawn classes."""

    top_left: np.ndarray  # int64 (n, 2)
    classes: np.ndarray  # bool (n,), True = tumor
    requested: int
    tumor_capacity: int
    notes: tuple[str, ...] = ()  # shortfalls, reported as warnings

    def __len__(self) -> int:
        return len(self.classes)


def plan_patches(rng: np.random.Generator, *, n: int, tissue: np.ndarray, tumor: TumorMaps,
                 thumb_downsample: float, geometry: PatchGeometry, status: str) -> PatchPlan:
    """Draw the classes, then the centres of each class (see `sampling`); a class short of
    usable area gives its draws to the other (tumor -> non-tumor) or drops them (non-tumor)."""
    normal_cand = tissue & ~tumor.core
    if tumor.normal_region is not None:
        normal_cand &= tumor.normal_region
    capacity = tumor_capacity(tumor.area_level0, geometry) if tumor.candidates.any() else 0
    classes = plan_classes(rng, n, tumor_capacity=capacity,
                           normal_available=bool(normal_cand.any()))
    want_tumor = int(classes.sum())
    tl_tumor = sample_top_left(rng, tumor.candidates, want_tumor,
                               thumb_downsample=thumb_downsample, geometry=geometry,
                               accept=tumor.accept)
    if len(tl_tumor) < want_tumor:  # the last tumor draws become non-tumor
        idx = np.flatnonzero(classes)
        classes[idx[len(tl_tumor):]] = False
    want_normal = int((~classes).sum())
    tl_normal = sample_top_left(rng, normal_cand, want_normal, thumb_downsample=thumb_downsample,
                                geometry=geometry,
                                accept=tumor.normal_accept or (lambda c: ~tumor.accept(c)))
    if len(tl_normal) < want_normal:  # drop the last non-tumor draws: take what exists
        idx = np.flatnonzero(~classes)
        keep = np.ones(n, bool)
        keep[idx[len(tl_normal):]] = False
        classes = classes[keep]
    top_left = np.empty((len(classes), 2), np.int64)
    top_left[classes] = tl_tumor
    top_left[~classes] = tl_normal
    notes = []
    if status == "tumor" and capacity < n and want_tumor >= capacity:  # the cap bound the draw
        notes.append(f"tumor area {tumor.area_level0:.0f} px allows at most {capacity} tumor "
                     f"patches: {capacity} drawn, the other draws are non-tumor")
    if len(classes) < n:
        notes.append(f"only {len(classes)} of {n} patches fit in the tissue")
    return PatchPlan(top_left, classes, n, capacity, tuple(notes))


def _tumor_maps(ann: Annotations | None, mask_src: MaskSource | None, *,
                shape: tuple[int, ...], thumb_downsample: float, thumb_size: int) -> TumorMaps:
    if mask_src is not None:
        cand = mask_src.thumb(shape, thumb_size)
        core = cand.copy()
        area = float(cand.sum()) * thumb_downsample ** 2
        return TumorMaps(dilate(cand, 1) if cand.any() else cand, core, area, mask_src.contains)
    if ann:  # through the spatial index: 100,000 polygons cost about as much as 100
        index = index_for(ann)
        core = index.rasterize(x_level0=0, y_level0=0, width=shape[1], height=shape[0],
                               downsample=thumb_downsample).astype(bool)
        cand = index.coverage_thumb(core, downsample=thumb_downsample)
        return TumorMaps(cand, core, index.tumor_area(), index.contains)
    return TumorMaps.empty(shape)


def extract_slide(slide: Path | SlideReader, *, slide_id: str, config: ExtractConfig,
                  labels: Mapping[str, bool] | None = None, name: str | None = None,
                  annotations: Annotations | None = None,
                  on_patches: Callable[[int], None] | None = None) -> SlideResult:
    """Extract one slide (a path, or an open `SlideReader` such as an in-memory `ArraySlide`)
    into `config.out` (which must exist). Skips it if already complete. `annotations` replaces
    the lookup of annotation files beside the slide."""
    t0, c0 = time.perf_counter(), time.process_time()
    path = Path(slide) if isinstance(slide, str | os.PathLike) else Path(slide.path)
    out = config.out
    complete, replaced = _done_before(out, slide_id, path)
    if complete and replaced is None:
        return _skipped(out, slide_id, path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if replaced is not None:
            warnings.warn(f"{path}: {replaced}; extracted again", stacklevel=2)
        with contextlib.ExitStack() as stack:
            reader = (stack.enter_context(open_slide(path, direct_tiles=config.direct_tiles))
                      if isinstance(slide, str | os.PathLike) else slide)
            return _extract_open_slide(reader, path=path, slide_id=slide_id, config=config,
                                       labels=labels, name=name or path.name,
                                       annotations=annotations, on_patches=on_patches,
                                       caught=caught, t0=t0, c0=c0, stack=stack)


def _skipped(out: Path, slide_id: str, path: Path) -> SlideResult:
    """The result of a slide already complete in the store, from its attributes."""
    a = store_mod.slide_attrs(out, slide_id)
    return SlideResult(slide_id, str(path), a.get("status", "?"), int(a.get("n_patches", 0)),
                       int(a.get("n_tumor", 0)), 0.0, skipped=True,
                       tissue_fraction=a.get("tissue_fraction"))


def _done_before(out: Path, slide_id: str, path: Path) -> tuple[bool, str | None]:
    """(complete, replaced): whether the slide is complete in the store, and if so what
    changed in its source file since (`identity.identity_change`), or None if nothing did."""
    from lymph.data.identity import file_identity, identity_change

    if not store_mod.slide_is_complete(out, slide_id):
        return False, None
    recorded = store_mod.slide_attrs(out, slide_id).get("source_identity")
    return True, identity_change(recorded, file_identity(path)) if recorded else None


def _identity(path: Path) -> dict | None:
    from lymph.data.identity import file_identity

    return file_identity(path) if path.exists() else None


def _geometry(slide: SlideReader, *, path: Path, config: ExtractConfig) -> PatchGeometry:
    level, size = config.level, config.patch_size
    if level >= slide.level_count:
        raise SlideError(f"{path}: has {slide.level_count} level(s), --level {level} asked; "
                         f"use --level 0..{slide.level_count - 1}")
    w0, h0 = slide.dimensions
    geometry = PatchGeometry(size=size, downsample=slide.level_downsamples[level], width=w0,
                             height=h0)
    if geometry.footprint > min(w0, h0):
        raise SlideError(f"{path}: slide is {w0}x{h0} px, smaller than one {size} px patch at "
                         f"level {level} ({geometry.footprint:.0f} level-0 px); use a smaller "
                         "--patch-size or remove the slide")
    return geometry


def _tumor_source(slide: SlideReader, *, path: Path, name: str, config: ExtractConfig,
                  stack: contextlib.ExitStack
                  ) -> tuple[Path | None, Annotations | None, MaskSource | None]:
    """(annotation file, its polygons, or its mask TIFF opened) of the slide."""
    # named after the slide's name: a DICOM series `boxes_0.dcm, boxes_1.dcm` is `boxes`
    ann_path = find_annotations(path.parent / Path(name).name,
                                annotations_dir=config.annotations)
    if ann_path is not None and ann_path.suffix.lower() in (".tif", ".tiff"):
        return ann_path, None, stack.enter_context(MaskSource(ann_path, slide))
    if ann_path is None:
        return None, None, None
    with gc_paused():  # a 100,000-polygon XML is ~2M objects: collector passes are waste
        ann = read_annotations(ann_path)
    w0, h0 = slide.dimensions
    for message in check_inside(ann, width=w0, height=h0, path=ann_path) if ann else ():
        warnings.warn(message, stacklevel=2)
    if not ann and not is_partial(ann):
        warnings.warn(f"{ann_path}: no tumor polygons; slide {name} treated as not "
                      "annotated", stacklevel=2)
    return ann_path, ann, None


def _warn_unannotated_tumor(path: Path, *, name: str, ref: str | None,
                            annotations_dir: Path | None) -> None:
    """Warn when a slide that the labels CSV or its name calls tumor has no annotation: on
    CAMELYON16 (slides in training/tumor/, XML in lesion_annotations/) a forgotten
    --annotations would otherwise extract every tumor slide as unlabeled, silently."""
    sid = slide_id(name)
    why = ("the labels CSV says Tumor" if ref == "tumor"
           else "its name says tumor" if sid.lower().startswith("tumor") else None)
    if why is None:
        return
    folder = annotations_dir if annotations_dir is not None else path.parent
    warnings.warn(f"{path}: slide {sid}: {why} but no annotation was found (looked for "
                  f"{sid}.xml, {sid}.geojson, {sid}_mask.tif in {folder}); extracted as "
                  "unlabeled. Pass --annotations DIR (CAMELYON16: lesion_annotations/)",
                  stacklevel=3)


def _extract_open_slide(slide: SlideReader, *, path: Path, slide_id: str,
                        config: ExtractConfig, labels: Mapping[str, bool] | None, name: str,
                        annotations: Annotations | None,
                        on_patches: Callable[[int], None] | None, caught: list,
                        t0: float, c0: float, stack: contextlib.ExitStack) -> SlideResult:
    geometry = _geometry(slide, path=path, config=config)
    if annotations is None:
        ann_path, ann, mask_src = _tumor_source(slide, path=path, name=name, config=config,
                                                stack=stack)
    else:
        ann_path, ann, mask_src = annotations.source, annotations, None
    ann, partial = partial_mod.resolve(ann, name=name, labels=labels)
    has_ann = mask_src is not None or bool(ann) or partial
    status, ref = slide_status(name, has_annotations=has_ann, labels=labels)
    if not has_ann:
        _warn_unannotated_tumor(path, name=name, ref=ref, annotations_dir=config.annotations)
    thumb, thumb_ds = slide.thumbnail(config.thumb_size)
    tissue = tissue_mask(thumb)
    tumor = (partial_mod.tumor_maps(ann, tissue=tissue, thumb_downsample=thumb_ds)
             if partial and ann is not None else
             _tumor_maps(ann, mask_src, shape=tissue.shape, thumb_downsample=thumb_ds,
                         thumb_size=config.thumb_size))
    if not tissue.any() and not tumor.candidates.any():
        raise NoTissueError(f"{path}: no tissue found (Otsu on saturation of a "
                            f"{thumb.shape[1]}x{thumb.shape[0]} thumbnail); the slide was not "
                            "written. Check it is not blank or out of focus")
    plan = plan_patches(slide_rng(config.seed, slide_id), n=config.patches_per_slide,
                        tissue=tissue, tumor=tumor, thumb_downsample=thumb_ds,
                        geometry=geometry, status=status)
    if not len(plan):
        raise NoTissueError(f"{path}: no patch of {config.patch_size} px fits inside the "
                            "tissue; use a smaller --patch-size or a lower --level")
    for note in plan.notes:
        warnings.warn(f"{path}: {note}", stacklevel=2)
    labeled = status in store_mod.LABELED_STATUSES
    attrs = {
        "source": str(path), "name": name, "status": status, "reference": ref,
        "annotations": None if ann_path is None else str(ann_path), **_slide_facts(slide),
        "tissue_fraction": float(tissue.mean()), "thumb_downsample": thumb_ds,
        "tumor_area_level0": tumor.area_level0, "patches_requested": plan.requested,
        "source_identity": _identity(path),
    }
    if partial and ann is not None:
        attrs.update(partial_mod.slide_attrs(ann))
    writer = store_mod.SlideWriter(config.out, slide_id, capacity=len(plan),
                                   patch_size=config.patch_size, labeled=labeled, attrs=attrs)
    _write_patches(slide, plan, writer, config=config, ann=ann, mask_src=mask_src,
                   on_patches=on_patches)
    seconds = time.perf_counter() - t0
    messages = tuple(dict.fromkeys(str(w.message) for w in caught))
    writer.finish(warnings=list(messages), seconds=round(seconds, 3))
    n_tumor = int(plan.classes.sum()) if labeled else 0
    return SlideResult(slide_id, str(path), status, len(plan), n_tumor, seconds,
                       tissue_fraction=attrs["tissue_fraction"], warnings=messages,
                       cpu_seconds=time.process_time() - c0)


def _slide_facts(slide: SlideReader) -> dict[str, Any]:
    """What the store records of the slide file itself: mpp, dimensions, pyramid, vendor."""
    return {"mpp": slide.mpp, "dimensions": list(slide.dimensions),
            "level_dimensions": [list(d) for d in slide.level_dimensions],
            "level_downsamples": list(slide.level_downsamples),
            "vendor": getattr(slide, "vendor", None)}


def _write_patches(slide: SlideReader, plan: PatchPlan, writer: store_mod.SlideWriter, *,
                   config: ExtractConfig, ann: Annotations | None,
                   mask_src: MaskSource | None,
                   on_patches: Callable[[int], None] | None) -> None:
    """Read the planned patches in store order (and their masks) one chunk at a time: the
    patches of a chunk on ``config.threads`` decode threads, while the writer thread compresses
    and writes the chunk before (``PatchPipeline``; the store is the same for any thread count).
    """
    level, size = config.level, config.patch_size
    ds = slide.level_downsamples[level]
    labeled, top_left = writer.labeled, plan.top_left
    step = store_mod.CHUNK_PATCHES
    index = index_for(ann) if labeled and ann else None
    threads = config.threads or default_threads(config.workers)
    mask_lock = threading.Lock()  # a strip-TIFF mask's strip cache is not thread-safe
    with PatchPipeline(threads) as pipe:
        for a in range(0, len(plan), step):
            b = min(len(plan), a + step)
            images = np.empty((b - a, size, size, 3), np.uint8)
            masks = np.zeros((b - a, size, size), np.uint8) if labeled else None

            def fill(k: int, a: int = a, images: np.ndarray = images,
                     masks: np.ndarray | None = masks) -> None:
                tl = (int(top_left[k, 0]), int(top_left[k, 1]))
                slide.read_region(tl, level, (size, size), out=images[k - a])
                if masks is not None and ann is not None and is_partial(ann):
                    masks[k - a] = partial_mask(ann, x_level0=tl[0], y_level0=tl[1],
                                                width=size, height=size, downsample=ds)
                elif masks is not None and index is not None:
                    masks[k - a] = index.rasterize(x_level0=tl[0], y_level0=tl[1], width=size,
                                                   height=size, downsample=ds)
                elif masks is not None and mask_src is not None:
                    with mask_lock:
                        masks[k - a] = mask_src.patch(top_left[k], ds, size)

            pipe.fill(fill, range(a, b))
            if labeled:
                pipe.write(functools.partial(
                    writer.append, images=images, coords=top_left[a:b],
                    labels=plan.classes[a:b].astype(np.uint8), masks=masks))
            else:
                pipe.write(functools.partial(writer.append, images=images,
                                             coords=top_left[a:b]))
            if on_patches is not None:
                on_patches(b - a)


def _task(path: Path, *, config: ExtractConfig, ids: dict[str, tuple[str, str]],
          labels: Mapping[str, bool] | None,
          on_patches: Callable[[int], None] | None = None) -> SlideResult:
    slide_id, name = ids[str(path)]
    return extract_slide(path, slide_id=slide_id, config=config, labels=labels, name=name,
                         on_patches=on_patches)


# --- the batch ------------------------------------------------------------------------------


def run(config: ExtractConfig) -> ExtractSummary:
    """The stage's entry: extract every slide under `config.slides` into `config.out` (see the
    module doc), holding the store's writer lock for the whole batch (in process or on dask)."""
    config.check_paths()
    store_mod.check_out(config.out)  # a folder lymph did not write stays untouched
    with store_mod.writer_lock(config.out):
        return _extract_locked(config)


def _extract_locked(config: ExtractConfig) -> ExtractSummary:
    """`run` under the writer lock."""
    from lymph.data.cluster import map_slides

    t0 = time.perf_counter()
    labels = read_labels_csv(config.labels) if config.labels is not None else None
    found = discover_slides(config.slides)
    if not found and not found.problems:
        raise ConfigError(f"--slides {config.slides}: no slide files found (looked for .svs, "
                          ".tif, .ndpi, .mrxs, .dcm, ... and anything OpenSlide detects)")
    store_mod.create_store(config.out, config.settings())
    by_path = {str(f.path): (f.id, f.name) for f in found}
    skipped: list[SlideResult] = []
    todo: list[Path] = []
    for p, i in ((f.path, f.id) for f in found):
        if _done_before(config.out, i, p) == (True, None):
            skipped.append(_skipped(config.out, i, p))
        else:
            todo.append(p)
    patch_bar = None
    if config.workers == 1 and config.scheduler is None and todo:
        # in process, a second bar counts patches (a cluster reports whole slides only)
        from lymph.data.progress import progress_bar

        patch_bar = progress_bar(total=len(todo) * config.patches_per_slide, desc="patches",
                                 unit="patch", enabled=config.progress, position=1)
    fn = functools.partial(_task, config=config, ids=by_path, labels=labels,
                           on_patches=None if patch_bar is None else patch_bar.update)
    try:
        results = map_slides(fn, todo, workers=config.workers, scheduler=config.scheduler,
                             desc="extract", progress=config.progress) if todo else []
    finally:
        if patch_bar is not None:
            patch_bar.close()
    done = tuple(r.value for r in results if r.ok and r.value is not None)
    failed = tuple(found.failed()) + tuple((str(r.item), r.error or "") for r in results
                                           if not r.ok)
    return ExtractSummary(store=config.out, done=done, skipped=tuple(skipped), failed=failed,
                          seconds=time.perf_counter() - t0)
