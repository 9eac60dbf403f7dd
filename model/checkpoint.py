"""Checkpoints: plain dicts of tensors and plain Python values, written atomically and read with
``torch.load(weights_only=True)`` (no pickled objects, so a checkpoint cannot run code).

What a run records (``config``) is a :class:`RunRecord`: stage, architecture, the store it
trained on (path, schema, level, patch size, mpp), training settings, seed, slide roles and
versions. Every reader goes through it: ``load_run_record(path)`` (validated, so a checkpoint
whose ``store.patch_size`` is "abc" is refused naming the file and the key), or
``read_checkpoint(path)`` (the record with the step, weights and optimizer state a run resumes
from), and ``require_finetuned(record, path=)``, the one rule for tools that need a trained
segmentation head (it refuses a pretraining checkpoint and one that records no stage).

Layout::

    {"format": "lymph-checkpoint", "format_version": 1,
     "model": state_dict, "config": {"model": UNetConfig dict, "store": ..., "train": ...,
     "stage": ..., ...}, "step": int, "optimizer": state_dict | None,
     "scheduler": state_dict | None, "extra": dict (data position, metrics...),
     "versions": {"lymph", "torch", "numpy", "python"}}
"""

from __future__ import annotations

import io
import platform
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from lymph import __version__
from lymph.data.errors import CheckpointError, ConfigError, OutputError
from lymph.data.io import atomic_path, remove_stale_temps
from lymph.model.unet import UNet, UNetConfig, unwrap

FORMAT = "lymph-checkpoint"
FORMAT_VERSION = 1
STAGES = ("pretrain", "finetune")


def _bad(path: str | Path, key: str, value: object, expected: str) -> CheckpointError:
    return CheckpointError(
        f"checkpoint {path}: config.{key} is {value!r}, expected {expected}; the record was "
        "edited or written by another program: retrain with `lymph train`, or restore that "
        "key"
    )


def _int(data: Mapping, key: str, where: str, path: str | Path, *, low: int) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise _bad(path, f"{where}.{key}", value, f"an integer >= {low}")
    return int(value)


@dataclass(frozen=True)
class StoreRecord:
    """The identity of the store a run trained on; ``settings`` keeps every store setting."""

    path: str | None = None
    schema_version: int | None = None
    level: int | None = None
    patch_size: int | None = None
    mpp: float | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: object, *, path: str | Path = "checkpoint") -> StoreRecord:
        if not isinstance(data, Mapping):
            raise _bad(path, "store", type(data).__name__, "a dict of store settings")
        where = "store"
        spath = data.get("path")
        if spath is not None and not isinstance(spath, str):
            raise _bad(path, "store.path", spath, "a path string")
        mpp = data.get("mpp")
        if mpp is not None and (
            isinstance(mpp, bool) or not isinstance(mpp, int | float) or not mpp > 0
        ):
            raise _bad(path, "store.mpp", mpp, "a number > 0 (microns per pixel) or null")
        return cls(
            path=spath,
            schema_version=_int(data, "schema_version", where, path, low=1),
            level=_int(data, "level", where, path, low=0),
            patch_size=_int(data, "patch_size", where, path, low=1),
            mpp=None if mpp is None else float(mpp),
            settings=dict(data),
        )

    def to_dict(self) -> dict[str, Any]:
        return dict(self.settings)


