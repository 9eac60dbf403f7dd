"""table.md's number formatting (model/study/report.py)."""

from __future__ import annotations

from lymph.model.study.report import _pp


def test_pp_keeps_the_sign_of_a_ci_bound_that_rounds_to_zero() -> None:
    # [-0.04, +1.33] pp with "no detectable effect" must not read as [+0.0, +1.3]
    assert _pp(-0.0004) == "-0.04" and _pp(0.0004, signed=False) == "0.04"
    assert _pp(0.0) == _pp(-0.0) == "+0.0" and _pp(0.0133) == "+1.3" and _pp(-0.02) == "-2.0"
    assert _pp(float("nan")) == "n/a"
