"""`lymph study`: the seed paper's Figure 3 experiment, grouped by slide, paired, resumable.

For every labeled-set size N and every fold k of a K-fold split *grouped by slide*:

1. the held-out fold's slides are the test slides; the other folds are the training slides;
2. a class-balanced subset of N labeled patches (N/2 tumor, N/2 non-tumor by the patch's drawn
   class) is drawn from the training slides with `Generator([seed, fold, size])`;
3. two fine-tunes run on that *same* subset with the *same* steps and training seed: one from
   the pretrained checkpoint, one from scratch (same architecture), so the only difference is
   the initialisation;
4. each is scored on the held-out slides with `evaluate_store` at a fixed threshold (0.5 by
   default; it is never tuned on the held-out slides).

No patch, and no slide, is on both sides of a fold: the paper drew folds over patches, so
neighbouring patches of one slide sat in training and test; lymph does not.

Outputs in OUT: `runs/<run_id>/done.json` per finished run (written atomically, last: a rerun
skips those runs and refuses them if their settings differ), `results.csv` (one row per run),
`table.md` (Figure 3's shape: P, R, F1 mean +- sd per size and condition, and the paired F1
difference pretrained - scratch with its sd) and `f1_vs_size.png`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import shutil
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lymph.data.errors import CheckpointError, ConfigError, StoreError
from lymph.model.metrics import PixelCounts

CONDITIONS = ("scratch", "pretrained")
CONDITION_LABELS = {"scratch": "Without pretraining", "pretrained": "With pretraining"}
PAPER_SIZES = (200, 120, 80, 40)

# The quick profile: the whole grid on the demo's few synthetic slides on a 2-core CPU.
QUICK = {
    "steps": 300,
    "batch_size": 8,
    "crop": 64,
    "eval_batch_size": 16,
    "workers": 0,  # the few labeled patches sit in memory: no loader processes to start
    "max_test_patches": 64,  # per held-out slide, a seeded sample shared by both conditions
}
# Measured on the idle 2-core CPU with the demo's data (7 slides at level 2, 128 px patches,
# width-8 UNet): 150 steps take ~7 s per run including scoring, so the 40-run grid at 300 steps
# takes ~10 minutes. Fewer steps leave fine-tunes in the early "everything is tumor" phase
# (30 steps: recall ~99%, precision = the tumor share), which says nothing about pretraining.
ARCH_KEYS = ("base_width", "depth", "last_skip", "norm")

CSV_FIELDS = (
    "run_id",
    "size",
    "fold",
    "condition",
    "precision",
    "recall",
    "f1",
    "dice",
    "iou",
    "tp",
    "fp",
    "fn",
    "tn",
    "threshold",
    "n_tumor_patches",
    "n_normal_patches",
    "subset_sha",
    "train_seed",
    "steps",
    "train_slides",
    "test_slides",
    "n_test_patches",
    "train_seconds",
    "eval_seconds",
)


# --- pure planning functions ------------------------------------------------------------------


def make_folds(
    slides: Sequence[tuple[str, str]], n_folds: int, *, seed: int
) -> list[tuple[str, ...]]:
    """Split labeled (slide_id, status) pairs into `n_folds` folds of whole slides.

    Tumor slides are dealt first, round robin in a seeded order, then normal slides continue
    the deal, so each fold gets tumor slides when there are enough and sizes differ by at most
    one. ConfigError when there are fewer slides than folds (a fold would be empty).
    """
    if n_folds < 2:
        raise ConfigError(f"folds must be >= 2 for cross-validation, got {n_folds}")
    ids = sorted({s for s, _ in slides})
    if len(ids) != len(slides):
        raise ConfigError("slide ids must be unique")
    if len(ids) < n_folds:
        raise ConfigError(
            f"{len(ids)} labeled slide(s) ({', '.join(ids) or 'none'}) cannot make {n_folds} "
            f"folds grouped by slide: a fold would hold no slide; pass --folds {max(len(ids), 2)}"
            " or fewer, or extract more labeled slides"
        )
    rng = np.random.default_rng([seed, 0xF01D])
    tumor = sorted(s for s, st in slides if st == "tumor")
    other = sorted(s for s, st in slides if st != "tumor")
    order = [tumor[i] for i in rng.permutation(len(tumor))]
    order += [other[i] for i in rng.permutation(len(other))]
    folds: list[list[str]] = [[] for _ in range(n_folds)]
    for i, sid in enumerate(order):
        folds[i % n_folds].append(sid)
    return [tuple(sorted(f)) for f in folds]


def balanced_subset(
    labels: Mapping[str, np.ndarray], size: int, *, rng: np.random.Generator
) -> list[tuple[str, int]]:
    """`size` (slide_id, patch index) pairs, half with label 1 (tumor) and half 0, without
    replacement; when one class is short, all of it is taken and the other fills the rest.

    Sorted by (slide_id, index), so the result depends only on the labels, the size and rng.
    """
    if size < 1:
        raise ConfigError(f"subset size must be >= 1, got {size}")
    pos = [(sid, int(i)) for sid in sorted(labels) for i in np.flatnonzero(labels[sid] == 1)]
    neg = [(sid, int(i)) for sid in sorted(labels) for i in np.flatnonzero(labels[sid] == 0)]
    if len(pos) + len(neg) < size:
        raise ConfigError(
            f"the training slides hold {len(pos) + len(neg)} labeled patches, fewer than the "
            f"subset size {size}; use smaller --sizes or extract more patches per slide"
        )
    n_pos = min(len(pos), math.ceil(size / 2))
    n_neg = min(len(neg), size - n_pos)
    n_pos = size - n_neg  # a short non-tumor class is made up with tumor patches
    take_pos = rng.choice(len(pos), size=n_pos, replace=False) if n_pos else []
    take_neg = rng.choice(len(neg), size=n_neg, replace=False) if n_neg else []
    return sorted([pos[i] for i in take_pos] + [neg[i] for i in take_neg])


def subset_sha(subset: Sequence[tuple[str, int]]) -> str:
    """A short fingerprint of a subset (results.csv shows both conditions used the same one)."""
    text = "\n".join(f"{s}:{i}" for s, i in subset)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def train_seed(seed: int, fold: int, size: int) -> int:
    """The training seed shared by both conditions of one (fold, size)."""
    return int(np.random.SeedSequence([seed, fold, size]).generate_state(1)[0] & 0x7FFFFFFF)


@dataclass(frozen=True)
class RunSpec:
    """One fine-tune of the grid."""

    size: int
    fold: int
    condition: str
    train_slides: tuple[str, ...]
    test_slides: tuple[str, ...]
    subset: tuple[tuple[str, int], ...] = field(repr=False)
    train_seed: int
    n_tumor_patches: int
    n_normal_patches: int

    @property
    def run_id(self) -> str:
        return f"n{self.size:04d}_f{self.fold}_{self.condition}"

    def fingerprint(self) -> dict[str, Any]:
        """What a finished run must match to be reused."""
        return {
            "size": self.size,
            "fold": self.fold,
            "condition": self.condition,
            "train_slides": list(self.train_slides),
            "test_slides": list(self.test_slides),
            "subset_sha": subset_sha(self.subset),
            "train_seed": self.train_seed,
        }


def plan_runs(
    slides: Sequence[tuple[str, str]],
    labels: Mapping[str, np.ndarray],
    *,
    sizes: Sequence[int],
    n_folds: int,
    seed: int,
) -> list[RunSpec]:
    """Every run of the grid, size by size, fold by fold, scratch then pretrained.

    `slides`: labeled (slide_id, status); `labels`: each slide's per-patch labels (0/1).
    """
    folds = make_folds(slides, n_folds, seed=seed)
    runs: list[RunSpec] = []
    for size in sizes:
        for k, test in enumerate(folds):
            train = tuple(s for j, f in enumerate(folds) if j != k for s in f)
            rng = np.random.default_rng([seed, k, size])
            subset = balanced_subset({s: labels[s] for s in train}, size, rng=rng)
            n_tumor = sum(int(labels[s][i] == 1) for s, i in subset)
            for condition in CONDITIONS:
                runs.append(
                    RunSpec(
                        size=int(size),
                        fold=k,
                        condition=condition,
                        train_slides=tuple(train),
                        test_slides=test,
                        subset=tuple(subset),
                        train_seed=train_seed(seed, k, size),
                        n_tumor_patches=n_tumor,
                        n_normal_patches=len(subset) - n_tumor,
                    )
                )
    return runs


# --- summary ----------------------------------------------------------------------------------


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return math.nan, math.nan
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def summarize(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per size (descending): mean and sd of P, R, F1 per condition over folds, and the paired
    F1 difference (pretrained - scratch, per fold) with its sd and the folds it was positive."""
    out = []
    for size in sorted({int(r["size"]) for r in rows}, reverse=True):
        entry: dict[str, Any] = {"size": size}
        by = {
            c: {int(r["fold"]): r for r in rows if int(r["size"]) == size and r["condition"] == c}
            for c in CONDITIONS
        }
        for c in CONDITIONS:
            for metric in ("precision", "recall", "f1"):
                entry[f"{c}_{metric}"] = _mean_sd([float(r[metric]) for r in by[c].values()])
            entry[f"{c}_folds"] = len(by[c])
            if all("tp" in r for r in by[c].values()):  # every slide scored once over the folds
                pooled = sum(
                    (PixelCounts(**{k: int(r[k]) for k in ("tp", "fp", "fn", "tn")})
                     for r in by[c].values()),
                    PixelCounts(),
                )  # fmt: skip
                entry[f"{c}_pooled"] = {m: getattr(pooled, m) for m in ("precision", "recall",
                                                                        "f1")}  # fmt: skip
        entry["folds_without_tumor"] = sum(
            int(r["tp"]) + int(r["fn"]) == 0 for r in by["scratch"].values() if "tp" in r
        )
        paired = sorted(set(by["scratch"]) & set(by["pretrained"]))
        diffs = [float(by["pretrained"][k]["f1"]) - float(by["scratch"][k]["f1"]) for k in paired]
        entry["f1_diff"] = _mean_sd(diffs)
        entry["f1_diff_folds"] = len(paired)
        entry["f1_diff_positive"] = int(sum(d > 0 for d in diffs))
        out.append(entry)
    return out


