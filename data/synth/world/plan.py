"""The `camelyon` synthetic world: a lymph node as hard as a real one (`lymph synth --world
camelyon`). The default world (synth/plan.py) is untouched; this preset paints on top of it.

- Mimics that are never tumor: germinal centres (pale zone of large vesicular centroblasts and
  tingible-body macrophages inside a dark mantle of small lymphocytes), sinus histiocytosis
  (subcapsular and medullary sinuses holding large pale histiocytes in pink cytoplasm), vessels
  (lumens with red cells, lined by elongated endothelial nuclei, a pink wall), hilar fat (empty
  adipocyte rings) and a dense collagen capsule with fibroblasts.
- Hard tumor: extra isolated tumor cells and small clusters among lymphocytes, infiltrative borders
  (lymphocytes mixed into the lesion's rim), single-file (lobular) spread, tumor nuclei from 8 um
  (overlapping centroblasts and histiocytes) and outlines from a radial Fourier model fitted to
  real CAMELYON16 outlines (world/outlines.py).
- Artifacts: tissue folds (darker double layer), out-of-focus regions, pen marks, air bubbles.
- Centres: stain vectors, scanner sharpness and JPEG quality of one of three labs ("A", "B",
  "C"), chosen per world (`--centre`, or drawn from the seed) or per slide (`--centre mixed`).
- Patients: each tumor slide's carcinoma has its own grade (nuclear size, chromatin density).

Ground truth stays the exact lesion polygons: mimics are placed away from lesions and their cells
are never drawn inside a lesion. Rendering is in world/render.py, the knobs in
world/params.py.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any

import numpy as np

from lymph.data.errors import ConfigError
from lymph.data.synth import plan as sy
from lymph.data.synth import stain
from lymph.data.synth.plan import Nuclei, Sprite
from lymph.data.synth.world import mimics as mm
from lymph.data.synth.world import render as wr
from lymph.data.synth.world.outlines import OutlineModel, radial_outline
from lymph.data.synth.world.params import PRESETS, Centre, WorldParams, resolve_centre

WORLD_VERSION = 2  # 2: a grade (nuclear size, chromatin) per slide (calibration round c4)


@dataclass(frozen=True)
class LesionLook:
    """Extra, world-only facts about a lesion: growth pattern and its outline in polar form."""

    pattern: str  # nest | infiltrative | lobular | itc
    cx: float
    cy: float
    radii: tuple[float, ...]  # outline radius at angles 2 pi k / n (level-0 px)


class CamelyonPlan(sy.SlidePlan):
    """A SlidePlan of the camelyon world: the default plan's sections and fields, plus mimics,
    harder lesions, artifacts and a centre."""

    def __init__(self, *, params: WorldParams, centre: Centre, name: str, status: str,
                 width: int, height: int, mpp: float, seed: int, index: int) -> None:
        self.params = params
        self.centre = centre
        self.lesion_looks: list[LesionLook] = []
        super().__init__(name=name, status=status, width=width, height=height, mpp=mpp,
                         seed=seed, index=index)
        seed, code, index = self.seed_parts
        rng = np.random.default_rng([seed, code, index, 0xC4])
        self.gcs, self.vessels, self.fats = self._draw_mimics(rng)
        grade = np.random.default_rng([seed, code, index, 0x6D])  # its own stream: c3's draws stay
        self.grade_scale = float(grade.uniform(*params.grade_scale))
        self.chromatin = float(grade.uniform(*params.chromatin))
        self.blurs, self.folds, self.pens, self.bubbles = self._draw_artifacts(rng)
        self.sharp_px = centre.sharpness_um * self.px
        self.defocus_px = math.hypot(self.sharp_px, params.defocus_um * self.px)
        self.jpeg_quality = centre.quality
        self.margin = max(self.margin, wr.max_half(self) + 2)

    # ------------------------------------------------------------- plan (drawn once)
    def _draw_stain(self, rng: np.random.Generator) -> sy.Stain:
        c = self.centre
        h = np.clip(np.asarray(c.h_od) + rng.normal(0, 0.04, 3), 0.05, None)
        e = np.clip(np.asarray(c.e_od) + rng.normal(0, 0.04, 3), 0.02, None)
        h /= np.linalg.norm(h)
        e /= np.linalg.norm(e)
        return sy.Stain(
            h_od=sy.od3(h), e_od=sy.od3(e),
            h_scale=float(rng.uniform(*c.h_scale)), e_scale=float(rng.uniform(*c.e_scale)),
            white=float(rng.uniform(*c.white) * 255), bg_od=float(rng.uniform(0.015, 0.05)),
            density=float(rng.uniform(0.8, 1.2)),
        )

    def _place(self, rng: np.random.Generator, radius: float, *, depth_min: float,
               avoid: list[tuple[float, float, float]], rc_max: float = 0.85,
               tries: int = 30) -> tuple[float, float] | None:
        """A point in a random section at least `depth_min` deep, clear of `avoid` circles."""
        for _ in range(tries):
            sec = self.sections[int(rng.integers(len(self.sections)))]
            rc, ang = math.sqrt(rng.uniform(0, 1)) * rc_max, rng.uniform(0, 2 * np.pi)
            ex, ey = rc * sec.a * math.cos(ang), rc * sec.b * math.sin(ang)
            ct, st = math.cos(sec.theta), math.sin(sec.theta)
            x, y = sec.cx + ex * ct - ey * st, sec.cy + ex * st + ey * ct
            if float(self.tissue_depth(np.array([x]), np.array([y]))[0]) < depth_min:
                continue
            if any(math.hypot(x - ax, y - ay) < radius + ar for ax, ay, ar in avoid):
                continue
            return x, y
        return None

    def _lesion_circles(self) -> list[tuple[float, float, float]]:
        pad = 30 * self.px
        return [(lk.cx, lk.cy, max(lk.radii) + pad) for lk in self.lesion_looks]

    def _tissue_mm2(self) -> float:
        return sum(math.pi * s.a * s.b for s in self.sections) / (self.px * 1000) ** 2

    def _draw_mimics(self, rng: np.random.Generator) -> tuple[list[mm.Blob], ...]:
        p, px = self.params, self.px
        avoid = self._lesion_circles()
        gcs: list[mm.Blob] = []
        for _ in range(int(rng.poisson(p.gc_per_mm2 * self._tissue_mm2()))):
            r = rng.uniform(*p.gc_radius_um) * px
            at = self._place(rng, r * 1.3, depth_min=r * 1.15 + p.capsule_um * px, avoid=avoid,
                             tries=60)
            if at is not None:
                gcs.append(mm.Blob(*at, r, r * rng.uniform(0.7, 1.0), rng.uniform(0, np.pi)))
                avoid.append((*at, r * 1.3))
        vessels: list[mm.Blob] = []
        for _ in range(int(rng.poisson(p.vessels_per_mm2 * self._tissue_mm2()))):
            r = rng.uniform(*p.vessel_radius_um) * px
            wall = r * 1.25 + 4 * px
            at = self._place(rng, wall, depth_min=wall + p.capsule_um * px, avoid=avoid)
            if at is not None:
                vessels.append(mm.Blob(*at, r, r * rng.uniform(0.35, 1.0), rng.uniform(0, np.pi)))
                avoid.append((*at, wall))
        return gcs, vessels, self._draw_fat(rng, avoid)

    def _draw_fat(self, rng: np.random.Generator,
                  avoid: list[tuple[float, float, float]]) -> list[mm.Blob]:
        """Hilar fat: at most one lobule per section, on its edge, clear of lesions."""
        fats = []
        for sec in self.sections:
            if rng.random() >= self.params.fat_prob:
                continue
            r = min(sec.a, sec.b) * rng.uniform(0.2, 0.35)
            for _ in range(12):
                ang = rng.uniform(0, 2 * np.pi)
                ex, ey = 0.9 * sec.a * math.cos(ang), 0.9 * sec.b * math.sin(ang)
                ct, st = math.cos(sec.theta), math.sin(sec.theta)
                x, y = sec.cx + ex * ct - ey * st, sec.cy + ex * st + ey * ct
                if all(math.hypot(x - ax, y - ay) > r + ar for ax, ay, ar in avoid):
                    fats.append(mm.Blob(x, y, r, r * rng.uniform(0.6, 1.0), ang))
                    break
        return fats

    def _draw_artifacts(self, rng: np.random.Generator) -> tuple[
            list[mm.Blob], list[mm.Stroke], list[tuple[mm.Stroke, int]], list[mm.Blob]]:
        p, px = self.params, self.px
        blurs: list[mm.Blob] = []
        folds: list[mm.Stroke] = []
        for sec in self.sections:
            if rng.random() < p.blur_p:
                r = rng.uniform(100, 280) * px
                at = self._place(rng, 0, depth_min=0, avoid=[]) or (sec.cx, sec.cy)
                blurs.append(mm.Blob(*at, r, r * rng.uniform(0.6, 1.0), rng.uniform(0, np.pi)))
            if rng.random() < p.fold_p:
                start = self._place(rng, 0, depth_min=0, avoid=[], rc_max=0.9) or (sec.cx, sec.cy)
                folds.append(mm.random_stroke(rng, *start, length=1.2 * max(sec.a, sec.b),
                                              half_width=rng.uniform(8, 25) * px, bend=0.25))
        pens, bubbles = [], []
        if rng.random() < p.pen_p:
            sec = self.sections[int(rng.integers(len(self.sections)))]
            ang = rng.uniform(0, 2 * np.pi)
            x = sec.cx + 1.05 * sec.a * math.cos(ang)
            y = sec.cy + 1.05 * sec.b * math.sin(ang)
            pens.append((mm.random_stroke(rng, x, y, length=rng.uniform(300, 900) * px,
                                          half_width=rng.uniform(25, 60) * px, bend=0.35),
                         int(rng.integers(3))))
        if rng.random() < p.bubble_p:
            for _ in range(int(rng.integers(1, 3))):
                r = rng.uniform(50, 220) * px
                x, y = rng.uniform(0, self.width), rng.uniform(0, self.height)
                bubbles.append(mm.Blob(float(x), float(y), r, r * rng.uniform(0.85, 1.0), 0.0))
        return blurs, folds, pens, bubbles

    def _draw_lesions(self, rng: np.random.Generator) -> tuple[sy.Lesion, ...]:
        p = self.params
        lesions: list[sy.Lesion] = []
        n = 1 + min(int(rng.poisson(1.3)), 3)
        targets = ["Macro" if rng.random() < 0.5 else "Micro"] + [
            str(rng.choice(["Macro", "Micro", "ITC"], p=list(p.kind_p))) for _ in range(n - 1)
        ] + ["ITC"] * int(rng.poisson(p.extra_itc))
        for i, target in enumerate(targets):
            lo, hi = {"Macro": (1100, 2200), "Micro": (130, 800), "ITC": p.itc_radius_um}[target]
            spot = self._lesion_spot(rng, i, rng.uniform(lo, hi) * self.px)
            if spot is None:
                continue
            cx, cy, radius = spot
            lesions.append(self._make_lesion(rng, len(lesions), cx, cy, radius, target == "ITC"))
        return tuple(lesions)

    def _lesion_spot(self, rng: np.random.Generator, i: int,
                     radius_target: float) -> tuple[float, float, float] | None:
        """Centre and radius of lesion i (the first in the biggest section, near its middle)."""
        for _ in range(20):
            cx, cy, rc, sec = self.lesion_centre(rng, i, rc_max=0.7)
            radius = min(radius_target, (0.85 - rc) * min(sec.a, sec.b))
            if radius < 6 * self.px and i > 0:
                continue
            if any(math.hypot(cx - lk.cx, cy - lk.cy) < 1.2 * (radius + max(lk.radii))
                   for lk in self.lesion_looks):
                continue
            return float(cx), float(cy), float(radius)
        return None

    def _make_lesion(self, rng: np.random.Generator, k: int, cx: float, cy: float,
                     radius: float, itc: bool) -> sy.Lesion:
        p = self.params
        model = p.outline
        if itc:
            model = OutlineModel(sigma=model.sigma * 0.5, beta=model.beta, jitter=model.jitter)
        pts = radial_outline(rng, cx, cy, radius, model)
        holes = sy.draw_holes(rng, cx, cy, radius, px=self.px, size=(0.06, 0.12),
                              offset=(0.05, 0.2))
        pattern = "itc" if itc else str(rng.choice(["nest", "infiltrative", "lobular"],
                                                   p=list(p.pattern_p)))
        radii = np.hypot(pts[:, 0] - cx, pts[:, 1] - cy)
        self.lesion_looks.append(LesionLook(pattern, cx, cy, tuple(float(r) for r in radii)))
        return sy.make_lesion(
            k, pts, holes, px=self.px,
            packing=float(rng.uniform(0.55, 0.8) if itc else rng.uniform(0.7, 0.95)),
            match_density=self._surrounding_density(pts, rng),
            # non-tumor here includes pale mimics (fat, lumens, germinal centres, sinuses)
            lighten=0.0 if pattern == "lobular" else float(rng.uniform(*p.lighten)),
        )

    # ------------------------------------------------------------- textures (lazy)
    @cached_property
    def carc_sprites(self) -> list[Sprite]:
        lo, hi = self.params.carc_radius_um
        return stain.carcinoma_sprites(self, (lo * self.grade_scale, hi * self.grade_scale),
                                       chromatin=self.chromatin)

    @cached_property
    def sprite_libraries(self) -> list[wr.Library]:
        """Per nucleus kind (world/render.py KIND_NAMES): (sharp, out-of-focus) sprites."""
        return wr.sprite_libraries(self)

    @cached_property
    def focus_textures(self) -> wr.FocusTextures:
        return wr.focus_textures(self)

    def render_tile(self, tx: int, ty: int) -> np.ndarray:
        return wr.render_tile(self, tx, ty)

    def tile_nuclei(self, tx: int, ty: int) -> Nuclei:
        return wr.tile_nuclei(self, tx, ty)

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        px = self.px

        def blob(b: mm.Blob) -> dict[str, float]:
            return {"x": round(b.cx, 1), "y": round(b.cy, 1), "a_um": round(b.a / px, 1),
                    "b_um": round(b.b / px, 1)}

        for d, lk in zip(out["lesions"], self.lesion_looks, strict=True):
            d["pattern"] = lk.pattern
        out["world"] = {
            "name": "camelyon", "version": WORLD_VERSION, "centre": asdict(self.centre),
            "jpeg_quality": self.jpeg_quality,
            "grade": {"radius_scale": round(self.grade_scale, 4),
                      "chromatin": round(self.chromatin, 4)},
            "germinal_centres": [blob(b) for b in self.gcs],
            "vessels": [blob(b) for b in self.vessels],
            "fat": [blob(b) for b in self.fats],
            "out_of_focus": [blob(b) for b in self.blurs],
            "bubbles": [blob(b) for b in self.bubbles],
            "folds": [{"points": [list(map(float, q)) for q in f.points],
                       "half_width_um": round(f.half_width / px, 1)} for f in self.folds],
            "pen_marks": [{"points": [list(map(float, q)) for q in s.points],
                           "half_width_um": round(s.half_width / px, 1), "ink": int(ink)}
                          for s, ink in self.pens],
        }
        return out


def make_plan(world: str, centre: str, *, name: str, status: str, width: int, height: int,
              mpp: float, seed: int, index: int) -> sy.SlidePlan:
    """The plan of one slide in `world` ("default" or a preset name)."""
    if world == "default":
        return sy.SlidePlan(name=name, status=status, width=width, height=height, mpp=mpp,
                            seed=seed, index=index)
    if world not in PRESETS:
        raise ConfigError(f"world must be one of default, {', '.join(PRESETS)}; got {world!r}")
    return CamelyonPlan(params=PRESETS[world],
                        centre=resolve_centre(centre, seed, status=status, index=index), name=name,
                        status=status, width=width, height=height, mpp=mpp, seed=seed,
                        index=index)
