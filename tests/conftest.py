from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.skip(f"shared fixtures not found at {FIXTURES}")
    return FIXTURES


@pytest.fixture(scope="session")
def synth_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder made by `lymph.data.synth.synth_slides`: tumor_001.tif (+ tumor_001.xml,
    tumor_001_mask.tif), normal_001.tif, reference.csv, synth.json; 4096x3072, seed 0, tiff.
    Session-scoped and read-only: copy files before changing them."""
    from lymph.data.synth import synth_slides

    out = tmp_path_factory.mktemp("synth_world")
    synth_slides(out, n_tumor=1, n_normal=1, size=(4096, 3072), seed=0, fmt="tiff")
    return out
