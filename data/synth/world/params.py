"""The camelyon preset's knobs: its scanning centres (stain vectors, scanner sharpness, JPEG
quality of three labs) and `WorldParams` (mimic densities and sizes, tumor patterns, outline
model, artifact rates), all recorded in synth.json."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from lymph.data.errors import ConfigError
from lymph.data.synth.world.outlines import OutlineModel


@dataclass(frozen=True)
class Centre:
    """One scanning lab: base stain vectors (optical density per R, G, B), ranges of stain
    strength and white level, scanner softness (Gaussian sigma, um) and JPEG quality."""

    name: str
    h_od: tuple[float, float, float]
    e_od: tuple[float, float, float]
    h_scale: tuple[float, float]
    e_scale: tuple[float, float]
    white: tuple[float, float]
    sharpness_um: float
    quality: int


CENTRES: dict[str, Centre] = {
    # crisp scanner, classic purple-pink
    "A": Centre("A", (0.65, 0.70, 0.29), (0.10, 0.90, 0.42), (0.8, 1.2), (0.7, 1.2),
                (0.92, 1.0), 0.0, 90),
    # bluer hematoxylin, heavier eosin, soft optics, harder compression
    "B": Centre("B", (0.52, 0.76, 0.39), (0.17, 0.86, 0.48), (0.7, 1.1), (0.9, 1.4),
                (0.86, 0.95), 0.45, 70),
    # redder eosin, pale hematoxylin, middling optics
    "C": Centre("C", (0.72, 0.64, 0.26), (0.05, 0.95, 0.31), (0.6, 0.95), (0.6, 1.0),
                (0.90, 0.98), 0.25, 80),
}
CENTRE_CHOICES = ("auto", "mixed", *CENTRES)


def resolve_centre(centre: str, seed: int, *, status: str = "tumor", index: int = 0) -> Centre:
    """`centre` by name; for "auto" one drawn from the seed (the whole world from one lab); for
    "mixed" one drawn per slide from (seed, status, index), as CAMELYON16's training and test
    sets each mix two hospitals' slides."""
    if centre not in CENTRE_CHOICES:
        raise ConfigError(f"centre must be one of {', '.join(CENTRE_CHOICES)}, got {centre!r}")
    names = sorted(CENTRES)
    if centre == "auto":
        return CENTRES[names[int(np.random.default_rng([seed, 0xCE]).integers(len(names)))]]
    if centre == "mixed":
        rng = np.random.default_rng([seed, 0xCE, 1 if status == "tumor" else 2, index])
        return CENTRES[names[int(rng.integers(len(names)))]]
    return CENTRES[centre]


@dataclass(frozen=True)
class WorldParams:
    """Every knob of the camelyon world (recorded in synth.json). Densities per mm^2 of slide."""

    # mimics
    gc_per_mm2: float = 8.0
    gc_radius_um: tuple[float, float] = (40.0, 110.0)
    centroblast_radius_um: tuple[float, float] = (4.2, 6.2)
    centroblast_keep: float = 0.55
    tbm_keep: float = 0.45
    sinus_um: float = 30.0
    medullary_width: float = 0.045
    histiocyte_radius_um: tuple[float, float] = (4.0, 6.0)
    histiocyte_keep: float = 0.75
    vessels_per_mm2: float = 14.0
    vessel_radius_um: tuple[float, float] = (6.0, 40.0)
    fat_prob: float = 0.6
    capsule_um: float = 25.0
    # tumor
    carc_radius_um: tuple[float, float] = (4.0, 7.5)
    # calibration round c4: each patient's carcinoma has its own grade. Per slide, the nuclear
    # radii above are scaled by one factor from `grade_scale` and the nuclei's base chromatin
    # density (vesicular 0.24 .. hyperchromatic 0.44; c1-c3: 0.30 everywhere) is drawn from
    # `chromatin`, so a few labeled patches no longer show every tumor's look.
    grade_scale: tuple[float, float] = (0.8, 1.25)
    chromatin: tuple[float, float] = (0.24, 0.44)
    lobular_radius_um: tuple[float, float] = (3.6, 5.0)
    pattern_p: tuple[float, float, float] = (0.5, 0.35, 0.15)  # nest/infiltr./lobular; c1 .4/.4/.2
    border_um: float = 60.0
    lighten: tuple[float, float] = (0.0, 0.10)  # nest and infiltrative; lobular: 0
    # calibration round c2 (bench/results/world_calibration.csv): c1's 2.5 extra ITCs per slide and
    # 40% ITC among the other lesions made 67 of 87 lesions ITC-sized (baseline F1 48% at 200)
    extra_itc: float = 1.0
    # the lesions after the first: Macro, Micro, ITC
    kind_p: tuple[float, float, float] = (0.25, 0.50, 0.25)
    itc_radius_um: tuple[float, float] = (8.0, 45.0)
    outline: OutlineModel = field(default_factory=OutlineModel)
    # artifacts (probability per section, per slide for pens and bubbles)
    fold_p: float = 0.3
    blur_p: float = 0.4
    defocus_um: float = 1.2
    pen_p: float = 0.25
    bubble_p: float = 0.25

    def __post_init__(self) -> None:
        for name in ("fold_p", "blur_p", "pen_p", "bubble_p", "fat_prob", "centroblast_keep",
                     "tbm_keep", "histiocyte_keep"):
            v = getattr(self, name)
            if not 0 <= v <= 1:
                raise ConfigError(f"world parameter {name} must be in [0, 1], got {v}")
        for name in ("pattern_p", "kind_p"):
            probs = getattr(self, name)
            if abs(sum(probs) - 1) > 1e-6 or min(probs) < 0:
                raise ConfigError(f"{name} must be 3 probabilities summing to 1, got {probs}")
        for name in ("gc_radius_um", "centroblast_radius_um", "histiocyte_radius_um",
                     "vessel_radius_um", "carc_radius_um", "lobular_radius_um", "itc_radius_um",
                     "grade_scale", "chromatin"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ConfigError(f"world parameter {name} must be 0 < low <= high, got "
                                  f"({lo}, {hi})")


# Fitted to the 11 tumor outlines in shared/fixtures/annotations/ncrf-camelyon16 by
# outlines.fit_outline_model (bench/bench_world.py --fit reproduces it).
FITTED_OUTLINE = OutlineModel(sigma=0.6, beta=1.1, jitter=0.0)
PRESETS = {"camelyon": WorldParams(outline=FITTED_OUTLINE)}


def world_settings(world: str) -> dict[str, Any]:
    """The preset's parameters as plain data (for synth.json)."""
    return asdict(PRESETS[world])
