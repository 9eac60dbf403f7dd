"""Procedural building blocks of the synthetic H&E slides: hash-based value noise (evaluate at any
level-0 point, no state, same value whatever order tiles are made in), bilinear upsampling of
coarse fields, an even-odd polygon rasterizer on a pixel grid, and nucleus sprites.

All coordinates are level-0 pixels unless a name says otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

Sprite = tuple[np.ndarray, np.ndarray]  # a nucleus: (hematoxylin density, occupancy)


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on a uint64 array (wrapping arithmetic)."""
    h = h ^ (h >> np.uint64(30))
    h = h * np.uint64(0xBF58476D1CE4E5B9)
    h = h ^ (h >> np.uint64(27))
    h = h * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


def hash_uniform(ix: np.ndarray, iy: np.ndarray, key: int) -> np.ndarray:
    """A uniform [0, 1) float64 per integer lattice point (ix, iy), fixed by `key`."""
    ix = np.asarray(ix, dtype=np.int64).astype(np.uint64)
    iy = np.asarray(iy, dtype=np.int64).astype(np.uint64)
    h = _mix(ix * np.uint64(0x9E3779B97F4A7C15) + np.uint64(key & 0xFFFFFFFFFFFFFFFF))
    h = _mix(h ^ (iy * np.uint64(0xC2B2AE3D27D4EB4F)))
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


_TABLE = 256
_tables: dict[int, np.ndarray] = {}


def _lattice(key: int) -> np.ndarray:
    """A (256, 256) table of uniform lattice values for `key`, padded by one row and column
    so that corner (i+1, j+1) lookups need no wrap."""
    table = _tables.get(key)
    if table is None:
        if len(_tables) > 256:
            _tables.clear()
        ix, iy = np.meshgrid(np.arange(_TABLE), np.arange(_TABLE))
        base = hash_uniform(ix, iy, key)
        table = np.pad(base, ((0, 1), (0, 1)), mode="wrap")
        _tables[key] = table
    return table


def value_noise(x: np.ndarray, y: np.ndarray, *, scale: float, key: int) -> np.ndarray:
    """Smooth value noise in [0, 1] with feature size `scale` (level-0 px) at points (x, y).

    Lattice values come from a 256 x 256 table per key (hash-filled), so the pattern repeats
    every 256 * scale px: far beyond any slide for the scales used here."""
    u = np.asarray(x, dtype=np.float64) / scale
    v = np.asarray(y, dtype=np.float64) / scale
    iu, iv = np.floor(u), np.floor(v)
    fu, fv = u - iu, v - iv
    fu = fu * fu * (3 - 2 * fu)
    fv = fv * fv * (3 - 2 * fv)
    i = iu.astype(np.int64) & (_TABLE - 1)
    j = iv.astype(np.int64) & (_TABLE - 1)
    t = _lattice(key)
    a = t[j, i]
    b = t[j, i + 1]
    c = t[j + 1, i]
    d = t[j + 1, i + 1]
    return (a + (b - a) * fu) * (1 - fv) + (c + (d - c) * fu) * fv


def fractal_noise(
    x: np.ndarray, y: np.ndarray, *, scale: float, key: int, octaves: int = 3
) -> np.ndarray:
    """Sum of `octaves` value-noise layers (each half the size, half the weight), in [0, 1]."""
    total = np.zeros(np.broadcast(np.asarray(x), np.asarray(y)).shape)
    weight = 0.0
    for o in range(octaves):
        w = 0.5**o
        total += w * value_noise(x, y, scale=scale / 2**o, key=key + 7919 * o)
        weight += w
    return total / weight


