"""Simulated annotation loop (issue 24): do `lymph suggest`'s boxes buy more F1 per annotated
mm^2 than random boxes of the same area?

    .venv/bin/python bench/bench_loop.py --out bench_out/loop [--seeds 0 1 2 3 4 5]
        [--rounds 4] [--k 6] [--k0 6] [--size 1024] [--tumor 20 --normal 8 --test-tumor 6
        --test-normal 2 --slide 8000x6000] [--world camelyon --centre mixed] [--steps 1200]
        [--init pretrained.pt]

Worlds (`lymph.data.synth`, by default the study's calibrated camelyon world, mixed centres,
8,000 x 6,000 slides): a training world (`--tumor`/`--normal`, seed 0: the study's labeled
world, byte for byte) and a separate test world (seed 1). The first `--val` tumor slides of the
training world are inner-validation slides, exhaustively annotated (their ground truth), as in
`lymph study`; normal slides are labelled normal (free: slide-level labels). The other tumor
slides start unannotated.

Per seed (paired: both strategies share the seed's initial boxes and training seed):
0. `--k0` random boxes on the tissue of the training tumor slides (the small random start).
Then per round, for each strategy (`uncertainty`, `random`):
1. the oracle answers every box so far from the ground truth (`oracle_annotations`: outlines
   clipped to the box, the box a reviewed region) into `S.xml` per slide;
2. `lymph extract` (partial annotations) into a new store; `lymph train --stage finetune` (from
   scratch, or `--init`); scored on every patch of the test world's store at the threshold
   its own validation chose (the F1-best threshold on the inner-validation slides at best.pt's
   step, as `lymph study` chooses it; F1 at 0.5 is kept as `f1_05`);
3. unless it was the last round, `lymph predict` on the training tumor slides and `lymph
   suggest --strategy S -k K` (reviewed boxes excluded) add K boxes of `--size` px.
Rows (round, annotated area in mm^2 and in patch footprints, F1, precision, recall, average
precision) go to `loop.csv`. The summary (`loop.json`, printed): per round the paired ΔF1 and
ΔAP (uncertainty - random) with the study's statistics (mean, t 95% CI, Wilcoxon p); and the
fraction of random's final area at which uncertainty first reaches random's final F1 (and AP),
per seed, with its t interval (goal <= 0.6; a seed that never reaches it counts as 1 and is
reported). AP is threshold-free; F1 at 0.5 is degenerate on the test world (other labs): a
model trained on few tumor patches may never reach 0.5 there. Each round's model also maps the
test world's slides (`lymph predict`) and is scored the CAMELYON16 way (`lymph eval slides`:
lesion FROC by the official rules, slide AUC); ΔFROC and a FROC reach fraction are reported
beside F1's and AP's. `loop.png` plots F1 against annotated area (mm^2, patch footprints), and
AP and FROC against mm^2: each strategy's mean over seeds with its t 95% interval, each seed as a
thin line.

This runs minutes per fine-tune on a 2-core CPU at the study's scale; `tests/model/test_loop.py`
runs it on a tiny world (2 tumor slides, 1 round) to show the machinery is correct.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lymph.data.io import atomic_write_text

Box = tuple[float, float, float, float]
STRATEGIES = ("uncertainty", "random")
METRICS = ("f1", "ap", "froc")  # test-world pixel F1 and AP, lesion FROC
REACH = {"f1": "reach_fraction", "ap": "reach_fraction_ap", "froc": "reach_fraction_froc"}


@dataclass(frozen=True)
class LoopConfig:
    out: Path
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4, 5)
    rounds: int = 4
    k: int = 6
    k0: int = 6
    size: float = 1024.0
    tumor: int = 20
    normal: int = 8
    test_tumor: int = 6
    test_normal: int = 2
    slide: tuple[int, int] = (8000, 6000)  # the study's (and calibration's) slides
    world: str = "camelyon"  # the study's calibrated world (issue 20), not the default's
    centre: str = "mixed"
    val: int = 2
    level: int = 2
    patch_size: int = 128
    patches_per_slide: int = 128
    steps: int = 1200
    eval_every: int = 100
    batch_size: int = 8
    crop: int = 64
    base_width: int = 8
    init: Path | None = None
    threads: int = 1

    def __post_init__(self) -> None:
        from lymph.data.errors import ConfigError

        if self.rounds < 1 or self.k < 1 or self.k0 < 0 or not self.seeds:
            raise ConfigError(f"need rounds >= 1, k >= 1, k0 >= 0 and a seed; got rounds "
                              f"{self.rounds}, k {self.k}, k0 {self.k0}, seeds {self.seeds}")
        if not 1 <= self.val < self.tumor:
            raise ConfigError(f"val {self.val} must be in 1..tumor-1 ({self.tumor - 1}): at "
                              "least one tumor slide must be left to annotate")


@dataclass(frozen=True)
class World:
    slides: Path  # training world (slides, ground-truth S.xml, reference.csv)
    test_store: Path
    val: tuple[str, ...]  # exhaustive inner-validation tumor slides
    pool: tuple[str, ...]  # tumor slides to annotate
    mpp: float
    test_slides: Path  # the test world's slides (whole-slide maps, FROC)


def make_world(config: LoopConfig) -> World:
    """Both synthetic worlds (made once, reused) and the test world's exhaustive store."""
    from lymph.data.synth import SynthConfig, run
    from lymph.pipeline.extract import ExtractConfig
    from lymph.pipeline.extract import run as extract

    root = config.out / "world"
    train, test = root / "train", root / "test"
    for folder, n_t, n_n, seed in ((train, config.tumor, config.normal, 0),
                                   (test, config.test_tumor, config.test_normal, 1)):
        if not (folder / "reference.csv").is_file():
            run(SynthConfig(out=folder, n_tumor=n_t, n_normal=n_n, size=config.slide,
                            seed=seed, world=config.world, centre=config.centre))
    store = root / "test.zarr"
    extract(ExtractConfig(slides=test, out=store, labels=test / "reference.csv",
                          level=config.level, patch_size=config.patch_size,
                          patches_per_slide=config.patches_per_slide, seed=0, progress=False))
    tumor = sorted(p.name[:-4] for p in train.glob("tumor_*.tif")
                   if not p.name.endswith("_mask.tif"))
    meta = json.loads((train / "synth.json").read_text())
    return World(train, store, tuple(tumor[:config.val]), tuple(tumor[config.val:]),
                 float(meta["settings"]["mpp"]), test)


