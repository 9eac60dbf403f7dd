"""lymph.model.layout: the one rank/world description (and the process group outside torchrun)."""

from __future__ import annotations

import pytest

from lymph.data.errors import ConfigError
from lymph.model.layout import Layout, join_process_group, leave_process_group


def test_layout_shards_and_record() -> None:
    lay = Layout(rank=1, world_size=2, workers=3, local_rank=1)
    assert not lay.main and lay.per_rank == 3 and lay.n_shards == 6
    assert lay.to_dict() == {"world_size": 2, "workers": 3}  # what a checkpoint records
    assert Layout().main and Layout(workers=0).per_rank == 1


@pytest.mark.parametrize(
    "kw,match",
    [({"rank": 2, "world_size": 2}, "not below the world size"), ({"workers": -1}, "workers"),
     ({"world_size": 0}, "rank 0 is not below"), ({"rank": True}, "rank must be an integer")],
)
def test_layout_refuses(kw: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Layout(**kw)


def test_a_single_process_joins_no_group(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    lay = join_process_group("cpu", workers=2)
    assert lay == Layout(workers=2)
    leave_process_group(lay)  # nothing to leave
