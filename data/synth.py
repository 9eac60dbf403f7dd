"""A synthetic CAMELYON16-like slide world: pyramidal H&E-like slides of lymph-node sections,
some with metastases, plus ASAP XML annotations, mask TIFFs and a reference.csv.

Every slide is described by a small `SlidePlan` (stain, tissue sections, lesion polygons, nucleus
sprites) drawn from the seed. Pixels are made tile by tile, and every tile depends only on the
plan and its own (tx, ty) position: the same seed gives the same bytes whatever the order, and
memory stays flat in the slide size (level 0 is streamed in tile rows to
`lymph.data.pyramid.write_pyramidal_tiff`).

Morphology carries the label, colour does not: lymphoid tissue is packed with small (~7 um),
round, dark lymphocyte nuclei; metastatic carcinoma has large (10-16 um), pale, vesicular,
pleomorphic nuclei with nucleoli, in cohesive nests split by thin septa. The mean colour of the
two is close, and the stain varies per slide (and slowly within a slide) by more than that.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np

from lymph.data import texture as tx_
from lymph.data.errors import ConfigError

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


@dataclass(frozen=True)
class SynthConfig:
    """Settings of one `synth_slides` run (all recorded in ``synth.json``)."""

    n_tumor: int = 2
    n_normal: int = 1
    size: tuple[int, int] = (20000, 15000)
    seed: int = 0
    fmt: str = "tiff"
    mpp: float = 0.243
    quality: int = 85
    workers: int = 1
    prefix: str = ""  # slide ids `{prefix}tumor_001`: worlds that must not share ids
    world: str = "default"  # or a preset of data/synth_world.py ("camelyon")
    centre: str = "auto"  # the preset's scanning centre (A, B, C; auto: drawn from the seed)

    def __post_init__(self) -> None:
        from lymph.data.synth_world import CENTRE_CHOICES, PRESETS

        if self.world != "default" and self.world not in PRESETS:
            raise ConfigError(
                f"world must be one of default, {', '.join(PRESETS)}; got {self.world!r}"
            )
        if self.centre not in CENTRE_CHOICES:
            raise ConfigError(
                f"centre must be one of {', '.join(CENTRE_CHOICES)}, got {self.centre!r}"
            )
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
        if len(self.size) != 2:
            raise ConfigError(f"size must be (width, height), got {self.size!r}")
        w, h = self.size
        if w < MIN_SIZE or h < MIN_SIZE:
            raise ConfigError(
                f"slide size {w}x{h} is smaller than one {TILE} px tile; use at least "
                f"{MIN_SIZE}x{MIN_SIZE} (e.g. 4096x3072)"
            )
        if w > MAX_SIZE or h > MAX_SIZE:
            raise ConfigError(f"slide size {w}x{h} exceeds {MAX_SIZE} px on a side")
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


@dataclass(frozen=True)
class Lesion:
    """One metastasis: a tumor polygon (level-0 x, y) and its `_2` exclusion holes."""

    name: str
    kind: str  # "Macro" | "Micro" | "ITC"
    group: str  # "_0" or "_1"
    points: np.ndarray = field(repr=False)
    holes: tuple[np.ndarray, ...] = field(default=(), repr=False)
    diameter_um: float = 0.0
    # appearance: fraction of carcinoma sites filled, and the lymphoid density whose mean
    # colour the lesion is calibrated to (so mean colour does not give the lesion away)
    packing: float = 0.9
    match_density: float = 0.6
    lighten: float = 0.1


@dataclass(frozen=True)
class SynthSlide:
    """A generated slide and its ground truth files."""

    name: str
    path: Path
    status: str  # "tumor" | "normal"
    xml: Path | None
    mask: Path | None
    lesions: tuple[Lesion, ...] = field(default=(), repr=False)
    dimensions: tuple[int, int] = (0, 0)
    largest: str = ""  # largest lesion class (Macro/Micro/ITC), "" for normal slides


@dataclass(frozen=True)
class Section:
    """One lymph-node section: an ellipse with a noisy outline (level-0 px)."""

    cx: float
    cy: float
    a: float
    b: float
    theta: float
    key: int


@dataclass(frozen=True)
class Stain:
    """Per-slide H&E appearance."""

    h_od: tuple[float, float, float]
    e_od: tuple[float, float, float]
    h_scale: float
    e_scale: float
    white: float
    bg_od: float
    density: float


def _key(*parts: int) -> int:
    ss = np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts])
    return int(ss.generate_state(1, np.uint64)[0] >> np.uint64(1))


def _irregular_polygon(
    rng: np.random.Generator, cx: float, cy: float, radius: float, *, roughness: float = 1.0
) -> np.ndarray:
    """An irregular star-shaped polygon around (cx, cy); radius within [0.65, 1.35] * radius."""
    n = int(np.clip(radius / 12, 24, 240))
    phi = np.sort(
        (np.arange(n) + rng.uniform(-0.3, 0.3, n)) * (2 * np.pi / n)
    )
    r = np.ones(n)
    amps = rng.dirichlet(np.ones(5)) * 0.28 * roughness
    for k, a in zip((2, 3, 4, 5, 7), amps, strict=True):
        r += a * np.cos(k * phi + rng.uniform(0, 2 * np.pi))
    r += rng.uniform(-0.035, 0.035, n) * roughness
    r = np.clip(r, 0.65, 1.35) * radius
    return np.stack([cx + r * np.cos(phi), cy + r * np.sin(phi)], axis=1)


def _diameter(points: np.ndarray) -> float:
    d = points[:, None, :] - points[None, :, :]
    return float(np.sqrt((d**2).sum(-1)).max())


def lesion_kind(diameter_um: float) -> str:
    """CAMELYON16 class of a lesion from its largest diameter in microns."""
    if diameter_um > MACRO_UM:
        return "Macro"
    if diameter_um >= ITC_UM:
        return "Micro"
    return "ITC"


def _points_in_polygons(px: np.ndarray, py: np.ndarray, polygons) -> np.ndarray:
    inside = np.zeros(px.shape, bool)
    for poly in polygons:
        q = np.roll(poly, -1, axis=0)
        x1, y1, x2, y2 = poly[:, 0], poly[:, 1], q[:, 0], q[:, 1]
        cond = (y1[None, :] > py[:, None]) != (y2[None, :] > py[:, None])
        with np.errstate(divide="ignore", invalid="ignore"):
            x_int = x1 + (py[:, None] - y1) * (x2 - x1) / (y2 - y1)
        hits = cond & (px[:, None] < x_int)
        inside ^= (hits.sum(axis=1) & 1).astype(bool)
    return inside


class SlidePlan:
    """Everything needed to paint one slide, tile by tile, deterministically."""

    def __init__(
        self,
        *,
        name: str,
        status: str,
        width: int,
        height: int,
        mpp: float,
        seed: int,
        index: int,
    ) -> None:
        self.name = name
        self.status = status
        self.width = width
        self.height = height
        self.mpp = mpp
        self.key = _key(seed, 1 if status == "tumor" else 2, index, 0x5EED)
        rng = np.random.default_rng([seed, 1 if status == "tumor" else 2, index])
        self.px = 1.0 / mpp  # level-0 px per micron
        self.stain = self._draw_stain(rng)
        self.sections = self._draw_sections(rng)
        self.wobble_scale = 0.5 * min(min(sc.a, sc.b) for sc in self.sections)
        self.lesions: tuple[Lesion, ...] = (
            self._draw_lesions(rng) if status == "tumor" else ()
        )
        self._seed_parts = [seed, 1 if status == "tumor" else 2, index]
        # the widest sprite (carcinoma: r * aspect * 1.35 + 4 px) bounds how far a nucleus
        # centred in a neighbouring tile can reach into this one
        self.margin = int(math.ceil(CARCINOMA_RADIUS_UM[1] * self.px * 1.6 * 1.35 + 4)) + 2
        self.edge_px = EDGE_BLUR_UM * self.px
        self.fibre_angle = float(rng.uniform(0, np.pi))
        step = 16
        self.coarse_step = step
        self.coarse_n = TILE // step + 1
        self.up = tx_.Upsampler(TILE, step)
        period = FIBRE_PERIOD_UM * self.px
        self.fibre_ct = np.float32(math.cos(self.fibre_angle) / period)
        self.fibre_st = np.float32(math.sin(self.fibre_angle) / period)
        st = self.stain
        self.h_vec = (st.density * st.h_scale * np.asarray(st.h_od)).astype(np.float32)
        self.e_vec = (st.density * st.e_scale * np.asarray(st.e_od)).astype(np.float32)
        self.n_tx = -(-width // TILE)
        self.n_ty = -(-height // TILE)
        self._lesion_boxes = [
            (les.points.min(axis=0), les.points.max(axis=0)) for les in self.lesions
        ]
        self._candidates = lru_cache(maxsize=4 * self.n_tx + 16)(self._tile_nuclei)
        self._background = lru_cache(maxsize=4 * self.n_tx + 16)(self._is_background)

    # ----------------------------------------------------------------- textures (lazy)
    @cached_property
    def lymph_sprites(self) -> list[tuple[np.ndarray, np.ndarray]]:
        rng = np.random.default_rng([*self._seed_parts, 101])
        return tx_.lymphocyte_sprites(
            rng, radius_px=tuple(r * self.px for r in LYMPHOCYTE_RADIUS_UM), n=24
        )

    @cached_property
    def carc_sprites(self) -> list[tuple[np.ndarray, np.ndarray]]:
        rng = np.random.default_rng([*self._seed_parts, 102])
        return tx_.carcinoma_sprites(
            rng, radius_px=tuple(r * self.px for r in CARCINOMA_RADIUS_UM), mpp=self.mpp, n=32
        )

    @cached_property
    def looks(self) -> list[dict[str, float]]:
        """Per lesion: cytoplasm eosin (cyto_e) and hematoxylin (cyto_h) and nuclear stain gain,
        chosen so that the lesion's mean R, G, B equal those of lymphoid tissue of density
        `match_density` on this slide (matched in intensity, after Beer-Lambert, on small
        rendered samples). Colour then says little about the label; the nuclei do."""
        rng = np.random.default_rng([*self._seed_parts, 105])
        tex = self.textures
        n = 256
        g = self.grain[:n, :n]
        e_stroma = tex["stroma_e"][:n, :n]
        e_delta = tex["lymph_minus_stroma_e"][:n, :n]
        h_base = tex["base_h"][:n, :n]

        sample = rng.choice(n * n, 4096, replace=False)  # pixels the means are taken over

        def mean_rgb(h: np.ndarray, e: np.ndarray) -> np.ndarray:
            """Mean RGB (0-1) for stain densities h, e (..., P): broadcasts over leading axes."""
            od = h[..., None] * self.h_vec + e[..., None] * self.e_vec
            return np.exp(np.float32(-np.log(10)) * od).mean(axis=-2)

        def flat(a: np.ndarray) -> np.ndarray:
            return a.reshape(-1)[sample]

        g = flat(g)
        cyto_h_grid = np.linspace(0.0, 0.08, 9, dtype=np.float32)[:, None, None]
        cyto_e_grid = np.linspace(0.03, 0.5, 16, dtype=np.float32)[None, :, None]
        out = []
        for les in self.lesions:
            d = les.match_density
            nuc_l, occ_l = (flat(a) for a in tx_.nuclei_field(
                self.lymph_sprites, spacing_px=LYMPHOCYTE_SPACING_UM * self.px,
                keep=min(d * self.stain.density, 1.0), jitter=0.4, rng=rng,
            ))
            target = mean_rgb(
                (flat(h_base) + 0.06 * d) * (1 - occ_l) + LYMPH_GAIN * nuc_l,
                (flat(e_stroma) + d * flat(e_delta)) * (1 - 0.8 * occ_l),
            )
            # non-tumor patches include tissue edges and glass: aim a little lighter than
            # pure lymphoid tissue (by les.lighten of the way to white)
            target = target + les.lighten * (1 - target)
            keep_t = les.packing * 0.85 * 0.92  # mean local packing, minus septa
            nuc_t, occ_t = (flat(a) for a in tx_.nuclei_field(
                self.carc_sprites, spacing_px=CARCINOMA_SPACING_UM * self.px, keep=keep_t,
                jitter=0.3, rng=rng,
            ))
            drawn = float(rng.uniform(0.75, 1.1))
            best: tuple[float, float, float, float] | None = None
            # the drawn nuclear gain if the colour can be matched with it, else darker (or
            # paler) nuclei: the cytoplasm stays pink, the nuclei stay darker than it
            for gain in (drawn, drawn * 1.2, drawn * 1.45, drawn * 0.85, drawn * 0.7):
                h = (cyto_h_grid + 0.02 * g) * (1 - occ_t) + CARC_GAIN * gain * nuc_t
                e = (cyto_e_grid + 0.03 * g) * (1 - 0.8 * occ_t)
                err = ((mean_rgb(h + 0 * e, e + 0 * h) - target) ** 2).sum(axis=-1)
                i, j = np.unravel_index(int(np.argmin(err)), err.shape)
                cand = (float(err[i, j]), float(cyto_h_grid[i, 0, 0]),
                        float(cyto_e_grid[0, j, 0]), gain)
                if best is None or cand[0] < best[0]:
                    best = cand
                if np.sqrt(cand[0]) * 255 < 3:
                    break
            assert best is not None
            white = self.stain.white
            out.append({"cyto_e": best[2], "cyto_h": best[1], "nuclear_gain": best[3],
                        "rgb_error": float(np.sqrt(best[0]) * 255),
                        **{f"target_{c}": float(v * white)
                           for c, v in zip("rgb", target, strict=True)}})
        return out

    @cached_property
    def grain(self) -> np.ndarray:
        """Fine, periodic (GRAIN px) noise, padded by one tile so any tile window is a slice."""
        from scipy import ndimage

        rng = np.random.default_rng([*self._seed_parts, 103])
        grain = ndimage.gaussian_filter(rng.standard_normal((GRAIN, GRAIN)), 1.2, mode="wrap")
        grain = (grain / grain.std()).astype(np.float32)
        return np.pad(grain, ((0, TILE), (0, TILE)), mode="wrap")

    @cached_property
    def textures(self) -> dict[str, np.ndarray]:
        """Periodic (GRAIN px) stain-density textures, padded by one tile, sliced per tile:
        stroma eosin with wavy, broken collagen fibres; lymphoid minus stroma eosin; base
        hematoxylin. Precomputing them keeps per-tile work to a few array operations."""
        from scipy import ndimage

        rng = np.random.default_rng([*self._seed_parts, 104])
        g = self.grain[:GRAIN, :GRAIN]

        def smooth(sigma: float) -> np.ndarray:
            """Periodic smooth noise in [0, 1]: filtered at low resolution, then upsampled."""
            f = max(1, int(sigma // 4))
            while GRAIN % f:
                f -= 1
            low = rng.standard_normal((GRAIN // f, GRAIN // f))
            low = ndimage.gaussian_filter(low, sigma / f, mode="wrap")
            n = ndimage.zoom(low, f, order=1, mode="grid-wrap", grid_mode=True)
            return (n - n.min()) / (n.max() - n.min() + 1e-12)

        warp = smooth(30 * self.px / 2.5)
        broken = np.clip(smooth(10 * self.px / 2.5) * 2.2 - 0.6, 0, 1)
        period = FIBRE_PERIOD_UM * self.px
        # whole numbers of fibre periods across the texture keep it seamless when it repeats
        kx = round(GRAIN * math.cos(self.fibre_angle) / period) / GRAIN
        ky = round(GRAIN * math.sin(self.fibre_angle) / period) / GRAIN
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

    @cached_property
    def glass_od(self) -> np.ndarray:
        """Bare glass: faint, slightly uneven optical density (3 channels)."""
        od = self.stain.bg_od + 0.006 * self.grain[..., None]
        return (od * np.ones(3)).astype(np.float32)

    @cached_property
    def glass(self) -> np.ndarray:
        return self._to_rgb(self.glass_od)

    # ----------------------------------------------------------------- plan (small, drawn once)
    def _draw_stain(self, rng: np.random.Generator) -> Stain:
        h = np.clip(HEMATOXYLIN_OD + rng.normal(0, 0.09, 3), 0.05, None)
        e = np.clip(EOSIN_OD + rng.normal(0, 0.09, 3), 0.02, None)
        h /= np.linalg.norm(h)
        e /= np.linalg.norm(e)
        return Stain(
            h_od=tuple(float(v) for v in h),
            e_od=tuple(float(v) for v in e),
            h_scale=float(rng.uniform(0.6, 1.4)),
            e_scale=float(rng.uniform(0.5, 1.5)),
            white=float(rng.uniform(0.86, 1.0) * 255),
            bg_od=float(rng.uniform(0.015, 0.05)),
            density=float(rng.uniform(0.75, 1.25)),
        )

    def _draw_sections(self, rng: np.random.Generator) -> tuple[Section, ...]:
        w, h = self.width, self.height
        # several sections on a real-size slide; at most two on a small one so that each is
        # big enough to hold a metastasis of a few patches
        n = int(rng.integers(1, 4 if max(w, h) >= 8000 else 3))
        horizontal = w >= h
        cells = []
        for i in range(n):
            if horizontal:
                cells.append((w * i / n, 0.0, w / n, float(h)))
            else:
                cells.append((0.0, h * i / n, float(w), h / n))
        out = []
        for i, (x, y, cw, ch) in enumerate(cells):
            a = cw * rng.uniform(0.27, 0.40)
            b = ch * rng.uniform(0.27, 0.40)
            out.append(
                Section(
                    cx=x + cw / 2 + rng.uniform(-0.04, 0.04) * cw,
                    cy=y + ch / 2 + rng.uniform(-0.04, 0.04) * ch,
                    a=a,
                    b=b,
                    theta=float(rng.uniform(-0.25, 0.25)),
                    key=_key(int(self.key & 0xFFFFFFFF), i, 77),
                )
            )
        return tuple(out)

    def _draw_lesions(self, rng: np.random.Generator) -> tuple[Lesion, ...]:
        n = 1 + min(int(rng.poisson(1.3)), 3)
        lesions: list[Lesion] = []
        placed: list[tuple[float, float, float]] = []
        for i in range(n):
            if i == 0:
                target = "Macro" if rng.random() < 0.5 else "Micro"
            else:
                target = str(rng.choice(["Macro", "Micro", "ITC"], p=[0.15, 0.4, 0.45]))
            lo, hi = {"Macro": (1100, 2200), "Micro": (130, 800), "ITC": (25, 70)}[target]
            radius_target = rng.uniform(lo, hi) * self.px
            biggest = max(self.sections, key=lambda sc: min(sc.a, sc.b))
            for _attempt in range(20):
                # the first lesion goes in the biggest section: every tumor slide has tumor
                sec = biggest if i == 0 else self.sections[int(rng.integers(len(self.sections)))]
                rc = rng.uniform(0, 0.3) if i == 0 else rng.uniform(0, 0.62)
                ang = rng.uniform(0, 2 * np.pi)
                ex, ey = rc * sec.a * np.cos(ang), rc * sec.b * np.sin(ang)
                ct, st = np.cos(sec.theta), np.sin(sec.theta)
                cx, cy = sec.cx + ex * ct - ey * st, sec.cy + ex * st + ey * ct
                minor = min(sec.a, sec.b)
                r_max = (0.8 - rc) * minor / 1.35
                radius = min(radius_target, r_max)
                if radius < 15 * self.px and i > 0:
                    continue
                if any(math.hypot(cx - x, cy - y) < 1.4 * (radius + r) for x, y, r in placed):
                    continue
                break
            else:
                continue
            placed.append((cx, cy, radius))
            pts = _irregular_polygon(rng, cx, cy, radius)
            holes: list[np.ndarray] = []
            if radius > 150 * self.px and rng.random() < 0.6:
                for j in range(int(rng.integers(1, 3))):
                    hr = radius * rng.uniform(0.10, 0.2)
                    hang = rng.uniform(0, 2 * np.pi) + j * np.pi
                    off = radius * rng.uniform(0.1, 0.3)
                    holes.append(
                        _irregular_polygon(
                            rng, cx + off * np.cos(hang), cy + off * np.sin(hang), hr,
                            roughness=0.7,
                        )
                    )
            diameter_um = _diameter(pts) / self.px
            kind = lesion_kind(diameter_um)
            lesions.append(
                Lesion(
                    name=f"Annotation {len(lesions)}",
                    kind=kind,
                    group="_1" if kind == "ITC" else "_0",
                    points=pts,
                    holes=tuple(holes),
                    diameter_um=diameter_um,
                    packing=float(rng.uniform(0.75, 0.97)),
                    match_density=self._surrounding_density(pts, rng),
                    lighten=0.0,
                )
            )
        return tuple(lesions)

    def _surrounding_density(self, points: np.ndarray, rng: np.random.Generator) -> float:
        """Mean lymphoid density on a ring just outside a lesion outline (jittered by +-0.1):
        the lesion's colour is matched to the tissue around it."""
        c = points.mean(axis=0)
        ring = c + (points[::4] - c) * 1.25
        depth = self.tissue_depth(ring[:, 0], ring[:, 1])
        dens = self.lymph_density(ring[:, 0], ring[:, 1], depth)
        return float(np.clip(dens.mean() + rng.uniform(-0.1, 0.1), 0.05, 0.95))

    # ----------------------------------------------------------------- fields (any level-0 point)
    def tissue_depth(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Signed distance-like depth into tissue (level-0 px; > 0 inside a section)."""
        best = np.full(np.broadcast(x, y).shape, -1e9)
        wobble = tx_.fractal_noise(x, y, scale=self.wobble_scale, key=self.key + 3, octaves=3)
        wobble -= 0.5
        for s in self.sections:
            dx, dy = x - s.cx, y - s.cy
            ct, st = math.cos(s.theta), math.sin(s.theta)
            u = (dx * ct + dy * st) / s.a
            v = (-dx * st + dy * ct) / s.b
            r = np.sqrt(u * u + v * v)
            scale = min(s.a, s.b)
            best = np.maximum(best, (1 - r) * scale + wobble * (0.16 * scale))
        return best

    def lymph_density(self, x: np.ndarray, y: np.ndarray, depth: np.ndarray) -> np.ndarray:
        """Fraction of lymphocyte sites filled (0 in the capsule, low in sinuses)."""
        capsule = np.clip((depth - CAPSULE_UM * self.px) / (25 * self.px), 0, 1)
        n = tx_.fractal_noise(x, y, scale=400 * self.px, key=self.key + 11, octaves=2)
        body = np.clip(0.25 + 1.1 * n, 0.15, 1.0)
        return capsule * body

    def stain_field(self, x: np.ndarray, y: np.ndarray, which: int) -> np.ndarray:
        """Slow multiplicative variation of hematoxylin (0) or eosin (1) uptake within the
        slide (uneven section thickness and staining): 0.75-1.25."""
        scale = (700 if which == 0 else 600) * self.px
        return 0.75 + 0.5 * tx_.value_noise(x, y, scale=scale, key=self.key + 31 + 6 * which)

    def tumor_variation(self, x: np.ndarray, y: np.ndarray, which: int) -> np.ndarray:
        """Slow [0, 1] fields that make a metastasis vary inside itself, so that its patches
        spread in colour as much as lymphoid tissue does: 0 cytoplasm amount (as a 0.4-1.6
        multiplier), 1 desmoplastic stroma, 2 cell packing."""
        n = tx_.value_noise(x, y, scale=(80, 110, 60)[which] * self.px, key=self.key + 61 + which)
        return 0.4 + 1.2 * n if which == 0 else n

    def tumor_at(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Index of the lesion each point lies in (tumor polygon minus holes), -1 for none."""
        x = np.asarray(x, np.float64).ravel()
        y = np.asarray(y, np.float64).ravel()
        out = np.full(x.shape, -1, np.int64)
        for n, (les, (lo, hi)) in enumerate(zip(self.lesions, self._lesion_boxes, strict=True)):
            sel = (x >= lo[0]) & (x <= hi[0]) & (y >= lo[1]) & (y <= hi[1])
            if not sel.any():
                continue
            ins = _points_in_polygons(x[sel], y[sel], [les.points])
            if les.holes:
                ins &= ~_points_in_polygons(x[sel], y[sel], les.holes)
            out[np.nonzero(sel)[0][ins]] = n
        return out

    def lesion_masks(
        self, x0: float, y0: float, width: int, height: int, downsample: float = 1.0
    ) -> list[tuple[int, np.ndarray]]:
        """(lesion index, bool mask) of each lesion present on a pixel grid whose pixel (0, 0)
        covers level-0 [x0, x0 + downsample): tumor polygon minus its holes."""
        out = []
        x1, y1 = x0 + width * downsample, y0 + height * downsample
        for n, (les, (lo, hi)) in enumerate(zip(self.lesions, self._lesion_boxes, strict=True)):
            if hi[0] < x0 or hi[1] < y0 or lo[0] > x1 or lo[1] > y1:
                continue
            m = tx_.rasterize_polygons(
                [les.points], x0=x0, y0=y0, width=width, height=height, downsample=downsample
            )
            if les.holes:
                m &= ~tx_.rasterize_polygons(
                    list(les.holes), x0=x0, y0=y0, width=width, height=height,
                    downsample=downsample,
                )
            if m.any():
                out.append((n, m))
        return out

    def tumor_mask(
        self, x0: float, y0: float, width: int, height: int, downsample: float = 1.0
    ) -> np.ndarray:
        """Ground truth (bool) on a pixel grid: tumor polygons minus their holes."""
        out = np.zeros((height, width), bool)
        for _, m in self.lesion_masks(x0, y0, width, height, downsample):
            out |= m
        return out

    # ----------------------------------------------------------------- tiles
    def is_background(self, tx: int, ty: int) -> bool:
        return self._background(tx, ty)

    def _is_background(self, tx: int, ty: int) -> bool:
        """True when tile (tx, ty) and everything that could spill into it is bare glass.

        The depth field changes by at most ~1.5 px per px, so a tile whose centre lies deeper
        than twice its half diagonal plus the edge blur and a nucleus radius outside all
        sections cannot contain tissue."""
        cx = np.array([tx * TILE + TILE / 2], np.float64)
        cy = np.array([ty * TILE + TILE / 2], np.float64)
        d = float(self.tissue_depth(cx, cy)[0])
        return d < -(2 * 182 + self.edge_px + 2 * self.margin)

    def _tile_nuclei(self, tx: int, ty: int) -> tuple[np.ndarray, ...]:
        """Nuclei whose centres fall in tile (tx, ty): x, y, kind (0 lymph, 1 carcinoma),
        sprite index, stain strength, opacity (fades at the tissue edge). Depends only on the
        plan and (tx, ty)."""
        e = np.zeros(0)
        empty = (e, e, e.astype(np.int8), e.astype(np.int64), e, e)
        if self.is_background(tx, ty):
            return empty
        rng = np.random.default_rng([self.key & 0xFFFFFFFF, self.key >> 32, tx, ty, 1])
        x0, y0 = tx * TILE, ty * TILE
        xs, ys, kinds, idx, strength, opacity = [], [], [], [], [], []
        specs = ((0, LYMPHOCYTE_SPACING_UM, 0.4), (1, CARCINOMA_SPACING_UM, 0.3))
        for kind, spacing_um, jitter in specs:
            n = max(1, round(TILE / (spacing_um * self.px)))
            cell = TILE / n
            gy, gx = np.mgrid[0:n, 0:n]
            px = x0 + (gx.ravel() + 0.5 + rng.uniform(-jitter, jitter, n * n)) * cell
            py = y0 + (gy.ravel() + 0.5 + rng.uniform(-jitter, jitter, n * n)) * cell
            u = rng.random(n * n)
            sprite = rng.integers(0, 1 << 30, n * n)
            st = rng.uniform(0.85, 1.15, n * n)
            if kind == 1 and not self._near_lesion(x0, y0, TILE + 2 * self.margin):
                continue
            depth = self.tissue_depth(px, py)
            alive = depth > -0.5 * self.edge_px
            if not alive.any():
                continue
            lesion = self.tumor_at(px, py) if self.lesions else np.full(px.shape, -1)
            tumor = lesion >= 0
            if kind == 0:
                dens = self.lymph_density(px, py, depth)
                keep = alive & ~tumor & (u < dens * self.stain.density)
                sprite = sprite % len(self.lymph_sprites)
            else:
                nest = tx_.fractal_noise(px, py, scale=70 * self.px, key=self.key + 23, octaves=2)
                desmo = self.tumor_variation(px, py, 1)
                septum = np.abs(nest - 0.5) < 0.03 + 0.12 * desmo * desmo
                packing = np.array([les.packing for les in self.lesions] + [0.0])[lesion]
                gain = np.array([lk["nuclear_gain"] for lk in self.looks] + [0.0])[lesion]
                local = 0.5 + 0.7 * self.tumor_variation(px, py, 2)
                keep = alive & tumor & ~septum & (u < packing * local)
                st = st * gain
                sprite = sprite % len(self.carc_sprites)
            xs.append(px[keep])
            ys.append(py[keep])
            kinds.append(np.full(int(keep.sum()), kind, np.int8))
            idx.append(sprite[keep])
            fade = np.clip(depth[keep] / self.edge_px + 0.5, 0, 1)
            strength.append(st[keep] * fade)
            opacity.append(fade)
        if not xs:
            return empty
        return (
            np.concatenate(xs),
            np.concatenate(ys),
            np.concatenate(kinds),
            np.concatenate(idx),
            np.concatenate(strength),
            np.concatenate(opacity),
        )

    def _near_lesion(self, x0: float, y0: float, size: float) -> bool:
        m = self.margin
        for lo, hi in self._lesion_boxes:
            if hi[0] >= x0 - m and hi[1] >= y0 - m and lo[0] <= x0 + size and lo[1] <= y0 + size:
                return True
        return False

    def _grain(self, tx: int, ty: int) -> tuple[int, int]:
        """Offset of this tile in the periodic grain texture (continuous across tiles)."""
        return (ty * TILE) % GRAIN, (tx * TILE) % GRAIN

    def _dust(self, tx: int, ty: int) -> np.ndarray | None:
        """Extra optical density of dust specks on this tile (rare), or None."""
        rng = np.random.default_rng([self.key & 0xFFFFFFFF, self.key >> 32, tx, ty, 2])
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

    def _to_rgb(self, od: np.ndarray) -> np.ndarray:
        """Beer-Lambert: intensity = white * 10**-od, as uint8."""
        rgb = np.exp(od * np.float32(-math.log(10)))
        rgb *= np.float32(self.stain.white)
        rgb += np.float32(0.5)
        np.clip(rgb, 0, 255, out=rgb)
        return rgb.astype(np.uint8)

    def render_tile(self, tx: int, ty: int) -> np.ndarray:
        """RGB uint8 (TILE, TILE, 3) of tile (tx, ty) at level 0."""
        x0, y0 = tx * TILE, ty * TILE
        gy0, gx0 = self._grain(tx, ty)
        dust = self._dust(tx, ty)
        if self.is_background(tx, ty):
            tile = self.glass[gy0 : gy0 + TILE, gx0 : gx0 + TILE]
            if dust is None:
                return tile.copy()
            od = self.glass_od[gy0 : gy0 + TILE, gx0 : gx0 + TILE] + dust[..., None] * np.float32(
                0.33
            )
            return self._to_rgb(od)
        win = (slice(gy0, gy0 + TILE), slice(gx0, gx0 + TILE))
        k = self.coarse_n
        cgx = x0 + np.arange(k, dtype=np.float64) * self.coarse_step
        cgy = y0 + np.arange(k, dtype=np.float64) * self.coarse_step
        CX, CY = np.meshgrid(cgx, cgy)
        px = self.px
        depth_c = self.tissue_depth(CX, CY)
        alpha_c = np.clip(depth_c / self.edge_px + 0.5, 0, 1)
        coarse = np.stack(
            [
                # tissue opacity times slow stain variation within the slide, per stain
                alpha_c * self.stain_field(CX, CY, 0),
                alpha_c * self.stain_field(CX, CY, 1),
                self.lymph_density(CX, CY, depth_c),
            ]
        ).astype(np.float32)
        amount_h, amount_e, dens = self.up(coarse)
        # stroma (fibres) where lymphocytes are sparse, pale interstitium where they are dense
        emap = self.textures["stroma_e"][win] + dens * self.textures["lymph_minus_stroma_e"][win]
        hmap = self.textures["base_h"][win] + np.float32(0.06) * dens
        if self.lesions and self._near_lesion(x0, y0, TILE):
            masks = self.lesion_masks(x0, y0, TILE, TILE)
            if masks:
                grain = self.grain[win]
                stroma_e = self.textures["stroma_e"][win]
                fine = np.stack(
                    [
                        tx_.fractal_noise(CX, CY, scale=70 * px, key=self.key + 23, octaves=2),
                        self.tumor_variation(CX, CY, 0),
                        self.tumor_variation(CX, CY, 1),
                    ]
                ).astype(np.float32)
                nest, cyto, desmo = self.up(fine)
                # septa between nests; broad desmoplastic stroma where `desmo` is high
                width = np.float32(0.03) + np.float32(0.12) * desmo * desmo
                sept = np.clip(1 - np.abs(nest - 0.5) / width, 0, 1)
                for n, tum in masks:
                    look = self.looks[n]
                    te = (1 - sept) * (look["cyto_e"] * cyto + 0.03 * grain) + sept * stroma_e
                    th = (1 - sept) * (look["cyto_h"] * cyto + 0.02 * grain) + sept * 0.05
                    emap = np.where(tum, te, emap)
                    hmap = np.where(tum, th, hmap)
        nuc_h, occ = self._stamp_nuclei(tx, ty)
        hmap = (hmap * (1 - occ) + nuc_h) * amount_h
        emap = emap * (1 - 0.8 * occ) * amount_e
        od = self.glass_od[win] + hmap[..., None] * self.h_vec
        od += emap[..., None] * self.e_vec
        if dust is not None:
            od += dust[..., None] * np.float32(0.33)
        return self._to_rgb(od)

    def _stamp_nuclei(self, tx: int, ty: int) -> tuple[np.ndarray, np.ndarray]:
        """Hematoxylin density and occupancy of all nuclei overlapping tile (tx, ty)."""
        x0, y0 = tx * TILE, ty * TILE
        nuc_h = np.zeros((TILE, TILE), np.float32)
        occ = np.zeros((TILE, TILE), np.float32)
        m = self.margin
        for ny in (ty - 1, ty, ty + 1):
            for nx in (tx - 1, tx, tx + 1):
                if nx < 0 or ny < 0 or nx >= self.n_tx or ny >= self.n_ty:
                    continue
                px, py, kinds, sidx, strength, opacity = self._candidates(nx, ny)
                if px.size == 0:
                    continue
                near = (px > x0 - m) & (px < x0 + TILE + m) & (py > y0 - m) & (py < y0 + TILE + m)
                for j in np.nonzero(near)[0]:
                    lib = self.lymph_sprites if kinds[j] == 0 else self.carc_sprites
                    sd, so = lib[sidx[j]]
                    hs = sd.shape[0] // 2
                    ax0 = int(round(px[j])) - x0 - hs
                    ay0 = int(round(py[j])) - y0 - hs
                    bx0, by0 = max(ax0, 0), max(ay0, 0)
                    bx1, by1 = min(ax0 + sd.shape[1], TILE), min(ay0 + sd.shape[0], TILE)
                    if bx1 <= bx0 or by1 <= by0:
                        continue
                    sl = (slice(by0, by1), slice(bx0, bx1))
                    ss = (slice(by0 - ay0, by1 - ay0), slice(bx0 - ax0, bx1 - ax0))
                    gain = np.float32((LYMPH_GAIN if kinds[j] == 0 else CARC_GAIN) * strength[j])
                    o = so[ss] * np.float32(opacity[j])
                    # "over" compositing: a later nucleus lies on top of an earlier one
                    nuc_h[sl] = nuc_h[sl] * (1 - o) + sd[ss] * gain
                    np.maximum(occ[sl], o, out=occ[sl])
        return nuc_h, occ

    def image_row(self, i: int) -> np.ndarray:
        """Tile row i of level 0: (h, width, 3) uint8."""
        h = min(TILE, self.height - i * TILE)
        row = np.concatenate([self.render_tile(t, i) for t in range(self.n_tx)], axis=1)
        return np.ascontiguousarray(row[:h, : self.width])

    def mask_row(self, i: int) -> np.ndarray:
        """Tile row i of the 0/255 ground-truth mask at level 0: (h, width) uint8."""
        h = min(TILE, self.height - i * TILE)
        out = np.zeros((h, self.width), np.uint8)
        y0 = i * TILE
        chunk = 4096
        for x0 in range(0, self.width, chunk):
            w = min(chunk, self.width - x0)
            out[:, x0 : x0 + w] = self.tumor_mask(x0, y0, w, h).astype(np.uint8) * 255
        return out

    def describe(self) -> dict:
        return {
            "name": self.name,
            "status": self.status,
            "width": self.width,
            "height": self.height,
            "mpp": self.mpp,
            "stain": asdict(self.stain),
            "sections": [asdict(s) for s in self.sections],
            "lesions": [
                {
                    "name": les.name,
                    "kind": les.kind,
                    "group": les.group,
                    "diameter_um": round(les.diameter_um, 2),
                    "n_vertices": len(les.points),
                    "n_holes": len(les.holes),
                    "packing": round(les.packing, 4),
                    "match_density": round(les.match_density, 4),
                    "lighten": round(les.lighten, 4),
                    **{k: round(v, 4) for k, v in look.items()},
                }
                for les, look in zip(self.lesions, self.looks, strict=True)
            ],
        }


# --------------------------------------------------------------------------- files
def write_asap_xml(path: Path, lesions: tuple[Lesion, ...]) -> None:
    """CAMELYON16-style ASAP XML: tumor polygons in `_0`/`_1`, exclusion holes in `_2`."""
    root = ET.Element("ASAP_Annotations")
    anns = ET.SubElement(root, "Annotations")
    colours = {"_0": "#F4FA58", "_1": "#F4FA58", "_2": "#64FE2E"}
    n = 0

    def add(points: np.ndarray, group: str) -> None:
        nonlocal n
        a = ET.SubElement(
            anns,
            "Annotation",
            Name=f"Annotation {n}",
            Type="Polygon",
            PartOfGroup=group,
            Color=colours[group],
        )
        n += 1
        coords = ET.SubElement(a, "Coordinates")
        for order, (x, y) in enumerate(points):
            ET.SubElement(coords, "Coordinate", Order=str(order), X=f"{x:.4f}", Y=f"{y:.4f}")

    for les in lesions:
        add(les.points, les.group)
    for les in lesions:
        for hole in les.holes:
            add(hole, "_2")
    groups = ET.SubElement(root, "AnnotationGroups")
    for g, c in (("_0", "#FF0000"), ("_1", "#FF0000"), ("_2", "#00FF00")):
        grp = ET.SubElement(groups, "Group", Name=g, PartOfGroup="None", Color=c)
        ET.SubElement(grp, "Attributes")
    ET.indent(root, space="\t")
    tmp = path.with_name(path.name + ".part")
    ET.ElementTree(root).write(tmp, encoding="utf-8", xml_declaration=True)
    os.replace(tmp, path)


def _label_image(name: str) -> np.ndarray:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (400, 400), (236, 236, 230))
    d = ImageDraw.Draw(img)
    d.rectangle((20, 20, 380, 380), outline=(40, 40, 40), width=3)
    d.text((40, 60), "lymph synth", fill=(0, 0, 0))
    d.text((40, 100), name, fill=(0, 0, 0))
    return np.asarray(img)