def initial_boxes(world: World, *, k0: int, size: float, rng: np.random.Generator
                  ) -> dict[str, list[Box]]:
    """`k0` random boxes centred on tissue of the pool's slides (uniform slide, then a
    uniform tissue pixel of its thumbnail), kept inside the slide."""
    from lymph.data.slides import open_slide
    from lymph.data.tissue import tissue_mask

    boxes: dict[str, list[Box]] = {s: [] for s in world.pool}
    for _ in range(k0):
        name = world.pool[int(rng.integers(len(world.pool)))]
        with open_slide(world.slides / f"{name}.tif") as slide:
            thumb, ds = slide.thumbnail(1024)
            w, h = slide.dimensions
        ys, xs = np.nonzero(tissue_mask(thumb))
        i = int(rng.integers(len(ys)))
        cx, cy = (xs[i] + rng.random()) * ds, (ys[i] + rng.random()) * ds
        x0 = float(np.clip(cx - size / 2, 0, w - size))
        y0 = float(np.clip(cy - size / 2, 0, h - size))
        boxes[name].append((x0, y0, x0 + size, y0 + size))
    return boxes


def write_answers(world: World, boxes: dict[str, list[Box]], folder: Path) -> None:
    """The oracle's S.xml per pool slide with boxes, and the validation slides' ground truth."""
    from lymph.data.annotations import read_annotations
    from lymph.data.partial import oracle_annotations
    from lymph.data.suggestions import write_asap_xml

    folder.mkdir(parents=True, exist_ok=True)
    for name in world.val:
        shutil.copy(world.slides / f"{name}.xml", folder / f"{name}.xml")
    for name, bs in boxes.items():
        if bs:
            truth = read_annotations(world.slides / f"{name}.xml")
            write_asap_xml(folder / f"{name}.xml", [], existing=oracle_annotations(truth, bs))


