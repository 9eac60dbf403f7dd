"""One slide's plan before any inference: the checkpoint's model and the geometry it was
trained at (``LoadedModel``), the tiling it gets and the tissue windows to infer (``TilePlan``),
and the threads and batch it runs with.

``overlap="auto"`` (the default) is ``"margin"`` for a model whose output is window-independent
(``model.config.norm`` "batch", the default since issue 12, in eval mode, or "none") and
``"half"`` for a GroupNorm model, whose maps margin tiles would move (each window is normalised
by its own statistics: 0.032 mean abs difference measured). torch runs with every core this
process may use on CPU (``threads``; divided among ``workers``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lymph.data.errors import CheckpointError, ConfigError
from lymph.model.predict.config import TISSUE_MARGIN_THUMB, WINDOW_FREE_NORMS, PredictConfig
from lymph.model.predict.grid import (
    Grid,
    Rect,
    fitted_tile,
    plan_grid,
    tissue_windows,
    trim_tiles,
)
from lymph.model.predict.outputs import slide_name

if TYPE_CHECKING:
    import torch

    from lymph.data.slides import SlideReader
    from lymph.model.checkpoint import RunRecord
    from lymph.model.unet import UNet


@dataclass(frozen=True)
class LoadedModel:
    """The checkpoint's model on its device, with its run record, its step and the geometry it
    was trained at."""

    model: UNet
    record: RunRecord
    step: int
    device: torch.device
    level: int
    patch_size: int


@dataclass(frozen=True)
class TilePlan:
    """Where one slide's windows go: the pure plan ``infer_map`` executes."""

    name: str
    grid: Grid
    thumb: np.ndarray
    thumb_downsample: float
    tissue: np.ndarray
    origins: list[tuple[int, int]]
    n_tissue_windows: int
    mpp: float | None
    rects: list[Rect] | None = None  # trimmed windows (``trim_tiles``), one per origin

    @property
    def inferred_mpx(self) -> float:
        """Level-0 Mpx the model is given (every window's pixels, trimmed or full)."""
        ds2 = self.grid.level_downsample**2
        if self.rects is not None:
            return sum(w * h for _x, _y, w, h in self.rects) * ds2 / 1e6
        return len(self.origins) * self.grid.window**2 * ds2 / 1e6


def load_for_predict(config: PredictConfig) -> LoadedModel:
    """The checkpoint's model on the configured device (CheckpointError for a bad one)."""
    from lymph.model.checkpoint import load_model
    from lymph.model.infer import resolve_device

    dev = resolve_device(config.device)
    model, ckpt = load_model(config.checkpoint, device=dev)
    lvl, patch = checkpoint_geometry(ckpt.record, config.checkpoint, config.level)
    return LoadedModel(model=model, record=ckpt.record, step=ckpt.step, device=dev, level=lvl,
                       patch_size=patch)


def checkpoint_geometry(record: RunRecord, path: Path, level: int | None) -> tuple[int, int]:
    """The level and patch size the checkpoint was trained at (``level`` overrides the level);
    CheckpointError for a checkpoint that is not a fine-tuned one (``require_finetuned``) or one
    that records neither."""
    from lymph.model.checkpoint import require_finetuned

    require_finetuned(record, path=path)
    store = record.store
    lvl = level if level is not None else None if store is None else store.level
    patch = None if store is None else store.patch_size
    if lvl is None:
        raise CheckpointError(
            f"checkpoint {path} records no store level (config.store.level); pass --level"
        )
    if patch is None:
        raise CheckpointError(
            f"checkpoint {path} records no patch size (config.store.patch_size); pass --window"
        )
    return int(lvl), int(patch)


def check_memory(record: RunRecord, config: PredictConfig, patch_size: int) -> None:
    """One batch of windows must fit in memory (`bounds.check_predict_memory`), checked before
    any slide is read."""
    from lymph.model.bounds import check_predict_memory

    check_predict_memory(window=config.window or patch_size, batch_size=config.batch_size,
                         base_width=record.model.base_width, depth=record.model.depth,
                         device=str(config.device))


