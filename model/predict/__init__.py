"""``lymph predict``: whole-slide tumor maps (tissue-only tiled inference without seams, memory
flat in the slide's size), lesion detections and a slide score from the map.

Modules, by job: ``config`` (PredictConfig), ``grid`` (tiling geometry, tissue windows),
``blend`` (Hann blending and margin tiles into the map), ``pipeline`` (read-ahead, model and
blend threads), ``plan`` (model, tiling and windows of one slide),
``detect`` (tissue masking, lesions, slide score), ``exports`` (CSV, GeoJSON, ASAP XML),
``outputs`` (the files of a slide, scores.csv, the manifest), ``slide`` (one slide end to end),
``run`` (many slides; ``run(PredictConfig) -> PredictResult``).
"""

from lymph.model.predict.config import PredictConfig
from lymph.model.predict.grid import fitted_tile, plan_grid
from lymph.model.predict.outputs import slide_name
from lymph.model.predict.plan import window_independent
from lymph.model.predict.run import PredictResult, find_slides, predict_slides, run
from lymph.model.predict.slide import SlidePrediction, predict_slide

__all__ = [
    "PredictConfig",
    "PredictResult",
    "SlidePrediction",
    "find_slides",
    "fitted_tile",
    "plan_grid",
    "predict_slide",
    "predict_slides",
    "run",
    "slide_name",
    "window_independent",
]
