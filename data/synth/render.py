"""Tile painting of the default world: each level-0 tile (TILE x TILE) from the plan's fields,
textures and nuclei, by Beer-Lambert. A tile depends only on the plan and its own (tx, ty), so
the same seed gives the same bytes in any tile order. The nucleus helpers (jittered sites,
stamping sprites across tile borders) serve the camelyon world too (world/render.py)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from lymph.data.synth import texture as tx_
from lymph.data.synth.config import (
    CARC_GAIN,
    CARCINOMA_SPACING_UM,
    GRAIN,
    LYMPH_GAIN,
    LYMPHOCYTE_SPACING_UM,
    TILE,
)

if TYPE_CHECKING:
    from lymph.data.synth.plan import Nuclei, SlidePlan

Window = tuple[slice, slice]
# nucleus j of a tile's nuclei -> (density sprite, occupancy sprite, hematoxylin gain)
Pick = Callable[["Nuclei", int], tuple[np.ndarray, np.ndarray, np.float32]]


def grain_window(tx: int, ty: int) -> Window:
    """Where tile (tx, ty) lies in the periodic grain textures (continuous across tiles)."""
    gy0, gx0 = (ty * TILE) % GRAIN, (tx * TILE) % GRAIN
    return slice(gy0, gy0 + TILE), slice(gx0, gx0 + TILE)


def coarse_grid(plan: SlidePlan, x0: int, y0: int) -> tuple[np.ndarray, np.ndarray]:
    """Level-0 x, y of the coarse samples (every `coarse_step` px) a tile's fields are
    computed on before `plan.up` upsamples them."""
    cg = np.arange(plan.coarse_n, dtype=np.float64) * plan.coarse_step
    return np.meshgrid(x0 + cg, y0 + cg)


def dust(plan: SlidePlan, tx: int, ty: int) -> np.ndarray | None:
    """Extra optical density of dust specks on this tile (rare), or None."""
    rng = np.random.default_rng([plan.key & 0xFFFFFFFF, plan.key >> 32, tx, ty, 2])
    if rng.random() >= 0.04:
        return None
    od = np.zeros((TILE, TILE), np.float32)
    yy, xx = np.ogrid[0:TILE, 0:TILE]
    for _ in range(int(rng.integers(1, 4))):
        r = rng.uniform(1.5, 7)
        cx, cy = rng.uniform(0, TILE, 2)
        d = np.clip(r - np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2) + 1, 0, 1)
        od += np.float32(rng.uniform(0.2, 0.8)) * d.astype(np.float32)
    return od


def to_rgb(plan: SlidePlan, od: np.ndarray) -> np.ndarray:
    """Beer-Lambert: intensity = white * 10**-od, as uint8."""
    rgb = np.exp(od * np.float32(-math.log(10)))
    rgb *= np.float32(plan.stain.white)
    rgb += np.float32(0.5)
    np.clip(rgb, 0, 255, out=rgb)
    return rgb.astype(np.uint8)


def render_tile(plan: SlidePlan, tx: int, ty: int) -> np.ndarray:
    """RGB uint8 (TILE, TILE, 3) of tile (tx, ty) at level 0."""
    x0, y0 = tx * TILE, ty * TILE
    win = grain_window(tx, ty)
    specks = dust(plan, tx, ty)
    if plan.is_background(tx, ty):
        if specks is None:
            return plan.glass[win].copy()
        return to_rgb(plan, plan.glass_od[win] + specks[..., None] * np.float32(0.33))
    CX, CY = coarse_grid(plan, x0, y0)
    depth_c = plan.tissue_depth(CX, CY)
    alpha_c = np.clip(depth_c / plan.edge_px + 0.5, 0, 1)
    coarse = np.stack(
        [
            # tissue opacity times slow stain variation within the slide, per stain
            alpha_c * plan.stain_field(CX, CY, 0),
            alpha_c * plan.stain_field(CX, CY, 1),
            plan.lymph_density(CX, CY, depth_c),
        ]
    ).astype(np.float32)
    amount_h, amount_e, dens = plan.up(coarse)
    # stroma (fibres) where lymphocytes are sparse, pale interstitium where they are dense
    emap = plan.textures["stroma_e"][win] + dens * plan.textures["lymph_minus_stroma_e"][win]
    hmap = plan.textures["base_h"][win] + np.float32(0.06) * dens
    emap, hmap = _lesion_maps(plan, x0, y0, CX, CY, win, emap, hmap)
    nuc_h, occ = stamp_nuclei(plan, tx, ty, _pick(plan))
    hmap = (hmap * (1 - occ) + nuc_h) * amount_h
    emap = emap * (1 - 0.8 * occ) * amount_e
    od = plan.glass_od[win] + hmap[..., None] * plan.h_vec
    od += emap[..., None] * plan.e_vec
    if specks is not None:
        od += specks[..., None] * np.float32(0.33)
    return to_rgb(plan, od)


def _lesion_maps(plan: SlidePlan, x0: int, y0: int, CX: np.ndarray, CY: np.ndarray,
                 win: Window, emap: np.ndarray, hmap: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eosin and hematoxylin maps with tumor cytoplasm and septa inside lesions."""
    if not plan.lesions or not plan.near_lesion(x0, y0, TILE):
        return emap, hmap
    masks = plan.lesion_masks(x0, y0, TILE, TILE)
    if not masks:
        return emap, hmap
    grain = plan.grain[win]
    stroma_e = plan.textures["stroma_e"][win]
    fine = np.stack(
        [
            tx_.fractal_noise(CX, CY, scale=70 * plan.px, key=plan.key + 23, octaves=2),
            plan.tumor_variation(CX, CY, 0),
            plan.tumor_variation(CX, CY, 1),
        ]
    ).astype(np.float32)
    nest, cyto, desmo = plan.up(fine)
    # septa between nests; broad desmoplastic stroma where `desmo` is high
    width = np.float32(0.03) + np.float32(0.12) * desmo * desmo
    sept = np.clip(1 - np.abs(nest - 0.5) / width, 0, 1)
    for n, tum in masks:
        look = plan.looks[n]
        te = (1 - sept) * (look["cyto_e"] * cyto + 0.03 * grain) + sept * stroma_e
        th = (1 - sept) * (look["cyto_h"] * cyto + 0.02 * grain) + sept * 0.05
        emap = np.where(tum, te, emap)
        hmap = np.where(tum, th, hmap)
    return emap, hmap


