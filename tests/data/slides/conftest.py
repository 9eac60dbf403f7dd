"""The shared slide fixtures (`../shared/fixtures/slides`)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def slides_dir(fixtures_dir):
    return fixtures_dir / "slides"
