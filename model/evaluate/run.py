"""``run(EvalConfig) -> EvalResult``: a checkpoint scored on a store's labeled patches, from the
checkpoint's run record to metrics.json, the PR curve and the figures; a pretraining checkpoint
with ``--figures`` draws the paper's Figure 4 alone.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lymph.data.errors import CheckpointError, ConfigError
from lymph.data.io import atomic_write_json
from lymph.data.store import PatchStore
from lymph.model.checkpoint import RunRecord, load_model, require_finetuned
from lymph.model.evaluate.config import AUTO, RECALL_TARGET, EvalConfig
from lymph.model.evaluate.scoring import FigurePatch, Tally, choose_threshold, score
from lymph.model.evaluate.slides import choose_slides, leak_notes, scale_factor
from lymph.model.infer import resolve_device
from lymph.model.metrics import PixelCounts, PRCurve
from lymph.model.precision import describe as describe_precision
from lymph.model.unet import UNet


@dataclass(frozen=True)
class EvalResult:
    """What ``lymph eval patches`` found: the headline figures, typed, and ``metrics``, the
    metrics.json document (JSON-ready, in its key order), of which ``to_dict`` gives a copy.

    ``counts``: pooled pixel counts at ``threshold`` (precision, recall, F1, Dice, IoU); both
    None, with ``average_precision``, for a pretraining checkpoint's Figure 4 alone.
    ``files``: what was written ({} without ``out``).
    """

    checkpoint_stage: str | None
    threshold: float | None
    counts: PixelCounts | None
    average_precision: float | None
    n_slides: int
    n_patches: int
    notes: tuple[str, ...]
    files: Mapping[str, str]
    metrics: Mapping[str, object]

    def to_dict(self) -> dict[str, Any]:
        """The metrics.json document (with ``files`` when written), a copy."""
        return copy.deepcopy(dict(self.metrics))


def run(config: EvalConfig) -> EvalResult:
    """Score ``config.checkpoint`` on the labeled patches of ``config.store``; see the package
    doc. CheckpointError for a checkpoint that is not a fine-tuned one (a pretraining one
    draws its Figure 4 alone with ``figures`` and ``out``)."""
    if config.out is not None and config.out.exists() and not config.out.is_dir():
        raise ConfigError(f"--out {config.out} is a file, not a folder; choose a folder")
    store = PatchStore.open(config.store)
    model, ckpt = load_model(config.checkpoint, device="cpu")
    record = ckpt.record
    factor = scale_factor(store, record)
    if factor is not None:  # run the model at its training scale (model/scale.py)
        from lymph.model.scale import rescaled_model

        model = rescaled_model(model, factor)
    if record.stage == "pretrain" and config.figures and config.out is not None:
        return _pretraining_figure4(config, store, model, config.out)
    _require_finetuned(record, config.checkpoint)
    rng = np.random.default_rng(config.seed)
    scored, val, val_source = choose_slides(config, store, record, rng)
    notes = leak_notes(store, record, scored)
    threshold, recall_threshold, validation = choose_threshold(
        config, store, model, val, val_source
    )
    tally = score(config, store, model, scored, threshold)
    pooled = sum(tally.per_slide.values(), PixelCounts())
    curve = tally.acc.curve()
    metrics = _metrics(config, store, record, scored, tally, pooled, curve, threshold,
                       validation, notes)  # fmt: skip
    if recall_threshold is not None:
        key = f"at_recall_{RECALL_TARGET:g}_threshold"
        metrics[key] = tally.acc.counts_at(recall_threshold).to_dict()
    files: dict[str, str] = {}
    if config.out is not None:
        files = _write_outputs(config, config.out, metrics, curve, tally, model, threshold,
                               recall_threshold)  # fmt: skip
    return EvalResult(
        checkpoint_stage=record.stage, threshold=threshold, counts=pooled,
        average_precision=curve.average_precision(), n_slides=len(scored),
        n_patches=int(sum(tally.n_patches.values())), notes=tuple(notes), files=files,
        metrics=metrics,
    )  # fmt: skip


def _require_finetuned(record: RunRecord, path: Path) -> None:
    """``require_finetuned``, with eval's other use of a pretraining checkpoint named."""
    try:
        require_finetuned(record, path=path)
    except CheckpointError as exc:
        if record.stage != "pretrain":
            raise
        raise CheckpointError(
            f"{exc}, or pass --figures --out DIR to draw its Figure 4 (reconstructions) alone"
        ) from exc


