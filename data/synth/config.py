"""What a synthetic world is made from: `SynthConfig` (every setting of one run, validated) and
the constants of the default world's morphology and files."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lymph.data.errors import ConfigError
from lymph.data.io import as_paths
from lymph.data.synth.world.params import CENTRE_CHOICES, PRESETS

TILE = 256
GRAIN = 1024  # period of the fine grain texture (px)
FORMATS = ("tiff", "svs")
MIN_SIZE = TILE
MAX_SIZE = 1_000_000
SYNTH_VERSION = 1
MASK_MIN_SIZE = 2  # mask pyramids halve down to 1 px: level 5 (1/32) exists at any size

# Morphology, in microns (converted with mpp).
LYMPHOCYTE_RADIUS_UM = (3.0, 3.8)  # ~7 um diameter
LYMPHOCYTE_SPACING_UM = 8.6
CARCINOMA_RADIUS_UM = (5.0, 8.0)  # 10-16 um diameter
CARCINOMA_SPACING_UM = 13.0
LYMPH_GAIN = 0.85  # hematoxylin density of a lymphocyte nucleus (x sprite density)
CARC_GAIN = 1.1
FIBRE_PERIOD_UM = 7.0
EDGE_BLUR_UM = 12.0
CAPSULE_UM = 20.0

# CAMELYON16 lesion classes by largest diameter.
MACRO_UM = 2000.0
ITC_UM = 200.0

HEMATOXYLIN_OD = np.array([0.65, 0.70, 0.29])
EOSIN_OD = np.array([0.10, 0.90, 0.42])  # pink: absorbs green, some blue

# Fields that do not change a slide's bytes: synth.json does not record them.
UNRECORDED = ("out", "progress", "force")


@dataclass(frozen=True, kw_only=True)
class SynthConfig:
    """Settings of one `run` (all but `out`, `progress` and `force` recorded in ``synth.json``).
    force: overwrite files in `out` that lymph did not write (``lymph.data.io.OutputManifest``;
    without it such a file, e.g. a real CAMELYON16 ``tumor_001.tif``, stops the run before any
    work)."""

    out: Path
    n_tumor: int = 2
    n_normal: int = 1
    size: tuple[int, int] = (20000, 15000)
    seed: int = 0
    fmt: str = "tiff"
    mpp: float = 0.243
    quality: int = 85
    workers: int = 1
    prefix: str = ""  # slide ids `{prefix}tumor_001`: worlds that must not share ids
    world: str = "default"  # or a preset of data/synth/world/params.py ("camelyon")
    centre: str = "auto"  # the preset's scanning centre (A, B, C; auto: drawn from the seed;
    # mixed: drawn per slide)
    progress: bool = False
    force: bool = False

    def __post_init__(self) -> None:
        as_paths(self, ("out",))
        self._check_world()
        if not re.fullmatch(r"[A-Za-z0-9_-]*", self.prefix):
            raise ConfigError(
                f"prefix {self.prefix!r} may hold only letters, digits, '_' and '-' (it starts "
                "every slide id and file name); use e.g. --prefix pre_"
            )
        if self.n_tumor < 0 or self.n_normal < 0:
            raise ConfigError(
                f"slide counts must be >= 0, got n_tumor={self.n_tumor}, "
                f"n_normal={self.n_normal}"
            )
        if self.n_tumor + self.n_normal == 0:
            raise ConfigError("nothing to make: n_tumor and n_normal are both 0; ask for >= 1")
        self._check_size()
        if self.fmt not in FORMATS:
            raise ConfigError(f"format must be one of {FORMATS}, got {self.fmt!r}")
        if not 0.05 <= self.mpp <= 20:
            raise ConfigError(
                f"mpp {self.mpp} is implausible; use microns per pixel, e.g. 0.243 (40x)"
            )
        if not 1 <= self.quality <= 100:
            raise ConfigError(f"JPEG quality must be in 1..100, got {self.quality}")
        if self.workers < 1:
            raise ConfigError(f"workers must be >= 1, got {self.workers}")

    def _check_world(self) -> None:
        if self.world != "default" and self.world not in PRESETS:
            raise ConfigError(
                f"world must be one of default, {', '.join(PRESETS)}; got {self.world!r}"
            )
        if self.centre not in CENTRE_CHOICES:
            raise ConfigError(
                f"centre must be one of {', '.join(CENTRE_CHOICES)}, got {self.centre!r}"
            )

    def _check_size(self) -> None:
        if len(self.size) != 2:
            raise ConfigError(f"size must be (width, height), got {self.size!r}")
        w, h = (int(v) for v in self.size)
        object.__setattr__(self, "size", (w, h))
        if w < MIN_SIZE or h < MIN_SIZE:
            raise ConfigError(
                f"slide size {w}x{h} is smaller than one {TILE} px tile; use at least "
                f"{MIN_SIZE}x{MIN_SIZE} (e.g. 4096x3072)"
            )
        if w > MAX_SIZE or h > MAX_SIZE:
            raise ConfigError(f"slide size {w}x{h} exceeds {MAX_SIZE} px on a side")
