"""The files a slide evaluation reads: CAMELYON16 detection files (``confidence,X,Y``) and
``scores.csv`` (``slide,probability``), refused with one line naming the file and line.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from lymph.data.errors import ConfigError
from lymph.data.slides import slide_id


def read_text_csv(path: str | Path, *, what: str = "CSV") -> list[list[str]]:
    """The rows of a UTF-8 text CSV. ConfigError, one line naming the file, for a binary file
    (NUL bytes), a UTF-16 one or bytes that are not UTF-8; OSError when it cannot be read."""
    from lymph.data.io import decode_text

    path = Path(path)
    text = decode_text(path.read_bytes(), path, what=what, fix="save it as UTF-8 CSV")
    return list(csv.reader(text.splitlines()))


def read_detections_csv(path: str | Path) -> np.ndarray:
    """A CAMELYON16 detection file: ``confidence,X,Y`` rows, no header -> float64 (n, 3).
    ConfigError naming the file, line and value for anything else (NaN and inf included)."""
    path = Path(path)
    rows: list[list[float]] = []
    for i, row in enumerate(read_text_csv(path, what="detection file"), 1):
        if not row or not "".join(row).strip():
            continue
        if len(row) < 3:
            raise ConfigError(
                f"{path}, line {i}: expected 'confidence,X,Y', got {','.join(row)!r}; "
                "write one detection per line, level-0 pixel coordinates, no header"
            )
        try:
            values = [float(row[0]), float(row[1]), float(row[2])]
        except ValueError:
            raise ConfigError(
                f"{path}, line {i}: {','.join(row)!r} is not three numbers "
                "(confidence,X,Y; CAMELYON16 detection files have no header)"
            ) from None
        if not all(math.isfinite(v) for v in values):
            raise ConfigError(
                f"{path}, line {i}: {','.join(row)!r} holds NaN or infinity; write finite "
                "confidences and coordinates"
            )
        rows.append(values)
    return check_detections(np.asarray(rows, np.float64).reshape(-1, 3))


def read_scores_csv(path: str | Path) -> dict[str, float]:
    """``slide,probability`` rows (an optional header line is skipped) -> {slide: probability}.
    ConfigError naming the file, line and value for a probability that is not a finite number."""
    path = Path(path)
    out: dict[str, float] = {}
    for i, row in enumerate(read_text_csv(path, what="scores file"), 1):
        if not row or not "".join(row).strip():
            continue
        if len(row) < 2:
            raise ConfigError(f"{path}, line {i}: expected 'slide,probability', got {row!r}")
        try:
            value = float(row[1])
        except ValueError:
            if i == 1:
                continue  # header
            raise ConfigError(f"{path}, line {i}: probability {row[1]!r} is not a number") from None
        if not math.isfinite(value):
            raise ConfigError(
                f"{path}, line {i}: probability {row[1]!r} of {row[0]!r} is not finite; "
                "write a number in [0, 1]"
            )
        out[slide_id(row[0].strip())] = value
    return out



def check_detections(detections: np.ndarray) -> np.ndarray:
    """``detections`` as float64 (n, 3) confidence, X, Y; ValueError for another shape or a
    value that is not finite."""
    det = np.asarray(detections, dtype=np.float64)
    if det.size == 0:
        return np.zeros((0, 3), np.float64)
    if det.ndim != 2 or det.shape[1] != 3:
        raise ValueError(f"detections must be (n, 3) confidence, X, Y; got shape {det.shape}")
    if not np.isfinite(det).all():
        raise ValueError("detections hold NaN or infinite values")
    return det