def _metrics(
    config: EvalConfig, store: PatchStore, record: RunRecord, scored: list[str], tally: Tally,
    pooled: PixelCounts, curve: PRCurve, threshold: float, validation: dict[str, object],
    notes: list[str],
) -> dict[str, object]:  # fmt: skip
    """The metrics.json document (without the 0.9-recall counts and ``files``)."""
    return {
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
        "checkpoint_stage": record.stage,
        "notes": notes,
        "config": config.to_dict(),
        **describe_precision(config.precision, resolve_device(config.device)),
    }


def _pretraining_figure4(config: EvalConfig, store: PatchStore, model: UNet, out: Path
                         ) -> EvalResult:  # fmt: skip
    """A pretraining checkpoint with --figures: the paper's Figure 4 alone (no scores: its
    segmentation head is untrained); metrics.json holds the reconstruction MSE."""
    from lymph.model.figure4 import draw_figure4

    drawn = draw_figure4(store, model, out=out, seed=config.seed, device=config.device,
                         batch_size=config.batch_size, stage="pretrain",
                         name=config.checkpoint.name, slides=config.slides,
                         n=config.n_figure_patches)
    notes = ["a pretraining checkpoint: Figure 4 only (no scores: its segmentation head is "
             "untrained)"]
    metrics: dict[str, object] = {
        "checkpoint": str(config.checkpoint), "checkpoint_stage": "pretrain",
        "store": str(config.store), **drawn, "notes": notes, "config": config.to_dict()}
    files = {**drawn["files"], "metrics": str(out / "metrics.json")}
    metrics["files"] = files
    atomic_write_json(out / "metrics.json", metrics, sort_keys=False)
    return EvalResult(
        checkpoint_stage="pretrain", threshold=None, counts=None, average_precision=None,
        n_slides=0, n_patches=int(drawn["n_patches"]), notes=tuple(notes), files=files,
        metrics=metrics,
    )  # fmt: skip


def _write_outputs(
    config: EvalConfig, out: Path, metrics: dict[str, object], curve: PRCurve, tally: Tally,
    model: UNet, threshold: float, recall_threshold: float | None,
) -> dict[str, str]:  # fmt: skip
    """pr_curve.png, the figures (``config.figures``) and metrics.json (``metrics`` with
    ``files`` added) in ``out``; the files written."""
    from lymph.model.figures import plot_pr_curve

    files: dict[str, str] = {}
    marks = {"threshold" if recall_threshold is None else "F1-best (validation)": threshold}
    if recall_threshold is not None:
        marks[f"recall {RECALL_TARGET:g} (validation)"] = recall_threshold
    files["pr_curve"] = str(
        plot_pr_curve(
            curve,
            out / "pr_curve.png",
            marks=marks,
            title=f"Pixel PR on {metrics['n_slides']} slide(s), AP "
            f"{curve.average_precision():.3f}",
        )
    )
    if config.figures:
        items = tally.picks[1].items + tally.picks[0].items
        if items:
            files.update(_write_figures(config, out, items, model,
                                        stage=str(metrics["checkpoint_stage"])))
    files["metrics"] = str(out / "metrics.json")
    metrics["files"] = files
    atomic_write_json(out / "metrics.json", metrics, sort_keys=False)
    return files


def _write_figures(config: EvalConfig, out: Path, items: list[FigurePatch], model: UNet, *,
                   stage: str) -> dict[str, str]:  # fmt: skip
    """The paper's Figures 4 (reconstructions) and 5 (segmentations) of the sampled patches."""
    from lymph.model.figures import figure_reconstructions, figure_segmentations
    from lymph.model.infer import reconstruct

    images = np.stack([it.image for it in items])
    labels = [f"{it.slide_id} ({it.x},{it.y})" for it in items]
    recon = reconstruct(model, images, device=config.device, batch_size=config.batch_size,
                        precision=config.precision)
    return {
        "reconstructions": str(figure_reconstructions(
            images, recon, out / "figure4_reconstruction.png", labels=labels,
            title=f"reconstructions by the {stage} checkpoint "
            f"{Path(config.checkpoint).name} (the paper's Figure 4 is the pretraining "
            "checkpoint's: eval patches --figures with it)")),
        "segmentations": str(figure_segmentations(
            images, np.stack([it.truth for it in items]), np.stack([it.pred for it in items]),
            out / "figure5_segmentation.png", labels=labels)),
    }  # fmt: skip
