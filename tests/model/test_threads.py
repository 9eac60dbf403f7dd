"""lymph.model.threads: torch's threads set for a block and restored, also on an error, or set
for the rest of a worker process."""

from __future__ import annotations

import pytest
import torch

from lymph.model.threads import set_torch_threads, torch_threads


def test_threads_set_then_restored() -> None:
    before = torch.get_num_threads()
    want = 2 if before != 2 else 1
    with torch_threads(want):
        assert torch.get_num_threads() == want
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), torch_threads(want):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before


def test_set_torch_threads_stays_set() -> None:
    before = torch.get_num_threads()
    want = 2 if before != 2 else 1
    try:
        set_torch_threads(want)
        assert torch.get_num_threads() == want
    finally:
        torch.set_num_threads(before)
