"""What ``lymph eval patches`` is asked to do: ``EvalConfig`` and its threshold ("auto" or a
number in [0, 1]).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

from lymph.data.errors import ConfigError
from lymph.model.precision import check_precision

AUTO = "auto"
RECALL_TARGET = 0.9


def parse_threshold(value: str | float) -> float | str:
    """ "auto" or a number in [0, 1] (ConfigError otherwise)."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == AUTO:
            return AUTO
        try:
            number = float(text)
        except ValueError:
            raise ConfigError(
                f"threshold {value!r} is neither a number in [0, 1] nor 'auto'; "
                "pass e.g. --threshold 0.5 or --threshold auto"
            ) from None
    else:
        number = float(value)
    if not (math.isfinite(number) and 0.0 <= number <= 1.0):
        raise ConfigError(f"threshold {value!r} is outside [0, 1]; pass e.g. --threshold 0.5")
    return number


@dataclass(frozen=True)
class EvalConfig:
    """Settings of one patch-mode evaluation (all recorded in the output)."""

    store: Path
    checkpoint: Path
    threshold: float | str = 0.5
    out: Path | None = None
    slides: tuple[str, ...] | None = None
    val_slides: tuple[str, ...] | None = None
    val_fraction: float = 0.2
    batch_size: int = 16
    device: str = "cpu"
    tta: bool = False
    figures: bool = False
    n_figure_patches: int = 8
    bins: int = 1001
    seed: int = 0
    max_patches_per_slide: int | None = None  # None: every patch; else a seeded sample
    progress: bool = True
    precision: str = "auto"  # lymph.model.precision: bf16 autocast on CUDA and AMX CPUs

    def __post_init__(self) -> None:
        check_precision(self.precision)
        object.__setattr__(self, "store", Path(self.store))
        object.__setattr__(self, "checkpoint", Path(self.checkpoint))
        if self.out is not None:
            object.__setattr__(self, "out", Path(self.out))
        object.__setattr__(self, "threshold", parse_threshold(self.threshold))
        for name in ("slides", "val_slides"):
            value = getattr(self, name)
            if value is not None:
                if isinstance(value, str):
                    raise ConfigError(f"{name} must be a sequence of slide ids, not a string")
                object.__setattr__(self, name, tuple(str(v) for v in value))
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be within (0, 1), got {self.val_fraction}")
        if self.n_figure_patches < 1:
            raise ConfigError(f"n_figure_patches must be >= 1, got {self.n_figure_patches}")
        if self.max_patches_per_slide is not None and self.max_patches_per_slide < 1:
            raise ConfigError(
                f"max_patches_per_slide must be >= 1 (or None for all), got "
                f"{self.max_patches_per_slide}"
            )
        if self.bins < 11:
            raise ConfigError(f"bins must be >= 11, got {self.bins}")
        if self.figures and self.out is None:
            raise ConfigError("figures need an output folder: pass --out DIR with --figures")
        if self.val_slides is not None and self.threshold != AUTO:
            raise ConfigError("val_slides only matter with threshold 'auto'")

    def to_dict(self) -> dict[str, object]:
        d: dict[str, object] = asdict(self)
        for key in ("store", "checkpoint", "out"):
            d[key] = None if d[key] is None else str(d[key])
        for key in ("slides", "val_slides"):
            ids: tuple[str, ...] | None = getattr(self, key)
            d[key] = None if ids is None else list(ids)
        return d

