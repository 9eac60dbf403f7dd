"""A synthetic CAMELYON16-like slide world: pyramidal H&E-like slides of lymph-node sections,
some with metastases, plus ASAP XML annotations, mask TIFFs and a reference.csv.

Every slide is described by a small `SlidePlan` (stain, tissue sections, lesion polygons, nucleus
sprites) drawn from the seed. Pixels are made tile by tile, and every tile depends only on the
plan and its own (tx, ty) position: the same seed gives the same bytes whatever the order, and
memory stays flat in the slide size (level 0 is streamed in tile rows to
`lymph.pipeline.pyramid.write_pyramidal_tiff`).

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
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from lymph.data import texture as tx_
from lymph.pipeline.errors import ConfigError

TILE = 256
FORMATS = ("tiff", "svs")
MIN_SIZE = TILE
MAX_SIZE = 1_000_000
SYNTH_VERSION = 1

# Morphology, in microns (converted with mpp).
LYMPHOCYTE_RADIUS_UM = (3.0, 3.8)  # ~7 um diameter
LYMPHOCYTE_SPACING_UM = 8.6
CARCINOMA_RADIUS_UM = (5.0, 8.0)  # 10-16 um diameter
CARCINOMA_SPACING_UM = 15.0
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

    def __post_init__(self) -> None:
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
        self.lymph_sprites = tx_.lymphocyte_sprites(
            rng, radius_px=tuple(r * self.px for r in LYMPHOCYTE_RADIUS_UM), n=32
        )
        self.carc_sprites = tx_.carcinoma_sprites(
            rng, radius_px=tuple(r * self.px for r in CARCINOMA_RADIUS_UM), mpp=mpp, n=48
        )
        self.margin = int(
            max(max(s[0].shape) for s in self.lymph_sprites + self.carc_sprites) // 2 + 2
        )
        grain = rng.standard_normal((512, 512))
        from scipy import ndimage

        grain = ndimage.gaussian_filter(grain, 1.2, mode="wrap")
        self.grain = (grain / grain.std()).astype(np.float32)
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
        # bare glass: faint, slightly uneven background (optical density) and its RGB
        self.glass_od = (st.bg_od + 0.006 * self.grain[..., None]).astype(np.float32) * np.ones(
            3, np.float32
        )
        self.glass = self._to_rgb(self.glass_od)
        self.n_tx = -(-width // TILE)
        self.n_ty = -(-height // TILE)
        self._lesion_boxes = [
            (les.points.min(axis=0), les.points.max(axis=0)) for les in self.lesions
        ]
        self._candidates = lru_cache(maxsize=4 * self.n_tx + 16)(self._tile_nuclei)
        self._background = lru_cache(maxsize=4 * self.n_tx + 16)(self._is_background)

    # ----------------------------------------------------------------- plan (small, drawn once)
    def _draw_stain(self, rng: np.random.Generator) -> Stain:
        h = np.clip(HEMATOXYLIN_OD + rng.normal(0, 0.07, 3), 0.05, None)
        e = np.clip(EOSIN_OD + rng.normal(0, 0.07, 3), 0.02, None)
        h /= np.linalg.norm(h)
        e /= np.linalg.norm(e)
        return Stain(
            h_od=tuple(float(v) for v in h),
            e_od=tuple(float(v) for v in e),
            h_scale=float(rng.uniform(0.65, 1.35)),
            e_scale=float(rng.uniform(0.55, 1.45)),
            white=float(rng.uniform(0.90, 1.0) * 255),
            bg_od=float(rng.uniform(0.015, 0.05)),
            density=float(rng.uniform(0.8, 1.2)),
        )

    def _draw_sections(self, rng: np.random.Generator) -> tuple[Section, ...]:
        w, h = self.width, self.height
        n = int(rng.integers(1, 4))
        horizontal = w >= h
        cells = []
        for i in range(n):
            if horizontal:
                cells.append((w * i / n, 0.0, w / n, float(h)))
            else:
                cells.append((0.0, h * i / n, float(w), h / n))
        out = []
        for i, (x, y, cw, ch) in enumerate(cells):
            a = cw * rng.uniform(0.30, 0.42)
            b = ch * rng.uniform(0.30, 0.42)
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
                rc = rng.uniform(0, 0.3) if i == 0 else rng.uniform(0, 0.55)
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
                )
            )
        return tuple(lesions)

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

    def tumor_at(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64).ravel()
        y = np.asarray(y, np.float64).ravel()
        out = np.zeros(x.shape, bool)
        for les, (lo, hi) in zip(self.lesions, self._lesion_boxes, strict=True):
            sel = (x >= lo[0]) & (x <= hi[0]) & (y >= lo[1]) & (y <= hi[1])
            if not sel.any():
                continue
            ins = _points_in_polygons(x[sel], y[sel], [les.points])
            if les.holes:
                ins &= ~_points_in_polygons(x[sel], y[sel], les.holes)
            out[np.nonzero(sel)[0][ins]] = True
        return out

    def tumor_mask(
        self, x0: float, y0: float, width: int, height: int, downsample: float = 1.0
    ) -> np.ndarray:
        """Ground truth (bool) on a pixel grid: tumor polygons minus their holes."""
        out = np.zeros((height, width), bool)
        x1, y1 = x0 + width * downsample, y0 + height * downsample
        for les, (lo, hi) in zip(self.lesions, self._lesion_boxes, strict=True):
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
        sprite index, strength. Depends only on the plan and (tx, ty)."""
        e = np.zeros(0)
        empty = (e, e, e.astype(np.int8), e.astype(np.int64), e)
        if self.is_background(tx, ty):
            return empty
        rng = np.random.default_rng([self.key & 0xFFFFFFFF, self.key >> 32, tx, ty, 1])
        x0, y0 = tx * TILE, ty * TILE
        xs, ys, kinds, idx, strength = [], [], [], [], []
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
            tumor = self.tumor_at(px, py) if self.lesions else np.zeros(px.shape, bool)
            if kind == 0:
                dens = self.lymph_density(px, py, depth)
                keep = alive & ~tumor & (u < dens * self.stain.density)
                sprite = sprite % len(self.lymph_sprites)
            else:
                nest = tx_.fractal_noise(px, py, scale=70 * self.px, key=self.key + 23, octaves=2)
                septum = np.abs(nest - 0.5) < 0.05
                keep = alive & tumor & ~septum & (u < 0.93)
                sprite = sprite % len(self.carc_sprites)
            xs.append(px[keep])
            ys.append(py[keep])
            kinds.append(np.full(int(keep.sum()), kind, np.int8))
            idx.append(sprite[keep])
            strength.append(st[keep] * np.clip(depth[keep] / self.edge_px + 0.5, 0, 1))
        if not xs:
            return empty
        return (
            np.concatenate(xs),
            np.concatenate(ys),
            np.concatenate(kinds),
            np.concatenate(idx),
            np.concatenate(strength),
        )

    def _near_lesion(self, x0: float, y0: float, size: float) -> bool:
        m = self.margin
        for lo, hi in self._lesion_boxes:
            if hi[0] >= x0 - m and hi[1] >= y0 - m and lo[0] <= x0 + size and lo[1] <= y0 + size:
                return True
        return False

    def _grain(self, tx: int, ty: int) -> tuple[int, int]:
        g = (tx * 7919 + ty * 104729) & 0xFFFF
        return (g * 37) % 256, (g * 91) % 256

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
        rgb = np.exp(od * np.float32(-math.log(10))) * np.float32(self.stain.white)
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
        grain = self.grain[gy0 : gy0 + TILE, gx0 : gx0 + TILE]
        k = self.coarse_n
        cgx = x0 + np.arange(k, dtype=np.float64) * self.coarse_step
        cgy = y0 + np.arange(k, dtype=np.float64) * self.coarse_step
        CX, CY = np.meshgrid(cgx, cgy)
        px = self.px
        depth_c = self.tissue_depth(CX, CY)
        coarse = np.stack(
            [
                np.clip(depth_c / self.edge_px + 0.5, 0, 1),
                self.lymph_density(CX, CY, depth_c),
                1 + 0.3 * (tx_.value_noise(CX, CY, scale=3000 * px, key=self.key + 31) - 0.5),
                1 + 0.3 * (tx_.value_noise(CX, CY, scale=2500 * px, key=self.key + 37) - 0.5),
                tx_.fractal_noise(CX, CY, scale=120 * px, key=self.key + 43, octaves=2),
                tx_.value_noise(CX, CY, scale=25 * px, key=self.key + 47),
            ]
        ).astype(np.float32)
        alpha, dens, var_h, var_e, warp, broken = self.up(coarse)
        broken = np.clip(broken * 2.2 - 0.6, 0, 1)
        yy = (y0 + np.arange(TILE, dtype=np.float32))[:, None]
        xx = (x0 + np.arange(TILE, dtype=np.float32))[None, :]
        phase = (xx * self.fibre_ct + yy * self.fibre_st) + 14 * warp  # wavy collagen fibres
        fib = 0.5 + 0.5 * np.cos(np.float32(2 * np.pi) * phase)
        fib *= fib
        fib *= fib
        fib *= broken
        stroma_e = 0.16 + 0.30 * fib + 0.03 * grain
        lymph_e = 0.12 + 0.05 * fib + 0.03 * grain
        emap = (1 - dens) * stroma_e + dens * lymph_e
        hmap = 0.04 + 0.06 * dens + 0.015 * grain
        if self.lesions and self._near_lesion(x0, y0, TILE):
            tum = self.tumor_mask(x0, y0, TILE, TILE)
            if tum.any():
                nest_c = tx_.fractal_noise(CX, CY, scale=70 * px, key=self.key + 23, octaves=2)
                nest = self.up(nest_c)
                sept = np.clip(1 - np.abs(nest - 0.5) / 0.05, 0, 1)
                te = (1 - sept) * (0.22 + 0.03 * grain) + sept * stroma_e
                th = (1 - sept) * (0.10 + 0.02 * grain) + sept * 0.05
                emap = np.where(tum, te, emap)
                hmap = np.where(tum, th, hmap)
        nuc_h, occ = self._stamp_nuclei(tx, ty)
        hmap = (hmap * (1 - occ) + nuc_h) * alpha * var_h
        emap = emap * (1 - 0.8 * occ) * alpha * var_e
        st = self.stain
        od = (
            self.glass_od[gy0 : gy0 + TILE, gx0 : gx0 + TILE]
            + hmap[..., None] * self.h_vec
            + emap[..., None] * self.e_vec
        )
        if dust is not None:
            od += dust[..., None] * np.float32(0.33)
        del st
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
                px, py, kinds, sidx, strength = self._candidates(nx, ny)
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
                    gain = 0.85 if kinds[j] == 0 else 1.1
                    np.maximum(nuc_h[sl], sd[ss] * np.float32(gain * strength[j]), out=nuc_h[sl])
                    np.maximum(occ[sl], so[ss] * np.float32(strength[j]), out=occ[sl])
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
                }
                for les in self.lesions
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
) -> list[SynthSlide]:
    """Write `n_tumor` tumor and `n_normal` normal synthetic slides into `out`.

    Files: ``tumor_001.tif`` (+ ``tumor_001.xml``, ``tumor_001_mask.tif``), ``normal_001.tif``
    (``.svs`` for fmt="svs"), ``reference.csv`` (``tumor_001,Tumor,Macro`` / ``normal_001,Normal,``)
    and ``synth.json`` (every setting, the seed and what each slide holds).
    """
    from lymph.pipeline.pyramid import write_pyramidal_tiff
    from tqdm import tqdm

    cfg = SynthConfig(
        n_tumor=n_tumor,
        n_normal=n_normal,
        size=(int(size[0]), int(size[1])),
        seed=seed,
        fmt=fmt,
        mpp=mpp,
        quality=quality,
        workers=workers,
    )
    out = Path(out)
    _check_out(out)
    width, height = cfg.size
    ext = ".svs" if cfg.fmt == "svs" else ".tif"
    jobs = [("tumor", i) for i in range(1, cfg.n_tumor + 1)] + [
        ("normal", i) for i in range(1, cfg.n_normal + 1)
    ]
    rows_per_slide = -(-height // TILE) * TILE
    bar = tqdm(
        total=len(jobs) * height,
        unit="row",
        unit_scale=True,
        desc="synth",
        disable=not progress,
    )
    del rows_per_slide
    slides: list[SynthSlide] = []
    plans = []
    try:
        for status, i in jobs:
            name = f"{status}_{i:03d}"
            plan = SlidePlan(
                name=name,
                status=status,
                width=width,
                height=height,
                mpp=cfg.mpp,
                seed=cfg.seed,
                index=i,
            )
            plans.append(plan)
            bar.set_postfix_str(name)

            def tick(n: int) -> None:
                bar.update(n)
                if on_row is not None:
                    on_row(n)

            path = out / f"{name}{ext}"
            write_pyramidal_tiff(
                path,
                plan.image_row,
                width=width,
                height=height,
                compression="jpeg",
                quality=cfg.quality,
                mpp=cfg.mpp,
                layout="aperio" if cfg.fmt == "svs" else "generic",
                factor=4 if cfg.fmt == "svs" else 2,
                aperio_fields={"AppMag": round(10 / cfg.mpp), "Filename": name},
                label=_label_image(name) if cfg.fmt == "svs" else None,
                workers=cfg.workers,
                progress=tick,
            )
            xml = mask = None
            if status == "tumor":
                xml = out / f"{name}.xml"
                write_asap_xml(xml, plan.lesions)
                mask = out / f"{name}_mask.tif"
                write_pyramidal_tiff(
                    mask,
                    plan.mask_row,
                    width=width,
                    height=height,
                    channels=1,
                    compression="deflate",
                    mpp=cfg.mpp,
                    downsample="majority",
                    workers=cfg.workers,
                )
            largest = ""
            if plan.lesions:
                order = {"ITC": 0, "Micro": 1, "Macro": 2}
                largest = max((les.kind for les in plan.lesions), key=order.__getitem__)
            slides.append(
                SynthSlide(
                    name=name,
                    path=path,
                    status=status,
                    xml=xml,
                    mask=mask,
                    lesions=plan.lesions,
                    dimensions=(width, height),
                    largest=largest,
                )
            )
    finally:
        bar.close()
    with open(out / "reference.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        for s in slides:
            writer.writerow([s.name, "Tumor" if s.status == "tumor" else "Normal", s.largest])
    manifest = {
        "synth_version": SYNTH_VERSION,
        "settings": {**asdict(cfg), "size": list(cfg.size), "tile": TILE},
        "slides": [p.describe() for p in plans],
    }
    (out / "synth.json").write_text(json.dumps(manifest, indent=1))
    return slides
