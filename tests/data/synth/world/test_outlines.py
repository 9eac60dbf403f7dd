"""Lesion outlines: shape statistics against real CAMELYON16 outlines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lymph.data.errors import ConfigError
from lymph.data.synth.world.outlines import (
    OutlineModel,
    load_real_outlines,
    radial_outline,
    shape_stats,
    summarize,
)
from lymph.data.synth.world.params import PRESETS


def test_outline_shape_statistics_match_real_camelyon16(fixtures_dir: Path) -> None:
    """The preset's outlines: median perimeter^2/(4 pi area) within 20% of the real outlines',
    median solidity and convexity within 0.06."""
    real = summarize([shape_stats(p) for p in load_real_outlines(
        fixtures_dir / "annotations" / "ncrf-camelyon16")])
    rng = np.random.default_rng(1)
    model = PRESETS["camelyon"].outline
    gen = summarize([shape_stats(radial_outline(rng, 0, 0, r, model))
                     for r in rng.uniform(300, 4000, 150)])
    assert abs(gen["iso_median"] / real["iso_median"] - 1) <= 0.20, (gen, real)
    assert abs(gen["solidity_median"] - real["solidity_median"]) <= 0.06, (gen, real)
    assert abs(gen["convexity_median"] - real["convexity_median"]) <= 0.06, (gen, real)
    # the old star polygons were far too round: the check can fail
    smooth = summarize([shape_stats(radial_outline(rng, 0, 0, 800, OutlineModel(0.05, 1.5, 0)))
                        for _ in range(30)])
    assert smooth["iso_median"] < 0.6 * real["iso_median"]


def test_outline_stats_of_simple_shapes() -> None:
    square = np.array([[0, 0], [1, 0], [1, 1], [0, 1.0]])
    s = shape_stats(square)
    assert s["iso"] == pytest.approx(16 / (4 * np.pi))
    assert s["solidity"] == pytest.approx(1) and s["convexity"] == pytest.approx(1)
    notch = np.array([[0, 0], [2, 0], [2, 2], [1, 1], [0, 2.0]])
    assert shape_stats(notch)["solidity"] == pytest.approx(3 / 4)
    with pytest.raises(ValueError, match="needs >= 3 vertices"):
        shape_stats(square[:2])
    with pytest.raises(ValueError, match="degenerate polygon"):
        shape_stats(np.array([[0, 0], [1, 1], [2, 2.0]]))


def test_bad_outline_model_and_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="outline sigma must be in"):
        OutlineModel(sigma=-1)
    with pytest.raises(ConfigError, match="no \\*.json outlines in"):
        load_real_outlines(tmp_path)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read outlines from .*bad.json"):
        load_real_outlines(tmp_path)
