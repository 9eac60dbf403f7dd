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


def test_mixed_centre_is_drawn_per_slide_and_repeats() -> None:
    names = [resolve_centre("mixed", 0, status="tumor", index=i).name for i in range(1, 13)]
    assert set(names) == {"A", "B", "C"}  # one world, several labs
    again = [resolve_centre("mixed", 0, status="tumor", index=i).name for i in range(1, 13)]
    assert names == again
    auto = {resolve_centre("auto", 0, status="tumor", index=i).name for i in range(1, 13)}
    assert len(auto) == 1  # "auto" keeps one lab per world


def test_each_slide_has_its_own_tumor_grade() -> None:
    kw = {"name": "t", "status": "tumor", "width": 512, "height": 512, "mpp": 0.243, "seed": 0}
    plans = [make_plan("camelyon", "A", index=i, **kw) for i in range(1, 9)]
    scales = [p.grade_scale for p in plans]  # type: ignore[attr-defined]
    chrom = [p.chromatin for p in plans]  # type: ignore[attr-defined]
    assert all(0.8 <= s <= 1.25 for s in scales) and max(scales) - min(scales) > 0.1
    assert all(0.24 <= c <= 0.44 for c in chrom) and max(chrom) - min(chrom) > 0.05
    small, big = plans[scales.index(min(scales))], plans[scales.index(max(scales))]
    area = [float(sum((occ > 0.5).sum() for _d, occ in p.carc_sprites)) for p in (small, big)]
    assert area[0] < area[1]  # the grade reaches the nuclei drawn
    assert plans[0].describe()["world"]["grade"]["radius_scale"] == round(scales[0], 4)


def test_bad_grade_range() -> None:
    with pytest.raises(ConfigError, match="grade_scale must be 0 < low <= high"):
        WorldParams(grade_scale=(1.2, 0.9))
