"""`lymph suggest`: the K regions a pathologist should annotate next.

Input: the tumor maps `lymph predict` wrote (`S_tumor_map.tif`, uint8 probabilities x 255 at
1/`map_downsample` of the slide, and `S_predict.json` beside it), or a checkpoint and slides
(then `lymph predict` runs first, into `OUT/maps`).

Scores. Each map cell gets an uncertainty from its tumor probability p: `entropy` (binary
entropy in bits, 1 at p = 0.5, 0 at 0 and 1) or `margin` (1 - |2p - 1|). A candidate is a square
of `size` level-0 px (`size_um` microns) whose corner sits on a grid of blocks of a quarter of
its side. Its score, in [0, 1], is:
- `false_positive` on a slide labelled normal (labels CSV, or a `normal_*` name): the highest
  mean p of a block in the box (any tumor the model sees there is wrong; a small spot is not
  diluted by the rest of the box);
- `miss` on a slide with tumor outlines (`--annotations`): the highest mean p of a block in the
  box among the unannotated blocks within one box side of an outline (a lesion the annotation
  may have missed), when that beats the uncertainty;
- `uncertain` everywhere else: the mean uncertainty of the box's cells.
Boxes mostly (> 50%) inside reviewed regions are not proposed again.
Glass scores 0 (predict zeroes the map outside tissue), so boxes land on tissue.

Selection: per slide, greedily the best-scoring box that keeps `spacing` box sides (default 1)
from every box already taken, up to `per_slide` (default: ceil(2 K / slides)), so boxes spread
over several lesions instead of ringing one; then the K best over all slides, ranked 1..K. With
`strategy="random"` the boxes are drawn uniformly among non-overlapping boxes at least half
tissue (the slide's tissue mask when the slide is found, else map > 0), with the same cap and
total: the baseline of equal annotated area.

Memory: the map is read in bands of whole box-grid rows and reduced at once to sums per grid
block (a quarter box side), so a 100,000 x 100,000 px slide's 6250 x 6250 map is never held
whole (bench/bench_suggest.py measures time and peak RSS).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lymph.data.annotations import Annotations, rasterize
from lymph.data.errors import ConfigError, SlideError
from lymph.data.io import as_paths
from lymph.data.tissue import dilate, summed_area, tissue_mask, window_sums

if TYPE_CHECKING:
    from lymph.data.slides import OpenSlideReader, SlideReader

MAP_SUFFIX = "_tumor_map.tif"
SCORES = ("entropy", "margin")
STRATEGIES = ("uncertainty", "random")
KINDS = ("uncertain", "false_positive", "miss")
BAND_BLOCK_ROWS = 16  # grid rows read per band


@dataclass(frozen=True)
class SuggestConfig:
    """Settings of `lymph suggest` (validated here; no filesystem access)."""

    out: Path
    maps: Path | None = None
    checkpoint: Path | None = None
    slides: Path | None = None
    annotations: Path | None = None
    labels: Path | None = None
    k: int = 20
    size: float | None = 1200.0
    size_um: float | None = None
    per_slide: int | None = None
    spacing: float = 1.0
    score: str = "entropy"
    strategy: str = "uncertainty"
    seed: int = 0
    thumb_size: int = 1024
    force: bool = False

    def __post_init__(self) -> None:
        as_paths(self, ("out", "maps", "checkpoint", "slides", "annotations", "labels"))
        if (self.maps is None) == (self.checkpoint is None):
            raise ConfigError("give either --maps DIR (the maps `lymph predict` wrote) or "
                              "--checkpoint C with --slides DIR, not both and not neither")
        if self.maps is not None and self.maps.absolute() == self.out.absolute():
            raise ConfigError(f"--out {self.out} is the --maps folder: pick another --out "
                              "(there, predict's S.geojson/S.xml detections would be read as "
                              "annotations by `lymph extract --annotations`)")
        if self.checkpoint is not None and self.slides is None:
            raise ConfigError("--checkpoint needs --slides DIR (the slides to predict first)")
        if not 1 <= self.k <= 10_000:
            raise ConfigError(f"k {self.k} out of range 1..10000; e.g. -k 20")
        if self.size_um is not None:
            object.__setattr__(self, "size", None)
            if not 1.0 <= self.size_um <= 1e5:
                raise ConfigError(f"size_um {self.size_um} out of range 1..100000 microns")
        elif self.size is None or not 16 <= self.size <= 1e6:
            raise ConfigError(f"size {self.size} out of range 16..1000000 level-0 px; e.g. "
                              "--size 1200 (4 patches of 300 px)")
        if self.per_slide is not None and self.per_slide < 1:
            raise ConfigError(f"per_slide {self.per_slide} must be >= 1")
        if not 0.0 <= self.spacing <= 10.0:
            raise ConfigError(f"spacing {self.spacing} out of range 0..10 box sides")
        if self.score not in SCORES:
            raise ConfigError(f"score {self.score!r} is not one of {SCORES}")
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"strategy {self.strategy!r} is not one of {STRATEGIES}")
        if self.seed < 0:
            raise ConfigError(f"seed {self.seed} must be >= 0")
        if not 64 <= self.thumb_size <= 8192:
            raise ConfigError(f"thumb_size {self.thumb_size} out of range 64..8192")


@dataclass(frozen=True)
class Suggestion:
    """One proposed box, level-0 px [x0, x1) x [y0, y1) of slide `slide`."""

    slide: str
    kind: str
    score: float
    x0: int
    y0: int
    x1: int
    y1: int
    mean_probability: float
    uncertainty: float
    rank: int = 0

    def to_row(self, mpp: float | None) -> dict[str, Any]:
        side = self.x1 - self.x0
        return {"rank": self.rank, "slide": self.slide, "kind": self.kind,
                "score": round(self.score, 4), "x0": self.x0, "y0": self.y0, "x1": self.x1,
                "y1": self.y1, "size_px": side,
                "size_um": None if mpp is None else round(side * mpp, 1),
                "mean_probability": round(self.mean_probability, 4),
                "uncertainty": round(self.uncertainty, 4)}


@dataclass(frozen=True)
class SlideMap:
    """A map to suggest from: its file, slide name, downsample vs level 0, slide mpp."""

    name: str
    path: Path
    downsample: float
    mpp: float | None
    slide_path: Path | None


def uncertainty_lut(score: str) -> np.ndarray:
    """float64 (256,): the uncertainty of each uint8 map value (p = value / 255)."""
    p = np.arange(256) / 255.0
    if score == "margin":
        return 1.0 - np.abs(2 * p - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(p * np.log2(p) + (1 - p) * np.log2(1 - p))
    return np.nan_to_num(h, nan=0.0)


def find_maps(folder: Path, *, slides: Path | None = None) -> list[SlideMap]:
    """Every `S_tumor_map.tif` in `folder` with its downsample and mpp from `S_predict.json`
    (downsample 16 and no mpp, warned, when the JSON is missing, unreadable or implausible)."""
    from lymph.data.slides import plausible_mpp

    if not folder.is_dir():
        raise ConfigError(f"--maps {folder}: not a folder; pass the --out folder of "
                          "`lymph predict`")
    out = []
    for path in sorted(folder.glob(f"*{MAP_SUFFIX}")):
        name = path.name[: -len(MAP_SUFFIX)]
        meta_path = folder / f"{name}_predict.json"
        ds, mpp, slide_path = 16.0, None, None
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            ds = float(meta["settings"]["map_downsample"])
            if not 1.0 <= ds <= 1024.0:  # also NaN
                raise ValueError(f"map_downsample {ds}")
            mpp = plausible_mpp(meta["mpp"])  # predict writes the key always, null if unknown
            if mpp is None and meta["mpp"] is not None:
                raise ValueError(f"mpp {meta['mpp']!r}")
            slide_path = Path(meta["slide"]) if meta["slide"] else None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            ds, mpp, slide_path = 16.0, None, None
            why = ("missing" if isinstance(exc, FileNotFoundError) else
                   f"unreadable or implausible ({type(exc).__name__}: {str(exc)[:60]})")
            warnings.warn(f"{meta_path}: {why}; map {path.name} taken at downsample 16 with "
                          "no mpp and no slide", stacklevel=2)
        out.append(SlideMap(name, path, ds, mpp, _slide_file(name, slide_path, slides)))
    if not out:
        raise ConfigError(f"--maps {folder}: no *{MAP_SUFFIX} files; run `lymph predict "
                          f"--out {folder}` first")
    return out


def _slide_file(name: str, recorded: Path | None, slides: Path | None) -> Path | None:
    if slides is not None and slides.is_dir():
        for p in sorted(slides.iterdir()):
            if p.name == name or (p.is_file() and p.name.split(".")[0] == name):
                return p
    return recorded if recorded is not None and recorded.exists() else None


@dataclass(frozen=True)
class Grid:
    """The box grid of one map: blocks of `block` map cells, boxes of `nb` x `nb` blocks."""

    block: int
    nb: int
    downsample: float
    rows: int  # block rows
    cols: int

    @property
    def box_level0(self) -> int:
        return int(round(self.nb * self.block * self.downsample))


def make_grid(size_level0: float, downsample: float, map_shape: tuple[int, int]) -> Grid:
    """Boxes of about `size_level0` px on a grid of a quarter of their side (in map cells)."""
    cells = max(2, int(round(size_level0 / downsample)))
    block = max(1, int(round(cells / 4)))
    nb = max(1, int(round(cells / block)))
    h, w = map_shape
    return Grid(block, nb, downsample, -(-h // block), -(-w // block))


@dataclass
class BlockSums:
    """Per-block sums over the map: uncertainty, probability, cells with p > 0, and p on the
    cells near (but outside) annotated tumor."""

    unc: np.ndarray
    prob: np.ndarray
    positive: np.ndarray
    near_prob: np.ndarray


def block_sums(reader: SlideReader, grid: Grid, lut: np.ndarray, near: np.ndarray | None
               ) -> BlockSums:
    """Stream the map (an open `SlideReader`) in bands of BAND_BLOCK_ROWS block rows."""
    w, h = reader.dimensions
    b = grid.block
    shape = (grid.rows, grid.cols)
    sums = BlockSums(*(np.zeros(shape, np.float64) for _ in range(4)))
    lut32 = lut.astype(np.float32)
    for r0 in range(0, grid.rows, BAND_BLOCK_ROWS):
        r1 = min(grid.rows, r0 + BAND_BLOCK_ROWS)
        y0, y1 = r0 * b, min(h, r1 * b)
        band = reader.read_region((0, y0), 0, (w, y1 - y0))[..., 0]
        pad = np.zeros(((r1 - r0) * b, grid.cols * b), np.uint8)
        pad[: y1 - y0, :w] = band
        blocks = pad.reshape(r1 - r0, b, grid.cols, b)
        sums.unc[r0:r1] = lut32[blocks].sum(axis=(1, 3), dtype=np.float64)
        p = blocks.astype(np.float32) / 255.0
        sums.prob[r0:r1] = p.sum(axis=(1, 3), dtype=np.float64)
        sums.positive[r0:r1] = (blocks > 0).sum(axis=(1, 3))
    if near is not None:
        sums.near_prob = sums.prob * near
    return sums


def window_max(a: np.ndarray, n: int) -> np.ndarray:
    """Maxima over every n x n window (top-left at each index): (rows - n + 1, cols - n + 1)."""
    rows = np.maximum.reduce([a[i:a.shape[0] - n + 1 + i] for i in range(n)])
    return np.maximum.reduce([rows[:, j:a.shape[1] - n + 1 + j] for j in range(n)])


def _annotation_blocks(ann: Annotations | None, grid: Grid) -> tuple[np.ndarray | None,
                                                                     np.ndarray | None]:
    """(near-outline blocks, reviewed blocks) as float 0/1 block grids, or None."""
    from lymph.data.partial import reviewed_raster

    if ann is None:
        return None, None
    step = grid.block * grid.downsample
    near = None
    if ann:
        tumor = rasterize(ann, x_level0=0.0, y_level0=0.0, width=grid.cols, height=grid.rows,
                          downsample=step).astype(bool)
        for poly in ann.tumor:  # lesions smaller than a block still count
            x, y = poly.points_level0.mean(axis=0) // step
            if 0 <= y < grid.rows and 0 <= x < grid.cols:
                tumor[int(y), int(x)] = True
        near = (dilate(tumor, grid.nb) & ~tumor).astype(np.float64)
    seen = (reviewed_raster(ann, x_level0=0.0, y_level0=0.0, width=grid.cols,
                            height=grid.rows, downsample=step).astype(np.float64)
            if ann.reviewed else None)
    return near, seen


def score_boxes(sums: BlockSums, grid: Grid, *, normal: bool, seen: np.ndarray | None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(score, kind index, mean p, mean uncertainty) of every box position (block grid)."""
    n, cells = grid.nb, float((grid.nb * grid.block) ** 2)
    if grid.rows < n or grid.cols < n:
        z = np.zeros((0, 0))
        return z, z.astype(np.int64), z, z
    unc = window_sums(summed_area(sums.unc), size=n) / cells
    prob = window_sums(summed_area(sums.prob), size=n) / cells
    if normal:
        score = window_max(sums.prob / grid.block ** 2, n)
        kind = np.full(prob.shape, 1, np.int64)
    else:
        miss = window_max(sums.near_prob / grid.block ** 2, n)
        kind = np.where(miss > unc, 2, 0)
        score = np.maximum(unc, miss)
    if seen is not None:
        score[window_sums(summed_area(seen), size=n) / (n * n) > 0.5] = 0.0
    return score, kind, prob, unc