def _objective_power(mpp: float) -> int:
    """Nominal objective magnification for an mpp (10 um / mpp, to the nearest 5x): 0.243 -> 40."""
    return max(1, int(round(10 / mpp / 5) * 5)) if mpp < 2 else max(1, round(10 / mpp))


def _check_out(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create output folder {out}: {exc.strerror or exc}; choose a writable path"
        ) from exc
    if not out.is_dir() or not os.access(out, os.W_OK | os.X_OK):
        raise ConfigError(f"output folder {out} is not writable; choose a writable path")


def synth_slides(
    out: str | Path,
    *,
    n_tumor: int = 2,
    n_normal: int = 1,
    size: tuple[int, int] = (20000, 15000),
    seed: int = 0,
    fmt: str = "tiff",
    mpp: float = 0.243,
    progress: bool = False,
    quality: int = 85,
    workers: int = 1,
    on_row: Callable[[int], None] | None = None,
    prefix: str = "",
    world: str = "default",
    centre: str = "auto",
) -> list[SynthSlide]:
    """Write `n_tumor` tumor and `n_normal` normal synthetic slides into `out`.

    Files: ``tumor_001.tif`` (+ ``tumor_001.xml``, ``tumor_001_mask.tif``), ``normal_001.tif``
    (``.svs`` for fmt="svs"), ``reference.csv`` (``tumor_001,Tumor,Macro`` / ``normal_001,Normal,``)
    and ``synth.json`` (every setting, the seed and what each slide holds).
    """
    from lymph.data.progress import progress_bar
    from lymph.data.synth_world import make_plan

    cfg = SynthConfig(
        n_tumor=n_tumor,
        n_normal=n_normal,
        size=(int(size[0]), int(size[1])),
        seed=seed,
        fmt=fmt,
        mpp=mpp,
        quality=quality,
        workers=workers,
        prefix=prefix,
        world=world,
        centre=centre,
    )
    out = Path(out)
    _check_out(out)
    width, height = cfg.size
    ext = ".svs" if cfg.fmt == "svs" else ".tif"
    jobs = [("tumor", i) for i in range(1, cfg.n_tumor + 1)] + [
        ("normal", i) for i in range(1, cfg.n_normal + 1)
    ]
    bar = progress_bar(total=len(jobs) * height, unit="row", desc="synth", enabled=progress,
                       unit_scale=True)
    slides: list[SynthSlide] = []
    plans = []
    try:
        for status, i in jobs:
            plan = make_plan(cfg.world, cfg.centre, name=f"{cfg.prefix}{status}_{i:03d}",
                             status=status, width=width, height=height, mpp=cfg.mpp,
                             seed=cfg.seed, index=i)
            plans.append(plan)
            bar.set_postfix_str(plan.name)

            def tick(n: int) -> None:
                bar.update(n)
                if on_row is not None:
                    on_row(n)

            slides.append(_write_slide(plan, out / f"{plan.name}{ext}", cfg, tick))
    finally:
        bar.close()
    _write_manifests(out, cfg, slides, plans)
    return slides


