"""The plan of one default-world slide: `SlidePlan` draws the small things once from the seed
(stain, tissue sections, lesion polygons) and answers, at any level-0 point, the fields a tile is
painted from (tissue depth, lymphoid density, stain variation, which lesion). Painting is in
render.py, the per-slide textures and lesion colours in stain.py.

Morphology carries the label, colour does not: lymphoid tissue is packed with small (~7 um),
round, dark lymphocyte nuclei; metastatic carcinoma has large (10-16 um), pale, vesicular,
pleomorphic nuclei with nucleoli, in cohesive nests split by thin septa. The mean colour of the
two is close, and the stain varies per slide (and slowly within a slide) by more than that.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property, lru_cache
from typing import Any

import numpy as np

from lymph.data.synth import render, stain
from lymph.data.synth import texture as tx_
from lymph.data.synth.config import (
    CAPSULE_UM,
    CARCINOMA_RADIUS_UM,
    EDGE_BLUR_UM,
    EOSIN_OD,
    HEMATOXYLIN_OD,
    ITC_UM,
    MACRO_UM,
    TILE,
)
from lymph.data.synth.texture import Sprite

Nuclei = tuple[np.ndarray, ...]  # per nucleus: x, y, kind, sprite, strength, opacity[, blur]


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


def od3(v: np.ndarray) -> tuple[float, float, float]:
    """An optical-density vector (R, G, B) as plain floats (for Stain and synth.json)."""
    return float(v[0]), float(v[1]), float(v[2])


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


def _points_in_polygons(px: np.ndarray, py: np.ndarray,
                        polygons: Sequence[np.ndarray]) -> np.ndarray:
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


def draw_holes(rng: np.random.Generator, cx: float, cy: float, radius: float, *, px: float,
               size: tuple[float, float], offset: tuple[float, float]) -> list[np.ndarray]:
    """The `_2` exclusion holes of a lesion: none under 150 um of radius, else 1-2 (60% of
    lesions), of radius `size` and centre `offset` times the lesion's (level-0 px)."""
    holes: list[np.ndarray] = []
    if not (radius > 150 * px and rng.random() < 0.6):
        return holes
    for j in range(int(rng.integers(1, 3))):
        hr = radius * rng.uniform(*size)
        hang = rng.uniform(0, 2 * np.pi) + j * np.pi
        off = radius * rng.uniform(*offset)
        holes.append(
            _irregular_polygon(
                rng, cx + off * np.cos(hang), cy + off * np.sin(hang), hr, roughness=0.7,
            )
        )
    return holes