def pick_boxes(score: np.ndarray, *, nb: int, cap: int, gap: int = 0,
               order: np.ndarray | None = None, eligible: np.ndarray | None = None,
               min_score: float = 1e-6) -> list[tuple[int, int]]:
    """Greedy boxes (block row, block col), up to `cap`: best score first (or in `order`, e.g.
    a random permutation, among `eligible` positions), each box that overlaps no box already
    taken grown by `gap` blocks on every side; with the best-first order only boxes above
    `min_score`."""
    if score.size == 0 or cap < 1:
        return []
    ranked = order is None
    if order is None:
        order = np.argsort(-score, axis=None, kind="stable")
    ok = (score > min_score) if ranked else (
        np.ones(score.shape, bool) if eligible is None else eligible)
    g = max(0, int(gap))
    taken = np.zeros((score.shape[0] + nb + 2 * g, score.shape[1] + nb + 2 * g), bool)
    out: list[tuple[int, int]] = []
    flat_ok = ok.ravel()
    for idx in order:
        if not flat_ok[idx]:
            if ranked:
                break  # sorted: the rest score lower
            continue
        r, c = divmod(int(idx), score.shape[1])
        if taken[r:r + nb + 2 * g, c:c + nb + 2 * g].any():
            continue
        taken[r + g:r + g + nb, c + g:c + g + nb] = True
        out.append((r, c))
        if len(out) >= cap:
            break
    return out


