"""Kept for old imports: the training-curve figures live in `lymph.model.figures`, the one
module that draws lymph's PNGs."""

from lymph.model.figures import plot_loss, read_metrics

__all__ = ["plot_loss", "read_metrics"]
