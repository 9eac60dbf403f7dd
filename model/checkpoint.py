"""Checkpoints: plain dicts of tensors and plain Python values, written atomically and read with
``torch.load(weights_only=True)`` (no pickled objects, so a checkpoint cannot run code).

Layout::

    {"format": "lymph-checkpoint", "format_version": 1,
     "model": state_dict, "config": {"model": UNetConfig dict, "store": ..., "train": ...,
     "stage": ..., ...}, "step": int, "optimizer": state_dict | None,
     "scheduler": state_dict | None, "extra": dict (data position, metrics...),
     "versions": {"lymph", "torch", "numpy", "python"}}
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lymph import __version__
from lymph.data.errors import CheckpointError, ConfigError
from lymph.model.unet import UNet, UNetConfig, unwrap

FORMAT = "lymph-checkpoint"
FORMAT_VERSION = 1


def plain(value: Any, *, where: str = "config") -> Any:
    """``value`` as plain types torch's weights_only loader accepts (Path -> str, tuple -> list);
    TypeError naming the key for anything else."""
    if value is None or isinstance(value, torch.Tensor):
        return value
    if isinstance(value, str):
        return str(value)  # str subclasses (torch's TorchVersion) would need pickling
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.integer | np.floating | np.bool_):
        return value.item()
    if isinstance(value, dict):
        return {str(k): plain(v, where=f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v, where=f"{where}[{i}]") for i, v in enumerate(value)]
    raise TypeError(f"{where}: {type(value).__name__} cannot go in a checkpoint; convert it first")


def versions() -> dict[str, str]:
    return {
        "lymph": str(__version__),
        "torch": str(torch.__version__),
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def save_checkpoint(
    path: str | Path,
    *,
    model: nn.Module,
    config: dict,
    step: int = 0,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    extra: dict | None = None,
) -> None:
    """Write a checkpoint atomically: a temporary file in the same folder, fsync, os.replace.

    ``config["model"]`` is filled from the model when missing and must match it when given.
    DDP / compiled wrappers are unwrapped so the keys are always the plain UNet's.
    """
    path = Path(path)
    net = unwrap(model)
    config = dict(config)
    if isinstance(net, UNet):
        own = net.config.to_dict()
        given = config.setdefault("model", own)
        if given != own:
            raise ValueError(f"config['model'] {given} differs from the model's config {own}")
    elif "model" not in config:
        raise ValueError("config['model'] is required when the model is not a lymph UNet")
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "config": plain(config),
        "step": int(step),
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "scheduler": None if scheduler is None else plain(scheduler.state_dict(), where="sched"),
        "extra": plain(extra or {}, where="extra"),
        "versions": versions(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    # A process killed mid-write (kill -9) leaves its temporary file behind: the next successful
    # save of the same checkpoint removes such leftovers.
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        stale.unlink(missing_ok=True)


def load_checkpoint(path: str | Path, *, map_location: Any = "cpu") -> dict:
    """Read a checkpoint with weights_only=True; CheckpointError when missing, corrupt or not a
    lymph checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} not found: pass the last.pt or best.pt of a `lymph train` run"
        )
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # zipfile, pickle and EOF errors all mean "corrupt"
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(exc).__name__}: {str(exc)[:200]}); "
            "the file is truncated, corrupt or not a torch checkpoint: use another one "
            "(a run's last.pt is rewritten atomically, so it is intact after a crash)"
        ) from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is a torch file but not a lymph checkpoint (no format={FORMAT!r} marker); "
            "pass a checkpoint written by `lymph train`"
        )
    if ckpt.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {ckpt.get('format_version')!r}, this lymph "
            f"reads {FORMAT_VERSION}: use the lymph version that wrote it "
            f"({ckpt.get('versions', {}).get('lymph', 'unknown')})"
        )
    for key in ("model", "config", "step"):
        if key not in ckpt:
            raise CheckpointError(f"checkpoint {path} lacks {key!r}: the file is incomplete")
    if not isinstance(ckpt["config"], dict) or "model" not in ckpt["config"]:
        raise CheckpointError(f"checkpoint {path} has no config['model'] (UNet settings)")
    return ckpt


def model_config(ckpt: dict, *, path: str | Path = "checkpoint") -> UNetConfig:
    """The checkpoint's UNetConfig; CheckpointError when it is not a valid one."""
    try:
        return UNetConfig.from_dict(ckpt["config"]["model"])
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f"{path}: bad UNet settings in the checkpoint: {exc}") from exc


def check_architecture(
    found: UNetConfig | dict, expected: UNetConfig | dict, *, path: str | Path
) -> None:
    """CheckpointError naming every architecture setting that differs."""
    a = found.to_dict() if isinstance(found, UNetConfig) else dict(found)
    b = expected.to_dict() if isinstance(expected, UNetConfig) else dict(expected)
    diff = [
        f"{k}: checkpoint {a.get(k)!r} vs expected {b.get(k)!r}"
        for k in sorted(a.keys() | b.keys())
        if a.get(k) != b.get(k)
    ]
    if diff:
        raise CheckpointError(
            f"checkpoint {path} is of another architecture ({'; '.join(diff)}): use a checkpoint "
            "of this architecture, or change the architecture options to match it"
        )


def load_model(
    path: str | Path, *, device: str | torch.device = "cpu", expect: UNetConfig | None = None
) -> tuple[UNet, dict]:
    """The UNet of a checkpoint, in eval mode on ``device``, and the checkpoint dict.

    ``expect``: refuse (CheckpointError, naming the differing keys) a checkpoint of another
    architecture.
    """
    ckpt = load_checkpoint(path)
    cfg = model_config(ckpt, path=path)
    if expect is not None:
        check_architecture(cfg, expect, path=path)
    model = UNet(cfg)
    try:
        model.load_state_dict(ckpt["model"], strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"checkpoint {path}: weights do not fit its recorded architecture {cfg.to_dict()} "
            f"({str(exc)[:300]}); the file was edited or written by another program"
        ) from exc
    model.to(device)
    model.eval()
    return model, ckpt