def train_and_score(config: LoopConfig, world: World, ann: Path, work: Path, seed: int
                    ) -> tuple[dict[str, Any], Path]:
    """Extract with the answers so far, fine-tune, score on the test world."""
    from lymph.data.store import PatchStore
    from lymph.model.train import TrainConfig
    from lymph.model.train import run as train
    from lymph.pipeline.extract import ExtractConfig
    from lymph.pipeline.extract import run as extract

    store = work / "store.zarr"
    extract(ExtractConfig(slides=world.slides, out=store, annotations=ann,
                          labels=world.slides / "reference.csv", level=config.level,
                          patch_size=config.patch_size, seed=seed, progress=False,
                          patches_per_slide=config.patches_per_slide))
    ps = PatchStore.open(store)
    train_ids = tuple(s.slide_id for s in ps.labeled_slides if s.slide_id not in world.val)
    n_tumor = sum(s.n_tumor for s in ps.labeled_slides if s.slide_id in train_ids)
    opts = dict(init=config.init) if config.init else dict(from_scratch=True,
                                                           base_width=config.base_width)
    result = train(TrainConfig(
        store=store, out=work / "train", stage="finetune", labeled="100%",
        train_slide_ids=train_ids, val_slide_ids=world.val, steps=config.steps,
        eval_every=config.eval_every, checkpoint_every=config.eval_every,
        batch_size=config.batch_size, crop=config.crop, seed=seed, workers=0,
        threads=config.threads, select="best_f1", device="cpu", **opts), progress=False)
    ckpt = result.best or result.last
    threshold = val_threshold(work / "train", result.best_step)
    row = score(world, ckpt, threshold)
    row.update(slide_scores(config, world, ckpt, work, threshold))
    row.update(train_tumor_patches=n_tumor, train_slides=len(train_ids),
               best_step=result.best_step)
    return row, ckpt


def val_threshold(run_dir: Path, best_step: int | None) -> float:
    """The F1-best threshold of the inner-validation slides at best.pt's step (the trainer's
    metrics.jsonl); the last validation's when there is no best.pt."""
    vals = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
            if '"kind": "val"' in line]
    chosen = [v for v in vals if v["step"] == best_step] or vals[-1:]
    return float(chosen[-1]["best_threshold"])


def score(world: World, ckpt: Path, threshold: float) -> dict[str, Any]:
    """Test-world pixel F1/precision/recall at `threshold` and at 0.5, and AP."""
    from lymph.model.evaluate import EvalConfig
    from lymph.model.evaluate import run as evaluate

    scores = evaluate(EvalConfig(store=world.test_store, checkpoint=ckpt, threshold=threshold,
                                 batch_size=32, progress=False)).to_dict()
    at_05 = evaluate(EvalConfig(store=world.test_store, checkpoint=ckpt, threshold=0.5,
                                batch_size=32, progress=False)).to_dict()
    row = {k: scores[k] for k in ("f1", "precision", "recall")}
    row.update(threshold=threshold, f1_05=at_05["f1"], recall_05=at_05["recall"],
               ap=scores["average_precision"])
    return row