def _existing(name: str, config: SuggestConfig) -> Annotations | None:
    """The slide's current annotations (tumor outlines, reviewed regions) from
    `--annotations`, or None."""
    from lymph.data.annotations import find_annotations, read_annotations

    if config.annotations is None:
        return None
    path = find_annotations(config.annotations / name, annotations_dir=config.annotations)
    if path is None or path.suffix.lower() in (".tif", ".tiff"):
        return None
    return read_annotations(path)


def _tissue_blocks(m: SlideMap, grid: Grid, sums: BlockSums) -> np.ndarray:
    """float 0/1 tissue per block: the slide's tissue mask at block centres when the slide is
    found, else blocks with a non-zero map cell (predict zeroes the map off tissue)."""
    from lymph.data.slides import open_slide

    if m.slide_path is None:
        return (sums.positive > 0).astype(np.float64)
    with open_slide(m.slide_path) as slide:
        thumb, ds = slide.thumbnail(2048)
    tissue = tissue_mask(thumb)
    step = grid.block * grid.downsample
    ys = np.minimum(((np.arange(grid.rows) + 0.5) * step / ds).astype(int), tissue.shape[0] - 1)
    xs = np.minimum(((np.arange(grid.cols) + 0.5) * step / ds).astype(int), tissue.shape[1] - 1)
    return tissue[np.ix_(ys, xs)].astype(np.float64)


