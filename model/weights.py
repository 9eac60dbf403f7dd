"""Loading a checkpoint's weights into a model: any mismatch (a missing, extra or mis-shaped
key, a non-tensor value) is one CheckpointError line naming the file, never torch's multi-line
RuntimeError."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lymph.data.errors import CheckpointError


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = "; ".join(p.strip() for p in str(exc).splitlines() if p.strip())
    return text if len(text) <= limit else text[:limit] + " ..."


def load_weights(model: torch.nn.Module, state: Any, *, path: str | Path, what: str) -> None:
    """`model.load_state_dict(state, strict=True)`; CheckpointError naming `what` and `path`."""
    if not isinstance(state, dict):
        raise CheckpointError(f"{what} {path}: its 'model' entry is a {type(state).__name__}, "
                              "not a state_dict; use a checkpoint written by `lymph train`")
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, ValueError, AttributeError, KeyError) as exc:
        raise CheckpointError(
            f"{what} {path}: its weights do not fit the architecture it records "
            f"({_one_line(exc)}); the file was edited or written by another program: use a "
            "checkpoint written by `lymph train`"
        ) from None


def load_optimizer(opt: Any, state: Any, *, path: str | Path, what: str) -> None:
    """`opt.load_state_dict(state)` (optimizer or scheduler); CheckpointError on a mismatch."""
    try:
        opt.load_state_dict(state)
    except (RuntimeError, TypeError, ValueError, AttributeError, KeyError, IndexError) as exc:
        raise CheckpointError(
            f"{what} {path}: its {type(opt).__name__} state does not fit this run "
            f"({_one_line(exc)}); start a new run in another --out"
        ) from None
