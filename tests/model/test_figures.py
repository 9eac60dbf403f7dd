from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lymph.model.figures import (
    figure_reconstructions,
    figure_segmentations,
    plot_f1_vs_size,
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


def test_f1_vs_size_png(tmp_path: Path) -> None:
    path = plot_f1_vs_size(
        [200, 120, 80, 40],
        {
            "scratch": ([0.7, 0.65, 0.63, 0.53], [0.02, 0.03, 0.05, 0.04]),
            "pretrained": ([0.71, 0.67, 0.69, 0.58], [0.02, 0.02, 0.03, 0.05]),
        },
        tmp_path / "f1.png",
    )
    assert _png_size(path)[0] > 200