def slide_scores(config: LoopConfig, world: World, ckpt: Path, work: Path, threshold: float
                 ) -> dict[str, Any]:
    """`lymph predict` on the test world's slides, detecting at the validation `threshold`
    (at 0.5 a model whose test-world probabilities stay below it detects nothing), and `lymph
    eval slides`: lesion FROC (the official rules) and slide AUC."""
    from lymph.model.camelyon import SlideEvalConfig
    from lymph.model.camelyon import run as eval_slides
    from lymph.model.predict import PredictConfig
    from lymph.model.predict import run as predict

    maps = work / "test_maps"
    predict(PredictConfig(checkpoint=ckpt, out=maps, slides=world.test_slides, device="cpu",
                          threads=config.threads, progress=False, force=True,
                          threshold=min(0.99, max(0.01, threshold))))
    res = eval_slides(SlideEvalConfig(slides=world.test_slides, predictions=maps,
                                      labels=world.test_slides / "reference.csv"))
    return {"froc": math.nan if res.froc_official is None else res.froc_official,
            "auc": math.nan if res.auc is None else res.auc}


def kept_checkpoint(work: Path) -> Path:
    """The checkpoint a finished round scored (best.pt, else last.pt)."""
    run_dir = work / "train"
    return run_dir / "best.pt" if (run_dir / "best.pt").is_file() else run_dir / "last.pt"


def rescore(config: LoopConfig, world: World, work: Path, row: dict[str, Any]
            ) -> dict[str, Any]:
    """A round saved before F1 was read at the validation threshold, or before the test
    world's FROC, scored again from its kept checkpoint (the rest of its row unchanged)."""
    ckpt = kept_checkpoint(work)
    if "threshold" not in row:
        row = {**row, **score(world, ckpt, val_threshold(work / "train", row.get("best_step")))}
    if "froc" not in row:
        row = {**row, **slide_scores(config, world, ckpt, work, row["threshold"])}
    return row


def next_boxes(config: LoopConfig, world: World, ckpt: Path, ann: Path, work: Path,
               strategy: str, seed: int) -> dict[str, list[Box]]:
    """Predict the pool's slides, then `lymph suggest` K boxes (reviewed ones excluded)."""
    from lymph.model.predict import PredictConfig
    from lymph.model.predict import run as predict
    from lymph.model.suggest import SuggestConfig
    from lymph.model.suggest import run as suggest

    pool = work / "pool"
    pool.mkdir(parents=True, exist_ok=True)
    for name in world.pool:
        link = pool / f"{name}.tif"
        if not link.exists():
            os.symlink((world.slides / f"{name}.tif").resolve(), link)
    predict(PredictConfig(checkpoint=ckpt, out=work / "maps", slides=pool, device="cpu",
                          threads=config.threads, progress=False, force=True))
    s = suggest(SuggestConfig(out=work / "next", maps=work / "maps", slides=pool,
                              annotations=ann, k=config.k, size=config.size,
                              strategy=strategy, seed=seed, force=True))
    out: dict[str, list[Box]] = {}
    for x in s.suggestions:
        out.setdefault(x.slide, []).append((x.x0, x.y0, x.x1, x.y1))
    return out


def area_mm2(boxes: dict[str, list[Box]], mpp: float) -> float:
    return sum((b[2] - b[0]) * (b[3] - b[1]) for bs in boxes.values() for b in bs) * mpp ** 2 / 1e6


def run_chain(config: LoopConfig, world: World, seed: int, strategy: str,
              start: dict[str, list[Box]]) -> list[dict[str, Any]]:
    """All rounds of one (seed, strategy); each round's row is kept in round.json (resume)."""
    boxes = {k: list(v) for k, v in start.items()}
    rows = []
    footprint = (config.patch_size * 2 ** config.level) ** 2
    for r in range(config.rounds + 1):
        work = config.out / f"seed{seed}" / strategy / f"round{r}"
        done = work / "round.json"
        if done.is_file():
            saved = resume_round(config, world, work, strategy, seed, r)
            rows.append(saved["row"])
            boxes = {k: [tuple(b) for b in v] for k, v in saved["boxes_after"].items()}
            continue
        if work.exists():
            shutil.rmtree(work)
        ann = work / "ann"
        write_answers(world, boxes, ann)
        t0 = time.perf_counter()
        row, ckpt = train_and_score(config, world, ann, work, seed)
        area = area_mm2(boxes, world.mpp)
        row = {"seed": seed, "strategy": strategy, "round": r, "boxes": sum(map(len,
               boxes.values())), "area_mm2": round(area, 5),
               "annotated_patches": round(area * 1e6 / world.mpp ** 2 / footprint, 2), **row}
        if r < config.rounds:
            for name, bs in next_boxes(config, world, ckpt, ann, work, strategy,
                                       seed * 1000 + r).items():
                boxes.setdefault(name, []).extend(bs)
        row["seconds"] = round(time.perf_counter() - t0, 1)
        atomic_write_text(done, json.dumps({"row": row, "boxes_after": boxes,
                                            "suggested": r < config.rounds}))
        rows.append(row)
    return rows