def _write_slide(plan: SlidePlan, path: Path, cfg: SynthConfig,
                 tick: Callable[[int], None]) -> SynthSlide:
    """One slide (and for a tumor slide its ASAP XML and mask TIFF) from its plan."""
    from lymph.data.pyramid import write_pyramidal_tiff

    name, width, height = plan.name, plan.width, plan.height
    write_pyramidal_tiff(
        path, plan.image_row, width=width, height=height, compression="jpeg",
        quality=getattr(plan, "jpeg_quality", cfg.quality),  # a world's centre sets its own
        mpp=cfg.mpp, layout="aperio" if cfg.fmt == "svs" else "generic",
        factor=4 if cfg.fmt == "svs" else 2,
        aperio_fields={"AppMag": _objective_power(cfg.mpp), "Filename": name},
        label=_label_image(name) if cfg.fmt == "svs" else None, workers=cfg.workers,
        progress=tick,
    )  # fmt: skip
    xml = mask = None
    if plan.status == "tumor":
        xml = path.parent / f"{name}.xml"
        write_asap_xml(xml, plan.lesions)
        mask = path.parent / f"{name}_mask.tif"
        write_pyramidal_tiff(
            mask, plan.mask_row, width=width, height=height, channels=1,
            compression="deflate", mpp=cfg.mpp, downsample="majority",
            min_size=MASK_MIN_SIZE,  # levels to 1/32 and beyond, as CAMELYON16's
            workers=cfg.workers,
        )  # fmt: skip
    largest = ""
    if plan.lesions:
        order = {"ITC": 0, "Micro": 1, "Macro": 2}
        largest = max((les.kind for les in plan.lesions), key=order.__getitem__)
    return SynthSlide(name=name, path=path, status=plan.status, xml=xml, mask=mask,
                      lesions=plan.lesions, dimensions=(width, height), largest=largest)


