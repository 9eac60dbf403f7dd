"""Resuming a study (model/study/resume.py): a finished run's done.json is trusted only when it
is lymph's own record of that run; each kind of damage is its own ConfigError."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lymph.data.errors import ConfigError
from lymph.model.metrics import PixelCounts
from lymph.model.study.plan import RunSpec
from lymph.model.study.resume import read_done, row_problem

SPEC = RunSpec(size=40, fold=0, repeat=0, condition="scratch", train_slides=("a",),
               val_slides=("b",), test_slides=("c",), subset=(("a", 1),), train_seed=7,
               n_tumor_patches=20, n_normal_patches=20)


def _row(**change: object) -> dict[str, object]:
    counts = PixelCounts(tp=1565710, fp=558555, fn=650725, tn=9807922).to_dict()
    row: dict[str, object] = {"run_id": "n0040_f0_r0_scratch", "size": 40, "fold": 0,
                              "repeat": 0, "condition": "scratch", "ap": 0.69, **counts}
    row.update(change)
    return row


def test_lymphs_own_row_passes() -> None:
    assert row_problem(_row(), SPEC) is None
    assert row_problem(_row(precision=None), SPEC) is None  # undefined metrics may be null
    no_counts = {k: v for k, v in _row(f1=0.5).items() if k not in ("tp", "fp", "fn", "tn")}
    assert row_problem(no_counts, SPEC) is None  # an older row: nothing to check against


@pytest.mark.parametrize("change, match", [
    ({"f1": 0.7314089893335176}, r"f1 0\.73140898.* does not follow from its own tp/fp/fn "
                                 r"\(0\.72140898.*\): the record was edited or damaged"),
    ({"recall": 0.8064}, r"recall 0\.8064 does not follow"),
    ({"tp": 1565711}, r"precision .* does not follow from its own tp/fp/fn"),
    ({"f1": "0.72"}, r"f1 is '0\.72', not a number"),
    ({"f1": float("inf")}, r"f1 is inf, not a number"),
    ({"size": 200}, r"size is 200, this run's is 40"),
    ({"condition": "seg_only"}, r"condition is 'seg_only', this run's is 'scratch'"),
])
def test_a_damaged_row_is_named(change: dict, match: str) -> None:
    problem = row_problem(_row(**change), SPEC)
    assert problem is not None and re.search(match, problem), problem


def test_read_done_refuses_a_flipped_digit_with_the_file_and_the_fix(tmp_path: Path) -> None:
    done = tmp_path / "n0040_f0_r0_scratch" / "done.json"
    done.parent.mkdir()
    done.write_text(json.dumps({"row": _row(), "spec": {}, "settings": {}}))
    assert read_done(done, SPEC)["row"]["f1"] == _row()["f1"]
    done.write_text(done.read_text().replace('"fn": 650725', '"fn": 650726'))
    with pytest.raises(ConfigError, match=r"done\.json: not a finished run's record \(its row's "
                                          r"recall .* edited or damaged\); delete .* to rerun"):
        read_done(done, SPEC)