# --------------------------------------------------------------------------- nuclei
def jittered_sites(rng: np.random.Generator, x0: int, y0: int, spacing_px: float,
                   jitter: float) -> tuple[np.ndarray, np.ndarray]:
    """Candidate nucleus sites of one tile: a grid of about `spacing_px`, each site moved by up
    to `jitter` of a cell (x first, then y, from `rng`)."""
    n = max(1, round(TILE / spacing_px))
    cell = TILE / n
    gy, gx = np.mgrid[0:n, 0:n]
    px = x0 + (gx.ravel() + 0.5 + rng.uniform(-jitter, jitter, n * n)) * cell
    py = y0 + (gy.ravel() + 0.5 + rng.uniform(-jitter, jitter, n * n)) * cell
    return px, py


def tile_nuclei(plan: SlidePlan, tx: int, ty: int) -> Nuclei:
    """Nuclei whose centres fall in tile (tx, ty): x, y, kind (0 lymph, 1 carcinoma),
    sprite index, stain strength, opacity (fades at the tissue edge). Depends only on the
    plan and (tx, ty)."""
    e = np.zeros(0)
    empty = (e, e, e.astype(np.int8), e.astype(np.int64), e, e)
    if plan.is_background(tx, ty):
        return empty
    rng = np.random.default_rng([plan.key & 0xFFFFFFFF, plan.key >> 32, tx, ty, 1])
    x0, y0 = tx * TILE, ty * TILE
    cols: list[list[np.ndarray]] = [[] for _ in range(6)]
    specs = ((0, LYMPHOCYTE_SPACING_UM, 0.4), (1, CARCINOMA_SPACING_UM, 0.3))
    for kind, spacing_um, jitter in specs:
        px, py = jittered_sites(rng, x0, y0, spacing_um * plan.px, jitter)
        u = rng.random(px.size)
        sprite = rng.integers(0, 1 << 30, px.size)
        st = rng.uniform(0.85, 1.15, px.size)
        if kind == 1 and not plan.near_lesion(x0, y0, TILE + 2 * plan.margin):
            continue
        depth = plan.tissue_depth(px, py)
        alive = depth > -0.5 * plan.edge_px
        if not alive.any():
            continue
        lesion = plan.tumor_at(px, py) if plan.lesions else np.full(px.shape, -1)
        keep, sprite, st = _keep_default(plan, kind, px, py, depth, alive, lesion, u, sprite, st)
        fade = np.clip(depth[keep] / plan.edge_px + 0.5, 0, 1)
        for col, v in zip(cols, (px[keep], py[keep], np.full(int(keep.sum()), kind, np.int8),
                                 sprite[keep], st[keep] * fade, fade), strict=True):
            col.append(v)
    if not cols[0]:
        return empty
    return tuple(np.concatenate(c) for c in cols)


