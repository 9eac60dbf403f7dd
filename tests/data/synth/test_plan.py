"""SlidePlan: lesions, sections and tiles that depend only on the seed."""

from __future__ import annotations

import numpy as np
import pytest

from lymph.data.synth import (
    SlidePlan,
    lesion_kind,
)


def test_tiles_do_not_depend_on_row_order() -> None:
    def plan() -> SlidePlan:
        return SlidePlan(name="t", status="tumor", width=1024, height=800, mpp=0.243, seed=3,
                         index=1)

    forward = [plan().image_row(i) for i in range(4)]
    p = plan()
    backward = [p.image_row(i) for i in reversed(range(4))][::-1]
    for f, b in zip(forward, backward, strict=True):
        assert np.array_equal(f, b)
    assert forward[3].shape == (800 - 768, 1024, 3)


@pytest.mark.parametrize("seed", range(6))
def test_every_small_tumor_slide_has_tumor(seed: int) -> None:
    p = SlidePlan(name="t", status="tumor", width=4096, height=3072, mpp=0.243, seed=seed,
                  index=1)
    assert p.lesions
    area_level0 = p.tumor_mask(0, 0, 512, 384, downsample=8).sum() * 64
    assert area_level0 > 300 * 300, "room for at least one whole tumor patch"


def test_full_size_slides_have_camelyon_lesion_classes_and_holes() -> None:
    kinds: set[str] = set()
    holes = 0
    for i in range(1, 6):
        p = SlidePlan(name="t", status="tumor", width=100_000, height=100_000, mpp=0.243,
                      seed=0, index=i)
        for les in p.lesions:
            assert les.kind == lesion_kind(les.diameter_um)
            kinds.add(les.kind)
            holes += len(les.holes)
    assert kinds == {"Macro", "Micro", "ITC"}
    assert holes > 0
    assert lesion_kind(2500) == "Macro" and lesion_kind(500) == "Micro"
    assert lesion_kind(199) == "ITC"