def _write_manifests(out: Path, cfg: SynthConfig, slides: Sequence[SynthSlide],
                     plans: Sequence[SlidePlan]) -> None:
    """reference.csv (CAMELYON16's `name,Tumor|Normal,largest lesion`) and synth.json (every
    setting, the seed and what each slide holds), each written atomically."""
    import io

    from lymph import __version__
    from lymph.data.io import atomic_write_text
    from lymph.data.synth_world import world_settings

    buf = io.StringIO(newline="")
    writer = csv.writer(buf)
    for s in slides:
        writer.writerow([s.name, "Tumor" if s.status == "tumor" else "Normal", s.largest])
    atomic_write_text(out / "reference.csv", buf.getvalue())
    manifest = {
        "synth_version": SYNTH_VERSION,
        "lymph_version": __version__,
        "settings": {**asdict(cfg), "size": list(cfg.size), "tile": TILE},
        **({} if cfg.world == "default" else {"world": world_settings(cfg.world)}),
        "slides": [p.describe() for p in plans],
    }
    atomic_write_text(out / "synth.json", json.dumps(manifest, indent=1))


# --------------------------------------------------------------------------- colour check
COLOUR_FEATURES = ("R", "G", "B", "H", "S", "V")


def _best_balanced_accuracy(values: np.ndarray, labels: np.ndarray) -> float:
    """Best balanced accuracy of any single threshold on `values` (either direction)."""
    order = np.argsort(values, kind="stable")
    v, y = values[order], labels[order].astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("need both tumor and non-tumor patches to measure separability")
    # predict "tumor" for values above the cut placed after position k (k = 0..n)
    pos_below = np.concatenate([[0], np.cumsum(y)])
    neg_below = np.concatenate([[0], np.cumsum(~y)])
    # only cut between distinct values
    cut_ok = np.concatenate([[True], v[1:] != v[:-1], [True]])
    tpr = (n_pos - pos_below) / n_pos
    tnr = neg_below / n_neg
    bacc = (tpr + tnr) / 2
    bacc = np.where(cut_ok, np.maximum(bacc, 1 - bacc), 0)
    return float(bacc.max())