def _keep_default(plan: SlidePlan, kind: int, px: np.ndarray, py: np.ndarray,
                  depth: np.ndarray, alive: np.ndarray, lesion: np.ndarray, u: np.ndarray,
                  sprite: np.ndarray, st: np.ndarray) -> tuple[np.ndarray, ...]:
    """Which sites of `kind` hold a nucleus, with their sprite indices and stain strengths."""
    tumor = lesion >= 0
    if kind == 0:
        dens = plan.lymph_density(px, py, depth)
        keep = alive & ~tumor & (u < dens * plan.stain.density)
        return keep, sprite % len(plan.lymph_sprites), st
    nest = tx_.fractal_noise(px, py, scale=70 * plan.px, key=plan.key + 23, octaves=2)
    desmo = plan.tumor_variation(px, py, 1)
    septum = np.abs(nest - 0.5) < 0.03 + 0.12 * desmo * desmo
    packing = np.array([les.packing for les in plan.lesions] + [0.0])[lesion]
    gain = np.array([lk["nuclear_gain"] for lk in plan.looks] + [0.0])[lesion]
    local = 0.5 + 0.7 * plan.tumor_variation(px, py, 2)
    keep = alive & tumor & ~septum & (u < packing * local)
    return keep, sprite % len(plan.carc_sprites), st * gain


def _pick(plan: SlidePlan) -> Pick:
    def pick(nuclei: Nuclei, j: int) -> tuple[np.ndarray, np.ndarray, np.float32]:
        kind, strength = nuclei[2][j], nuclei[4][j]
        lib = plan.lymph_sprites if kind == 0 else plan.carc_sprites
        sd, so = lib[nuclei[3][j]]
        return sd, so, np.float32((LYMPH_GAIN if kind == 0 else CARC_GAIN) * strength)

    return pick


def stamp_nuclei(plan: SlidePlan, tx: int, ty: int, pick: Pick) -> tuple[np.ndarray, np.ndarray]:
    """Hematoxylin density and occupancy of all nuclei overlapping tile (tx, ty): those of
    the tile and its 8 neighbours, each drawn with the sprite and gain `pick` gives it."""
    x0, y0 = tx * TILE, ty * TILE
    nuc_h = np.zeros((TILE, TILE), np.float32)
    occ = np.zeros((TILE, TILE), np.float32)
    m = plan.margin
    for ny in (ty - 1, ty, ty + 1):
        for nx in (tx - 1, tx, tx + 1):
            if nx < 0 or ny < 0 or nx >= plan.n_tx or ny >= plan.n_ty:
                continue
            nuclei = plan.candidates(nx, ny)
            px, py, opacity = nuclei[0], nuclei[1], nuclei[5]
            near = (px > x0 - m) & (px < x0 + TILE + m) & (py > y0 - m) & (py < y0 + TILE + m)
            for j in np.nonzero(near)[0].tolist():
                sd, so, gain = pick(nuclei, j)
                _stamp(nuc_h, occ, sd, so, int(round(px[j])) - x0, int(round(py[j])) - y0,
                       gain, np.float32(opacity[j]))
    return nuc_h, occ


def _stamp(nuc_h: np.ndarray, occ: np.ndarray, sd: np.ndarray, so: np.ndarray, cx: int,
           cy: int, gain: np.float32, opacity: np.float32) -> None:
    """Composite one sprite centred on tile pixel (cx, cy), clipped to the tile: "over" for
    the density (a later nucleus lies on top of an earlier one), max for the occupancy."""
    hs = sd.shape[0] // 2
    ax0, ay0 = cx - hs, cy - hs
    bx0, by0 = max(ax0, 0), max(ay0, 0)
    bx1, by1 = min(ax0 + sd.shape[1], TILE), min(ay0 + sd.shape[0], TILE)
    if bx1 <= bx0 or by1 <= by0:
        return
    sl = (slice(by0, by1), slice(bx0, bx1))
    ss = (slice(by0 - ay0, by1 - ay0), slice(bx0 - ax0, bx1 - ax0))
    o = so[ss] * opacity
    nuc_h[sl] = nuc_h[sl] * (1 - o) + sd[ss] * gain
    np.maximum(occ[sl], o, out=occ[sl])