def _size_level0(m: SlideMap, config: SuggestConfig) -> float:
    if config.size is not None:
        return float(config.size)
    if m.mpp is None:
        raise SlideError(f"{m.path}: the slide's microns per pixel are unknown (no mpp in "
                         f"{m.name}_predict.json); give the box side in pixels with --size")
    assert config.size_um is not None  # SuggestConfig: size_um is given whenever size is None
    return float(config.size_um) / m.mpp


def _open_map(path: Path) -> OpenSlideReader:
    """The map TIFF as a `SlideReader` (its mpp is the slide's times the downsample, never
    needed here, so OpenSlide's warning about a missing one is dropped)."""
    from lymph.data.slides import open_slide

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*microns-per-pixel")
        return open_slide(path)


def suggest_slide(m: SlideMap, *, config: SuggestConfig, cap: int, normal: bool,
                  ann: Annotations | None, rng: np.random.Generator) -> list[Suggestion]:
    """Up to `cap` non-overlapping boxes of one map (see the module doc), unranked."""
    with _open_map(m.path) as reader:
        w, h = reader.dimensions
        grid = make_grid(_size_level0(m, config), m.downsample, (h, w))
        near, seen = _annotation_blocks(ann, grid)
        sums = block_sums(reader, grid, uncertainty_lut(config.score), near)
    score, kind, prob, unc = score_boxes(sums, grid, normal=normal, seen=seen)
    gap = int(round(config.spacing * grid.nb))
    if config.strategy == "random" and score.size:
        n = grid.nb
        tissue = window_sums(summed_area(_tissue_blocks(m, grid, sums)), size=n)
        eligible = tissue / (n * n) >= 0.5
        if seen is not None:
            eligible &= window_sums(summed_area(seen), size=n) / (n * n) <= 0.5
        picks = pick_boxes(score, nb=n, cap=cap, gap=gap, order=rng.permutation(score.size),
                           eligible=eligible)
    else:
        picks = pick_boxes(score, nb=grid.nb, cap=cap, gap=gap)
    step, side = grid.block * grid.downsample, grid.box_level0
    wmax, hmax = int(round(w * m.downsample)), int(round(h * m.downsample))
    out = []
    for r, c in picks:
        x0, y0 = int(round(c * step)), int(round(r * step))
        out.append(Suggestion(
            slide=m.name, kind="random" if config.strategy == "random" else KINDS[kind[r, c]],
            score=float(score[r, c]), x0=x0, y0=y0, x1=min(x0 + side, wmax),
            y1=min(y0 + side, hmax), mean_probability=float(prob[r, c]),
            uncertainty=float(unc[r, c])))
    return out


