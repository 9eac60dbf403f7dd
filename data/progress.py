"""Progress that shows in a terminal AND in a log file.

``tqdm(disable=None)`` hides its bar when stderr is not a terminal, so a run with its output
redirected to a file (nohup, a batch job, `make ... > log`) printed nothing for tens of minutes.
``progress_bar`` returns a tqdm bar on a terminal and, off a terminal, a ``LogProgress`` that
prints one plain line every ``interval`` seconds (and a last one at the end):

    train: step 120/400 (30%), 2.10 step/s, ETA 2m13s, loss=0.0123

The interval is ``LYMPH_PROGRESS_INTERVAL`` seconds (default 30). Both objects answer the part
of tqdm's interface lymph uses: ``update``, ``set_postfix``, ``set_postfix_str``, ``close``,
``n``, ``total`` and the context manager.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, TextIO

DEFAULT_INTERVAL = 30.0


def log_interval() -> float:
    """Seconds between log lines: ``LYMPH_PROGRESS_INTERVAL`` (a positive number) or 30."""
    try:
        value = float(os.environ.get("LYMPH_PROGRESS_INTERVAL", DEFAULT_INTERVAL))
    except ValueError:
        return DEFAULT_INTERVAL
    return value if value > 0 else DEFAULT_INTERVAL


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class LogProgress:
    """A tqdm stand-in for non-terminal output: a line per ``interval`` seconds, none between."""

    def __init__(self, *, total: int | None, desc: str, unit: str, initial: int = 0,
                 file: TextIO | None = None, interval: float | None = None,
                 clock: Any = time.monotonic) -> None:
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.file = file
        self.interval = log_interval() if interval is None else interval
        self._clock = clock
        self._start_n, self._t0 = initial, clock()
        self._last = self._t0
        self._postfix = ""
        self._closed = False

    def line(self) -> str:
        """The progress line as of now."""
        elapsed = self._clock() - self._t0
        done = self.n - self._start_n
        rate = done / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.desc}: {self.unit} {self.n}"]
        if self.total:
            parts[0] += f"/{self.total} ({100 * self.n / self.total:.0f}%)"
        # like tqdm: a slow unit (a study run takes minutes) as seconds per unit, not "0.00/s"
        if 0 < rate < 0.5:
            parts.append(f"{_duration(1 / rate)}/{self.unit}")
        else:
            parts.append(f"{rate:.2f} {self.unit}/s")
        if self.total and rate > 0:
            parts.append(f"ETA {_duration((self.total - self.n) / rate)}")
        parts.append(f"elapsed {_duration(elapsed)}")
        if self._postfix:
            parts.append(self._postfix)
        return ", ".join(parts)

    def _emit(self) -> None:
        out = self.file if self.file is not None else sys.stderr
        print(self.line(), file=out, flush=True)
        self._last = self._clock()

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._clock() - self._last >= self.interval:
            self._emit()

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True,
                    **kwargs: Any) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self._postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self._postfix = s

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        if not self._closed and self.n > self._start_n:
            self._emit()
        self._closed = True

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def progress_bar(*, total: int | None, desc: str, unit: str, enabled: bool = True,
                 initial: int = 0, file: TextIO | None = None, **tqdm_kwargs: Any) -> Any:
    """A tqdm bar on a terminal; a ``LogProgress`` off one; a disabled tqdm when not
    ``enabled``. ``tqdm_kwargs`` (position, leave, dynamic_ncols) apply to the bar only."""
    from tqdm.auto import tqdm

    stream = file if file is not None else sys.stderr
    if not enabled:
        return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=True)
    if _is_terminal(stream):
        return tqdm(total=total, initial=initial, desc=desc, unit=unit, file=file,
                    **tqdm_kwargs)
    return LogProgress(total=total, desc=desc, unit=unit, initial=initial, file=file)
