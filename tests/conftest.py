from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The real slides and CAMELYON16 outlines in ../shared/fixtures. Absent (a clone without the
    shared folder beside it), the tests that need them skip with the path; under CI=true they
    fail instead, so CI can never pass with the real-file tests silently skipped."""
    if not FIXTURES.is_dir():
        msg = (f"shared fixtures not found at {FIXTURES}: clone lymph beside the shared/ folder "
               "(or link it there) to run the real-slide tests")
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(msg + " (CI=true: these tests may not skip)")
        pytest.skip(msg)
    return FIXTURES


@pytest.fixture(scope="session")
def synth_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder made by `lymph.data.synth.run`: tumor_001.tif (+ tumor_001.xml,
    tumor_001_mask.tif), normal_001.tif, reference.csv, synth.json; 4096x3072, seed 0, tiff.
    Session-scoped and read-only: copy files before changing them."""
    from lymph.data.synth import SynthConfig, run

    out = tmp_path_factory.mktemp("synth_world")
    run(SynthConfig(out=out, n_tumor=1, n_normal=1, size=(4096, 3072), seed=0, fmt="tiff"))
    return out


@pytest.fixture(scope="session")
def synth_store(synth_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`lymph extract` of synth_world: patch 300, level 0, 32 patches per slide, seed 0, labels
    from reference.csv; slides `tumor_001` (status tumor) and `normal_001` (status normal), each
    with images, coords, labels and masks. Session-scoped and read-only: copy it to change it."""
    from lymph.pipeline.extract import ExtractConfig, run

    out = tmp_path_factory.mktemp("synth_store") / "store.zarr"
    summary = run(ExtractConfig(slides=synth_world, out=out, labels=synth_world /
                                    "reference.csv", patch_size=300, patches_per_slide=32,
                                    seed=0, progress=False))
    assert not summary.failed, summary.failed
    return out