class Upsampler:
    """Bilinear upsampling of fields sampled every `step` px (sample k at pixel coordinate
    k * step) onto the `size` x `size` pixel centres of a tile. Elementwise (no BLAS), so the
    result is bit-identical on every machine and thread count."""

    def __init__(self, size: int, step: int) -> None:
        n_in = size // step + 1
        pos = (np.arange(size) + 0.5) / step
        self.k0 = np.clip(np.floor(pos).astype(np.intp), 0, n_in - 2)
        self.k1 = self.k0 + 1
        f = np.clip(pos - self.k0, 0.0, 1.0).astype(np.float32)
        self.fx = f[None, :]
        self.gx = 1 - self.fx
        self.fy = f[:, None]
        self.gy = 1 - self.fy

    def __call__(self, coarse: np.ndarray) -> np.ndarray:
        """(..., n, n) float32 -> (..., size, size) float32."""
        c = np.asarray(coarse, np.float32)
        a = c[..., self.k0] * self.gx + c[..., self.k1] * self.fx
        return a[..., self.k0, :] * self.gy + a[..., self.k1, :] * self.fy


def rasterize_polygons(
    polygons: Sequence[np.ndarray],
    *,
    x0: float,
    y0: float,
    width: int,
    height: int,
    downsample: float = 1.0,
) -> np.ndarray:
    """Union of even-odd filled polygons ((k, 2) level-0 x, y vertices) sampled at the pixel
    centres of a (height, width) grid whose pixel (0, 0) covers level-0 [x0, x0+downsample)."""
    out = np.zeros((height, width), dtype=bool)
    if not len(polygons):
        return out
    ys = y0 + (np.arange(height) + 0.5) * downsample
    for poly in polygons:
        p = np.asarray(poly, dtype=np.float64)
        if len(p) < 3:
            continue
        xmin, ymin = p.min(axis=0)
        xmax, ymax = p.max(axis=0)
        if xmax < x0 or ymax < y0:
            continue
        if xmin > x0 + width * downsample or ymin > y0 + height * downsample:
            continue
        q = np.roll(p, -1, axis=0)
        x1, y1, x2, y2 = p[:, 0], p[:, 1], q[:, 0], q[:, 1]
        row_sel = np.nonzero((ys >= ymin) & (ys <= ymax))[0]
        if row_sel.size == 0:
            continue
        yr = ys[row_sel][:, None]
        crosses = (y1[None, :] <= yr) != (y2[None, :] <= yr)
        r_idx, e_idx = np.nonzero(crosses)
        if r_idx.size == 0:
            continue
        yy = yr[r_idx, 0]
        dy = y2[e_idx] - y1[e_idx]
        x_int = x1[e_idx] + (yy - y1[e_idx]) * (x2[e_idx] - x1[e_idx]) / dy
        col = np.floor((x_int - x0) / downsample - 0.5).astype(np.int64) + 1
        col = np.clip(col, 0, width)
        delta = np.zeros((row_sel.size, width + 1), np.int32)
        np.add.at(delta, (r_idx, col), 1)
        inside = (np.cumsum(delta[:, :width], axis=1) & 1).astype(bool)
        out[row_sel] |= inside
    return out


def lymphocyte_sprites(
    rng: np.random.Generator, *, radius_px: tuple[float, float], n: int = 32
) -> list[Sprite]:
    """Small, round, densely and evenly stained nuclei: (hematoxylin density, occupancy) pairs."""
    sprites = []
    for _ in range(n):
        r = rng.uniform(*radius_px)
        aspect = rng.uniform(1.0, 1.15)
        theta = rng.uniform(0, np.pi)
        half = int(np.ceil(r * aspect + 3))
        yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
        u = xx * np.cos(theta) + yy * np.sin(theta)
        v = -xx * np.sin(theta) + yy * np.cos(theta)
        rr = np.sqrt((u / aspect) ** 2 + v**2)
        occ = np.clip(r - rr + 0.5, 0, 1)
        occ = ndimage.gaussian_filter(occ, 0.7)
        grain = 1.0 + 0.12 * ndimage.gaussian_filter(rng.standard_normal(occ.shape), 0.8) * 3
        dens = occ * np.clip(grain, 0.7, 1.3)
        sprites.append((dens.astype(np.float32), occ.astype(np.float32)))
    return sprites


