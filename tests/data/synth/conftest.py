from __future__ import annotations

import pytest

from lymph.data.synth import SynthConfig, SynthSlide, run

SIZE = (4096, 3072)


@pytest.fixture(scope="session")
def colour_world(tmp_path_factory: pytest.TempPathFactory) -> tuple[SynthSlide, ...]:
    """3 tumor + 1 normal slides, seed 0: enough tumor patches to measure colour separability
    (and nuclear size). Session-scoped and read-only."""
    out = tmp_path_factory.mktemp("colour_world")
    return run(SynthConfig(out=out, n_tumor=3, n_normal=1, size=SIZE, seed=0)).slides
