"""The inference loop as a pipeline (issue 23): windows read ahead on a prefetch thread
(``read_threads`` of them in parallel), the model on the caller's thread, and blending and map
writing on their own thread behind a bounded queue, so the model never waits for them.

``SinkThread`` takes the model's probabilities of each batch and does what followed the forward
pass in the loop (``sink.add`` per window, then ``sink.emit`` of the finished map rows) on one
thread, in the order the batches came, so the map is the same as the serial loop's bit for bit.
At most ``depth`` batches of probabilities wait (``put`` blocks beyond), so memory stays flat.
The thread's first error is raised by the next ``put`` or by ``close``.

``ENABLED`` (module switch): False runs the sink inline, as before; benches flip it to measure
the difference in one run.

Speed. torch runs in ``torch.inference_mode`` and channels_last memory format (measured faster
on CPU with oneDNN convolutions); batches hold ``batch_size`` training-size windows' worth of
pixels. ``torch.compile`` was measured (CPU, torch 2.13): 56 s to compile and no faster per
window, so it is not used; ONNX Runtime is not a dependency.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

import numpy as np

from lymph.model.predict.blend import BlendSink, CropSink
from lymph.model.predict.grid import Grid, Rect

if TYPE_CHECKING:
    import torch

    from lymph.data.slides import SlideReader
    from lymph.model.unet import UNet

T = TypeVar("T")


class MapSink(Protocol):
    """Where window probabilities go (``blend.BlendSink``, ``blend.CropSink``)."""

    def add(self, probs: np.ndarray, x_lvl: int, y_lvl: int,
            origin: tuple[int, int] | None = None) -> None: ...

    def emit(self, upto_row: int) -> None: ...

ENABLED = True
_DONE = object()


class SinkThread:
    """Apply ``(chunk, probs, emit_row, window origins)`` batches to ``sink`` on a background
    thread."""

    def __init__(self, sink: MapSink, *, depth: int = 2, enabled: bool | None = None) -> None:
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

    def _apply(self, chunk: Sequence[tuple[int, int]], probs: np.ndarray | Sequence[np.ndarray],
               emit_row: int | None, windows: Sequence[tuple[int, int]] | None) -> None:
        t0 = time.perf_counter()
        for j, ((x, y), p) in enumerate(zip(chunk, probs, strict=True)):
            self.sink.add(p, x, y, None if windows is None else windows[j])
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

    def put(self, chunk: Sequence[tuple[int, int]], probs: np.ndarray | Sequence[np.ndarray],
            emit_row: int | None, windows: Sequence[tuple[int, int]] | None = None) -> None:
        """Blend one batch (in the background when enabled); ``emit_row``: map rows above it
        are final after this batch (None: none yet); ``windows``: where each of ``probs``
        starts (trimmed tiles; None: the full tiles)."""
        if self._error is not None:
            raise self._error
        if not self.enabled:
            self._apply(chunk, probs, emit_row, windows)
            return
        self._queue.put((chunk, probs, emit_row, windows))

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


def _batches(
    reader: SlideReader,
    grid: Grid,
    origins: Sequence[tuple[int, int]],
    batch_size: int,
    *,
    read_threads: int = 1,
    rects: Sequence[Rect] | None = None,
) -> Iterator[tuple[list[int], np.ndarray, float]]:
    """Batches of (indices into ``origins``, uint8 windows (n, H, W, 3), seconds spent reading).
    Windows are the full tiles, or ``rects`` (trimmed tiles: a batch holds consecutive windows of
    one size). With ``read_threads`` > 1 the windows of a batch are read in parallel (OpenSlide
    is thread-safe and releases the GIL while decoding)."""
    from concurrent.futures import ThreadPoolExecutor

    ds = grid.level_downsample

    def rect(i: int) -> Rect:
        if rects is not None:
            return rects[i]
        return (*grid.tile_origin(*origins[i]), grid.window, grid.window)

    def read(i: int) -> np.ndarray:
        x, y, w, h = rect(i)
        return reader.read_region((int(round(x * ds)), int(round(y * ds))), grid.level, (w, h))

    pool = ThreadPoolExecutor(read_threads) if read_threads > 1 else None
    try:
        for chunk in _chunks(len(origins), batch_size, lambda i: rect(i)[2:]):
            t0 = time.perf_counter()
            tiles = list(pool.map(read, chunk)) if pool is not None else [read(i) for i in chunk]
            yield chunk, np.stack(tiles), time.perf_counter() - t0
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _chunks(n: int, batch_size: int, shape: Callable[[int], tuple[int, int]]) -> list[list[int]]:
    """0..n-1 in runs of at most ``batch_size`` consecutive indices of one ``shape``."""
    chunks: list[list[int]] = []
    for i in range(n):
        if chunks and len(chunks[-1]) < batch_size and shape(chunks[-1][-1]) == shape(i):
            chunks[-1].append(i)
        else:
            chunks.append([i])
    return chunks


def _prefetch(iterator: Iterator[T], depth: int = 2) -> Iterator[T]:
    """Run ``iterator`` in a thread, ``depth`` items ahead (OpenSlide and torch release the GIL);
    its exceptions are re-raised here."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def work() -> None:
        try:
            for item in iterator:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as exc:  # handed to the consumer
            q.put(exc)

    thread = threading.Thread(target=work, daemon=True, name="lymph-predict-read")
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