def carcinoma_sprites(
    rng: np.random.Generator,
    *,
    radius_px: tuple[float, float],
    mpp: float,
    n: int = 48,
    chromatin: float = 0.30,
) -> list[Sprite]:
    """Large, pleomorphic, vesicular nuclei: irregular outlines, a dark rim, pale clumped
    chromatin (base density `chromatin`) inside and one or two nucleoli."""
    sprites = []
    for _ in range(n):
        r = rng.uniform(*radius_px)
        aspect = rng.uniform(1.0, 1.6)
        theta = rng.uniform(0, np.pi)
        harm = [(k, rng.uniform(0.0, 0.09), rng.uniform(0, 2 * np.pi)) for k in (2, 3, 4, 5)]
        half = int(np.ceil(r * aspect * 1.35 + 4))
        yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
        u = xx * np.cos(theta) + yy * np.sin(theta)
        v = -xx * np.sin(theta) + yy * np.cos(theta)
        phi = np.arctan2(v, u)
        bound = r * (1 + sum(a * np.cos(k * phi + p) for k, a, p in harm))
        rr = np.sqrt((u / aspect) ** 2 + v**2)
        depth = bound - rr  # px inside the outline
        occ = np.clip(depth + 0.5, 0, 1)
        rim_w = max(1.0, 0.7 / mpp)
        rim = np.clip(1 - np.abs(depth - rim_w * 0.6) / rim_w, 0, 1)
        clumps = ndimage.gaussian_filter(rng.standard_normal(occ.shape), 0.6 / mpp)
        clumps = (clumps - clumps.mean()) / (clumps.std() + 1e-9)
        dens = occ * (chromatin + 0.08 * clumps) + 0.55 * rim * occ
        for _ in range(rng.integers(1, 3)):
            ang = rng.uniform(0, 2 * np.pi)
            off = rng.uniform(0, 0.4) * r
            cx, cy = off * np.cos(ang), off * np.sin(ang)
            nr = rng.uniform(0.6, 1.1) / mpp
            dn = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
            dens = np.maximum(dens, 0.95 * np.clip(nr - dn + 0.5, 0, 1) * occ)
        dens = ndimage.gaussian_filter(np.clip(dens, 0, None), 0.8)
        occ = ndimage.gaussian_filter(occ, 0.8)
        sprites.append((dens.astype(np.float32), occ.astype(np.float32)))
    return sprites


def nuclei_field(
    sprites: Sequence[Sprite],
    *,
    spacing_px: float,
    keep: float,
    jitter: float,
    rng: np.random.Generator,
    size: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """Hematoxylin density and occupancy maps (size x size) of a field of nuclei placed as the
    slides place them (jittered grid, each site kept with probability `keep`, later nuclei
    composited over earlier ones), cut away from the canvas borders."""
    margin = max(max(s[0].shape) for s in sprites)
    full = size + 2 * margin
    n = max(1, round(full / spacing_px))
    cell = full / n
    gy, gx = np.mgrid[0:n, 0:n]
    xs = (gx.ravel() + 0.5 + rng.uniform(-jitter, jitter, n * n)) * cell
    ys = (gy.ravel() + 0.5 + rng.uniform(-jitter, jitter, n * n)) * cell
    alive = rng.random(n * n) < keep
    pick = rng.integers(0, len(sprites), n * n)
    dens = np.zeros((full, full), np.float32)
    occ = np.zeros((full, full), np.float32)
    for x, y, k in zip(xs[alive], ys[alive], pick[alive], strict=True):
        sd, so = sprites[k]
        h = sd.shape[0] // 2
        x0, y0 = int(round(x)) - h, int(round(y)) - h
        if x0 < 0 or y0 < 0 or x0 + sd.shape[1] > full or y0 + sd.shape[0] > full:
            continue
        sl = (slice(y0, y0 + sd.shape[0]), slice(x0, x0 + sd.shape[1]))
        dens[sl] = dens[sl] * (1 - so) + sd
        np.maximum(occ[sl], so, out=occ[sl])
    inner = (slice(margin, margin + size), slice(margin, margin + size))
    return dens[inner], occ[inner]
