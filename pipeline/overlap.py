"""Extraction's patch loop with decoding and writing overlapped (issue 23).

``PatchPipeline(threads)``: ``fill(fn, indices)`` runs ``fn(k)`` for every index on ``threads``
decode threads (inline for 1; JPEG decoding in imagecodecs and OpenSlide release the GIL, so
threads decode in parallel), and ``write(fn)`` hands a finished chunk's write to one writer
thread, so the next chunk decodes while this one compresses and hits the disk. Writes run one
at a time in submission order, so the store is byte-identical whatever ``threads`` is. At most
``depth`` writes wait (``write`` blocks beyond), so memory stays at a few chunks. The first
error of a write is raised by the next ``write`` or by ``close`` (the ``with`` block's end);
leaving the block on an error waits for the writes already handed over, then re-raises.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType


def default_threads(workers: int) -> int:
    """Decode threads per worker when not given: the CPUs this process may use, divided among
    the workers (at least 1)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, cpus // max(1, workers))


class PatchPipeline:
    """Decode threads and one writer thread; see the module doc."""

    def __init__(self, threads: int, *, depth: int = 2) -> None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.threads = threads
        self.depth = max(1, depth)
        self._decode = ThreadPoolExecutor(threads, "lymph-decode") if threads > 1 else None
        self._writer = ThreadPoolExecutor(1, "lymph-write")
        self._pending: deque[Future] = deque()

    def fill(self, fn: Callable[[int], None], indices: Iterable[int]) -> None:
        """``fn(k)`` for every index (in parallel on the decode threads); raises the first
        error after all have run."""
        if self._decode is None:
            for k in indices:
                fn(k)
            return
        for future in [self._decode.submit(fn, k) for k in indices]:
            future.result()

    def write(self, fn: Callable[[], None]) -> None:
        """Queue ``fn`` on the writer thread (after the writes before it); blocks while
        ``depth`` writes are pending, and raises a finished write's error."""
        while self._pending and (self._pending[0].done() or len(self._pending) >= self.depth):
            self._pending.popleft().result()
        self._pending.append(self._writer.submit(fn))

    def close(self) -> None:
        """Wait for every write; raises the first write error."""
        try:
            while self._pending:
                self._pending.popleft().result()
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        if self._decode is not None:
            self._decode.shutdown(wait=True, cancel_futures=True)
        self._writer.shutdown(wait=True)

    def __enter__(self) -> PatchPipeline:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if kind is None:
            self.close()
            return
        for future in self._pending:  # already failing: let queued writes finish, keep exc
            future.exception()
        self._pending.clear()
        self._shutdown()