def patch_colour_features(rgb: np.ndarray, *, step: int = 3) -> dict[str, float]:
    """Mean R, G, B (0-255) and mean per-pixel H, S, V (0-1) of an RGB uint8 patch (the means
    are taken over every `step`-th pixel in each direction: within 0.5% of the full mean)."""
    px = rgb[::step, ::step].reshape(-1, 3).astype(np.float32)
    r, g, b = px[:, 0], px[:, 1], px[:, 2]
    mx = px.max(axis=1)
    mn = px.min(axis=1)
    delta = mx - mn
    safe = np.where(delta > 0, delta, 1)
    hue = np.where(
        mx == r, ((g - b) / safe) % 6, np.where(mx == g, (b - r) / safe + 2, (r - g) / safe + 4)
    )
    hue = np.where(delta > 0, hue / 6, 0)
    sat = np.where(mx > 0, delta / np.where(mx > 0, mx, 1), 0)
    return {
        "R": float(r.mean()),
        "G": float(g.mean()),
        "B": float(b.mean()),
        "H": float(hue.mean()),
        "S": float(sat.mean()),
        "V": float(mx.mean() / 255),
    }


def tissue_fraction(rgb: np.ndarray, *, step: int = 3) -> float:
    """Fraction of a patch that is tissue (not near-white glass): coloured (max - min > 20) or
    darker than 200 on average; every `step`-th pixel."""
    px = rgb[::step, ::step].reshape(-1, 3).astype(np.int16)
    r, g, b = px[:, 0], px[:, 1], px[:, 2]
    mx = np.maximum(np.maximum(r, g), b)
    mn = np.minimum(np.minimum(r, g), b)
    return float(((mx - mn > 20) | (r + g + b < 600)).mean())


