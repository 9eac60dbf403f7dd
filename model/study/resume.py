"""Resuming a study: which runs are finished (`runs/<id>/done.json`) and may be reused.

A finished run's record is checked before a resume trusts it: anything but lymph's own record
(unreadable, a folder in its place, a row whose F1 is missing, renamed or not a number, a metric
that does not follow from the row's own pixel counts, a row of another run) is one ConfigError
naming the file and the fix; so is a finished run made with other settings (the settings that
change a run's result)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lymph.data.errors import ConfigError
from lymph.model.study.config import StudyConfig
from lymph.model.study.execute import Row, done_path
from lymph.model.study.plan import RunSpec

NUMBERS = ("precision", "recall", "f1", "dice", "iou", "ap")
"""Row metrics: f1 must be a number; the others a number or null (undefined)."""


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and \
        not math.isinf(value)


def row_problem(row: object, spec: RunSpec) -> str | None:
    """Why `row` is not the results row of `spec`, or None."""
    if not isinstance(row, dict):
        return f"its row is a {type(row).__name__}, not an object"
    for key in ("run_id", "size", "fold", "repeat", "condition"):
        if key in row and row[key] != getattr(spec, key):
            return f"its row's {key} is {row[key]!r}, this run's is {getattr(spec, key)!r}"
    if "run_id" not in row:
        return "its row has no run_id"
    for key in NUMBERS:
        value = row.get(key)
        if key == "f1" and key not in row:
            return "its row has no f1 (renamed or removed)"
        if not (_number(value) or (value is None and key != "f1")):
            return f"its row's {key} is {value!r}, not a number"
    return _counts_problem(row)


def _counts_problem(row: Mapping[str, Any]) -> str | None:
    """A metric that does not follow from the row's own pixel counts (tp, fp, fn, tn): a digit
    changed by hand or on disk, which would otherwise enter the table unnoticed."""
    from lymph.model.metrics import PixelCounts

    counts = [row.get(k) for k in ("tp", "fp", "fn", "tn")]
    ints = [c for c in counts if isinstance(c, int) and not isinstance(c, bool) and c >= 0]
    if len(ints) != len(counts):
        return None  # a row written before counts were recorded: nothing to check against
    expected = PixelCounts(*ints).to_dict()
    for key in ("precision", "recall", "f1", "dice", "iou"):
        value = row.get(key)
        if value is not None and not math.isclose(value, expected[key], rel_tol=1e-9,
                                                  abs_tol=1e-12):
            return (f"its row's {key} {value!r} does not follow from its own tp/fp/fn "
                    f"({expected[key]!r}): the record was edited or damaged")
    return None


def read_done(done: Path, spec: RunSpec) -> dict[str, Any]:
    """The record in `done` (a finished run's done.json), checked against `spec`."""
    fix = f"delete {done.parent} to rerun this run, then rerun the study"
    try:
        record = json.loads(done.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"{done}: not a finished run's record ({type(exc).__name__}: "
                          f"{why.splitlines()[0] if why else ''}); {fix}") from None
    if not isinstance(record, dict) or "row" not in record:
        raise ConfigError(f"{done}: not a finished run's record (no 'row'); {fix}")
    problem = row_problem(record["row"], spec)
    if problem is not None:
        raise ConfigError(f"{done}: not a finished run's record ({problem}); {fix}")
    return record


def resume(
    config: StudyConfig, runs: Sequence[RunSpec], settings: Mapping[str, object]
) -> tuple[list[Row], list[RunSpec]]:
    """(rows of finished runs, runs still to do); ConfigError when a finished run differs."""
    rows: list[Row] = []
    todo: list[RunSpec] = []
    for spec in runs:
        done = done_path(config, spec)
        if not done.exists():
            todo.append(spec)
            continue
        record = read_done(done, spec)  # ConfigError for anything lymph did not write
        want = {"spec": spec.fingerprint(), "settings": dict(settings)}
        got = {"spec": record.get("spec"), "settings": record.get("settings")}
        if got != want:
            raise ConfigError(
                f"{done}: this finished run was made with other settings ({_diff(got, want)}); "
                "rerun with the same settings to resume, or use a new --out"
            )
        rows.append(record["row"])
    return rows, todo


def _diff(a: Mapping[str, object], b: Mapping[str, object], prefix: str = "") -> str:
    """What differs between two (nested) settings records, in words."""
    parts = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, Mapping) and isinstance(y, Mapping):
            inner = _diff(x, y, f"{prefix}{key}.")
            if inner:
                parts.append(inner)
        elif x != y:
            parts.append(f"{prefix}{key}: {x!r} then, {y!r} now")
    return "; ".join(parts)