@dataclass(frozen=True)
class RunRecord:
    """What a checkpoint records about its run (``ckpt["config"]``), typed and validated.

    ``to_dict`` gives the checkpoint's ``config`` layout (keys with no value are left out), so
    ``RunRecord.from_dict(d).to_dict() == d`` for any valid record; unknown keys are kept in
    ``other``.
    """

    model: UNetConfig
    stage: str | None = None
    store: StoreRecord | None = None
    train: Mapping[str, Any] | None = None  # TrainConfig.to_dict(): every training setting
    stream: Mapping[str, Any] | None = None
    train_slides: tuple[str, ...] | None = None
    val_slides: tuple[str, ...] | None = None
    labeled: tuple[tuple[str, int], ...] | None = None
    init: Mapping[str, Any] | None = None
    versions: Mapping[str, str] | None = None
    other: Mapping[str, Any] = field(default_factory=dict)

    @property
    def seed(self) -> int | None:
        return None if self.train is None else self.train.get("seed")

    @property
    def settings(self) -> Mapping[str, Any]:
        """The training settings (empty for a checkpoint not written by ``lymph train``)."""
        return self.train or {}

    @classmethod
    def from_dict(cls, data: object, *, path: str | Path = "checkpoint") -> RunRecord:
        """CheckpointError naming the file, the key and the fix for any malformed part."""
        if not isinstance(data, Mapping):
            raise _bad(path, "", type(data).__name__, "a dict")
        if "model" not in data:
            raise CheckpointError(f"checkpoint {path} has no config['model'] (UNet settings)")
        try:
            model = UNetConfig.from_dict(data["model"])
        except (ConfigError, TypeError) as exc:
            raise CheckpointError(f"{path}: bad UNet settings in the checkpoint: {exc}") from exc
        stage = data.get("stage")
        if stage is not None and not isinstance(stage, str):
            raise _bad(path, "stage", stage, f"one of {STAGES}")
        for key in ("train", "stream", "init", "versions"):
            if data.get(key) is not None and not isinstance(data[key], Mapping):
                raise _bad(path, key, data[key], "a dict")
        train = data.get("train")
        if train is not None:
            _int(train, "seed", "train", path, low=0)
        splits = data.get("splits")
        roles: dict[str, tuple[str, ...] | None] = {"train": None, "val": None}
        if splits is not None:
            if not isinstance(splits, Mapping):
                raise _bad(path, "splits", splits, "a dict with 'train' and 'val' slide lists")
            for role in roles:
                ids = splits.get(role)
                if ids is not None:
                    if not isinstance(ids, list | tuple) or not all(
                        isinstance(s, str) for s in ids
                    ):
                        raise _bad(path, f"splits.{role}", ids, "a list of slide ids")
                    roles[role] = tuple(ids)
        return cls(
            model=model,
            stage=stage,
            store=None if data.get("store") is None else StoreRecord.from_dict(
                data["store"], path=path
            ),
            train=None if train is None else dict(train),
            stream=None if data.get("stream") is None else dict(data["stream"]),
            train_slides=roles["train"],
            val_slides=roles["val"],
            labeled=_labeled(data.get("labeled"), path),
            init=None if data.get("init") is None else dict(data["init"]),
            versions=None if data.get("versions") is None else dict(data["versions"]),
            other={k: v for k, v in data.items() if k not in _RECORD_KEYS},
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.other)
        out["model"] = self.model.to_dict()
        parts: dict[str, Any] = {
            "stage": self.stage,
            "store": None if self.store is None else self.store.to_dict(),
            "train": None if self.train is None else dict(self.train),
            "stream": None if self.stream is None else dict(self.stream),
            "labeled": None if self.labeled is None else [[s, i] for s, i in self.labeled],
            "init": None if self.init is None else dict(self.init),
            "versions": None if self.versions is None else dict(self.versions),
        }
        if self.train_slides is not None or self.val_slides is not None:
            parts["splits"] = {
                "train": list(self.train_slides or ()),
                "val": list(self.val_slides or ()),
            }
        out.update({k: v for k, v in parts.items() if v is not None})
        return out


_RECORD_KEYS = frozenset(
    {"model", "stage", "store", "train", "stream", "splits", "labeled", "init", "versions"}
)


