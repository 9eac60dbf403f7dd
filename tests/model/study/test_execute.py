"""One run of the study (model/study/execute.py)."""

from __future__ import annotations

from pathlib import Path

from lymph.model.study import SCRATCH


def test_repeat_r_starts_from_checkpoint_r_mod_n() -> None:
    from types import SimpleNamespace

    from lymph.model.study import init_for

    ctx = SimpleNamespace(inits={"pretrained_a": (Path("s0.pt"), Path("s1.pt"))})
    spec = SimpleNamespace(condition="pretrained_a", repeat=0)
    picks = [init_for(ctx, SimpleNamespace(condition="pretrained_a", repeat=r)) for r in range(4)]
    assert picks == [Path("s0.pt"), Path("s1.pt"), Path("s0.pt"), Path("s1.pt")]
    assert init_for(ctx, SimpleNamespace(condition=SCRATCH, repeat=0)) is None
    assert init_for(ctx, spec) == Path("s0.pt")
