"""PNG figures for `lymph eval` and `lymph study`.

Matplotlib's object API (`matplotlib.figure.Figure` + `savefig`) needs no pyplot and no GUI
backend, so these work headless and never change the caller's backend.

- `plot_pr_curve`: precision-recall curve with chosen thresholds marked.
- `figure_reconstructions`: the seed paper's Figure 4 (inputs above their reconstructions).
- `figure_segmentations`: the seed paper's Figure 5 (patches with ground-truth and predicted
  tumor outlines).
- `plot_f1_vs_size`: F1 against labeled-set size, one line per condition, sd error bars.
- `plot_study_pairs`: `lymph study`'s figure: every run's F1 per condition and size beside the
  mean, and every pair's ΔF1 with its bootstrap 95% CI.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from lymph.model.metrics import PRCurve

GT_COLOR = "#00c853"  # green: ground truth
PRED_COLOR = "#2962ff"  # blue: prediction (stays visible over pink/purple H&E)
PRED_RGBA = (0.16, 0.38, 1.0, 0.3)


def _figure(width: float, height: float):  # -> matplotlib.figure.Figure
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


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
    images: np.ndarray, reconstructions: np.ndarray, path: str | Path, *, labels: Sequence[str] = ()
) -> Path:
    """Figure 4: inputs (top row) above the model's reconstructions (bottom row); uint8 NHWC."""
    n = len(images)
    if n == 0 or reconstructions.shape != images.shape:
        raise ValueError(
            f"need >= 1 image and reconstructions of the same shape, got {images.shape} and "
            f"{reconstructions.shape}"
        )
    fig = _figure(2.2 * n, 4.6)
    axes = fig.subplots(2, n, squeeze=False)
    for i in range(n):
        axes[0, i].imshow(images[i])
        axes[1, i].imshow(reconstructions[i])
        if i < len(labels):
            axes[0, i].set_title(labels[i], fontsize=7)
        for ax in axes[:, i]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("input")
    axes[1, 0].set_ylabel("reconstruction")
    return _save(fig, path)


def figure_segmentations(
    images: np.ndarray,
    masks_true: np.ndarray,
    masks_pred: np.ndarray,
    path: str | Path,
    *,
    labels: Sequence[str] = (),
) -> Path:
    """Figure 5: patches with ground-truth (green) and predicted (blue, outlined and tinted)
    tumor; a patch that is tumor throughout gets a green frame."""
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
        "tumor: ground truth (green outline), prediction (blue tint and outline)", fontsize=9
    )
    return _save(fig, path)


def plot_f1_vs_size(
    sizes: Sequence[int],
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    path: str | Path,
    *,
    title: str = "Pixel F1 on held-out slides",
) -> Path:
    """F1 (mean, sd) per labeled-set size for each condition: {"label": (means, sds)}."""
    fig = _figure(5.5, 4)
    ax = fig.add_subplot()
    x = np.asarray(sizes, dtype=float)
    for offset, (label, (means, sds)) in zip(
        np.linspace(-0.01, 0.01, max(len(series), 1)) * (x.max() - x.min() + 1),
        series.items(),
        strict=False,
    ):
        ax.errorbar(x + offset, means, yerr=sds, marker="o", capsize=4, label=label)
    ax.set_xticks(x)
    ax.set_xlabel("labeled patches")
    ax.set_ylabel("F1 (mean +- sd over folds)")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_study_pairs(
    sizes: Sequence[int],
    points: Mapping[str, Sequence[Sequence[float]]],
    deltas: Mapping[str, Sequence[tuple[Sequence[float], tuple[float, float]]]],
    path: str | Path,
    *,
    primary: str = "",
) -> Path:
    """Left: each run's F1 (dots) and the mean (line) per condition, at each size. Right: each
    pair's ΔF1 (dots), its mean and 95% CI (bar) per comparison, at each size; `primary` is
    drawn bold. `points[c][i]` and `deltas[name][i] = (diffs, (low, high))` are for sizes[i]."""
    fig = _figure(11, 4.2)
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    x = np.arange(len(sizes), dtype=float)
    rng = np.random.default_rng(0)  # jitter only
    for ax, groups in ((left, points), (right, deltas)):
        offsets = np.linspace(-0.3, 0.3, max(len(groups), 1)) if len(groups) > 1 else [0.0]
        for off, (name, per_size) in zip(offsets, groups.items(), strict=False):
            means = []
            for i, item in enumerate(per_size):
                values = np.asarray(item[0] if ax is right else item, dtype=float)
                jitter = rng.uniform(-0.04, 0.04, values.size)
                ax.plot(x[i] + off + jitter, values, ".", alpha=0.45, ms=5,
                        color=f"C{list(groups).index(name)}")  # fmt: skip
                means.append(values.mean() if values.size else np.nan)
                if ax is right and not np.isnan(item[1][0]):
                    ax.plot([x[i] + off] * 2, item[1], "-", lw=2.5 if name == primary else 1.5,
                            color=f"C{list(groups).index(name)}")  # fmt: skip
            ax.plot(x + off, means, "o-" if ax is left else "_", ms=8 if ax is right else 5,
                    lw=2.5 if name == primary else 1.2, color=f"C{list(groups).index(name)}",
                    label=name + (" (primary)" if name == primary else ""))  # fmt: skip
        ax.set_xticks(x, [str(s) for s in sizes])
        ax.set_xlabel("labeled patches")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    left.set_ylim(0, 1)
    left.set_ylabel("pixel F1 on test slides (dots: runs)")
    left.set_title("F1 per run and mean")
    right.axhline(0, color="black", lw=0.8)
    right.set_ylabel("ΔF1 per (fold, repeat) pair")
    right.set_title("paired ΔF1, mean and bootstrap 95% CI")
    return _save(fig, path)