def _labeled(value: object, path: str | Path) -> tuple[tuple[str, int], ...] | None:
    if value is None:
        return None
    pairs = value if isinstance(value, list | tuple) else ()
    ok = isinstance(value, list | tuple) and all(
        isinstance(p, list | tuple)
        and len(p) == 2
        and isinstance(p[0], str)
        and isinstance(p[1], int)
        and not isinstance(p[1], bool)
        for p in pairs
    )
    if not ok:
        shown = value if not isinstance(value, list | tuple) else list(value)[:3]
        raise _bad(path, "labeled", shown, "a list of [slide_id, patch index] pairs")
    return tuple((str(s), int(i)) for s, i in pairs)


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint as read: its run's validated ``record`` and the state a run restores.

    ``weights``, ``optimizer`` and ``scheduler`` are what the file holds, unchecked (loading
    them into a model refuses a mismatch: ``lymph.model.weights``).
    """

    path: Path
    record: RunRecord
    step: int
    weights: object
    optimizer: object
    scheduler: object
    extra: Mapping[str, Any]


def read_checkpoint(path: str | Path) -> Checkpoint:
    """The checkpoint at ``path`` with its RunRecord (CheckpointError when it is not valid)."""
    ckpt = load_checkpoint(path)
    step = ckpt["step"]
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise CheckpointError(
            f"checkpoint {path}: step is {step!r}, expected an integer >= 0; the file was "
            "edited or written by another program"
        )
    return Checkpoint(
        path=Path(path),
        record=RunRecord.from_dict(ckpt["config"], path=path),
        step=step,
        weights=ckpt["model"],
        optimizer=ckpt.get("optimizer"),
        scheduler=ckpt.get("scheduler"),
        extra=ckpt.get("extra") or {},
    )


def load_run_record(path: str | Path) -> RunRecord:
    """The validated RunRecord of the checkpoint at ``path`` (CheckpointError otherwise)."""
    return read_checkpoint(path).record


def require_finetuned(record: RunRecord, *, path: str | Path) -> RunRecord:
    """``record`` when it is a fine-tuned run (a trained segmentation head); CheckpointError for
    a pretraining (reconstruction-only) checkpoint or one that records no stage."""
    if record.stage != "finetune":
        what = {"pretrain": "is a pretraining checkpoint", None: "records no stage"}.get(
            record.stage, f"is a {record.stage!r} checkpoint"
        )
        raise CheckpointError(
            f"checkpoint {path} {what}, not a fine-tuned one: its segmentation head is "
            "untrained; pass the last.pt or best.pt of a `lymph train --stage finetune` run"
        )
    return record


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
    config: Mapping[str, Any],
    step: int = 0,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: LRScheduler | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write a checkpoint atomically (``lymph.data.io.atomic_path``): a failed write (read-only
    folder, full disk) raises OutputError and leaves the previous file as it was.

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
    try:
        with atomic_path(path) as tmp:  # OutputError (read-only, disk full); the old file stays
            torch.save(payload, tmp)
    except RuntimeError as exc:  # torch's zip writer: "[enforce fail at ...] unexpected pos"
        raise OutputError(
            f"cannot write {path}: torch.save failed ({str(exc).splitlines()[0][:120]}): "
            "the disk is probably full; free space or choose another --out; the previous "
            f"{Path(path).name} is unchanged"
        ) from None
    # A process killed mid-write (kill -9) leaves its temporary file behind: the next successful
    # save of the same checkpoint removes such leftovers.
    remove_stale_temps(path)


def _crc_problem(data: bytes) -> str | None:
    """The first member of the checkpoint's zip archive whose bytes fail their CRC-32, or None.
    torch.load does not check the CRCs torch.save writes, so a flipped byte in a weight would
    load as a silently different model. None too for a file that is not a zip archive (torch.load
    names that) and for one written with torch's CRCs turned off (all zero)."""
    import zipfile

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            if not any(info.CRC for info in archive.infolist() if info.file_size):
                return None
            return archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return None


def load_checkpoint(
    path: str | Path, *, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """The checkpoint file as its raw dict, read with weights_only=True; CheckpointError when
    missing, corrupt or not a lymph checkpoint. The low-level reader under ``read_checkpoint``:
    every other module reads a checkpoint through ``read_checkpoint`` / ``load_run_record``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} not found: pass the last.pt or best.pt of a `lymph train` run"
        )
    try:  # one read: torch.load and the CRC check see the same bytes
        data = path.read_bytes()
        ckpt = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as exc:  # zipfile, pickle and EOF errors all mean "corrupt"
        # torch's weights-only refusal is a page of advice about torch.load, not the cause
        why = str(exc).split("\n", 1)[0]
        if why.startswith("Weights only load failed"):
            why = "not a torch zip archive of plain tensors"
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(exc).__name__}: {why[:160]}); "
            "the file is truncated, corrupt or not a torch checkpoint: use another one "
            "(a run's last.pt is rewritten atomically, so it is intact after a crash)"
        ) from exc
    damaged = _crc_problem(data)
    if damaged is not None:
        raise CheckpointError(
            f"checkpoint {path} is damaged: its part {damaged!r} fails its CRC-32 check (a byte "
            "changed on disk or in a copy); copy it again from its source, or use another "
            "checkpoint (a run's best.pt / last.pt)"
        )
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
    RunRecord.from_dict(ckpt["config"], path=path)  # CheckpointError naming a malformed key
    return ckpt


def check_architecture(
    found: UNetConfig | Mapping[str, Any], expected: UNetConfig | Mapping[str, Any], *,
    path: str | Path,
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
) -> tuple[UNet, Checkpoint]:
    """The UNet of a checkpoint, in eval mode on ``device``, and the checkpoint as read
    (``read_checkpoint``: its RunRecord and step).

    ``expect``: refuse (CheckpointError, naming the differing keys) a checkpoint of another
    architecture.
    """
    ckpt = read_checkpoint(path)
    cfg = ckpt.record.model
    if expect is not None:
        check_architecture(cfg, expect, path=path)
    model = UNet(cfg)
    try:
        model.load_state_dict(ckpt.weights, strict=True)  # type: ignore[arg-type]
    except RuntimeError as exc:
        raise CheckpointError(
            f"checkpoint {path}: weights do not fit its recorded architecture {cfg.to_dict()} "
            f"({str(exc)[:300]}); the file was edited or written by another program"
        ) from exc
    model.to(device)
    model.eval()
    return model, ckpt
