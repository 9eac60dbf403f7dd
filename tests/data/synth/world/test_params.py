"""The camelyon preset's knobs and scanning centres."""

from __future__ import annotations

import pytest

from lymph.data.errors import ConfigError
from lymph.data.synth import (
    make_plan,
)
from lymph.data.synth.world.params import WorldParams, resolve_centre


def test_centres_change_stain_sharpness_and_quality() -> None:
    kw = {"name": "t", "status": "normal", "width": 512, "height": 512, "mpp": 0.243,
          "seed": 0, "index": 1}
    a, b = make_plan("camelyon", "A", **kw), make_plan("camelyon", "B", **kw)
    assert (a.jpeg_quality, b.jpeg_quality) == (90, 70)
    assert a.sharp_px == 0 < b.sharp_px
    assert a.stain.h_od != b.stain.h_od
    assert {resolve_centre("auto", s).name for s in range(12)} == {"A", "B", "C"}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"fold_p": 1.5}, "fold_p must be in"),
        ({"pattern_p": (0.5, 0.5, 0.5)}, "pattern_p must be 3 probabilities"),
        ({"gc_radius_um": (100.0, 50.0)}, "gc_radius_um must be 0 < low <= high"),
    ],
)
def test_bad_world_params(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        WorldParams(**kwargs)