def resume_round(config: LoopConfig, world: World, work: Path, strategy: str, seed: int,
                 r: int) -> dict[str, Any]:
    """A finished round's round.json, brought up to this run: scored again at the validation
    threshold if it was saved before it, and given its next boxes if it was the last round of a
    run with fewer `--rounds` (from its kept checkpoint, as the round itself would have)."""
    done = work / "round.json"
    saved = json.loads(done.read_text())
    saved["row"] = rescore(config, world, work, saved["row"])
    n_after = sum(len(v) for v in saved["boxes_after"].values())
    suggested = saved.get("suggested", n_after > saved["row"]["boxes"])
    if r < config.rounds and not suggested:
        for name, bs in next_boxes(config, world, kept_checkpoint(work), work / "ann", work,
                                   strategy, seed * 1000 + r).items():
            saved["boxes_after"].setdefault(name, []).extend([list(b) for b in bs])
        suggested = True
    saved["suggested"] = suggested
    if (text := json.dumps(saved)) != done.read_text():  # rescored or given boxes: keep it
        atomic_write_text(done, text)
    return saved


def reach_fraction(unc: list[dict[str, Any]], rnd: list[dict[str, Any]], metric: str = "f1"
                   ) -> tuple[float, bool]:
    """(area uncertainty needs to reach random's final `metric` / random's final area,
    reached?): the first round at which uncertainty's metric >= random's last; 1.0 (not
    reached) otherwise."""
    target, full = rnd[-1][metric], rnd[-1]["area_mm2"]
    for row in unc:
        if row[metric] >= target:
            return (row["area_mm2"] / full if full > 0 else math.nan), True
    return 1.0, False


def summarize(rows: list[dict[str, Any]], seeds: tuple[int, ...], rounds: int
              ) -> dict[str, Any]:
    """Paired ΔF1 and ΔAP per round and the reach fractions, with `lymph study`'s statistics.
    F1 is read at each run's validation threshold; AP is threshold-free."""
    from lymph.model.study.stats import paired_stats

    by = {(r["seed"], r["strategy"], r["round"]): r for r in rows}
    rng = np.random.default_rng(0)
    per_round = []
    for rd in range(rounds + 1):
        pairs = [(by[(s, "uncertainty", rd)], by[(s, "random", rd)]) for s in seeds
                 if (s, "uncertainty", rd) in by and (s, "random", rd) in by]
        entry: dict[str, Any] = {"round": rd, "area_mm2": [u["area_mm2"] for u, _ in pairs]}
        for metric in METRICS:
            diffs = [u[metric] - r[metric] for u, r in pairs
                     if metric in u and metric in r]  # rows of an earlier bench lack froc
            # seeds are independent chains on one world: no shared test folds, so no correction
            entry[f"delta_{metric}"] = (paired_stats(diffs, rng=rng, ratio=0.0) if diffs
                                        else {"n": 0})
        per_round.append(entry)
    out: dict[str, Any] = {"per_round": per_round}
    for metric in METRICS:
        out[REACH[metric]] = _reach_summary(by, seeds, rounds, metric, rng)
    return out


