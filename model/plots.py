"""The training curve of a run: loss.png from metrics.jsonl."""

from __future__ import annotations

import json
from pathlib import Path


def read_metrics(path: str | Path) -> list[dict]:
    """The records of a metrics.jsonl (skips a torn last line left by a killed run)."""
    out = []
    path = Path(path)
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def plot_loss(metrics_path: str | Path, out_png: str | Path, *, title: str = "") -> Path:
    """Training loss (and its parts) against step; validation F1 or reconstruction error on a
    second axis when the run has them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_path)
    train = [r for r in records if r.get("kind") == "train"]
    val = [r for r in records if r.get("kind") == "val"]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
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
            [r["step"] for r in val], [r[key] for r in val], "o-", color="C3", label=f"val {key}"
        )
        ax2.set_ylabel(f"validation {key}")
        ax2.legend(loc="upper right")
    ax.legend(loc="upper left" if val else "best")
    ax.set_title(title or Path(metrics_path).parent.name)
    fig.tight_layout()
    out_png = Path(out_png)
    fig.savefig(out_png)
    plt.close(fig)
    return out_png