def _pct(pair: tuple[float, float], *, signed: bool = False) -> str:
    mean, sd = pair
    if math.isnan(mean):
        return "n/a"
    value = 100 * mean if abs(100 * mean) >= 0.005 else 0.0  # no "-0.00"
    sign = "+" if signed and value >= 0 else ""
    return f"{sign}{value:.2f} ± {100 * sd:.2f}"


def table_markdown(summary: Sequence[Mapping[str, Any]], *, title: str = "") -> str:
    """Figure 3 of the seed paper, as a Markdown table (percent, mean ± sd over folds)."""
    lines = [title, ""] if title else []
    lines += [
        "| Labeled patches | Without pretraining: P (%) | R (%) | F1 (%) | "
        "With pretraining: P (%) | R (%) | F1 (%) | ΔF1 pretrained − scratch (pp) | "
        "folds ΔF1 > 0 |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for e in summary:
        cells = [str(e["size"])]
        for c in CONDITIONS:
            cells += [_pct(e[f"{c}_precision"]), _pct(e[f"{c}_recall"]), _pct(e[f"{c}_f1"])]
        cells += [_pct(e["f1_diff"], signed=True), f"{e['f1_diff_positive']}/{e['f1_diff_folds']}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Mean ± sample sd over folds grouped by slide; each fold scored pooled over the pixels of "
        "its held-out slides. ΔF1 is paired: the same fold, labeled subset, steps and seed.",
    ]
    if any(f"{c}_pooled" in e for e in summary for c in CONDITIONS):
        lines += [
            "",
            "Pooled over all folds (each labeled slide is held out exactly once; defined even when "
            "a fold holds no tumor):",
            "",
            "| Labeled patches | Without pretraining: P (%) | R (%) | F1 (%) | "
            "With pretraining: P (%) | R (%) | F1 (%) | folds without tumor |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for e in summary:
            cells = [str(e["size"])]
            for c in CONDITIONS:
                pooled = e.get(f"{c}_pooled", {})
                cells += [
                    f"{100 * pooled[m]:.2f}" if m in pooled else "n/a"
                    for m in ("precision", "recall", "f1")
                ]
            cells.append(str(e.get("folds_without_tumor", "n/a")))
            lines.append("| " + " | ".join(cells) + " |")
    if any(e.get("folds_without_tumor") for e in summary):
        lines += [
            "",
            "Some held-out folds hold no tumor pixels: their precision and recall are 1.0 when "
            "nothing is predicted and 0.0 otherwise (lymph.model.metrics), which widens the "
            "spread; fewer folds or more tumor slides avoid it.",
        ]
    return "\n".join(lines) + "\n"


# --- running ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StudyConfig:
    """Settings of a study; every one is recorded in OUT/study.json."""

    store: Path
    pretrained: Path
    out: Path
    sizes: tuple[int, ...] = PAPER_SIZES
    folds: int = 5
    steps: int | None = None  # None: the trainer's default (quick profile: QUICK["steps"])
    seed: int = 0
    quick: bool = False
    batch_size: int | None = None
    crop: int | None = None
    base_width: int | None = None  # must match the pretrained checkpoint when given
    lr: float | None = None
    recon_weight: float | None = None
    threshold: float = 0.5
    device: str = "auto"
    eval_batch_size: int | None = None
    workers: int | None = None  # trainer's data-loader processes (None: its default)
    max_test_patches: int | None = None  # per held-out slide (None: all; quick: 64)
    keep_checkpoints: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("store", "pretrained", "out"):
            object.__setattr__(self, name, Path(getattr(self, name)))
        sizes = tuple(int(s) for s in self.sizes)
        if not sizes or any(s < 2 for s in sizes):
            raise ConfigError(
                f"sizes must be integers >= 2, got {self.sizes!r}; e.g. 200,120,80,40"
            )
        if len(set(sizes)) != len(sizes):
            raise ConfigError(f"sizes repeat a value: {self.sizes!r}")
        object.__setattr__(self, "sizes", sizes)
        if self.folds < 2:
            raise ConfigError(f"folds must be >= 2 for cross-validation, got {self.folds}")
        if self.workers is not None and self.workers < 0:
            raise ConfigError(f"workers must be >= 0, got {self.workers}")
        for name in (
            "steps",
            "batch_size",
            "crop",
            "base_width",
            "eval_batch_size",
            "max_test_patches",
        ):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"threshold must be within [0, 1], got {self.threshold}")

    def resolved(self, name: str) -> Any:
        """The setting in effect: given, else the quick profile's, else None (trainer default)."""
        value = getattr(self, name)
        if value is None and self.quick:
            return QUICK.get(name)
        return value

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("store", "pretrained", "out"):
            d[key] = str(d[key])
        d["sizes"] = list(self.sizes)
        d["resolved"] = {k: self.resolved(k) for k in QUICK}
        return d


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_results_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for row in sorted(rows, key=lambda r: (-int(r["size"]), int(r["fold"]), r["condition"])):
        writer.writerow(row)
    _atomic_write(path, buf.getvalue())


def _check_pretrained(config: StudyConfig) -> dict[str, Any]:
    from lymph.model.checkpoint import load_checkpoint

    ckpt = load_checkpoint(config.pretrained)
    model_cfg = dict(ckpt["config"]["model"])
    if config.base_width is not None and config.base_width != model_cfg.get("base_width"):
        raise CheckpointError(
            f"{config.pretrained} has base width {model_cfg.get('base_width')}, --base-width "
            f"{config.base_width} asks for another: both conditions use the pretrained "
            "architecture; drop --base-width or pretrain at that width"
        )
    stage = ckpt["config"].get("stage")
    if stage != "pretrain":
        warnings.warn(
            f"{config.pretrained} is a {stage!r} checkpoint, not a reconstruction pretraining "
            "(`lymph train --stage pretrain`): the 'pretrained' condition starts from it anyway",
            stacklevel=3,
        )
    return model_cfg


def _run_one(config: StudyConfig, spec: RunSpec, model_cfg: dict[str, Any]) -> dict[str, Any]:
    from dataclasses import replace

    from lymph.model.evaluate import evaluate_store
    from lymph.model.train import TrainConfig, train

    run_dir = config.out / "runs" / spec.run_id
    train_dir = run_dir / "train"
    if train_dir.exists():  # a run killed before done.json: start it over
        shutil.rmtree(train_dir)
    options: dict[str, Any] = {
        "steps": config.resolved("steps"),
        "batch_size": config.resolved("batch_size"),
        "crop": config.resolved("crop"),
        "workers": config.resolved("workers"),
        "lr": config.lr,
        "recon_weight": config.recon_weight,
    }
    options = {k: v for k, v in options.items() if v is not None}
    if config.crop is None and "crop" in options:  # a profile's crop: fit the model's multiple
        multiple = 2 ** int(model_cfg.get("depth", 4))
        options["crop"] = max(multiple, round(options["crop"] / multiple) * multiple)
    if spec.condition == "pretrained":
        options["init"] = config.pretrained
    else:
        options["from_scratch"] = True
    # both conditions: the pretrained checkpoint's architecture, the same seed and subset
    arch = {k: model_cfg[k] for k in ARCH_KEYS if k in model_cfg}
    train_config = TrainConfig(
        store=config.store, out=train_dir, stage="finetune", labeled=len(spec.subset),
        val_slides=0, seed=spec.train_seed, device=config.device, **arch, **options,
    )  # fmt: skip
    # no validation (the held-out fold must not pick a checkpoint): one checkpoint, at the end
    train_config = replace(
        train_config, checkpoint_every=train_config.steps, eval_every=train_config.steps
    )
    t0 = time.perf_counter()
    result = train(
        train_config, train_slides=list(spec.train_slides), val_slides=[],
        labeled=list(spec.subset), progress=False,
    )  # fmt: skip
    t1 = time.perf_counter()
    scores = evaluate_store(
        config.store, result.last, threshold=config.threshold, slides=list(spec.test_slides),
        batch_size=config.resolved("eval_batch_size") or 16, device=config.device,
        max_patches_per_slide=config.resolved("max_test_patches"), seed=config.seed,
        progress=False,
    )  # fmt: skip
    t2 = time.perf_counter()
    if not config.keep_checkpoints:
        for ckpt in train_dir.rglob("*.pt"):
            ckpt.unlink()
    return {
        "run_id": spec.run_id, "size": spec.size, "fold": spec.fold,
        "condition": spec.condition,
        **{k: scores[k] for k in ("precision", "recall", "f1", "dice", "iou",
                                  "tp", "fp", "fn", "tn", "threshold")},
        "n_tumor_patches": spec.n_tumor_patches, "n_normal_patches": spec.n_normal_patches,
        "subset_sha": subset_sha(spec.subset), "train_seed": spec.train_seed,
        "steps": result.steps, "train_slides": ";".join(spec.train_slides),
        "test_slides": ";".join(spec.test_slides), "n_test_patches": scores["n_patches"],
        "train_seconds": round(t1 - t0, 2), "eval_seconds": round(t2 - t1, 2),
    }  # fmt: skip


def run_study(config: StudyConfig) -> dict[str, Any]:
    """Run (or resume) the grid; returns {"rows", "summary", "files", "skipped", "ran"}."""
    from tqdm.auto import tqdm

    from lymph.data.store import PatchStore
    from lymph.model.figures import plot_f1_vs_size

    store = PatchStore.open(config.store)
    labeled = [(s.slide_id, s.status) for s in store.slides if s.labeled]
    if not labeled:
        raise StoreError(
            f"{config.store}: no labeled (tumor or normal) slide: a study needs masks; extract "
            "slides with annotations"
        )
    model_cfg = _check_pretrained(config)
    from lymph.model.train import slide_labels  # reads the labels array only, no images

    labels = {sid: slide_labels(store, sid) for sid, _ in labeled}
    runs = plan_runs(labeled, labels, sizes=config.sizes, n_folds=config.folds, seed=config.seed)
    n_tumor_slides = sum(st == "tumor" for _, st in labeled)
    if n_tumor_slides < config.folds:
        warnings.warn(
            f"{n_tumor_slides} tumor slide(s) for {config.folds} folds: some held-out folds hold "
            "no tumor, so their recall is 0 or 1 by convention; prefer --folds "
            f"{max(n_tumor_slides, 2)}",
            stacklevel=2,
        )

    config.out.mkdir(parents=True, exist_ok=True)
    _atomic_write(config.out / "study.json", json.dumps(config.to_dict(), indent=2) + "\n")
    settings = {k: v for k, v in config.to_dict().items() if k not in ("progress", "out")}
    rows: list[dict[str, Any]] = []
    todo: list[RunSpec] = []
    for spec in runs:
        done = config.out / "runs" / spec.run_id / "done.json"
        if done.exists():
            record = json.loads(done.read_text())
            want = {"spec": spec.fingerprint(), "settings": _run_settings(settings)}
            got = {"spec": record.get("spec"), "settings": record.get("settings")}
            if got != want:
                diff = _diff(got, want)
                raise ConfigError(
                    f"{done}: this finished run was made with other settings ({diff}); rerun "
                    "with the same settings to resume, or use a new --out"
                )
            rows.append(record["row"])
        else:
            todo.append(spec)
    skipped = len(rows)
    bar = tqdm(
        total=len(runs),
        initial=skipped,
        desc="study runs",
        unit="run",
        disable=None if config.progress else True,
    )
    with bar:
        for spec in todo:
            bar.set_postfix_str(spec.run_id)
            row = _run_one(config, spec, model_cfg)
            record = {"spec": spec.fingerprint(), "settings": _run_settings(settings), "row": row}
            _atomic_write(
                config.out / "runs" / spec.run_id / "done.json", json.dumps(record, indent=2) + "\n"
            )
            rows.append(row)
            write_results_csv(config.out / "results.csv", rows)
            bar.update(1)
    write_results_csv(config.out / "results.csv", rows)
    summary = summarize(rows)
    title = (
        f"Pixel metrics on held-out slides, {config.folds}-fold cross-validation grouped by slide "
        f"({len(labeled)} labeled slides), threshold {config.threshold}"
    )
    _atomic_write(config.out / "table.md", table_markdown(summary, title=title))
    sizes = [e["size"] for e in summary]
    series = {
        CONDITION_LABELS[c]: (
            [e[f"{c}_f1"][0] for e in summary],
            [e[f"{c}_f1"][1] for e in summary],
        )
        for c in CONDITIONS
    }
    plot_f1_vs_size(sizes, series, config.out / "f1_vs_size.png")
    files = {
        name: str(config.out / name)
        for name in ("results.csv", "table.md", "f1_vs_size.png", "study.json")
    }
    return {
        "rows": rows,
        "summary": summary,
        "files": files,
        "skipped": skipped,
        "ran": len(todo),
        "folds": make_folds(labeled, config.folds, seed=config.seed),
    }


RUN_SETTINGS = ("store", "pretrained", "folds", "seed", "lr", "recon_weight", "threshold")


def _run_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The settings a finished run must share to be reused: those that change its result.
    (Sizes may be added to a study; device and batch sizes for scoring change no result.)"""
    resolved = settings["resolved"]
    return {
        **{k: settings[k] for k in RUN_SETTINGS},
        **{k: resolved[k] for k in ("steps", "batch_size", "crop", "max_test_patches")},
    }


def _diff(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> str:
    parts = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, Mapping) and isinstance(y, Mapping):
            inner = _diff(x, y, f"{prefix}{key}.")
            if inner:
                parts.append(inner)
        elif x != y:
            parts.append(f"{prefix}{key}: {x!r} then, {y!r} now")
    return "; ".join(parts)
