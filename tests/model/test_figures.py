from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lymph.model.figures import (
    figure_reconstructions,
    figure_segmentations,
    plot_pr_curve,
)
from lymph.model.metrics import PRAccumulator


def _png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


def test_pr_curve_png(tmp_path: Path) -> None:
    acc = PRAccumulator(bins=101)
    rng = np.random.default_rng(0)
    target = rng.random(2000) < 0.3
    acc.update(np.clip(target * 0.5 + rng.random(2000) * 0.5, 0, 1), target)
    path = plot_pr_curve(acc.curve(), tmp_path / "pr.png", marks={"t": 0.5})
    w, h = _png_size(path)
    assert w > 200 and h > 200


def test_reconstruction_and_segmentation_figures(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (3, 24, 24, 3), dtype=np.uint8)
    masks = np.zeros((3, 24, 24), np.uint8)
    masks[0, 4:12, 4:12] = 1
    pred = np.zeros((3, 24, 24), bool)
    pred[0, 6:14, 6:14] = True
    pred[2] = True  # all-tumor prediction: no contour to draw, must not fail
    w4, _ = _png_size(
        figure_reconstructions(images, images[:, ::-1], tmp_path / "f4.png", labels=["a", "b", "c"])
    )
    w5, _ = _png_size(figure_segmentations(images, masks, pred, tmp_path / "f5.png"))
    assert w4 > 300 and w5 > 300


def test_figures_reject_mismatched_shapes(tmp_path: Path) -> None:
    images = np.zeros((2, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="reconstructions of the same shape"):
        figure_reconstructions(images, images[:1], tmp_path / "x.png")
    with pytest.raises(ValueError, match="masks of shape"):
        figure_segmentations(images, np.zeros((2, 4, 4)), np.zeros((2, 8, 8)), tmp_path / "y.png")


def test_loss_curve(tmp_path: Path) -> None:
    import json

    from lymph.model import figures
    log = tmp_path / "metrics.jsonl"
    rows = [{"kind": "train", "step": s, "loss": 1 / s, "bce": 0.5 / s, "dice": 0.5 / s}
            for s in range(1, 20)] + [{"kind": "val", "step": 10, "f1": 0.4}]  # fmt: skip
    log.write_text("\n".join(json.dumps(r) for r in rows) + '\n{"kind": "tr')  # torn last line
    assert len(figures.read_metrics(log)) == 20
    assert _png_size(figures.plot_loss(log, tmp_path / "loss.png"))[0] > 300


def test_roc_and_froc_pngs(tmp_path: Path) -> None:
    from lymph.model.camelyon import froc, score_slide
    from lymph.model.figures import plot_froc, plot_roc

    labels = np.zeros((40, 40), np.int32)
    labels[5:30, 5:30] = 1
    curve = froc([score_slide(np.array([[0.9, 320.0, 320.0], [0.4, 1200.0, 1200.0]]),
                              labels=labels)])  # fmt: skip
    official = {"froc": 0.5, "curve": {"fps_per_slide": [1.0, 0.0], "sensitivity": [1.0, 0.0]}}
    assert _png_size(plot_froc(curve, tmp_path / "froc.png", official=official))[0] > 300
    assert _png_size(plot_roc([0.1, 0.9], [False, True], tmp_path / "roc.png", auc=1.0))[0] > 300


def test_a_png_into_an_unwritable_place_is_an_output_error(tmp_path: Path) -> None:
    from lymph.data.errors import OutputError

    blocker = tmp_path / "file"
    blocker.write_text("x")  # a regular file where the folder should be
    with pytest.raises(OutputError, match=r"cannot write .*pr.png"):
        acc = PRAccumulator(bins=11)
        acc.update(np.array([0.2, 0.8]), np.array([False, True]))
        plot_pr_curve(acc.curve(), blocker / "pr.png")
    assert not list(tmp_path.glob(".*.tmp"))
