"""`lymph eval` in patch mode: pixel precision, recall, F1, Dice and IoU of a checkpoint over
every labeled patch of a store, pooled and per slide.

The store is streamed one storage chunk (64 patches) at a time, so memory is bounded by one
chunk of images and probabilities plus two fixed-size histograms (`PRAccumulator`). Patches are
scored at their full size: `predict_probs` reflect-pads to the model's multiple and crops back.

Thresholds: a number in [0, 1], or "auto". With "auto" a *validation part* of the store (slides
disjoint from the ones scored) picks two thresholds: the F1-best one and the highest one that
reaches 0.9 recall. The scored slides are reported at the F1-best threshold, and the pooled
figures at the 0.9-recall threshold are reported too. The validation part is the checkpoint's
recorded validation slides when they are labeled slides of this store, else a seeded split of
the store's labeled slides (recorded in the output). The scored data never chooses a threshold.
"""

from __future__ import annotations

import math
import warnings
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lymph.data.errors import CheckpointError, ConfigError, StoreError
from lymph.data.io import atomic_write_json
from lymph.model.metrics import PixelCounts, PRAccumulator, binarize, pixel_counts
from lymph.model.precision import check_precision
from lymph.model.precision import describe as describe_precision

AUTO = "auto"
RECALL_TARGET = 0.9