def rank(per_slide: Mapping[str, list[Suggestion]], *, k: int, strategy: str,
         rng: np.random.Generator) -> list[Suggestion]:
    """The K best over all slides (random strategy: K in a random order), ranked 1..K."""
    from dataclasses import replace

    pool = [s for name in sorted(per_slide) for s in per_slide[name]]
    if strategy == "random":
        pool = [pool[i] for i in rng.permutation(len(pool))]
    else:
        pool.sort(key=lambda s: (-s.score, s.slide, s.y0, s.x0))
    return [replace(s, rank=i) for i, s in enumerate(pool[:k], 1)]


def labelled_normal(name: str, labels: Mapping[str, bool] | None) -> bool:
    """Normal by the labels CSV or by a `normal_*` name: extract's rule
    (`lymph.pipeline.extract.slide_status`; model/ does not import pipeline/)."""
    flag = labels.get(name) if labels else None
    return flag is False or name.lower().startswith("normal")


def default_cap(k: int, n_slides: int) -> int:
    """Per-slide cap when none is given: twice an even share, so boxes spread over slides."""
    return max(1, math.ceil(2 * k / max(1, n_slides)))


@dataclass(frozen=True)
class SuggestSummary:
    suggestions: tuple[Suggestion, ...]
    failed: tuple[tuple[str, str], ...]  # (map file, "file: cause")
    files: tuple[Path, ...]
    n_maps: int
    cap: int
    mpp: dict[str, float | None]

    def rows(self) -> list[dict[str, Any]]:
        return [s.to_row(self.mpp.get(s.slide)) for s in self.suggestions]

    def table(self) -> str:
        """The summary table as printed by `lymph suggest`."""
        head = f"{'rank':>4}  {'slide':<20} {'kind':<14} {'score':>6} {'p':>5}  box (level-0 px)"
        lines = [head]
        for r in self.rows():
            size = f"{r['size_px']} px" + (f" = {r['size_um']:g} um" if r["size_um"] else "")
            lines.append(f"{r['rank']:>4}  {r['slide'][:20]:<20} {r['kind']:<14} "
                         f"{r['score']:>6.3f} {r['mean_probability']:>5.2f}  "
                         f"x {r['x0']}..{r['x1']}, y {r['y0']}..{r['y1']} ({size})")
        return "\n".join(lines)