def window_independent(model: torch.nn.Module) -> bool:
    """Whether the model's output at a pixel is independent of the window it is computed in:
    eval-mode BatchNorm (the default since issue 12) or no norm (``model.config.norm``);
    GroupNorm (the assumption when a model does not say) normalises each window by its own
    statistics."""
    from lymph.model.unet import unwrap

    norm = getattr(getattr(unwrap(model), "config", None), "norm", "group")
    return norm in WINDOW_FREE_NORMS


def resolve_overlap(config: PredictConfig, model: torch.nn.Module) -> str:
    """The tiling of ``overlap="auto"``: margin tiles for a window-independent model (or when
    --margin asks for them), else the half-window blend, which keeps a GroupNorm model's maps
    what they were (margin tiles moved them by 0.032 mean abs; issue 12)."""
    if config.overlap != "auto":
        return config.overlap
    if window_independent(model) or config.margin is not None:
        return "margin"
    return "half"


def plan_slide(reader: SlideReader, config: PredictConfig, loaded: LoadedModel) -> TilePlan:
    """Grid, thumbnail, tissue mask and the tissue windows to infer (``max_windows`` of them
    from the middle when set). Crop tiles keep the training window for GroupNorm models and
    grow to ``BIG_TILE`` for window-independent ones. ConfigError when the slide lacks the
    level."""
    from lymph.data.tissue import dilate, tissue_mask

    lvl = loaded.level
    if lvl >= reader.level_count:
        raise ConfigError(
            f"{reader.path}: level {lvl} does not exist (the slide has levels "
            f"0..{reader.level_count - 1}); pass --level with an existing level"
        )
    window = config.window
    overlap = resolve_overlap(config, loaded.model)
    if overlap == "margin" and window is None and window_independent(loaded.model):
        window = fitted_tile(reader.level_dimensions[lvl], loaded.patch_size)
    grid = plan_grid(
        reader.level_dimensions[lvl],
        reader.level_downsamples[lvl],
        level=lvl,
        patch_size=window or loaded.patch_size,
        multiple=loaded.model.multiple,
        window=window,
        stride=config.stride,
        map_downsample=config.map_downsample,
        overlap=overlap,
        margin=config.margin,
    )
    thumb, thumb_ds = reader.thumbnail(config.thumb_size)
    tissue = tissue_mask(thumb)
    # crop tiles write only their centre: select those whose centre meets the cells the final
    # tissue mask (grown by mask_to_tissue's margin) keeps
    select = dilate(tissue, TISSUE_MARGIN_THUMB) if grid.mode == "crop" else tissue
    origins = tissue_windows(grid, select, thumb_ds)
    n_tissue = len(origins)
    cap = config.max_windows
    if cap is not None and cap < len(origins):
        start = max(0, len(origins) // 2 - cap // 2)
        origins = origins[start : start + cap]
    rects = None
    if config.trim and grid.mode == "crop" and window_independent(loaded.model):
        rects = trim_tiles(grid, origins, select, thumb_ds, multiple=loaded.model.multiple)
    return TilePlan(name=slide_name(Path(reader.path)), grid=grid, thumb=thumb,
                    thumb_downsample=thumb_ds, tissue=tissue, origins=origins,
                    n_tissue_windows=n_tissue, mpp=reader.mpp, rects=rects)


def resolve_read_threads(config: PredictConfig, device: torch.device) -> int:
    if config.read_threads is not None:
        return config.read_threads
    return 1 if device.type == "cpu" else min(8, os.cpu_count() or 1)


def resolve_threads(config: PredictConfig, device: torch.device) -> int | None:
    """torch CPU threads for one slide: ``config.threads``, else every core this process may
    use on CPU (one slide at a time has the machine; ``predict_slides`` divides the cores among
    ``--workers``); None (torch's own) on an accelerator."""
    if config.threads is not None:
        return config.threads
    if getattr(device, "type", str(device)) != "cpu":
        return None
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def batch_windows(config: PredictConfig, grid: Grid, loaded: LoadedModel) -> int:
    """``config.batch_size`` windows of the training size; fewer of large tiles (same pixels)."""
    if grid.window <= 2 * loaded.patch_size:
        return config.batch_size
    return max(1, round(config.batch_size * (loaded.patch_size / grid.window) ** 2))

