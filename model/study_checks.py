"""A study's finished-run records (`runs/<id>/done.json`) checked before a resume trusts them:
anything but lymph's own record (unreadable, a folder in its place, a row whose F1 is missing,
renamed or not a number, a row of another run) is one ConfigError naming the file and the fix."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from lymph.data.errors import ConfigError

NUMBERS = ("precision", "recall", "f1", "dice", "iou", "ap")
"""Row metrics: f1 must be a number; the others a number or null (undefined)."""


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and \
        not math.isinf(value)


def row_problem(row: Any, spec: Any) -> str | None:
    """Why `row` is not the results row of `spec` (a `RunSpec`), or None."""
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
    return None


def read_done(done: Path, spec: Any) -> dict[str, Any]:
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