def _predict_first(config: SuggestConfig, *, checkpoint: Path) -> Path:
    """`lymph predict` of `config.slides` with `checkpoint` (`config.checkpoint`) into OUT/maps."""
    from lymph.model.predict import PredictConfig
    from lymph.model.predict import run as predict_run

    maps = config.out / "maps"
    results = predict_run(PredictConfig(checkpoint=checkpoint, out=maps,
                                        slides=config.slides, progress=False))
    for r in results.tasks:
        if not r.ok:
            warnings.warn(f"predict skipped {r.item}: {r.error}", stacklevel=2)
    return maps


def run(config: SuggestConfig) -> SuggestSummary:
    """`lymph suggest` (see the module doc): score every map, rank, write the files; one
    writer per --out (a second `lymph suggest` on it is refused, naming the first)."""
    from lymph.data.lock import run_folder_lock

    with run_folder_lock(config.out, what="this suggest folder"):
        return _suggest(config)


def _suggest(config: SuggestConfig) -> SuggestSummary:
    from lymph.data.annotations import read_labels_csv
    from lymph.data.errors import LymphError

    maps_dir: Path | None
    if config.checkpoint is not None:
        maps_dir = _predict_first(config, checkpoint=config.checkpoint)
    else:
        maps_dir = config.maps
    assert maps_dir is not None
    maps = find_maps(maps_dir, slides=config.slides)
    labels = read_labels_csv(config.labels) if config.labels is not None else None
    cap = config.per_slide or default_cap(config.k, len(maps))
    rng = np.random.default_rng(config.seed)
    per_slide: dict[str, list[Suggestion]] = {}
    existing: dict[str, Annotations | None] = {}
    failed: list[tuple[str, str]] = []
    for m in maps:
        try:
            ann = _existing(m.name, config)
            normal = not ann and labelled_normal(m.name, labels)
            per_slide[m.name] = suggest_slide(m, config=config, cap=cap, normal=normal,
                                              ann=ann, rng=rng)
            existing[m.name] = ann
        except LymphError as exc:  # one bad map never stops the others
            failed.append((str(m.path), str(exc)))
    ranked = rank(per_slide, k=config.k, strategy=config.strategy, rng=rng)
    files = write_outputs(config, [m for m in maps if m.name in per_slide], ranked, existing)
    return SuggestSummary(tuple(ranked), tuple(failed), tuple(files), len(maps), cap,
                          {m.name: m.mpp for m in maps})


