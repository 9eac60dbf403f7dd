"""Per-slide appearance, drawn once and lazily from the plan's seed: nucleus sprite libraries,
the periodic grain and stain-density textures every tile is sliced from, bare glass, and each
lesion's colour match (cytoplasm stain and nuclear gain chosen so that the lesion's mean colour
equals that of the lymphoid tissue around it)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from lymph.data.synth import texture as tx_
from lymph.data.synth.config import (
    CARC_GAIN,
    CARCINOMA_SPACING_UM,
    FIBRE_PERIOD_UM,
    GRAIN,
    LYMPH_GAIN,
    LYMPHOCYTE_RADIUS_UM,
    LYMPHOCYTE_SPACING_UM,
    TILE,
)

if TYPE_CHECKING:
    from lymph.data.synth.plan import Lesion, SlidePlan, Sprite

LOOK_SAMPLE = 256  # side of the rendered samples the lesion colours are matched on (px)


def lymphocyte_sprites(plan: SlidePlan) -> list[Sprite]:
    rng = np.random.default_rng([*plan.seed_parts, 101])
    lo, hi = (r * plan.px for r in LYMPHOCYTE_RADIUS_UM)
    return tx_.lymphocyte_sprites(rng, radius_px=(lo, hi), n=24)


def carcinoma_sprites(plan: SlidePlan, radius_um: tuple[float, float], *,
                      chromatin: float = 0.30) -> list[Sprite]:
    """32 carcinoma nuclei of radius `radius_um` (the world's own range or the default's) and
    base chromatin density `chromatin`."""
    rng = np.random.default_rng([*plan.seed_parts, 102])
    lo, hi = (r * plan.px for r in radius_um)
    return tx_.carcinoma_sprites(rng, radius_px=(lo, hi), mpp=plan.mpp, n=32, chromatin=chromatin)


def grain(plan: SlidePlan) -> np.ndarray:
    """Fine, periodic (GRAIN px) noise, padded by one tile so any tile window is a slice."""
    rng = np.random.default_rng([*plan.seed_parts, 103])
    g = ndimage.gaussian_filter(rng.standard_normal((GRAIN, GRAIN)), 1.2, mode="wrap")
    g = (g / g.std()).astype(np.float32)
    return np.pad(g, ((0, TILE), (0, TILE)), mode="wrap")


def textures(plan: SlidePlan) -> dict[str, np.ndarray]:
    """Periodic (GRAIN px) stain-density textures, padded by one tile, sliced per tile:
    stroma eosin with wavy, broken collagen fibres; lymphoid minus stroma eosin; base
    hematoxylin. Precomputing them keeps per-tile work to a few array operations."""
    rng = np.random.default_rng([*plan.seed_parts, 104])
    g = plan.grain[:GRAIN, :GRAIN]
    warp = _smooth_noise(rng, 30 * plan.px / 2.5)
    broken = np.clip(_smooth_noise(rng, 10 * plan.px / 2.5) * 2.2 - 0.6, 0, 1)
    period = FIBRE_PERIOD_UM * plan.px
    # whole numbers of fibre periods across the texture keep it seamless when it repeats
    kx = round(GRAIN * math.cos(plan.fibre_angle) / period) / GRAIN
    ky = round(GRAIN * math.sin(plan.fibre_angle) / period) / GRAIN
    yy, xx = np.mgrid[0:GRAIN, 0:GRAIN]
    fib = 0.5 + 0.5 * np.cos(2 * np.pi * (xx * kx + yy * ky + 6 * warp))
    fib = fib**4 * broken
    stroma_e = 0.16 + 0.30 * fib + 0.03 * g
    lymph_e = 0.12 + 0.05 * fib + 0.03 * g
    base_h = 0.04 + 0.015 * g

    def pad(a: np.ndarray) -> np.ndarray:
        return np.pad(a.astype(np.float32), ((0, TILE), (0, TILE)), mode="wrap")

    return {
        "stroma_e": pad(stroma_e),
        "lymph_minus_stroma_e": pad(lymph_e - stroma_e),
        "base_h": pad(base_h),
    }


def _smooth_noise(rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Periodic smooth noise in [0, 1]: filtered at low resolution, then upsampled."""
    f = max(1, int(sigma // 4))
    while GRAIN % f:
        f -= 1
    low = rng.standard_normal((GRAIN // f, GRAIN // f))
    low = ndimage.gaussian_filter(low, sigma / f, mode="wrap")
    n = ndimage.zoom(low, f, order=1, mode="grid-wrap", grid_mode=True)
    return (n - n.min()) / (n.max() - n.min() + 1e-12)


def glass_od(plan: SlidePlan) -> np.ndarray:
    """Bare glass: faint, slightly uneven optical density (3 channels)."""
    od = plan.stain.bg_od + 0.006 * plan.grain[..., None]
    return (od * np.ones(3)).astype(np.float32)


def lesion_looks(plan: SlidePlan) -> list[dict[str, float]]:
    """Per lesion: cytoplasm eosin (cyto_e) and hematoxylin (cyto_h) and nuclear stain gain,
    chosen so that the lesion's mean R, G, B equal those of lymphoid tissue of density
    `match_density` on this slide (matched in intensity, after Beer-Lambert, on small
    rendered samples). Colour then says little about the label; the nuclei do."""
    rng = np.random.default_rng([*plan.seed_parts, 105])
    n = LOOK_SAMPLE
    sample = rng.choice(n * n, 4096, replace=False)  # pixels the means are taken over

    def flat(a: np.ndarray) -> np.ndarray:
        return a.reshape(-1)[sample]

    return [_match_lesion(plan, les, rng, flat) for les in plan.lesions]


def _mean_rgb(plan: SlidePlan, h: np.ndarray, e: np.ndarray) -> np.ndarray:
    """Mean RGB (0-1) for stain densities h, e (..., P): broadcasts over leading axes."""
    od = h[..., None] * plan.h_vec + e[..., None] * plan.e_vec
    return np.exp(np.float32(-np.log(10)) * od).mean(axis=-2)


def _match_lesion(plan: SlidePlan, les: Lesion, rng: np.random.Generator,
                  flat: Callable[[np.ndarray], np.ndarray]) -> dict[str, float]:
    n = LOOK_SAMPLE
    tex = plan.textures
    g = flat(plan.grain[:n, :n])
    d = les.match_density
    nuc_l, occ_l = (flat(a) for a in tx_.nuclei_field(
        plan.lymph_sprites, spacing_px=LYMPHOCYTE_SPACING_UM * plan.px,
        keep=min(d * plan.stain.density, 1.0), jitter=0.4, rng=rng,
    ))
    target = _mean_rgb(
        plan,
        (flat(tex["base_h"][:n, :n]) + 0.06 * d) * (1 - occ_l) + LYMPH_GAIN * nuc_l,
        (flat(tex["stroma_e"][:n, :n]) + d * flat(tex["lymph_minus_stroma_e"][:n, :n]))
        * (1 - 0.8 * occ_l),
    )
    # non-tumor patches include tissue edges and glass: aim a little lighter than
    # pure lymphoid tissue (by les.lighten of the way to white)
    target = target + les.lighten * (1 - target)
    keep_t = les.packing * 0.85 * 0.92  # mean local packing, minus septa
    nuc_t, occ_t = (flat(a) for a in tx_.nuclei_field(
        plan.carc_sprites, spacing_px=CARCINOMA_SPACING_UM * plan.px, keep=keep_t,
        jitter=0.3, rng=rng,
    ))
    best = _best_cytoplasm(plan, g, nuc_t, occ_t, target, float(rng.uniform(0.75, 1.1)))
    white = plan.stain.white
    return {"cyto_e": best[2], "cyto_h": best[1], "nuclear_gain": best[3],
            "rgb_error": float(np.sqrt(best[0]) * 255),
            **{f"target_{c}": float(v * white) for c, v in zip("rgb", target, strict=True)}}


def _best_cytoplasm(plan: SlidePlan, g: np.ndarray, nuc_t: np.ndarray, occ_t: np.ndarray,
                    target: np.ndarray, drawn: float) -> tuple[float, float, float, float]:
    """(squared error, cyto_h, cyto_e, nuclear gain) closest to `target`: the drawn nuclear
    gain if the colour can be matched with it, else darker (or paler) nuclei: the cytoplasm
    stays pink, the nuclei stay darker than it."""
    cyto_h_grid = np.linspace(0.0, 0.08, 9, dtype=np.float32)[:, None, None]
    cyto_e_grid = np.linspace(0.03, 0.5, 16, dtype=np.float32)[None, :, None]
    best: tuple[float, float, float, float] | None = None
    for gain in (drawn, drawn * 1.2, drawn * 1.45, drawn * 0.85, drawn * 0.7):
        h = (cyto_h_grid + 0.02 * g) * (1 - occ_t) + CARC_GAIN * gain * nuc_t
        e = (cyto_e_grid + 0.03 * g) * (1 - 0.8 * occ_t)
        err = ((_mean_rgb(plan, h + 0 * e, e + 0 * h) - target) ** 2).sum(axis=-1)
        i, j = np.unravel_index(int(np.argmin(err)), err.shape)
        cand = (float(err[i, j]), float(cyto_h_grid[i, 0, 0]), float(cyto_e_grid[0, j, 0]), gain)
        if best is None or cand[0] < best[0]:
            best = cand
        if np.sqrt(cand[0]) * 255 < 3:
            break
    assert best is not None
    return best
