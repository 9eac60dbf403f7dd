"""SynthConfig: every setting checked before anything is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from lymph.data.errors import ConfigError
from lymph.data.synth import (
    SynthConfig,
)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"size": (0, 3072)}, "smaller than one 256 px tile"),
        ({"size": (255, 3072)}, "smaller than one 256 px tile"),
        ({"n_tumor": 0, "n_normal": 0}, "nothing to make"),
        ({"n_tumor": -1}, "slide counts must be >= 0"),
        ({"fmt": "ndpi"}, "format must be one of"),
        ({"mpp": 0.0}, "mpp 0.0 is implausible"),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        SynthConfig(out=tmp_path, **{"size": (512, 512), **kwargs})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"world": "hospital"}, "world must be one of default, camelyon; got 'hospital'"),
        ({"centre": "Z"}, "centre must be one of auto, mixed, A, B, C, got 'Z'"),
    ],
)
def test_bad_world_arguments(tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        SynthConfig(out=tmp_path, n_tumor=1, n_normal=0, size=(512, 512), **kwargs)
