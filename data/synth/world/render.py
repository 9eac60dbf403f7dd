"""Tile painting of the camelyon world (world/plan.py): region fields, nuclei of every kind, and
the stain, artifact and centre layers. Each function depends only on the plan and the tile
position, as in synth/render.py, so the same seed gives the same bytes in any tile order."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from lymph.data.synth import texture as tx_
from lymph.data.synth.config import CARC_GAIN, GRAIN, LYMPH_GAIN, TILE
from lymph.data.synth.render import (
    Pick,
    Window,
    coarse_grid,
    dust,
    grain_window,
    jittered_sites,
    stamp_nuclei,
    to_rgb,
)
from lymph.data.synth.world import mimics as mm

if TYPE_CHECKING:
    from lymph.data.synth.plan import Nuclei
    from lymph.data.synth.world.plan import CamelyonPlan
LYMPH, CARC, CENTROBLAST, HISTIOCYTE, ENDOTHELIUM, TBM, FIBROBLAST, LOBULAR = range(8)
KIND_NAMES = ("lymphocyte", "carcinoma", "centroblast", "histiocyte", "endothelium",
              "tingible_body_macrophage", "fibroblast", "lobular_carcinoma")
# (spacing um, jitter) of each kind's jittered grid, and its hematoxylin gain
SPACING = ((8.6, 0.4), (12.0, 0.3), (11.0, 0.35), (14.0, 0.35), (7.0, 0.3), (40.0, 0.3),
           (16.0, 0.4), (10.0, 0.3))
GAIN = (LYMPH_GAIN, CARC_GAIN, 0.95, 0.85, 0.9, 1.0, 0.75, CARC_GAIN)
INK_OD = ((0.85, 0.25, 0.75), (0.75, 0.55, 0.12), (0.7, 0.7, 0.65))  # green, blue, black
TUMOR_KINDS = (CARC, LOBULAR)


# --------------------------------------------------------------------------- sprites, textures
Library = tuple[list[mm.Sprite], list[mm.Sprite]]  # (at the centre's sharpness, out of focus)


@dataclass(frozen=True)
class FocusTextures:
    """The default plan's periodic textures (and grain) at the centre's sharpness and out of
    focus, plus a red-cell texture for lumens."""

    sharp: dict[str, np.ndarray]
    blur: dict[str, np.ndarray]
    rbc: np.ndarray


def sprite_libraries(plan: CamelyonPlan) -> list[Library]:
    """Per kind: (sprites at the centre's sharpness, sprites out of focus)."""
    p, px, mpp = plan.params, plan.px, plan.mpp
    rng = np.random.default_rng([*plan.seed_parts, 0x11B])

    def um(r: tuple[float, float]) -> tuple[float, float]:
        return (r[0] * px, r[1] * px)

    raw = [
        plan.lymph_sprites,
        plan.carc_sprites,
        mm.vesicular_sprites(rng, radius_px=um(p.centroblast_radius_um), mpp=mpp,
                             aspect=(1.0, 1.3), rim=0.5, fill=0.3, nucleoli=(1, 3),
                             peripheral=True),
        mm.vesicular_sprites(rng, radius_px=um(p.histiocyte_radius_um), mpp=mpp,
                             aspect=(1.2, 1.7), rim=0.35, fill=0.26, nucleoli=(0, 1),
                             peripheral=False, kidney=0.25),
        mm.elongated_sprites(rng, length_px=um((9.0, 14.0)), aspect=(2.5, 4.0), darkness=0.75),
        mm.tingible_body_sprites(rng, radius_px=um((9.0, 13.0)), mpp=mpp),
        mm.elongated_sprites(rng, length_px=um((10.0, 16.0)), aspect=(3.0, 5.0), darkness=0.7),
        tx_.carcinoma_sprites(rng, radius_px=um(p.lobular_radius_um), mpp=mpp, n=24),
    ]
    return [(mm.blur_library(s, plan.sharp_px), mm.blur_library(s, plan.defocus_px))
            for s in raw]


def max_half(plan: CamelyonPlan) -> int:
    """Largest sprite half size (px) of any kind: how far a nucleus reaches into a neighbour."""
    return max(max(d.shape[0] // 2 for d, _ in lib) for pair in plan.sprite_libraries
               for lib in pair)


def focus_textures(plan: CamelyonPlan) -> FocusTextures:
    """The plan's textures through the scanner's optics (see FocusTextures)."""
    g = GRAIN
    base = {**plan.textures, "grain": plan.grain}

    def soften(a: np.ndarray, sigma: float) -> np.ndarray:
        if sigma <= 0:
            return a
        core = ndimage.gaussian_filter(a[:g, :g], sigma, mode="wrap")
        return np.pad(core, ((0, TILE), (0, TILE)), mode="wrap").astype(np.float32)

    rng = np.random.default_rng([*plan.seed_parts, 0x12B])
    rbc = mm.rbc_texture(rng, size=g, radius_px=3.6 * plan.px)
    return FocusTextures(
        sharp={k: soften(v, plan.sharp_px) for k, v in base.items()},
        blur={k: soften(v, plan.defocus_px) for k, v in base.items()},
        rbc=np.pad(rbc, ((0, TILE), (0, TILE)), mode="wrap").astype(np.float32),
    )


# --------------------------------------------------------------------------- fields
def _nearby(plan: CamelyonPlan, items: Sequence[mm.Blob], x0: float, y0: float, size: float,
            grow: float = 0.4) -> list[mm.Blob]:
    out = []
    for b in items:
        box = b.box()
        pad = grow * (box[2] - box[0]) / 2 + plan.margin
        if mm.near(box, x0, y0, size, pad):
            out.append(b)
    return out


def regions(plan: CamelyonPlan, x: np.ndarray, y: np.ndarray, depth: np.ndarray,
            box: tuple[float, float, float]) -> dict[str, np.ndarray]:
    """Region fields in [0, 1] at level-0 points (x, y) near the square `box` (x0, y0, size)."""
    p, px = plan.params, plan.px
    zero = np.zeros(np.broadcast(x, y).shape)
    wob = tx_.value_noise(x, y, scale=35 * px, key=plan.key + 401) - 0.5
    gc, mantle = zero.copy(), zero.copy()
    for b in _nearby(plan, plan.gcs, *box):
        r = b.radius(x, y) + 0.12 * wob
        gc = np.maximum(gc, np.clip((1 - r) / 0.12 + 0.5, 0, 1))
        mantle = np.maximum(mantle, np.clip(1 - np.abs(r - 1.15) / 0.2, 0, 1))
    lumen, wall, endo = zero.copy(), zero.copy(), zero.copy()
    angle = zero.copy()
    for b in _nearby(plan, plan.vessels, *box):
        r = b.radius(x, y)
        lum = np.clip((1 - r) / 0.1 + 0.5, 0, 1)
        outer = 1.25 + 4 * px / b.b
        w = np.clip((outer - r) / 0.1 + 0.5, 0, 1) * (1 - lum)
        ring = (r > 0.93) & (r < 1 + 3 * px / b.b)
        angle = np.where(ring, b.angle(x, y), angle)
        lumen, wall = np.maximum(lumen, lum), np.maximum(wall, w)
        endo = np.maximum(endo, ring.astype(float))
    cap_px, sin_px = p.capsule_um * px, p.sinus_um * px
    sub = np.clip(1 - np.abs(depth - cap_px - sin_px / 2) / (sin_px / 2), 0, 1)
    sub *= np.clip((tx_.value_noise(x, y, scale=70 * px, key=plan.key + 402) - 0.25) * 4, 0, 1)
    med = tx_.fractal_noise(x, y, scale=260 * px, key=plan.key + 403, octaves=2)
    med = np.clip(1 - np.abs(med - 0.5) / p.medullary_width, 0, 1) * (depth > 150 * px)
    sinus = np.maximum(sub, med) * (1 - gc) * (1 - mantle) * (1 - lumen) * (1 - wall)
    fat = mm.union(_nearby(plan, plan.fats, *box), x, y, soft=0.08) * (depth > 0)
    capsule = np.clip(1 - depth / cap_px, 0, 1) * (depth > -plan.edge_px)
    return {"gc": gc, "mantle": mantle * (1 - gc), "lumen": lumen, "wall": wall, "endo": endo,
            "angle": angle, "sinus": sinus * (1 - fat), "fat": fat, "capsule": capsule,
            "blur": mm.union(_nearby(plan, plan.blurs, *box), x, y, soft=0.25)}


def lymph_density(plan: CamelyonPlan, x: np.ndarray, y: np.ndarray, depth: np.ndarray,
                  reg: dict[str, np.ndarray]) -> np.ndarray:
    """The default world's lymphoid density, thinned in germinal centres, sinuses, fat and
    vessels, and packed in follicle mantles."""
    d = plan.lymph_density(x, y, depth)
    d = d * (1 - 0.8 * reg["gc"]) * (1 - 0.85 * reg["sinus"]) * (1 - reg["fat"])
    d = d * (1 - reg["lumen"]) * (1 - 0.8 * reg["wall"])
    return np.maximum(d, 0.95 * reg["mantle"] * (1 - reg["capsule"]))


def lesion_depth(plan: CamelyonPlan, lesion: np.ndarray, x: np.ndarray,
                 y: np.ndarray) -> np.ndarray:
    """Radial distance (level-0 px) from each point in a lesion to its outline (inf for -1)."""
    out = np.full(np.shape(x), np.inf)
    for n, lk in enumerate(plan.lesion_looks):
        sel = lesion == n
        if not sel.any():
            continue
        radii = np.asarray(lk.radii)
        phi = np.arctan2(y[sel] - lk.cy, x[sel] - lk.cx) % (2 * np.pi)
        step = 2 * np.pi / len(radii)
        rim = np.interp(phi, np.arange(len(radii) + 1) * step, np.append(radii, radii[0]))
        out[sel] = rim - np.hypot(x[sel] - lk.cx, y[sel] - lk.cy)
    return out


# --------------------------------------------------------------------------- nuclei
def _keep(plan: CamelyonPlan, kind: int, f: dict[str, np.ndarray], u: np.ndarray) -> np.ndarray:
    """Which candidate sites of `kind` hold a nucleus (fields `f` at the sites)."""
    p = plan.params
    tumor, pattern = f["lesion"] >= 0, f["pattern"]
    free = f["alive"] & ~tumor
    if kind in TUMOR_KINDS and not tumor.any():
        return tumor
    if kind == LYMPH:
        rim = np.clip(1 - f["ldepth"] / (p.border_um * plan.px), 0, 1) * 0.85
        mix = np.select([pattern == 3, pattern == 2, pattern == 1], [0.8, 0.55, rim], 0.0)
        allowed = free | (f["alive"] & tumor & (f["u2"] < mix))
        return allowed & (u < f["dens"] * plan.stain.density)
    if kind == CARC:
        rim = np.clip(0.3 + 0.7 * f["ldepth"] / (p.border_um * plan.px), 0.3, 1)
        scale = np.where(pattern == 1, rim, 1.0)
        ok = f["alive"] & tumor & np.isin(pattern, (0, 1, 3)) & ((pattern == 3) | ~f["septum"])
        return ok & (u < f["packing"] * f["local"] * scale)
    if kind == LOBULAR:
        return f["alive"] & tumor & (pattern == 2) & f["strand"] & (u < f["packing"])
    if kind == CENTROBLAST:
        return free & (u < p.centroblast_keep * f["gc"])
    if kind == TBM:
        return free & (u < p.tbm_keep * f["gc"])
    if kind == HISTIOCYTE:
        return free & (u < p.histiocyte_keep * f["sinus"])
    if kind == ENDOTHELIUM:
        return free & (f["endo"] > 0) & (u < 0.9)
    return free & (u < 0.35 * f["capsule"] + 0.25 * f["wall"])  # fibroblasts


def _site_fields(plan: CamelyonPlan, px: np.ndarray, py: np.ndarray,
                 box: tuple[float, float, float]) -> dict[str, np.ndarray]:
    depth = plan.tissue_depth(px, py)
    f = regions(plan, px, py, depth, box)
    f["alive"] = depth > -0.5 * plan.edge_px
    f["depth"] = depth
    f["dens"] = lymph_density(plan, px, py, depth, f)
    lesion = plan.tumor_at(px, py) if plan.lesions else np.full(px.shape, -1)
    f["lesion"] = lesion
    codes = {"nest": 0, "infiltrative": 1, "lobular": 2, "itc": 3}
    f["pattern"] = np.array([codes[lk.pattern] for lk in plan.lesion_looks] + [-1])[lesion]
    f["ldepth"] = lesion_depth(plan, lesion, px, py)
    if (lesion >= 0).any():
        nest = tx_.fractal_noise(px, py, scale=70 * plan.px, key=plan.key + 23, octaves=2)
        desmo = plan.tumor_variation(px, py, 1)
        f["septum"] = np.abs(nest - 0.5) < 0.03 + 0.12 * desmo * desmo
        f["local"] = 0.5 + 0.7 * plan.tumor_variation(px, py, 2)
        f["packing"] = np.array([les.packing for les in plan.lesions] + [0.0])[lesion]
        warp = tx_.value_noise(px, py, scale=60 * plan.px, key=plan.key + 404)
        phase = (px * math.cos(plan.fibre_angle) + py * math.sin(plan.fibre_angle))
        f["strand"] = np.abs(np.sin(np.pi * phase / (28 * plan.px) + 5 * warp)) < 0.22
        f["gain"] = np.array([lk["nuclear_gain"] for lk in plan.looks] + [0.0])[lesion]
    return f


def tile_nuclei(plan: CamelyonPlan, tx: int, ty: int) -> tuple[np.ndarray, ...]:
    """Nuclei whose centres fall in tile (tx, ty): x, y, kind, sprite, strength, opacity, blur."""
    e = np.zeros(0)
    empty = (e, e, e.astype(np.int8), e.astype(np.int64), e, e, e.astype(bool))
    if plan.is_background(tx, ty):
        return empty
    rng = np.random.default_rng([plan.key & 0xFFFFFFFF, plan.key >> 32, tx, ty, 11])
    x0, y0 = tx * TILE, ty * TILE
    box = (float(x0), float(y0), float(TILE))
    cols: list[list[np.ndarray]] = [[] for _ in range(7)]
    for kind, (spacing_um, jitter) in enumerate(SPACING):
        px, py = jittered_sites(rng, x0, y0, spacing_um * plan.px, jitter)
        u, u2 = rng.random(px.size), rng.random(px.size)
        sprite = rng.integers(0, 1 << 30, px.size)
        st = rng.uniform(0.85, 1.15, px.size)
        if kind in TUMOR_KINDS and not plan.near_lesion(x0, y0, TILE + 2 * plan.margin):
            continue
        f = _site_fields(plan, px, py, box)
        f["u2"] = u2
        keep = _keep(plan, kind, f, u)
        if not keep.any():
            continue
        n_lib = len(plan.sprite_libraries[kind][0])
        if kind in (ENDOTHELIUM, FIBROBLAST):
            ang = f["angle"] if kind == ENDOTHELIUM else np.full(px.shape, plan.fibre_angle)
            abin = np.round(ang / (np.pi / mm.N_ANGLES)).astype(np.int64) % mm.N_ANGLES
            per = n_lib // mm.N_ANGLES
            sprite = abin * per + sprite % per
        else:
            sprite = sprite % n_lib
        if kind in TUMOR_KINDS:
            st = st * f["gain"]
        fade = np.clip(f["depth"][keep] / plan.edge_px + 0.5, 0, 1)
        for col, v in zip(cols, (px[keep], py[keep], np.full(int(keep.sum()), kind, np.int8),
                                 sprite[keep], st[keep] * fade, fade, f["blur"][keep] > 0.5),
                          strict=True):
            col.append(v)
    if not cols[0]:
        return empty
    return tuple(np.concatenate(c) for c in cols)


def _pick(plan: CamelyonPlan) -> Pick:
    """Nucleus j's sprite from its kind's library (sharp or out of focus) and its gain."""
    libs = plan.sprite_libraries

    def pick(nuclei: Nuclei, j: int) -> tuple[np.ndarray, np.ndarray, np.float32]:
        kind = nuclei[2][j]
        sd, so = libs[kind][int(nuclei[6][j])][nuclei[3][j]]
        return sd, so, np.float32(GAIN[kind] * nuclei[4][j])

    return pick


def _overlays(plan: CamelyonPlan, od: np.ndarray, CX: np.ndarray, CY: np.ndarray,
              x0: int, y0: int) -> np.ndarray:
    """Pen ink and air-bubble rims on top of everything (glass included)."""
    box = (float(x0), float(y0), float(TILE))
    for stroke, ink in plan.pens:
        if not mm.near(stroke.box(), *box, plan.margin):
            continue
        streak = 0.75 + 0.5 * tx_.value_noise(CX, CY, scale=40 * plan.px, key=plan.key + 405)
        band = plan.up((stroke.band(CX, CY, soft=6 * plan.px) * streak)[None].astype(np.float32))
        od = od + band[0][..., None] * np.asarray(INK_OD[ink], np.float32) * np.float32(0.9)
    for b in _nearby(plan, plan.bubbles, *box, grow=0.0):
        r = plan.up(b.radius(CX, CY)[None].astype(np.float32))[0]
        rim = np.clip(1 - np.abs(r - 0.985) / (2.5 * plan.px / b.a + 0.01), 0, 1)
        inner = (r < 0.97).astype(np.float32)
        od = od * (1 - np.float32(0.12) * inner[..., None]) + np.float32(0.45) * rim[..., None]
    return od


def render_tile(plan: CamelyonPlan, tx: int, ty: int) -> np.ndarray:
    """RGB uint8 (TILE, TILE, 3) of tile (tx, ty) at level 0."""
    x0, y0 = tx * TILE, ty * TILE
    win = grain_window(tx, ty)
    CX, CY = coarse_grid(plan, x0, y0)
    if plan.is_background(tx, ty):
        od = plan.glass_od[win]
    else:
        od = _tissue_od(plan, tx, ty, CX, CY, win)
    od = _overlays(plan, od, CX, CY, x0, y0)
    specks = dust(plan, tx, ty)
    if specks is not None:
        od = od + specks[..., None] * np.float32(0.33)
    return to_rgb(plan, od)


def _blend_textures(plan: CamelyonPlan, blur: np.ndarray,
                    win: Window) -> dict[str, np.ndarray]:
    tex = plan.focus_textures
    sharp = {k: v[win] for k, v in tex.sharp.items()}
    if float(blur.max()) <= 0:
        return sharp
    return {k: v * (1 - blur) + tex.blur[k][win] * blur for k, v in sharp.items()}


def _tissue_od(plan: CamelyonPlan, tx: int, ty: int, CX: np.ndarray, CY: np.ndarray,
               win: Window) -> np.ndarray:
    x0, y0 = tx * TILE, ty * TILE
    depth = plan.tissue_depth(CX, CY)
    reg = regions(plan, CX, CY, depth, (float(x0), float(y0), float(TILE)))
    alpha = np.clip(depth / plan.edge_px + 0.5, 0, 1)
    fold = np.zeros_like(depth)
    for s in plan.folds:
        fold = np.maximum(fold, s.band(CX, CY, soft=4 * plan.px))
    names = ("dens", "gc", "sinus", "lumen", "wall", "fat", "capsule", "blur")
    reg["dens"] = lymph_density(plan, CX, CY, depth, reg)
    amounts = [alpha * plan.stain_field(CX, CY, i) * (1 + 0.9 * fold) for i in (0, 1)]
    up = plan.up(np.stack(amounts + [reg[n] for n in names]).astype(np.float32))
    amount_h, amount_e = up[0], up[1]
    f = dict(zip(names, up[2:], strict=True))
    t = _blend_textures(plan, f["blur"], win)
    emap = t["stroma_e"] + f["dens"] * t["lymph_minus_stroma_e"]
    hmap = t["base_h"] + np.float32(0.06) * f["dens"]
    emap = emap * (1 - 0.35 * f["gc"]) + f["sinus"] * (0.16 + 0.04 * t["grain"])
    emap = emap * (1 - f["capsule"]) + f["capsule"] * (1.25 * t["stroma_e"] + 0.03)
    emap = emap * (1 - f["wall"]) + f["wall"] * (0.42 + 0.04 * t["grain"])
    fill = np.clip(tx_.value_noise(CX, CY, scale=30 * plan.px, key=plan.key + 406) * 1.6 - 0.3,
                   0, 1)
    rbc = plan.focus_textures.rbc[win] * plan.up(fill[None].astype(np.float32))[0]
    emap = emap * (1 - f["lumen"]) + f["lumen"] * (0.02 + 0.85 * rbc)
    hmap = hmap * (1 - f["lumen"])
    if float(f["fat"].max()) > 0:
        mem = mm.adipocyte_membranes(x0, y0, TILE, cell_px=65 * plan.px, key=plan.key + 407,
                                     width_px=1.3 * plan.px)
        emap = emap * (1 - f["fat"]) + f["fat"] * (0.02 + 0.35 * mem)
        hmap = hmap * (1 - f["fat"]) + f["fat"] * 0.03 * mem
    emap, hmap = _lesion_overlay(plan, tx, ty, CX, CY, t, emap, hmap)
    nuc_h, occ = stamp_nuclei(plan, tx, ty, _pick(plan))
    hmap = (hmap * (1 - occ) + nuc_h) * amount_h
    emap = emap * (1 - 0.8 * occ) * amount_e
    od = plan.glass_od[win] + hmap[..., None] * plan.h_vec
    return od + emap[..., None] * plan.e_vec


def _lesion_overlay(plan: CamelyonPlan, tx: int, ty: int, CX: np.ndarray, CY: np.ndarray,
                    t: dict[str, np.ndarray], emap: np.ndarray,
                    hmap: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Tumor cytoplasm and septa inside lesions; weaker where tumor cells are sparse (ITC,
    lobular strands, an infiltrative rim)."""
    x0, y0 = tx * TILE, ty * TILE
    if not plan.lesions or not plan.near_lesion(x0, y0, TILE):
        return emap, hmap
    masks = plan.lesion_masks(x0, y0, TILE, TILE)
    if not masks:
        return emap, hmap
    px = plan.px
    fine = np.stack([
        tx_.fractal_noise(CX, CY, scale=70 * px, key=plan.key + 23, octaves=2),
        plan.tumor_variation(CX, CY, 0), plan.tumor_variation(CX, CY, 1),
    ]).astype(np.float32)
    nest, cyto, desmo = plan.up(fine)
    width = np.float32(0.03) + np.float32(0.12) * desmo * desmo
    sept = np.clip(1 - np.abs(nest - 0.5) / width, 0, 1)
    border = plan.params.border_um * px
    for n, tum in masks:
        look, pattern = plan.looks[n], plan.lesion_looks[n].pattern
        te = (1 - sept) * (look["cyto_e"] * cyto + 0.03 * t["grain"]) + sept * t["stroma_e"]
        th = (1 - sept) * (look["cyto_h"] * cyto + 0.02 * t["grain"]) + sept * 0.05
        if pattern in ("itc", "lobular"):
            w = np.float32(0.4 if pattern == "lobular" else 0.3)
        elif pattern == "infiltrative":
            ld = lesion_depth(plan, np.full(CX.size, n), CX.ravel(), CY.ravel())
            w = plan.up(np.clip(ld / border, 0, 1).reshape(CX.shape)[None].astype(np.float32))[0]
        else:
            w = np.float32(1.0)
        emap = np.where(tum, emap * (1 - w) + te * w, emap)
        hmap = np.where(tum, hmap * (1 - w) + th * w, hmap)
    return emap, hmap
