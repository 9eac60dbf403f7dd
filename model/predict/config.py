"""``PredictConfig``: every setting of ``lymph predict``, validated in one place, and the
defaults the other modules of the package share."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lymph.data.errors import ConfigError
from lymph.model.precision import check_precision

MAP_DOWNSAMPLE = 16.0
THRESHOLD = 0.5
SMOOTH_SIGMA_PX = 1.0
THUMB_SIZE = 2048
TISSUE_MARGIN_THUMB = 2  # thumbnail px the tissue mask grows by before it masks the map
SCORES_CSV = "scores.csv"
OVERLAPS = ("auto", "margin", "half")
MARGIN_FRACTION = 0.045  # default margin per side: redundancy (T / (T - 2m))^2 near 1.2
BIG_TILE = 1024  # default tile (level px) for models whose output is window-independent
WINDOW_FREE_NORMS = ("batch", "none")  # eval-mode BatchNorm or no norm: no window statistics


def check_stride(stride: int | None, window: int | None) -> None:
    """ConfigError when windows ``stride`` apart would leave gaps between windows of ``window``
    px (the one place this rule lives; None: not known yet)."""
    if window is not None and stride is not None and stride > window:
        raise ConfigError(
            f"stride {stride} > window {window} would leave gaps between windows; "
            "use a stride of at most the window (half of it blends best)"
        )


@dataclass(frozen=True)
class PredictConfig:
    """Everything ``lymph predict`` needs; every setting is validated here and only here.

    slides: a slide file or folder (only ``run`` needs it); level: slide level (default: the
    checkpoint's ``store.level``); window, stride: in pixels of that level (defaults: the
    training patch size rounded up, half of it); map_downsample: the map's target downsample vs
    level 0; threshold: detection threshold on probabilities; workers/scheduler: slides in
    parallel (dask) as in extraction; threads: torch CPU threads per slide (default: the cores
    divided among the workers); read_threads: threads reading windows ahead of the model, per
    slide (default: 1 on CPU, where the model is the bottleneck and more threads only contend
    with torch's; up to 8 on a GPU); max_windows: infer only that many tissue windows, a
    contiguous run from the middle of the tissue (a quick look, or a benchmark on a budget; the
    rest of the map is 0); progress: progress bars; write_score: merge each slide's row into
    ``out/scores.csv`` as it finishes (``predict_slides`` writes all rows at the end instead);
    force: overwrite files in ``out`` that lymph did not write (see
    ``lymph.data.io.OutputManifest``; without it such a file stops the run before any work);
    redo: predict every slide again (by default a slide whose outputs an earlier run finished
    with the same checkpoint and settings is kept: ``predict/reuse.py``).
    """

    checkpoint: Path
    out: Path
    slides: Path | None = None
    level: int | None = None
    window: int | None = None
    stride: int | None = None
    tta: bool = False
    batch_size: int = 8
    device: str = "auto"
    map_downsample: float = MAP_DOWNSAMPLE
    threshold: float = THRESHOLD
    workers: int = 1
    scheduler: str | None = None
    threads: int | None = None
    read_threads: int | None = None
    thumb_size: int = THUMB_SIZE
    max_windows: int | None = None
    progress: bool = True
    write_score: bool = True
    force: bool = False
    redo: bool = False
    overlap: str = "auto"
    margin: int | None = None
    trim: bool = True  # margin tiles of window-independent models cut to their tissue (grid.py)
    channels_last: bool = True
    precision: str = "auto"  # lymph.model.precision: bf16 autocast on CUDA and AMX CPUs
    mpp: float | None = None  # microns per level-0 pixel of slides that record none

    def __post_init__(self) -> None:
        check_precision(self.precision)
        if self.mpp is not None and (isinstance(self.mpp, bool) or not (
                isinstance(self.mpp, int | float) and self.mpp > 0)):
            raise ConfigError(f"mpp must be a number > 0 (microns per level-0 pixel), got "
                              f"{self.mpp!r}; e.g. --mpp 0.25 for a 40x scan")
        object.__setattr__(self, "checkpoint", Path(self.checkpoint))
        object.__setattr__(self, "out", Path(self.out))
        if self.slides is not None:
            object.__setattr__(self, "slides", Path(self.slides))
        for name in ("level", "window", "stride", "threads", "max_windows", "margin"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ConfigError(f"{name} must be an integer or None, got {value!r}")
        if self.level is not None and self.level < 0:
            raise ConfigError(f"level must be >= 0, got {self.level}")
        if self.window is not None and self.window < 16:
            raise ConfigError(f"window must be >= 16 px, got {self.window}; e.g. --window 320")
        if self.stride is not None and self.stride < 1:
            raise ConfigError(f"stride must be >= 1 px, got {self.stride}; e.g. half the window")
        check_stride(self.stride, self.window)
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        from lymph.model.bounds import check_predict_options

        check_predict_options(self.window, self.batch_size)
        if not 1.0 <= float(self.map_downsample) <= 1024.0:
            raise ConfigError(
                f"map_downsample must be within 1..1024, got {self.map_downsample}; e.g. 16"
            )
        if not 0.0 < float(self.threshold) < 1.0:
            raise ConfigError(f"threshold must be within (0, 1), got {self.threshold}")
        if self.workers < 1:
            raise ConfigError(f"workers must be >= 1, got {self.workers}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be >= 1, got {self.threads}")
        rt = self.read_threads
        if rt is not None and (isinstance(rt, bool) or not isinstance(rt, int) or rt < 1):
            raise ConfigError(f"read_threads must be an integer >= 1, got {self.read_threads!r}")
        if self.thumb_size < 64:
            raise ConfigError(f"thumb_size must be >= 64, got {self.thumb_size}")
        if self.max_windows is not None and self.max_windows < 1:
            raise ConfigError(f"max_windows must be >= 1 or None, got {self.max_windows}")
        self._check_tiling()

    def _check_tiling(self) -> None:
        if self.overlap not in OVERLAPS:
            raise ConfigError(f"overlap must be one of {OVERLAPS}, got {self.overlap!r}")
        if self.overlap in ("auto", "margin") and self.stride is not None:
            raise ConfigError(
                f"stride {self.stride} sets the step of --overlap half: pass --overlap half with "
                f"it (with --overlap {self.overlap} the step is the window minus twice --margin)"
            )
        if self.overlap == "half" and self.margin is not None:
            raise ConfigError("--margin applies to --overlap margin, not half")
        if self.margin is not None and self.margin < 0:
            raise ConfigError(f"margin must be >= 0 px, got {self.margin}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("checkpoint", "out", "slides"):
            d[key] = None if d[key] is None else str(d[key])
        return d

