"""Structures of a real lymph node that are never tumor, and slide artifacts, for the
`camelyon` synthetic world (world/plan.py).

Sprites (hematoxylin density, occupancy) for the cells: germinal-centre centroblasts (large, pale,
vesicular, peripheral nucleoli), tingible-body macrophages (clear cytoplasm holding dark apoptotic
debris), sinus histiocytes (oval or kidney-shaped pale nuclei), endothelial and fibroblast nuclei
(elongated, drawn in orientation bins so they can line a lumen or follow collagen). Periodic
textures: red blood cells and adipocyte membranes. Point fields (evaluated at any level-0 x, y,
stateless): soft ellipses for germinal centres, vessels, fat, out-of-focus regions and bubbles;
distance to a polyline for pen marks and folds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from lymph.data.synth.texture import Sprite, hash_uniform

N_ANGLES = 8  # orientation bins of elongated nuclei


@dataclass(frozen=True)
class Blob:
    """A soft ellipse (level-0 px): germinal centre, vessel, fat lobule, blur region, bubble."""

    cx: float
    cy: float
    a: float
    b: float
    theta: float

    def radius(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Normalised elliptical radius (1 on the outline)."""
        dx, dy = np.asarray(x) - self.cx, np.asarray(y) - self.cy
        c, s = np.cos(self.theta), np.sin(self.theta)
        u = (dx * c + dy * s) / self.a
        v = (-dx * s + dy * c) / self.b
        return np.sqrt(u * u + v * v)

    def angle(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Direction of the outline's tangent through (x, y), in [0, pi)."""
        return (np.arctan2(np.asarray(y) - self.cy, np.asarray(x) - self.cx) + np.pi / 2) % np.pi

    def inside(self, x: np.ndarray, y: np.ndarray, *, soft: float) -> np.ndarray:
        """1 inside, 0 outside, a linear ramp `soft` (fraction of the radius) wide."""
        return np.clip((1 - self.radius(x, y)) / max(soft, 1e-6) + 0.5, 0, 1)

    def box(self) -> tuple[float, float, float, float]:
        r = max(self.a, self.b)
        return self.cx - r, self.cy - r, self.cx + r, self.cy + r


@dataclass(frozen=True)
class Stroke:
    """A polyline (level-0 px) of a given half width: a pen mark or a tissue fold."""

    points: tuple[tuple[float, float], ...]
    half_width: float

    def distance(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64)
        y = np.asarray(y, np.float64)
        best = np.full(np.broadcast(x, y).shape, np.inf)
        p = np.asarray(self.points, np.float64)
        for (ax, ay), (bx, by) in zip(p[:-1], p[1:], strict=True):
            dx, dy = bx - ax, by - ay
            t = np.clip(((x - ax) * dx + (y - ay) * dy) / max(dx * dx + dy * dy, 1e-9), 0, 1)
            best = np.minimum(best, np.hypot(x - ax - t * dx, y - ay - t * dy))
        return best

    def band(self, x: np.ndarray, y: np.ndarray, *, soft: float) -> np.ndarray:
        """1 within the half width, ramping to 0 over `soft` px."""
        return np.clip((self.half_width - self.distance(x, y)) / max(soft, 1e-6) + 0.5, 0, 1)

    def box(self) -> tuple[float, float, float, float]:
        p = np.asarray(self.points)
        w = self.half_width
        return p[:, 0].min() - w, p[:, 1].min() - w, p[:, 0].max() + w, p[:, 1].max() + w


def random_stroke(
    rng: np.random.Generator, x: float, y: float, *, length: float, half_width: float,
    bend: float = 0.4, n: int = 6,
) -> Stroke:
    """A gently bending polyline of `n` points starting near (x, y)."""
    ang = rng.uniform(0, 2 * np.pi)
    pts = [(x, y)]
    for _ in range(n - 1):
        ang += rng.normal(0, bend)
        x += np.cos(ang) * length / (n - 1)
        y += np.sin(ang) * length / (n - 1)
        pts.append((float(x), float(y)))
    return Stroke(points=tuple(pts), half_width=float(half_width))


def _blurred(sprites: list[Sprite], sigma: float) -> list[Sprite]:
    if sigma <= 0:
        return sprites
    pad = int(np.ceil(2.5 * sigma))
    out = []
    for d, o in sprites:
        d = ndimage.gaussian_filter(np.pad(d, pad), sigma)
        o = ndimage.gaussian_filter(np.pad(o, pad), sigma)
        out.append((d.astype(np.float32), o.astype(np.float32)))
    return out


def blur_library(sprites: list[Sprite], sigma_px: float) -> list[Sprite]:
    """The same sprites seen through a blur of `sigma_px` (scanner softness, defocus)."""
    return _blurred(sprites, sigma_px)


def _grid(half: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
    return xx, yy


def vesicular_sprites(
    rng: np.random.Generator, *, radius_px: tuple[float, float], mpp: float,
    aspect: tuple[float, float], rim: float, fill: float, nucleoli: tuple[int, int],
    peripheral: bool, kidney: float = 0.0, n: int = 24,
) -> list[Sprite]:
    """Pale nuclei with a darker membrane: centroblasts (round, nucleoli on the membrane) and
    histiocytes (oval or kidney-shaped, fine chromatin, no nucleolus)."""
    out = []
    for _ in range(n):
        r = rng.uniform(*radius_px)
        asp = rng.uniform(*aspect)
        theta = rng.uniform(0, np.pi)
        half = int(np.ceil(r * asp * 1.2 + 4))
        xx, yy = _grid(half)
        u = xx * np.cos(theta) + yy * np.sin(theta)
        v = -xx * np.sin(theta) + yy * np.cos(theta)
        phi = np.arctan2(v, u)
        wob = 1 + sum(rng.uniform(0, 0.04) * np.cos(k * phi + rng.uniform(0, 6.3)) for k in (2, 3))
        notch = 1 - kidney * np.clip(np.cos(phi - rng.uniform(0, 6.3)), 0, 1) ** 6
        depth = r * wob * notch - np.sqrt((u / asp) ** 2 + v**2)
        occ = np.clip(depth + 0.5, 0, 1)
        rim_w = max(1.0, 0.6 / mpp)
        ring = np.clip(1 - np.abs(depth - rim_w * 0.6) / rim_w, 0, 1)
        chrom = ndimage.gaussian_filter(rng.standard_normal(occ.shape), 0.5 / mpp)
        chrom = chrom / (chrom.std() + 1e-9)
        dens = occ * (fill + 0.09 * chrom) + rim * ring * occ
        for _ in range(int(rng.integers(nucleoli[0], nucleoli[1] + 1))):
            ang = rng.uniform(0, 2 * np.pi)
            off = (r - rim_w * 1.5) if peripheral else rng.uniform(0, 0.3) * r
            nr = rng.uniform(0.4, 0.8) / mpp
            dn = np.hypot(xx - off * np.cos(ang), yy - off * np.sin(ang))
            dens = np.maximum(dens, 0.85 * np.clip(nr - dn + 0.5, 0, 1) * occ)
        dens = ndimage.gaussian_filter(np.clip(dens, 0, None), 0.8)
        out.append((dens.astype(np.float32), ndimage.gaussian_filter(occ, 0.8).astype(np.float32)))
    return out


def elongated_sprites(
    rng: np.random.Generator, *, length_px: tuple[float, float], aspect: tuple[float, float],
    darkness: float, n_per_angle: int = 4,
) -> list[Sprite]:
    """Spindle nuclei in N_ANGLES orientation bins: sprite i has angle (i // n_per_angle) *
    pi / N_ANGLES (endothelium along a lumen, fibroblasts along collagen)."""
    out = []
    for a in range(N_ANGLES):
        theta = a * np.pi / N_ANGLES
        for _ in range(n_per_angle):
            r = rng.uniform(*length_px) / 2
            asp = rng.uniform(*aspect)
            half = int(np.ceil(r + 3))
            xx, yy = _grid(half)
            u = xx * np.cos(theta) + yy * np.sin(theta)
            v = -xx * np.sin(theta) + yy * np.cos(theta)
            rr = np.sqrt((u / r) ** 2 + (v * asp / r) ** 2) * r
            occ = ndimage.gaussian_filter(np.clip(r - rr + 0.5, 0, 1), 0.6)
            grain = 1 + 0.1 * ndimage.gaussian_filter(rng.standard_normal(occ.shape), 0.8)
            out.append(((occ * darkness * grain).astype(np.float32), occ.astype(np.float32)))
    return out


def tingible_body_sprites(
    rng: np.random.Generator, *, radius_px: tuple[float, float], mpp: float, n: int = 12
) -> list[Sprite]:
    """Tingible-body macrophages: a wide clear cytoplasm (occupancy 0.6, no hematoxylin) with a
    pale nucleus at one side and 3-8 dense round apoptotic bodies (1-3 um)."""
    out = []
    for _ in range(n):
        r = rng.uniform(*radius_px)
        half = int(np.ceil(r * 1.15 + 4))
        xx, yy = _grid(half)
        rr = np.hypot(xx, yy * rng.uniform(1.0, 1.25))
        cyto = np.clip(r - rr + 0.5, 0, 1)
        occ = 0.6 * cyto
        dens = np.zeros_like(occ)
        ang = rng.uniform(0, 2 * np.pi)
        nx, ny = 0.55 * r * np.cos(ang), 0.55 * r * np.sin(ang)
        nuc = np.clip(3.2 / mpp - np.hypot(xx - nx, yy - ny) + 0.5, 0, 1)
        dens += 0.35 * nuc
        occ = np.maximum(occ, nuc)
        for _ in range(int(rng.integers(3, 9))):
            d = rng.uniform(0, 0.6) * r
            a = rng.uniform(0, 2 * np.pi)
            br = rng.uniform(0.5, 1.5) / mpp
            body = np.clip(br - np.hypot(xx - d * np.cos(a), yy - d * np.sin(a)) + 0.5, 0, 1)
            dens = np.maximum(dens, 1.3 * body)
            occ = np.maximum(occ, body)
        out.append((ndimage.gaussian_filter(dens, 0.7).astype(np.float32),
                    ndimage.gaussian_filter(occ, 0.7).astype(np.float32)))
    return out


def rbc_texture(rng: np.random.Generator, *, size: int, radius_px: float) -> np.ndarray:
    """A periodic (size x size) field of packed red blood cells (eosin density 0-1): discs
    with a paler centre, as in a vessel lumen."""
    half = int(np.ceil(radius_px + 2))
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float32)
    d = np.hypot(xx, yy)
    disc = np.clip(radius_px - d + 0.5, 0, 1) * (1 - 0.35 * np.exp(-3 * (d / radius_px) ** 2))
    field = np.zeros((size + 2 * half + 2, size + 2 * half + 2), np.float32)
    n = int(size / (radius_px * 1.9))
    cell = size / n
    for gy in range(n):
        for gx in range(n):
            if rng.random() > 0.8:
                continue
            cx = int((gx + 0.5 + rng.uniform(-0.35, 0.35)) * cell)
            cy = int((gy + 0.5 + rng.uniform(-0.35, 0.35)) * cell)
            sl = (slice(cy, cy + 2 * half + 1), slice(cx, cx + 2 * half + 1))
            np.maximum(field[sl], disc, out=field[sl])
    # fold the margins back (periodic), then drop them
    core = field[half : half + size, half : half + size].copy()
    core[:half] = np.maximum(core[:half], field[half + size : 2 * half + size, half : half + size])
    core[:, :half] = np.maximum(core[:, :half],
                                field[half : half + size, half + size : 2 * half + size])
    core[-half:] = np.maximum(core[-half:], field[:half, half : half + size])
    core[:, -half:] = np.maximum(core[:, -half:], field[half : half + size, :half])
    return ndimage.gaussian_filter(core, 0.7, mode="wrap")


def adipocyte_membranes(x0: int, y0: int, size: int, *, cell_px: float, key: int,
                        width_px: float) -> np.ndarray:
    """Thin cell membranes of fat (0-1) on a (size, size) level-0 pixel window: the edges of a
    Worley (nearest-seed) tessellation with seeds hashed per lattice cell (stateless)."""
    ys = y0 + np.arange(size) + 0.5
    xs = x0 + np.arange(size) + 0.5
    X, Y = np.meshgrid(xs, ys)
    ix0, iy0 = np.floor(X / cell_px).astype(np.int64), np.floor(Y / cell_px).astype(np.int64)
    f1 = np.full(X.shape, np.inf)
    f2 = np.full(X.shape, np.inf)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            cx, cy = ix0 + dx, iy0 + dy
            sx = (cx + 0.15 + 0.7 * hash_uniform(cx, cy, key)) * cell_px
            sy = (cy + 0.15 + 0.7 * hash_uniform(cx, cy, key + 1)) * cell_px
            d = np.hypot(X - sx, Y - sy)
            f2 = np.minimum(f2, np.maximum(f1, d))
            f1 = np.minimum(f1, d)
    return np.clip(1 - (f2 - f1) / width_px, 0, 1).astype(np.float32)


def union(blobs: Sequence[Blob], x: np.ndarray, y: np.ndarray, *, soft: float) -> np.ndarray:
    """Max of `inside` over blobs (0 where none)."""
    out = np.zeros(np.broadcast(np.asarray(x), np.asarray(y)).shape)
    for b in blobs:
        out = np.maximum(out, b.inside(x, y, soft=soft))
    return out


def near(box: tuple[float, float, float, float], x0: float, y0: float, size: float,
         margin: float) -> bool:
    """True when a bounding box comes within `margin` of the square [x0, x0 + size)^2."""
    return not (box[2] < x0 - margin or box[3] < y0 - margin or box[0] > x0 + size + margin
                or box[1] > y0 + size + margin)