def _thumbnail(m: SlideMap, size: int) -> tuple[np.ndarray, float]:
    """(RGB thumbnail, level-0 px per pixel): the slide's when found, else the map's in grey."""
    from lymph.data.slides import open_slide

    if m.slide_path is not None:
        try:
            with open_slide(m.slide_path) as slide:
                return slide.thumbnail(size)
        except SlideError as exc:
            warnings.warn(f"{exc}; the overview shows the map instead", stacklevel=2)
    with _open_map(m.path) as reader:
        thumb, ds = reader.thumbnail(size)
    return 255 - thumb, ds * m.downsample  # dark = likely tumor


def _keep_exhaustive(ann: Annotations | None, m: SlideMap) -> Annotations | None:
    """An exhaustive annotation (outlines, no reviewed region) exported with one reviewed
    region over the whole slide: the same labels for `lymph extract`, so that marking a box
    `Reviewed` later adds to the slide instead of shrinking it to the box."""
    from lymph.data.partial import box_polygon, with_reviewed

    if ann is None or not ann or ann.reviewed:
        return ann
    with _open_map(m.path) as reader:
        w, h = reader.dimensions
    whole = box_polygon(0, 0, w * m.downsample, h * m.downsample,
                        name="whole slide (the annotation was exhaustive)")
    return with_reviewed(ann, (whole,))


def write_outputs(config: SuggestConfig, maps: list[SlideMap], ranked: list[Suggestion],
                  existing: Mapping[str, Annotations | None]) -> list[Path]:
    """Per slide with a suggestion: S_suggestions.geojson/.xml/.png; then suggestions.csv and
    suggest.json. Files the user changed are never overwritten (OutputManifest, --force)."""
    from lymph.data import suggestions as ex
    from lymph.data.io import OutputManifest, atomic_write_json

    manifest = OutputManifest(config.out, force=config.force)
    manifest.ensure_writable()
    out = config.out
    by_slide = {m.name: [s for s in ranked if s.slide == m.name] for m in maps}
    todo = [m for m in maps if by_slide[m.name]]
    paths = [out / f"{m.name}_suggestions.{e}" for m in todo for e in ("geojson", "xml", "png")]
    manifest.check(*paths, out / "suggestions.csv", out / "suggest.json")
    written = []
    for m in todo:
        sugg, ann = by_slide[m.name], _keep_exhaustive(existing.get(m.name), m)
        with manifest.writing(out / f"{m.name}_suggestions.geojson") as p:
            written.append(ex.write_geojson(p, sugg, existing=ann, slide=m.name))
        with manifest.writing(out / f"{m.name}_suggestions.xml") as p:
            written.append(ex.write_asap_xml(p, sugg, existing=ann))
        thumb, ds = _thumbnail(m, config.thumb_size)
        with manifest.writing(out / f"{m.name}_suggestions.png") as p:
            written.append(ex.overview_png(p, thumb, ds, sugg, existing=ann))
    rows = [s.to_row(next((m.mpp for m in maps if m.name == s.slide), None)) for s in ranked]
    with manifest.writing(out / "suggestions.csv") as p:
        written.append(ex.write_csv(p, rows))
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(config).items()}
    with manifest.writing(out / "suggest.json") as p:
        written.append(atomic_write_json(p, {"settings": settings, "suggestions": rows}))
    return written
