"""Coarse to fine: full resolution only where the screen sees tumor."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from lymph.data.errors import ConfigError
from lymph.model.predict.config import PredictConfig
from lymph.model.predict.slide import predict_slide


def test_coarse_to_fine_infers_full_resolution_only_near_tumor(
    world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    fake_probs: Callable[..., np.ndarray], geo: SimpleNamespace
) -> None:
    import tifffile

    import lymph.model.infer

    monkeypatch.setattr(lymph.model.infer, "predict_probs", fake_probs)
    slide = world / "slides" / "tumor_t.tif"
    kw = {"checkpoint": world / "tiny.pt", "device": "cpu", "thumb_size": 512, "threads": 1,
          "progress": False, "level": 1}
    full = predict_slide(slide, PredictConfig(out=tmp_path / "full", **kw))
    c2f = predict_slide(slide, PredictConfig(out=tmp_path / "c2f", screen=2, **kw))
    assert 0 < c2f.n_windows < 0.7 * full.n_windows and c2f.n_screen_windows > 0
    assert c2f.timings["screen"] > 0
    a, b = tifffile.imread(full.map_path), tifffile.imread(c2f.map_path)
    t0, t1, u0, u1 = (v // 16 for v in geo.TUMOR_BOX)
    np.testing.assert_array_equal(a[t0 - 2 : t1 + 2, u0 - 2 : u1 + 2],
                                  b[t0 - 2 : t1 + 2, u0 - 2 : u1 + 2])
    assert c2f.n_detections == full.n_detections == 1
    with pytest.raises(ConfigError, match="--screen 64: the map's downsample 16 is not a whole"):
        predict_slide(slide, PredictConfig(out=tmp_path / "x", screen=64, **kw))
