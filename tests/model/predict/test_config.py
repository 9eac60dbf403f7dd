"""PredictConfig refuses bad settings, tiling settings included."""

from __future__ import annotations

from pathlib import Path

import pytest

from lymph.data.errors import ConfigError
from lymph.model.predict.config import PredictConfig


def test_predict_config_refuses_bad_settings(tmp_path: Path) -> None:
    ok = {"checkpoint": tmp_path / "c.pt", "out": tmp_path}
    with pytest.raises(ConfigError, match="batch_size must be >= 1"):
        PredictConfig(**ok, batch_size=0)
    with pytest.raises(ConfigError, match="stride 500 > window 320"):
        PredictConfig(**ok, window=320, stride=500)
    with pytest.raises(ConfigError, match="threshold must be within"):
        PredictConfig(**ok, threshold=1.0)
    with pytest.raises(ConfigError, match="map_downsample must be within"):
        PredictConfig(**ok, map_downsample=0.5)
    with pytest.raises(ConfigError, match="level must be an integer"):
        PredictConfig(**ok, level=1.5)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="workers must be >= 1"):
        PredictConfig(**ok, workers=0)
    with pytest.raises(ConfigError, match="read_threads must be an integer >= 1"):
        PredictConfig(**ok, read_threads=0)


def test_tiling_settings_are_checked_in_the_config(tmp_path: Path) -> None:
    ok = {"checkpoint": tmp_path / "c.pt", "out": tmp_path}
    with pytest.raises(ConfigError, match="stride 100 sets the step of --overlap half"):
        PredictConfig(**ok, stride=100)
    assert PredictConfig(**ok, stride=100, overlap="half").stride == 100
    with pytest.raises(ConfigError, match="overlap must be one of"):
        PredictConfig(**ok, overlap="quarter")
    with pytest.raises(ConfigError, match="--margin applies to --overlap margin"):
        PredictConfig(**ok, overlap="half", margin=16)
