"""Trivial rules (colour, nuclear size) do not separate the preset."""

from __future__ import annotations

from pathlib import Path

import pytest

from lymph.data.synth import (
    SynthConfig,
    colour_separability,
    run,
)

# Plans big enough to hold every mimic (the study's slide size).
STUDY_SIZE = (8000, 6000)


@pytest.mark.slow
def test_trivial_rules_do_not_separate_the_preset(tmp_path: Path) -> None:
    """The issue's bars on the preset: mean colour <= 0.75, nuclear size <= 0.80 balanced
    accuracy, on bench/bench_world.py's world (3 tumor + 1 normal at the study's 8000x6000,
    seed 0: 39 tumor patches since calibration round c4, about 50 before). On a 4096x3072
    world (14 tumor patches) the colour rule reached 0.83 (README): the bar holds on this
    world, not on every small one. The centre is drawn per slide (`--centre mixed`), as in the
    calibrated world the study and the demo use; with one centre for the whole world
    (`--centre auto`) the nuclear-size rule reached 0.81 (README)."""
    from lymph.data.synth.world.checks import nuclear_size_separability

    slides = run(SynthConfig(out=tmp_path, n_tumor=3, n_normal=1, size=STUDY_SIZE, seed=0,
                             world="camelyon", centre="mixed")).slides  # as make study
    colour = colour_separability(slides)
    assert colour["n_tumor"] >= 35  # enough to judge a rule by (c4: 39, world_checks_c4.json)
    assert colour["best"] <= 0.75, colour
    assert nuclear_size_separability(slides)["balanced_accuracy"] <= 0.80