def parse_threshold(value: str | float) -> float | str:
    """ "auto" or a number in [0, 1] (ConfigError otherwise)."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == AUTO:
            return AUTO
        try:
            number = float(text)
        except ValueError:
            raise ConfigError(
                f"threshold {value!r} is neither a number in [0, 1] nor 'auto'; "
                "pass e.g. --threshold 0.5 or --threshold auto"
            ) from None
    else:
        number = float(value)
    if not (math.isfinite(number) and 0.0 <= number <= 1.0):
        raise ConfigError(f"threshold {value!r} is outside [0, 1]; pass e.g. --threshold 0.5")
    return number


@dataclass(frozen=True)
class EvalConfig:
    """Settings of one patch-mode evaluation (all recorded in the output)."""

    store: Path
    checkpoint: Path
    threshold: float | str = 0.5
    out: Path | None = None
    slides: tuple[str, ...] | None = None
    val_slides: tuple[str, ...] | None = None
    val_fraction: float = 0.2
    batch_size: int = 16
    device: str = "cpu"
    tta: bool = False
    figures: bool = False
    n_figure_patches: int = 8
    bins: int = 1001
    seed: int = 0
    max_patches_per_slide: int | None = None  # None: every patch; else a seeded sample
    progress: bool = True
    precision: str = "auto"  # lymph.model.precision: bf16 autocast on CUDA and AMX CPUs

    def __post_init__(self) -> None:
        check_precision(self.precision)
        if self.out is not None and Path(self.out).exists() and not Path(self.out).is_dir():
            raise ConfigError(f"--out {self.out} is a file, not a folder; choose a folder")
        object.__setattr__(self, "store", Path(self.store))
        object.__setattr__(self, "checkpoint", Path(self.checkpoint))
        if self.out is not None:
            object.__setattr__(self, "out", Path(self.out))
        object.__setattr__(self, "threshold", parse_threshold(self.threshold))
        for name in ("slides", "val_slides"):
            value = getattr(self, name)
            if value is not None:
                if isinstance(value, str):
                    raise ConfigError(f"{name} must be a sequence of slide ids, not a string")
                object.__setattr__(self, name, tuple(str(v) for v in value))
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be within (0, 1), got {self.val_fraction}")
        if self.n_figure_patches < 1:
            raise ConfigError(f"n_figure_patches must be >= 1, got {self.n_figure_patches}")
        if self.max_patches_per_slide is not None and self.max_patches_per_slide < 1:
            raise ConfigError(
                f"max_patches_per_slide must be >= 1 (or None for all), got "
                f"{self.max_patches_per_slide}"
            )
        if self.bins < 11:
            raise ConfigError(f"bins must be >= 11, got {self.bins}")
        if self.figures and self.out is None:
            raise ConfigError("figures need an output folder: pass --out DIR with --figures")
        if self.val_slides is not None and self.threshold != AUTO:
            raise ConfigError("val_slides only matter with threshold 'auto'")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("store", "checkpoint", "out"):
            d[key] = None if d[key] is None else str(d[key])
        for key in ("slides", "val_slides"):
            d[key] = None if d[key] is None else list(d[key])
        return d


@dataclass
class _Reservoir:
    """Uniform sample of k items from a stream (Algorithm R) with an explicit Generator."""

    k: int
    rng: np.random.Generator
    items: list[Any] = field(default_factory=list)
    seen: int = 0

    def offer(self, item: Any) -> None:
        self.seen += 1
        if len(self.items) < self.k:
            self.items.append(item)
        else:
            j = int(self.rng.integers(self.seen))
            if j < self.k:
                self.items[j] = item


_SPLIT_KEYS = {"val_slides": "val", "train_slides": "train"}


def _recorded_slides(ckpt: dict, key: str) -> list[str] | None:
    """Slide ids a checkpoint records as `key` ("val_slides" or "train_slides"): the trainer's
    config["splits"]["val"/"train"], else a list under config, config["train"] or extra."""
    config = ckpt.get("config", {}) if isinstance(ckpt.get("config"), dict) else {}
    splits = config.get("splits")
    if isinstance(splits, dict) and isinstance(splits.get(_SPLIT_KEYS[key]), list | tuple):
        return [str(s) for s in splits[_SPLIT_KEYS[key]]]
    for where in (config, config.get("train"), ckpt.get("extra")):
        if isinstance(where, dict) and isinstance(where.get(key), list | tuple):
            return [str(s) for s in where[key]]
    return None


def same_store(store: Any, ckpt: dict) -> bool:
    """Whether the checkpoint was trained on this store (same path, or same settings: a copy),
    so that its recorded slide ids name the same slides here."""
    trained = ckpt.get("config", {}).get("store")
    if not isinstance(trained, dict):
        return False
    path = trained.get("path")
    if path is not None:
        try:
            if Path(path).resolve() == Path(store.path).resolve():
                return True
        except OSError:
            pass
    ignore = {"path", "lymph_version", "schema_version", "workers", "scheduler", "progress",
              "content_digest"}
    mine = {k: v for k, v in store.settings.items() if k not in ignore}
    theirs = {k: v for k, v in trained.items() if k not in ignore}
    return len(mine) > 2 and mine == theirs


def split_validation(
    slides: Sequence[tuple[str, str]], *, fraction: float, rng: np.random.Generator
) -> tuple[list[str], list[str]]:
    """Seeded split of labeled (slide_id, status) pairs into (validation, scored) slide ids.

    The validation part holds round(fraction * n) slides, at least one, and at least one tumor
    slide when there is one; the scored part keeps at least one slide (and one tumor slide when
    there are two or more). ConfigError with fewer than two slides.
    """
    if len(slides) < 2:
        raise ConfigError(
            f"threshold 'auto' needs at least 2 labeled slides (one to choose the threshold, one "
            f"to score), the store has {len(slides)}; pass a number, e.g. --threshold 0.5"
        )
    ids = sorted(s for s, _ in slides)
    tumor = [s for s, st in sorted(slides) if st == "tumor"]
    normal = [s for s, st in sorted(slides) if st != "tumor"]
    n_val = min(max(1, round(fraction * len(ids))), len(ids) - 1)
    tumor_perm = [tumor[i] for i in rng.permutation(len(tumor))]
    normal_perm = [normal[i] for i in rng.permutation(len(normal))]
    val: list[str] = []
    if tumor_perm:
        val.append(tumor_perm.pop())
    # share the remaining validation places in proportion, keeping a tumor slide to score
    while len(val) < n_val:
        want_tumor = len(tumor_perm) > 1 and (
            not normal_perm or rng.random() < len(tumor_perm) / (len(tumor_perm) + len(normal_perm))
        )
        val.append(tumor_perm.pop() if want_tumor else normal_perm.pop())
    scored = [s for s in ids if s not in set(val)]
    return sorted(val), scored


def _choose_slides(
    config: EvalConfig, store: Any, ckpt: dict, rng: np.random.Generator
) -> tuple[list[str], list[str], str]:
    """(scored slide ids, validation slide ids, where the validation part came from)."""
    labeled = [s for s in store.slides if s.labeled]
    if not labeled:
        raise StoreError(
            f"{store.path}: the store holds no labeled slide (tumor or normal), so there are no "
            "masks to score against; extract slides with annotations (`lymph extract` reads "
            "S.xml / S_mask.tif beside each slide, or --annotations DIR)"
        )
    labeled_ids = {s.slide_id for s in labeled}
    requested: list[str] | None = None
    if config.slides is not None:
        for sid in config.slides:
            info = store.slide(sid)  # StoreError for an unknown id
            if not info.labeled:
                raise StoreError(
                    f"{store.path}: slide {sid!r} is {info.status}, it has no masks to score; "
                    "pass only tumor or normal slides to --slides"
                )
        requested = sorted(set(config.slides))
    if config.threshold != AUTO:
        return requested or sorted(labeled_ids), [], "none"

    if config.val_slides is not None:
        val, source = sorted(set(config.val_slides)), "given"
    else:
        recorded = _recorded_slides(ckpt, "val_slides") if same_store(store, ckpt) else None
        if (
            recorded
            and set(recorded) <= labeled_ids
            and (requested is None or not set(recorded) & set(requested))
        ):
            val, source = sorted(set(recorded)), "checkpoint"
        else:
            pool = [(s.slide_id, s.status) for s in labeled]
            if requested is not None:
                pool = [p for p in pool if p[0] not in set(requested)]
                if not pool:
                    raise ConfigError(
                        "threshold 'auto' needs labeled slides outside --slides to choose the "
                        "threshold on; score fewer slides, or pass --threshold 0.5"
                    )
                return requested, sorted(p[0] for p in pool), "all labeled slides not scored"
            val, _ = split_validation(pool, fraction=config.val_fraction, rng=rng)
            source = f"seeded split (seed {config.seed}, fraction {config.val_fraction})"
    for sid in val:
        if not store.slide(sid).labeled:
            raise StoreError(f"{store.path}: validation slide {sid!r} has no masks")
    scored = requested if requested is not None else sorted(labeled_ids - set(val))
    overlap = sorted(set(scored) & set(val))
    if overlap:
        raise ConfigError(
            f"slides {overlap} would both choose the threshold and be scored; score other slides "
            "or pass a fixed --threshold"
        )
    if not scored:
        raise ConfigError("no labeled slide is left to score after the validation part")
    return scored, val, source


def _progress(total: int, desc: str, enabled: bool):  # -> tqdm
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="patch", disable=None if enabled else True)


def sample_patches(n_patches: int, k: int | None, *, seed: int, slide_id: str) -> np.ndarray:
    """Sorted indices of the patches of one slide to score: all of them when `k` is None or
    >= n_patches, else a uniform sample of k seeded by (seed, slide id) only, so two models
    scored with the same seed see the same patches."""
    if k is None or k >= n_patches:
        return np.arange(n_patches)
    rng = np.random.default_rng([seed, 2, zlib.crc32(slide_id.encode())])
    return np.sort(rng.choice(n_patches, size=k, replace=False))


def _stream(
    store: Any,
    slide_ids: Iterable[str],
    model: Any,
    config: EvalConfig,
    desc: str,
):
    """Yield (slide_id, batch, probs) chunk by chunk (only the sampled patches of each chunk)."""
    from lymph.data.store import PatchBatch
    from lymph.model.infer import predict_probs

    slide_ids = list(slide_ids)
    keep = {
        sid: sample_patches(store.slide(sid).n_patches, config.max_patches_per_slide,
                            seed=config.seed, slide_id=sid)
        for sid in slide_ids
    }  # fmt: skip
    with _progress(sum(len(k) for k in keep.values()), desc, config.progress) as bar:
        for ref in store.chunks(slide_ids):
            idx = keep[ref.slide_id]
            idx = idx[(idx >= ref.start) & (idx < ref.stop)] - ref.start
            if len(idx) == 0:
                continue
            batch = store.read(ref.slide_id, ref.start, ref.stop, masks=True)
            if len(idx) < len(batch):
                batch = PatchBatch(
                    images=batch.images[idx], coords=batch.coords[idx],
                    labels=None if batch.labels is None else batch.labels[idx],
                    masks=None if batch.masks is None else batch.masks[idx],
                )  # fmt: skip
            probs = predict_probs(
                model,
                batch.images,
                device=config.device,
                batch_size=config.batch_size,
                tta=config.tta,
                precision=config.precision,
            )
            yield ref.slide_id, batch, probs
            bar.update(len(batch))


def _check_store_matches(store: Any, ckpt: dict, warn: list[str]) -> None:
    trained = ckpt.get("config", {}).get("store")
    if not isinstance(trained, dict):
        return
    _check_scale(store, trained, warn)
    for key in ("level", "patch_size", "mpp", "target_mpp"):
        if key in trained and key in store.settings and trained[key] != store.settings[key]:
            warn.append(
                f"the checkpoint was trained on patches with {key}={trained[key]!r}, this store "
                f"has {key}={store.settings[key]!r}: scores may not mean what you expect"
            )


def scale_factor(store: Any, ckpt: dict) -> float | None:
    """The checkpoint's training mpp over the store patches' mpp when they differ by more than
    10% (model/scale.py), else None (no mpp on either side: None too)."""
    from lymph.model.scale import TOLERANCE, checkpoint_mpp, store_training_mpp

    level = store.settings.get("level")
    here = store_training_mpp(store.path, int(level)) if isinstance(level, int) else None
    there = checkpoint_mpp(ckpt)
    if here is None or there is None or abs(here / there - 1) <= TOLERANCE:
        return None
    return there / here


def _check_scale(store: Any, trained: dict, warn: list[str]) -> None:
    """A note when the store's patches are more than 10% off the checkpoint's training mpp:
    ``run`` then resamples them to it (``rescaled_model``) and says so."""
    factor = scale_factor(store, {"config": {"store": trained}})
    if factor is not None:
        warn.append(f"the store's patches are {trained['mpp'] / factor:.3f} um/px and the "
                    f"checkpoint was trained at {trained['mpp']:.3f} um/px: each patch is "
                    f"resampled x{1 / factor:.3f} for the model and its map back to the patch "
                    "(extracting at the matching level would read sharper pixels)")


def _stage(ckpt: dict) -> str | None:
    config = ckpt.get("config") if isinstance(ckpt.get("config"), dict) else {}
    return config.get("stage")


def _pretraining_figure4(config: EvalConfig, store: Any, model: Any, ckpt: dict
                         ) -> dict[str, Any]:
    """A pretraining checkpoint with --figures: the paper's Figure 4 alone (no scores: its
    segmentation head is untrained); metrics.json holds the reconstruction MSE."""
    from lymph.model.figure4 import draw_figure4

    out = Path(config.out)  # type: ignore[arg-type]
    drawn = draw_figure4(store, model, out=out, seed=config.seed, device=config.device,
                         batch_size=config.batch_size, stage="pretrain",
                         name=config.checkpoint.name, slides=config.slides,
                         n=config.n_figure_patches)
    result = {"checkpoint": str(config.checkpoint), "checkpoint_stage": "pretrain",
              "store": str(config.store), **drawn,
              "notes": ["a pretraining checkpoint: Figure 4 only (no scores: its segmentation "
                        "head is untrained)"], "config": config.to_dict()}
    result["files"] = {**drawn["files"], "metrics": str(out / "metrics.json")}
    atomic_write_json(out / "metrics.json", result, sort_keys=False)
    return result


def refuse_pretraining(ckpt: dict, path: Path) -> None:
    """CheckpointError for a reconstruction-pretraining checkpoint: its segmentation head was
    never trained, so its scores mean nothing."""
    config = ckpt.get("config") if isinstance(ckpt.get("config"), dict) else {}
    if config.get("stage") == "pretrain":
        raise CheckpointError(
            f"checkpoint {path} is a pretraining checkpoint (stage 'pretrain'): its "
            "segmentation head is untrained; evaluate a fine-tuned one (`lymph train --stage "
            "finetune --init ...`, its best.pt), or pass --figures --out DIR to draw its "
            "Figure 4 (reconstructions) alone"
        )


def _leak_notes(config: EvalConfig, store: Any, ckpt: dict, scored: list[str]) -> list[str]:
    notes: list[str] = []
    _check_store_matches(store, ckpt, notes)
    recorded_train = _recorded_slides(ckpt, "train_slides") if same_store(store, ckpt) else None
    leaked = sorted(set(recorded_train or []) & set(scored))
    if leaked:
        notes.append(
            f"slides {leaked} were used to train this checkpoint: their scores are optimistic; "
            "score held-out slides (--slides) or a store of test slides"
        )
    for note in notes:
        warnings.warn(note, stacklevel=3)
    return notes


def _choose_threshold(
    config: EvalConfig, store: Any, model: Any, val: list[str], source: str
) -> tuple[float, float | None, dict[str, Any]]:
    """(threshold, 0.9-recall threshold or None, the "validation" block or {})."""
    if config.threshold != AUTO:
        return float(config.threshold), None, {}
    val_acc = PRAccumulator(bins=config.bins)
    for _, batch, probs in _stream(store, val, model, config, "eval: validation"):
        val_acc.update(probs, batch.masks)
    if val_acc.hist_pos.sum() == 0:
        raise ConfigError(
            f"the validation slides {val} hold no tumor pixels, so no threshold can be "
            "chosen on them; pass --threshold 0.5, or a store with more tumor slides"
        )
    threshold = val_acc.best_f1_threshold()
    recall_threshold = val_acc.threshold_at_recall(RECALL_TARGET)
    block = {
        "slides": val,
        "source": source,
        "f1_best_threshold": threshold,
        f"recall_{RECALL_TARGET:g}_threshold": recall_threshold,
        "at_f1_best": val_acc.counts_at(threshold).to_dict(),
        f"at_recall_{RECALL_TARGET:g}": val_acc.counts_at(recall_threshold).to_dict(),
    }
    return threshold, recall_threshold, {"validation": block}


@dataclass
class _Tally:
    """What scoring accumulates: pooled histograms, per-slide counts, figure picks."""

    acc: PRAccumulator
    per_slide: dict[str, PixelCounts]
    n_patches: dict[str, int]
    picks: dict[int, _Reservoir]


def _score(config: EvalConfig, store: Any, model: Any, scored: list[str],
           threshold: float) -> _Tally:  # fmt: skip
    sample_rng = np.random.default_rng([config.seed, 1])
    k = config.n_figure_patches
    tally = _Tally(
        PRAccumulator(bins=config.bins),
        {sid: PixelCounts() for sid in scored},
        dict.fromkeys(scored, 0),
        {1: _Reservoir(k - k // 2, sample_rng), 0: _Reservoir(k // 2, sample_rng)},
    )
    for sid, batch, probs in _stream(store, scored, model, config, "eval: scoring"):
        pred = binarize(probs, threshold)
        masks = batch.masks
        tally.per_slide[sid] = tally.per_slide[sid] + pixel_counts(pred, masks)
        tally.acc.update(probs, masks)
        tally.n_patches[sid] += len(batch)
        if config.figures:
            for i in range(len(batch)):
                tally.picks[1 if (masks[i] == 1).any() else 0].offer(
                    (sid, int(batch.coords[i, 0]), int(batch.coords[i, 1]),
                     batch.images[i].copy(), (masks[i] == 1).astype(np.uint8), pred[i].copy())
                )  # copies: a view would pin its chunk  # fmt: skip
    return tally


def run(config: EvalConfig) -> dict[str, Any]:
    """Score `config.checkpoint` on the labeled patches of `config.store`; see the module doc.

    Returns a JSON-ready dict: precision, recall, f1, dice, iou (pooled, 0-1), the counts, the
    threshold, per-slide figures under "slides", the validation part under "validation" (auto),
    written file paths under "files", and every setting under "config". CheckpointError for a
    pretraining checkpoint.
    """
    from lymph.data.store import PatchStore
    from lymph.model.checkpoint import load_model
    from lymph.model.infer import resolve_device

    store = PatchStore.open(config.store)
    model, ckpt = load_model(config.checkpoint, device="cpu")
    factor = scale_factor(store, ckpt)
    if factor is not None:  # run the model at its training scale (model/scale.py)
        from lymph.model.scale import rescaled_model

        model = rescaled_model(model, factor)
    if _stage(ckpt) == "pretrain" and config.figures and config.out is not None:
        return _pretraining_figure4(config, store, model, ckpt)
    refuse_pretraining(ckpt, config.checkpoint)
    rng = np.random.default_rng(config.seed)
    scored, val, val_source = _choose_slides(config, store, ckpt, rng)
    notes = _leak_notes(config, store, ckpt, scored)
    threshold, recall_threshold, validation = _choose_threshold(
        config, store, model, val, val_source
    )
    tally = _score(config, store, model, scored, threshold)
    pooled = sum(tally.per_slide.values(), PixelCounts())
    curve = tally.acc.curve()
    result = {
        **pooled.to_dict(),
        "threshold": threshold,
        "threshold_mode": AUTO if config.threshold == AUTO else "fixed",
        "threshold_rule": "tumor where probability >= threshold",
        "average_precision": curve.average_precision(),
        "n_slides": len(scored),
        "n_patches": int(sum(tally.n_patches.values())),
        "slides": {
            sid: {**tally.per_slide[sid].to_dict(), "status": store.slide(sid).status,
                  "n_patches": tally.n_patches[sid]}
            for sid in scored
        },  # fmt: skip
        **validation,
        "store": str(config.store),
        "checkpoint": str(config.checkpoint),
        "checkpoint_stage": ckpt.get("config", {}).get("stage"),
        "notes": notes,
        "config": config.to_dict(),
        **describe_precision(config.precision, resolve_device(config.device)),
    }
    if recall_threshold is not None:
        key = f"at_recall_{RECALL_TARGET:g}_threshold"
        result[key] = tally.acc.counts_at(recall_threshold).to_dict()
    if config.out is not None:
        result["files"] = _write_outputs(
            config, result, curve, tally.picks, model, threshold, recall_threshold
        )
    return result


def _write_outputs(
    config: EvalConfig,
    result: dict[str, Any],
    curve: Any,
    picks: dict[int, _Reservoir],
    model: Any,
    threshold: float,
    recall_threshold: float | None,
) -> dict[str, str]:
    from lymph.model.figures import (
        figure_reconstructions,
        figure_segmentations,
        plot_pr_curve,
    )

    out = Path(config.out)  # type: ignore[arg-type]
    files: dict[str, str] = {}
    marks = {"threshold" if recall_threshold is None else "F1-best (validation)": threshold}
    if recall_threshold is not None:
        marks[f"recall {RECALL_TARGET:g} (validation)"] = recall_threshold
    files["pr_curve"] = str(
        plot_pr_curve(
            curve,
            out / "pr_curve.png",
            marks=marks,
            title=f"Pixel PR on {result['n_slides']} slide(s), AP "
            f"{result['average_precision']:.3f}",
        )
    )
    if config.figures:
        items = picks[1].items + picks[0].items
        if items:
            from lymph.model.infer import reconstruct

            images = np.stack([it[3] for it in items])
            labels = [f"{it[0]} ({it[1]},{it[2]})" for it in items]
            recon = reconstruct(model, images, device=config.device, batch_size=config.batch_size,
                                precision=config.precision)
            files["reconstructions"] = str(
                figure_reconstructions(
                    images, recon, out / "figure4_reconstruction.png", labels=labels,
                    title=f"reconstructions by the {result.get('checkpoint_stage')} checkpoint "
                    f"{Path(config.checkpoint).name} (the paper's Figure 4 is the pretraining "
                    "checkpoint's: eval patches --figures with it)")
            )
            files["segmentations"] = str(
                figure_segmentations(
                    images,
                    np.stack([it[4] for it in items]),
                    np.stack([it[5] for it in items]),
                    out / "figure5_segmentation.png",
                    labels=labels,
                )
            )
    files["metrics"] = str(out / "metrics.json")
    result["files"] = files
    atomic_write_json(out / "metrics.json", result, sort_keys=False)
    return files


def evaluate_store(
    store: str | Path,
    checkpoint: str | Path,
    *,
    threshold: float | str = 0.5,
    out: str | Path | None = None,
    slides: Sequence[str] | None = None,
    batch_size: int = 16,
    device: str = "cpu",
    **options: Any,
) -> dict[str, Any]:
    """Keyword form of `run(EvalConfig(...))`, kept for `lymph study` (model/study.py)."""
    return run(
        EvalConfig(
            store=Path(store),
            checkpoint=Path(checkpoint),
            threshold=threshold,
            out=None if out is None else Path(out),
            slides=None if slides is None else tuple(slides),
            batch_size=batch_size,
            device=device,
            **options,
        )
    )
