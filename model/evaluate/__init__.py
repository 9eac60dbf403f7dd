"""`lymph eval patches`: pixel precision, recall, F1, Dice and IoU of a checkpoint over
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

The package, by job: ``config`` (EvalConfig, the threshold), ``slides`` (which slides are
scored and which choose the threshold, what the checkpoint's run record says about this store),
``scoring`` (the streamed scoring) and ``run`` (``run(EvalConfig) -> EvalResult``, the outputs).
"""

from __future__ import annotations

from lymph.model.evaluate.config import AUTO, RECALL_TARGET, EvalConfig, parse_threshold
from lymph.model.evaluate.run import EvalResult, run
from lymph.model.evaluate.scoring import sample_patches
from lymph.model.evaluate.slides import same_store, scale_factor, split_validation

__all__ = [
    "AUTO", "RECALL_TARGET", "EvalConfig", "EvalResult", "parse_threshold", "run",
    "same_store", "sample_patches", "scale_factor", "split_validation",
]  # fmt: skip
