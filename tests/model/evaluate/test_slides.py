"""The validation-slide split and what makes a checkpoint's store this store."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lymph.data.errors import ConfigError
from lymph.model.checkpoint import RunRecord
from lymph.model.evaluate import same_store, split_validation
from lymph.model.train import pick_val_slides


def test_split_validation_is_seeded_and_disjoint() -> None:
    slides = [(f"t{i}", "tumor") for i in range(4)] + [(f"n{i}", "normal") for i in range(6)]
    a = split_validation(slides, fraction=0.3, rng=np.random.default_rng(1))
    b = split_validation(slides, fraction=0.3, rng=np.random.default_rng(1))
    assert a == b
    val, scored = a
    assert len(val) == 3 and len(scored) == 7 and not set(val) & set(scored)
    assert any(s.startswith("t") for s in val) and any(s.startswith("t") for s in scored)
    # lymph's one rule, tumor first: 3 of the 4 tumor slides validate, one is left to score
    assert val == pick_val_slides(sorted(slides), 3, rng=np.random.default_rng(1), keep_tumor=True)
    assert sum(s.startswith("t") for s in val) == 3


def test_split_validation_takes_the_only_tumor_slide() -> None:
    slides = [("t0", "tumor"), ("n0", "normal"), ("n1", "normal"), ("n2", "normal")]
    val, scored = split_validation(slides, fraction=0.5, rng=np.random.default_rng(0))
    assert "t0" in val and len(val) == 2 and len(scored) == 2  # F1 needs tumor pixels


def test_split_validation_needs_two_slides() -> None:
    with pytest.raises(ConfigError, match="at least 2 labeled slides"):
        split_validation([("t0", "tumor")], fraction=0.2, rng=np.random.default_rng(0))



@dataclass
class FakeStore:
    """What same_store reads of a PatchStore: its path and settings."""

    path: Path
    settings: dict[str, Any] = field(default_factory=dict)


def record(store: dict[str, Any] | None) -> RunRecord:
    config: dict[str, Any] = {"model": {"base_width": 4, "depth": 2}, "stage": "finetune"}
    if store is not None:
        config["store"] = store
    return RunRecord.from_dict(config)


def test_same_store_is_the_same_path_or_the_same_extraction_settings(tmp_path: Path) -> None:
    settings = {"schema_version": 1, "patch_size": 20, "level": 0, "seed": 0}
    here = FakeStore(tmp_path / "a.zarr", settings)
    # the same folder, whatever it records
    assert same_store(here, record({"path": str(tmp_path / "a.zarr")}))
    # a copy: every setting but path, versions and run-time knobs equal
    copy = {**settings, "path": str(tmp_path / "b.zarr"), "workers": 8, "schema_version": 2}
    assert same_store(here, record(copy))
    assert not same_store(here, record({**copy, "seed": 1}))
    assert not same_store(here, record(None))  # no store recorded
    # a store that records no extraction setting cannot be recognised as a copy
    bare = FakeStore(tmp_path / "c.zarr", {"schema_version": 1})
    assert not same_store(bare, record({"schema_version": 1, "path": str(tmp_path / "d.zarr")}))