def infer_map(
    reader: SlideReader,
    model: UNet,
    grid: Grid,
    origins: Sequence[tuple[int, int]],
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 8,
    tta: bool = False,
    progress: bool = True,
    read_threads: int = 1,
    timings: dict[str, float] | None = None,
    channels_last: bool = False,
    precision: str = "auto",
    rects: Sequence[Rect] | None = None,
) -> np.ndarray:
    """The uint8 (map_height, map_width) probability map of ``reader`` from the windows at
    ``origins`` (row-major, as ``tissue_windows`` returns them): Hann-blended (grid mode
    "blend") or centre-cropped ("crop"; ``rects``: the trimmed window of each tile)."""
    from lymph.data.progress import progress_bar
    from lymph.model.infer import predict_probs

    timings = timings if timings is not None else {}
    timings.update({k: timings.get(k, 0.0) for k in ("read", "read_wait", "model", "blend")})
    prob_map = np.zeros((grid.map_height, grid.map_width), np.uint8)
    sink = CropSink(grid, prob_map) if grid.mode == "crop" else BlendSink(grid, prob_map)
    bar = progress_bar(total=len(origins), desc=f"{Path(reader.path).name}", unit="win",
                       enabled=progress, leave=False)
    done, blend = 0, SinkThread(sink)  # blending on its own thread
    try:
        stream = _prefetch(_batches(reader, grid, origins, batch_size, read_threads=read_threads,
                                    rects=rects))
        while True:
            t0 = time.perf_counter()
            try:
                idx, images, read_s = next(stream)
            except StopIteration:
                break
            timings["read_wait"] += time.perf_counter() - t0
            timings["read"] += read_s
            t0 = time.perf_counter()
            probs = predict_probs(model, images, device=device, batch_size=batch_size, tta=tta,
                                  channels_last=channels_last, precision=precision)
            timings["model"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            done += len(idx)
            bar.update(len(idx))
            final_row = origins[done][1] // grid.cell if done < len(origins) else None
            blend.put([origins[i] for i in idx], probs, final_row,  # map rows above are final
                      None if rects is None else [rects[i][:2] for i in idx])
            timings["blend"] += time.perf_counter() - t0
        _close(blend, grid.map_height, timings)
    finally:
        blend.abort()
        bar.close()
    # "blend": what the loop waited for blending; "blend_busy": the blend thread's own time
    timings["blend_busy"] = timings.get("blend_busy", 0.0) + blend.busy
    return prob_map



def _close(blend: SinkThread, map_height: int, timings: dict[str, float]) -> None:
    """The rest of the map is final: the last rows emitted, the blend thread joined."""
    t0 = time.perf_counter()
    blend.put([], np.zeros((0,)), map_height)
    blend.close()
    timings["blend"] += time.perf_counter() - t0