def make_lesion(index: int, points: np.ndarray, holes: Sequence[np.ndarray], *, px: float,
                packing: float, match_density: float, lighten: float) -> Lesion:
    """Lesion `Annotation {index}`, its CAMELYON16 class (and group) from its diameter."""
    diameter_um = _diameter(points) / px
    kind = lesion_kind(diameter_um)
    return Lesion(
        name=f"Annotation {index}",
        kind=kind,
        group="_1" if kind == "ITC" else "_0",
        points=points,
        holes=tuple(holes),
        diameter_um=diameter_um,
        packing=packing,
        match_density=match_density,
        lighten=lighten,
    )


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
        self.jpeg_quality: int | None = None  # a world's scanning centre sets its own
        self.stain = self._draw_stain(rng)
        self.sections = self._draw_sections(rng)
        self.wobble_scale = 0.5 * min(min(sc.a, sc.b) for sc in self.sections)
        self.lesions: tuple[Lesion, ...] = (
            self._draw_lesions(rng) if status == "tumor" else ()
        )
        self.seed_parts = [seed, 1 if status == "tumor" else 2, index]
        # the widest sprite (carcinoma: r * aspect * 1.35 + 4 px) bounds how far a nucleus
        # centred in a neighbouring tile can reach into this one
        self.margin = int(math.ceil(CARCINOMA_RADIUS_UM[1] * self.px * 1.6 * 1.35 + 4)) + 2
        self.edge_px = EDGE_BLUR_UM * self.px
        self.fibre_angle = float(rng.uniform(0, np.pi))
        step = 16
        self.coarse_step = step
        self.coarse_n = TILE // step + 1
        self.up = tx_.Upsampler(TILE, step)
        st = self.stain
        self.h_vec = (st.density * st.h_scale * np.asarray(st.h_od)).astype(np.float32)
        self.e_vec = (st.density * st.e_scale * np.asarray(st.e_od)).astype(np.float32)
        self.n_tx = -(-width // TILE)
        self.n_ty = -(-height // TILE)
        self._lesion_boxes = [
            (les.points.min(axis=0), les.points.max(axis=0)) for les in self.lesions
        ]
        self._candidates = lru_cache(maxsize=4 * self.n_tx + 16)(self.tile_nuclei)
        self._background = lru_cache(maxsize=4 * self.n_tx + 16)(self._is_background)

    # ----------------------------------------------------------------- appearance (lazy)
    @cached_property
    def lymph_sprites(self) -> list[Sprite]:
        return stain.lymphocyte_sprites(self)

    @cached_property
    def carc_sprites(self) -> list[Sprite]:
        return stain.carcinoma_sprites(self, CARCINOMA_RADIUS_UM)

    @cached_property
    def looks(self) -> list[dict[str, float]]:
        """Per lesion: its cytoplasm stain and nuclear gain (stain.lesion_looks)."""
        return stain.lesion_looks(self)

    @cached_property
    def grain(self) -> np.ndarray:
        return stain.grain(self)

    @cached_property
    def textures(self) -> dict[str, np.ndarray]:
        return stain.textures(self)

    @cached_property
    def glass_od(self) -> np.ndarray:
        return stain.glass_od(self)

    @cached_property
    def glass(self) -> np.ndarray:
        return render.to_rgb(self, self.glass_od)

    # ----------------------------------------------------------------- plan (small, drawn once)
    def _draw_stain(self, rng: np.random.Generator) -> Stain:
        h = np.clip(HEMATOXYLIN_OD + rng.normal(0, 0.09, 3), 0.05, None)
        e = np.clip(EOSIN_OD + rng.normal(0, 0.09, 3), 0.02, None)
        h /= np.linalg.norm(h)
        e /= np.linalg.norm(e)
        return Stain(
            h_od=od3(h),
            e_od=od3(e),
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
            spot = self._place_lesion(rng, i, rng.uniform(lo, hi) * self.px, placed)
            if spot is None:
                continue
            placed.append(spot)
            cx, cy, radius = spot
            pts = _irregular_polygon(rng, cx, cy, radius)
            holes = draw_holes(rng, cx, cy, radius, px=self.px, size=(0.10, 0.2),
                               offset=(0.1, 0.3))
            packing = float(rng.uniform(0.75, 0.97))
            lesions.append(make_lesion(len(lesions), pts, holes, px=self.px, packing=packing,
                                       match_density=self._surrounding_density(pts, rng),
                                       lighten=0.0))
        return tuple(lesions)

    def _place_lesion(self, rng: np.random.Generator, i: int, radius_target: float,
                     placed: Sequence[tuple[float, float, float]]
                     ) -> tuple[float, float, float] | None:
        """Centre and radius of lesion i, clear of those `placed`; the first goes in the
        biggest section (every tumor slide has tumor)."""
        for _attempt in range(20):
            cx, cy, rc, sec = self.lesion_centre(rng, i, rc_max=0.62)
            minor = min(sec.a, sec.b)
            r_max = (0.8 - rc) * minor / 1.35
            radius = min(radius_target, r_max)
            if radius < 15 * self.px and i > 0:
                continue
            if any(math.hypot(cx - x, cy - y) < 1.4 * (radius + r) for x, y, r in placed):
                continue
            return cx, cy, radius
        return None

    def lesion_centre(self, rng: np.random.Generator, i: int,
                      rc_max: float) -> tuple[float, float, float, Section]:
        """A candidate centre (x, y) for lesion i, its relative distance rc from its section's
        middle, and the section: the biggest section and rc < 0.3 for the first lesion (every
        tumor slide has tumor), a random section and rc < `rc_max` for the others."""
        biggest = max(self.sections, key=lambda sc: min(sc.a, sc.b))
        sec = biggest if i == 0 else self.sections[int(rng.integers(len(self.sections)))]
        rc = rng.uniform(0, 0.3) if i == 0 else rng.uniform(0, rc_max)
        ang = rng.uniform(0, 2 * np.pi)
        ex, ey = rc * sec.a * np.cos(ang), rc * sec.b * np.sin(ang)
        ct, st = np.cos(sec.theta), np.sin(sec.theta)
        return sec.cx + ex * ct - ey * st, sec.cy + ex * st + ey * ct, rc, sec

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

    def candidates(self, tx: int, ty: int) -> Nuclei:
        """The nuclei whose centres fall in tile (tx, ty) (cached: a tile's neighbours need
        them too)."""
        return self._candidates(tx, ty)

    def tile_nuclei(self, tx: int, ty: int) -> Nuclei:
        return render.tile_nuclei(self, tx, ty)

    def near_lesion(self, x0: float, y0: float, size: float) -> bool:
        """True when a lesion's box comes within the margin of the square [x0, x0 + size)^2."""
        m = self.margin
        for lo, hi in self._lesion_boxes:
            if hi[0] >= x0 - m and hi[1] >= y0 - m and lo[0] <= x0 + size and lo[1] <= y0 + size:
                return True
        return False

    def render_tile(self, tx: int, ty: int) -> np.ndarray:
        """RGB uint8 (TILE, TILE, 3) of tile (tx, ty) at level 0."""
        return render.render_tile(self, tx, ty)

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

    def describe(self) -> dict[str, Any]:
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


