"""Every PNG lymph draws: training loss, pixel PR, slide ROC, lesion FROC, patch overlays.

Matplotlib's object API (`matplotlib.figure.Figure` + `savefig`) needs no pyplot and no GUI
backend, so these work headless and never change the caller's backend: no module of lymph calls
`matplotlib.use`. Every PNG is written atomically (`lymph.data.io.atomic_path`), so a read-only
or full output folder is an `OutputError` naming the file, and no half PNG is left.

- `read_metrics`, `plot_loss`: a run's metrics.jsonl and its loss curve (loss.png).
- `plot_pr_curve`: precision-recall curve with chosen thresholds marked.
- `plot_roc`: the slide-level ROC curve.
- `plot_froc`: the lesion FROC curve, lymph's rules with the official rules' curve beside it.
- `figure_reconstructions`: the seed paper's Figure 4 (inputs above their reconstructions).
- `figure_segmentations`: the seed paper's Figure 5 (patches with ground-truth and predicted
  tumor outlines).
- `plot_study_pairs`: `lymph study`'s figure: every run's F1 per condition and size beside the
  mean, and every pair's ΔF1 with its dependence-aware (corrected t) 95% CI.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lymph.data.io import atomic_path
from lymph.model.metrics import PRCurve

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from lymph.model.camelyon.froc import Froc

GT_COLOR = "#00c853"  # green: ground truth
# prediction: yellow tint, orange outline. Not blue or purple, which hematoxylin-stained nuclei
# are: a blue tint over a tumor nest read as dense nuclei, not as a prediction.
PRED_COLOR = "#ff6d00"
PRED_RGBA = (1.0, 0.84, 0.0, 0.35)


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


# --- training ------------------------------------------------------------------------------------


def read_metrics(path: str | Path) -> list[dict]:
    """The records of a metrics.jsonl (skips a torn last line left by a killed run)."""
    return read_metrics_lines(path)[0]


def read_metrics_lines(path: str | Path) -> tuple[list[dict], list[int]]:
    """The records of a metrics.jsonl and the line numbers (1-based) of the lines that are not
    a record: a torn last line after a kill, or bytes damaged on disk (never a traceback)."""
    out: list[dict] = []
    bad: list[int] = []
    path = Path(path)
    if not path.exists():
        return out, bad
    for number, raw in enumerate(path.read_bytes().splitlines(), start=1):
        try:
            record = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            record = None
        if isinstance(record, dict):
            out.append(record)
        else:
            bad.append(number)
    return out, bad


def plot_loss(metrics_path: str | Path, out_png: str | Path, *, title: str = "") -> Path:
    """Training loss (and its parts) against step; validation F1 or reconstruction error on a
    second axis when the run has them."""
    records = read_metrics(metrics_path)
    train = [r for r in records if r.get("kind") == "train"]
    val = [r for r in records if r.get("kind") == "val"]
    fig = _figure(7, 4)
    ax = fig.add_subplot()
    parts = any("bce" in r for r in train)  # finetune: show the parts of the loss too
    for key, style in (("loss", "-"), ("recon", ":"), ("bce", "--"), ("dice", "-.")):
        pts = [(r["step"], r[key]) for r in train if key in r]
        if pts and (key == "loss" or parts):
            ax.plot(*zip(*pts, strict=True), style, label=f"train {key}")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    if val:
        ax2 = ax.twinx()
        key = "f1" if "f1" in val[0] else "recon_mse"
        ax2.plot(
            [r["step"] for r in val], [r[key] for r in val], "o-", color="black", label=f"val {key}"
        )
        ax2.set_ylabel(f"validation {key}")
        ax2.legend(loc="upper right")
    ax.legend(loc="upper left" if val else "best")
    ax.set_title(title or Path(metrics_path).parent.name)
    return _save(fig, out_png)


# --- slide mode: ROC and FROC --------------------------------------------------------------------


def plot_roc(scores: Sequence[float], labels: Sequence[bool], path: str | Path, *,
             auc: float) -> Path:
    """The slide-level ROC curve; writes ``path`` (PNG)."""
    from lymph.model.camelyon import roc_curve

    fpr, tpr, _ = roc_curve(scores, labels)
    fig = _figure(4.5, 4.2)
    ax = fig.add_subplot()
    # margins around [0, 1] and markers: a perfect curve (up the left edge, along the top)
    # would otherwise lie on the frame and the plot look empty
    ax.plot(fpr, tpr, "-o", color="tab:red", lw=2, ms=5, clip_on=False,
            label=f"lymph, AUC {auc:.3f}")
    ax.plot([0, 1], [0, 1], ":", color="grey", label="chance")
    ax.set_xlim(-0.04, 1.04)
    ax.set_ylim(-0.04, 1.06)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_xlabel("false positive rate (normal slides)")
    ax.set_ylabel("true positive rate (tumor slides)")
    # the counts say how coarse the curve is: with 2 normal slides the FPR moves in steps of 0.5
    n_tumor = sum(bool(x) for x in labels)
    ax.set_title(f"slide ROC, AUC {auc:.3f}\n({n_tumor} tumor, {len(scores) - n_tumor} normal "
                 "slides)")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_froc(curve: Froc, path: str | Path, *, official: Mapping[str, Any] | None = None
              ) -> Path:  # fmt: skip
    """The FROC curve by lymph's rules (a ``camelyon.Froc``) with the six evaluation rates
    marked, and the official rules' curve and score (``official``: the ``official`` block of
    the slide-mode result) when defined; writes ``path`` (PNG)."""
    fig = _figure(5.5, 4.2)
    ax = fig.add_subplot()
    floor = 1 / 8  # a log axis has no 0: points at 0 FP per slide are drawn at 1/8
    right = max(16.0, float(np.max(curve.fps_per_slide, initial=0)) * 1.2)
    # past its last operating point a FROC keeps its last sensitivity: drawn to the right edge,
    # so a perfect curve (every lesion found at 0 FP) is a line along the top, not a dot at 1/8
    fps = np.append(np.maximum(curve.fps_per_slide, floor), right)
    sens = np.append(curve.sensitivity, curve.sensitivity[-1] if len(curve.sensitivity) else 0)
    # every series has its own marker and clip_on=False: a perfect FROC (sensitivity 1 at every
    # rate) puts all of them on one line at the top, which must not vanish into the frame
    ax.step(fps, sens, where="post", color="black", lw=1.0, alpha=0.5,
            label="lymph operating points (step-wise)")  # fmt: skip
    ax.plot(fps, sens, "-", color="black", lw=1.2, label="lymph FROC (interpolated)")
    rates = list(curve.sensitivity_interpolated)
    ax.plot(rates, [curve.sensitivity_interpolated[r] for r in rates], "o", color="tab:red",
            ms=8, clip_on=False,
            label=f"lymph interpolated, mean {curve.interpolated:.3f}")  # fmt: skip
    ax.plot(rates, [curve.sensitivity_stepwise[r] for r in rates], "x", color="tab:blue",
            ms=9, mew=2, clip_on=False,
            label=f"lymph stepwise, mean {curve.stepwise:.3f}")  # fmt: skip
    if official and official.get("froc") is not None:
        ofps = np.maximum(np.asarray(official["curve"]["fps_per_slide"], float), floor)
        osens = np.asarray(official["curve"]["sensitivity"], float)
        if len(osens):
            last = osens[ofps == ofps.max()].max()  # the official curve may run either way
            order = np.lexsort((osens, ofps))
            ofps, osens = np.append(ofps[order], right), np.append(osens[order], last)
        ax.plot(ofps, osens, "--s", color="tab:green", lw=1.2, ms=4, mfc="none", clip_on=False,
                label=f"official rules, mean {official['froc']:.3f}")  # fmt: skip
    ax.set_xscale("log", base=2)
    ax.set_xlim(floor / 1.15, right)
    ticks = [2.0**k for k in range(-3, int(math.log2(right)) + 1)]
    ax.set_xticks(ticks, [f"{t:g}" if t >= 1 else f"1/{1 / t:g}" for t in ticks])
    ax.set_ylim(-0.03, 1.06)
    ax.set_xlabel("mean false positives per slide (0 drawn at 1/8)")
    ax.set_ylabel("lesion sensitivity")
    ax.set_title(f"FROC ({curve.n_slides} slide(s), {curve.n_lesions} lesion(s))")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=7)
    return _save(fig, path)


# --- patch mode ----------------------------------------------------------------------------------


def plot_pr_curve(
    curve: PRCurve,
    path: str | Path,
    *,
    marks: Mapping[str, float] | None = None,
    title: str = "Pixel precision-recall",
) -> Path:
    """The PR curve of `curve` (points where something is predicted); `marks` maps a label to a
    grid threshold to mark on the curve."""
    has_pred = (curve.tp + curve.fp) > 0
    precision, recall = curve.precision, curve.recall
    fig = _figure(5, 4.5)
    ax = fig.add_subplot()
    ax.plot(recall[has_pred], precision[has_pred], color="black", lw=1.5)
    for (label, threshold), color in zip(
        (marks or {}).items(), ("tab:red", "tab:blue", "tab:green", "tab:orange"), strict=False
    ):
        k = int(np.argmin(np.abs(curve.thresholds - threshold)))
        ax.plot(
            recall[k],
            precision[k],
            "o",
            color=color,
            label=f"{label}: t={threshold:.3f} P={precision[k]:.3f} R={recall[k]:.3f}",
        )
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall (tumor pixels found)")
    ax.set_ylabel("precision")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if marks:
        ax.legend(loc="lower left", fontsize=8)
    return _save(fig, path)


def figure_reconstructions(
    images: np.ndarray, reconstructions: np.ndarray, path: str | Path, *,
    labels: Sequence[str] = (), title: str = "",
) -> Path:
    """Figure 4: inputs (top row), the model's reconstructions (middle row) and their
    difference (bottom row: mean absolute error over RGB, one shared 0-max scale with a colour
    bar, so patches compare); uint8 NHWC."""
    n = len(images)
    if n == 0 or reconstructions.shape != images.shape:
        raise ValueError(
            f"need >= 1 image and reconstructions of the same shape, got {images.shape} and "
            f"{reconstructions.shape}"
        )
    diff = np.abs(images.astype(np.float32) - reconstructions.astype(np.float32)).mean(-1) / 255
    top = max(float(diff.max()), 1e-3)
    fig = _figure(2.2 * n + 0.8, 7.2)
    axes = fig.subplots(3, n, squeeze=False)
    shown = None
    for i in range(n):
        axes[0, i].imshow(images[i])
        axes[1, i].imshow(reconstructions[i])
        shown = axes[2, i].imshow(diff[i], cmap="viridis", vmin=0, vmax=top)
        if i < len(labels):
            axes[0, i].set_title(labels[i], fontsize=7)
        for ax in axes[:, i]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("input")
    axes[1, 0].set_ylabel("reconstruction")
    axes[2, 0].set_ylabel("|input - reconstruction|")
    assert shown is not None  # n >= 1
    fig.colorbar(shown, ax=axes[2, :].tolist(), shrink=0.8, label="mean abs error (0-1)")
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def figure_segmentations(
    images: np.ndarray,
    masks_true: np.ndarray,
    masks_pred: np.ndarray,
    path: str | Path,
    *,
    labels: Sequence[str] = (),
) -> Path:
    """Figure 5: patches with ground-truth (green outline) and predicted (yellow tint, orange
    outline) tumor; a patch that is tumor throughout gets a green frame."""
    from matplotlib.patches import Rectangle

    n = len(images)
    if n == 0 or masks_true.shape != images.shape[:3] or masks_pred.shape != images.shape[:3]:
        raise ValueError(
            f"need >= 1 image and masks of shape {images.shape[:3]}, got {masks_true.shape} "
            f"and {masks_pred.shape}"
        )
    cols = min(n, 4)
    rows = -(-n // cols)
    fig = _figure(2.6 * cols, 2.7 * rows + 0.4)
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= n:
            ax.set_axis_off()
            continue
        ax.imshow(images[i])
        pred = np.asarray(masks_pred[i], dtype=bool)
        tint = np.zeros((*pred.shape, 4), np.float32)
        tint[pred] = PRED_RGBA  # translucent fill: visible even when the whole patch is tumor
        ax.imshow(tint)
        h, w = pred.shape
        for mask, color in ((masks_true[i], GT_COLOR), (pred, PRED_COLOR)):
            m = np.asarray(mask, dtype=np.float32)
            if 0 < m.sum() < m.size:  # contour needs both levels present
                ax.contour(m, levels=[0.5], colors=[color], linewidths=1.5)
            elif m.size and m.min() == 1 and color == GT_COLOR:  # all tumor: frame the patch
                ax.add_patch(Rectangle((-0.5, -0.5), w, h, fill=False, edgecolor=color, lw=3))
        if i < len(labels):
            ax.set_title(labels[i], fontsize=7)
    fig.suptitle(
        "tumor: ground truth (green outline), prediction (yellow tint, orange outline)",
        fontsize=9
    )
    return _save(fig, path)


def _data_range(values: Sequence[float], *, pad: float = 0.08, floor: float = 1.0
                ) -> tuple[float, float]:
    """A y-range around the finite ``values`` (a fraction ``pad`` of their span, at least
    ``floor`` units each side), so differences of a point are visible."""
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=float)
    if not v.size:
        return -1.0, 1.0
    lo, hi = float(v.min()), float(v.max())
    margin = max(pad * (hi - lo), floor)
    return lo - margin, hi + margin


def _ci_bar(ax: Axes, x: float, ci: Sequence[float], *, color: str, lw: float) -> list[float]:
    """A 95% CI (fractions) as a vertical bar in pp at `x`; the drawn ends. A ΔF1 lies within
    ±100 pp, so a wider CI (few pairs) is cut there and its cut end marked with a triangle."""
    pp = [100 * float(ci[0]), 100 * float(ci[1])]
    cut = np.clip(pp, -100, 100).tolist()
    ax.plot([x, x], cut, "-", lw=lw, color=color)
    for end, mark in ((pp[0], "v"), (pp[1], "^")):
        if abs(end) > 100:
            ax.plot(x, np.sign(end) * 100, mark, ms=7, color=color)
    return cut


def plot_study_pairs(
    sizes: Sequence[int],
    points: Mapping[str, Sequence[Sequence[float]]],
    deltas: Mapping[str, Sequence[tuple[Sequence[float], tuple[float, float]]]],
    path: str | Path,
    *,
    primary: str = "",
    title: str = "",
) -> Path:
    """Left: each run's F1 (dots) and the mean (line) per condition, at each size, in percent.
    Right: each pair's ΔF1 (dots), its mean and 95% CI (bar) per comparison, at each size, in
    percentage points (as table.md); `primary` is drawn bold. Both y-ranges come from the data
    (a CI beyond ±100 pp, where no ΔF1 lies, is cut at the frame and marked with a triangle).
    `points[c][i]` and `deltas[name][i] = (diffs, (low, high))` are fractions for sizes[i]."""
    fig = _figure(11, 4.2)
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    x = np.arange(len(sizes), dtype=float)
    rng = np.random.default_rng(0)  # jitter only
    seen: dict[Axes, list[float]] = {left: [], right: [0.0]}
    panels: tuple[tuple[Axes, Mapping[str, Sequence[Any]]], ...] = ((left, points), (right, deltas))
    for ax, groups in panels:
        # dodge within +-0.2 of each size's slot (slots are 1 apart), jitter +-0.03: a point
        # stays nearer its own size than the next one
        offsets = np.linspace(-0.2, 0.2, max(len(groups), 1)) if len(groups) > 1 else [0.0]
        for off, (name, per_size) in zip(offsets, groups.items(), strict=False):
            color = f"C{list(groups).index(name)}"
            means = []
            for i, item in enumerate(per_size):
                values = 100 * np.asarray(item[0] if ax is right else item, dtype=float)
                jitter = rng.uniform(-0.03, 0.03, values.size)
                ax.plot(x[i] + off + jitter, values, ".", alpha=0.45, ms=5, color=color)
                seen[ax].extend(values.tolist())
                means.append(values.mean() if values.size else np.nan)
                if ax is right and not np.isnan(item[1][0]):
                    seen[ax].extend(_ci_bar(ax, x[i] + off, item[1], color=color,
                                            lw=2.5 if name == primary else 1.5))
            ax.plot(x + off, means, "o-" if ax is left else "_", ms=8 if ax is right else 5,
                    lw=2.5 if name == primary else 1.2, color=color,
                    label=name + (" (primary)" if name == primary else ""))  # fmt: skip
        ax.set_xticks(x, [str(s) for s in sizes])
        ax.set_xlim(-0.5, len(sizes) - 0.5)
        ax.set_xlabel("labeled patches")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    lo, hi = _data_range(seen[left])
    left.set_ylim(max(lo, 0.0), min(hi, 100.0))
    left.set_ylabel("pixel F1 on test slides, % (dots: runs)")
    left.set_title("F1 per run and mean")
    lo, hi = _data_range(seen[right])
    right.set_ylim(max(lo, -106.0), min(hi, 106.0))
    right.axhline(0, color="black", lw=0.8)
    right.set_ylabel("ΔF1 per (fold, repeat) pair, percentage points")
    right.set_title("paired ΔF1 (pp), mean and corrected t 95% CI")
    if title:  # above both panels, in the colour of a warning
        fig.suptitle(title, fontsize=10, color="firebrick", fontweight="bold")
    return _save(fig, path)