def _reach_summary(by: dict, seeds: tuple[int, ...], rounds: int, metric: str,
                   rng: np.random.Generator) -> dict[str, Any]:
    from lymph.model.study.stats import bootstrap_ci, t_interval

    fractions, reached = [], []
    for s in seeds:
        unc = [by[(s, "uncertainty", rd)] for rd in range(rounds + 1)
               if (s, "uncertainty", rd) in by]
        rnd = [by[(s, "random", rd)] for rd in range(rounds + 1) if (s, "random", rd) in by]
        if len(unc) == len(rnd) == rounds + 1 and all(metric in x for x in unc + rnd):
            f, ok = reach_fraction(unc, rnd, metric)
            fractions.append(f)
            reached.append(ok)
    many = len(fractions) > 1
    ci = t_interval(fractions) if many else (math.nan, math.nan)  # the study's interval
    boot = bootstrap_ci(fractions, rng=rng) if many else (math.nan, math.nan)  # shown only
    return {"metric": metric, "values": fractions, "reached": reached,
            "mean": float(np.mean(fractions)) if fractions else math.nan,
            "ci": tuple(float(v) for v in ci), "ci_bootstrap": boot, "goal": 0.6}


def _plot_mean(ax: Any, rows: list[dict[str, Any]], x: int, metric: str, *, color: str,
               label: str, dodge: float) -> None:
    """One strategy's mean over seeds per round (x: 1 area, 2 patch footprints), with the t 95%
    interval of the mean as error bars, shifted by the fraction `dodge` of x so that the two
    strategies' bars do not hide each other."""
    from scipy import stats

    xs, ys, errs = [], [], []
    for rnd in sorted({r["round"] for r in rows}):
        at = [r for r in rows if r["round"] == rnd]
        vals = np.array([float(r.get(metric, math.nan)) for r in at], dtype=float)
        vals = vals[np.isfinite(vals)]
        xs.append(float(np.mean([r["area_mm2" if x == 1 else "annotated_patches"] for r in at])))
        ys.append(float(vals.mean()) if vals.size else math.nan)
        sem = float(vals.std(ddof=1) / math.sqrt(vals.size)) if vals.size > 1 else 0.0
        errs.append(float(stats.t.ppf(0.975, vals.size - 1)) * sem if vals.size > 1 else 0.0)
    ax.errorbar([v * (1 + dodge) for v in xs], ys, yerr=errs, color=color, lw=2.5, marker="o",
                capsize=4, label=label)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # F1 (validation threshold) and average precision against annotated mm^2 and footprints
    f1 = "test-world pixel F1 (validation threshold)"
    panels = ((1, "f1", "annotated area (mm$^2$)", f1),
              (2, "f1", "annotated area (patch footprints)", f1),
              (1, "ap", "annotated area (mm$^2$)", "test-world average precision"),
              (1, "froc", "annotated area (mm$^2$)", "test-world lesion FROC (official)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(20, 4.4))
    for strategy, color, dodge in zip(STRATEGIES, ("tab:orange", "tab:gray"), (-0.01, 0.01),
                                      strict=True):
        mine = [r for r in rows if r["strategy"] == strategy]
        seeds = sorted({r["seed"] for r in mine})
        for seed in seeds:
            pts = sorted((r["round"], r["area_mm2"], r["annotated_patches"], r)
                         for r in mine if r["seed"] == seed)
            for ax, (x, metric, _xl, _yl) in zip(axes, panels, strict=True):
                ax.plot([p[x] for p in pts], [p[3].get(metric, math.nan) for p in pts], color=color,
                        alpha=0.25, lw=1)
        for ax, (x, metric, _xl, _yl) in zip(axes, panels, strict=True):
            _plot_mean(ax, mine, x, metric, color=color, label=f"{strategy}: mean of "
                       f"{len(seeds)} seeds (thin: each seed)", dodge=dodge)
    for ax, (_x, _m, xlabel, ylabel) in zip(axes, panels, strict=True):
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize="small")
    fig.suptitle("The annotation loop on the test world: uncertainty-driven vs random regions of "
                 "the same area (paired seeds; bars: t 95% CI of the mean)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_loop(config: LoopConfig) -> dict[str, Any]:
    config.out.mkdir(parents=True, exist_ok=True)
    world = make_world(config)
    rows: list[dict[str, Any]] = []
    for seed in config.seeds:
        start = initial_boxes(world, k0=config.k0, size=config.size,
                              rng=np.random.default_rng(seed))
        for strategy in STRATEGIES:
            rows.extend(run_chain(config, world, seed, strategy, start))
    with open(config.out / "loop.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    summary = summarize(rows, config.seeds, config.rounds)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()}
    atomic_write_text(config.out / "loop.json", json.dumps(
        {"settings": settings, "world": {"val": world.val, "pool": world.pool,
                                         "mpp": world.mpp}, "summary": summary},
        indent=1, default=str))
    plot(rows, config.out / "loop.png")
    return {"rows": rows, "summary": summary}


def report(result: dict[str, Any]) -> str:
    lines = [f"{'round':>5} {'area mm2':>9} {'metric':>6} {'Δ unc-rand':>11} "
             f"{'t 95% CI':>18} {'p':>6} n"]
    for pr in result["summary"]["per_round"]:
        for metric in METRICS:
            d = pr[f"delta_{metric}"]
            if not d.get("n"):
                continue
            area = np.mean(pr["area_mm2"])
            lo, hi = d["ci"]
            lines.append(f"{pr['round']:>5} {area:>9.3f} {metric:>6} {d['mean']:>+11.3f} "
                         f"[{lo:+.3f}, {hi:+.3f}] {d['p_wilcoxon']:>6.3f} {d['n']}")
    for metric in METRICS:
        rf = result["summary"][REACH[metric]]
        lo, hi = rf["ci"]
        lines.append(f"area uncertainty needs to reach random's final {rf['metric'].upper()}, as "
                     f"a fraction of random's area: {rf['mean']:.2f} [{lo:.2f}, {hi:.2f}] over "
                     f"{len(rf['values'])} seed(s) (goal <= 0.6); reached in "
                     f"{sum(rf['reached'])} of {len(rf['reached'])}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("bench_out/loop"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    ap.add_argument("--slide", default="8000x6000", help="synthetic slide size WxH")
    ap.add_argument("--world", default="camelyon", choices=("camelyon", "default"))
    ap.add_argument("--centre", default="mixed")
    for name, default in (("rounds", 4), ("k", 6), ("k0", 6), ("tumor", 20), ("normal", 8),
                          ("test-tumor", 6), ("test-normal", 2), ("val", 2), ("level", 2),
                          ("patch-size", 128), ("patches-per-slide", 128), ("steps", 1200),
                          ("eval-every", 100), ("batch-size", 8), ("crop", 64),
                          ("base-width", 8), ("threads", 1)):
        ap.add_argument(f"--{name}", type=int, default=default)
    ap.add_argument("--size", type=float, default=1024.0, help="box side, level-0 px")
    ap.add_argument("--init", type=Path, default=None, help="pretrained checkpoint")
    a = ap.parse_args()
    w, h = (int(v) for v in a.slide.lower().split("x"))
    config = LoopConfig(out=a.out, seeds=tuple(a.seeds), rounds=a.rounds, k=a.k, k0=a.k0,
                        size=a.size, tumor=a.tumor, normal=a.normal, test_tumor=a.test_tumor,
                        test_normal=a.test_normal, slide=(w, h), world=a.world,
                        centre=a.centre, val=a.val, level=a.level,
                        patch_size=a.patch_size, patches_per_slide=a.patches_per_slide,
                        steps=a.steps, eval_every=a.eval_every, batch_size=a.batch_size,
                        crop=a.crop, base_width=a.base_width, init=a.init, threads=a.threads)
    print(report(run_loop(config)))
    print(f"rows: {config.out / 'loop.csv'}; plot: {config.out / 'loop.png'}")


if __name__ == "__main__":
    main()
