"""Torch's intra-op threads: for the length of a block, set then restored (a run's ``threads``
setting must not leak into the process that called it), or for the rest of a worker process."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` intra-op threads (None: leave them as they are); the
    previous number is restored afterwards, also when the block raises."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def set_torch_threads(threads: int) -> None:
    """Give this process ``threads`` intra-op threads for the rest of its life (a spawned
    worker's initializer; a block that must restore them uses ``torch_threads``)."""
    torch.set_num_threads(threads)