def colour_separability(
    slides: list[SynthSlide],
    *,
    patch_size: int = 300,
    stride: int | None = None,
    min_tissue: float = 0.5,
) -> dict:
    """How well a single threshold on a 300 px patch's mean colour separates tumor from
    non-tumor patches: the best balanced accuracy per feature (R, G, B, H, S, V).

    Patches on a regular grid (level 0, read with OpenSlide) with at least `min_tissue`
    tissue; tumor = at least half the patch in the mask TIFF, non-tumor = none of it.
    """
    import openslide

    stride = stride or patch_size
    feats: list[dict[str, float]] = []
    labels: list[int] = []
    for s in slides:
        slide = openslide.OpenSlide(str(s.path))
        mask = openslide.OpenSlide(str(s.mask)) if s.mask is not None else None
        w, h = slide.dimensions
        whole = w * h <= 64e6  # small slides: one read, then slice
        img = np.asarray(slide.read_region((0, 0), 0, (w, h)))[..., :3] if whole else None
        gt = None
        if whole and mask is not None:
            gt = np.asarray(mask.read_region((0, 0), 0, (w, h)))[..., 0]
        for y in range(0, h - patch_size + 1, stride):
            for x in range(0, w - patch_size + 1, stride):
                if img is not None:
                    rgb = img[y : y + patch_size, x : x + patch_size]
                else:
                    rgb = np.asarray(
                        slide.read_region((x, y), 0, (patch_size, patch_size))
                    )[..., :3]
                if tissue_fraction(rgb) < min_tissue:
                    continue
                frac = 0.0
                if gt is not None:
                    frac = float((gt[y : y + patch_size, x : x + patch_size] > 127).mean())
                elif mask is not None:
                    m = np.asarray(mask.read_region((x, y), 0, (patch_size, patch_size)))[..., 0]
                    frac = float((m > 127).mean())
                if 0 < frac < 0.5:
                    continue
                feats.append(patch_colour_features(rgb))
                labels.append(int(frac >= 0.5))
        slide.close()
        if mask is not None:
            mask.close()
    y = np.asarray(labels)
    result = {
        f: _best_balanced_accuracy(np.asarray([d[f] for d in feats]), y)
        for f in COLOUR_FEATURES
    }
    return {
        "balanced_accuracy": result,
        "best": max(result.values()),
        "n_tumor": int(y.sum()),
        "n_non_tumor": int((1 - y).sum()),
    }
