"""Predict's inference loop as a pipeline (issue 23): blending and map writing on their own
thread, behind a bounded queue, so the model never waits for them.

``infer_map`` already reads the next batches on a prefetch thread; ``SinkThread`` takes the
model's probabilities of each batch and does what followed the forward pass in the loop
(``sink.add`` per window, then ``sink.emit`` of the finished map rows) on one thread, in the
order the batches came, so the map is the same as the serial loop's bit for bit. At most
``depth`` batches of probabilities wait (``put`` blocks beyond), so memory stays flat. The
thread's first error is raised by the next ``put`` or by ``close``.

``ENABLED`` (module switch): False runs the sink inline, as before; benches flip it to measure
the difference in one run.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

ENABLED = True
_DONE = object()


class SinkThread:
    """Apply ``(chunk, probs, emit_row)`` batches to ``sink`` on a background thread."""

    def __init__(self, sink: Any, *, depth: int = 2, enabled: bool | None = None) -> None:
        self.sink = sink
        self.busy = 0.0  # seconds spent in sink.add / sink.emit
        self.enabled = ENABLED if enabled is None else enabled
        self._error: BaseException | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._thread: threading.Thread | None = None
        if self.enabled:
            self._thread = threading.Thread(target=self._work, daemon=True,
                                            name="lymph-predict-blend")
            self._thread.start()

    def _apply(self, chunk: Sequence[tuple[int, int]], probs: np.ndarray,
               emit_row: int | None) -> None:
        t0 = time.perf_counter()
        for (x, y), p in zip(chunk, probs, strict=True):
            self.sink.add(p, x, y)
        if emit_row is not None:
            self.sink.emit(emit_row)
        self.busy += time.perf_counter() - t0

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            if self._error is not None:
                continue  # drain: the producer sees the error at its next put
            try:
                self._apply(*item)
            except BaseException as exc:  # handed to the producer
                self._error = exc

    def put(self, chunk: Sequence[tuple[int, int]], probs: np.ndarray,
            emit_row: int | None) -> None:
        """Blend one batch (in the background when enabled); ``emit_row``: map rows above it
        are final after this batch (None: none yet)."""
        if self._error is not None:
            raise self._error
        if not self.enabled:
            self._apply(chunk, probs, emit_row)
            return
        self._queue.put((chunk, probs, emit_row))

    def close(self) -> None:
        """Wait for every batch; raises the thread's first error."""
        if self._thread is not None:
            self._queue.put(_DONE)
            self._thread.join()
            self._thread = None
        if self._error is not None:
            raise self._error

    def abort(self) -> None:
        """Stop the thread after the batches already queued, raising nothing (the loop is
        already failing); a no-op after ``close``."""
        if self._thread is not None:
            self._queue.put(_DONE)
            self._thread.join()
            self._thread = None
