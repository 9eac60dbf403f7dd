"""Lesion outlines whose shape statistics match real CAMELYON16 annotations.

A radial Fourier model: log r(phi) = sum_k a_k cos(k phi + p_k), with a_k ~ N(0, sigma k^-beta)
for k = 1..K, plus a small per-vertex jitter. The shape is star-shaped around its centre (so the
polygon never self-intersects) and its roughness is set by (sigma, beta). `fit_outline_model`
chooses (sigma, beta) on a grid so that the medians of perimeter^2 / (4 pi area) ("isoperimetric
ratio", 1 for a circle) and solidity (area / convex-hull area) match those of a set of real
outlines; `shape_stats` measures both and convexity (convex-hull perimeter / perimeter).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lymph.data.errors import ConfigError

N_HARMONICS = 24
N_VERTICES = 128


@dataclass(frozen=True)
class OutlineModel:
    """Roughness of generated outlines: log-radius Fourier amplitude `sigma` at k = 1, spectral
    slope `beta` (a_k ~ sigma k^-beta) and per-vertex jitter `jitter` (log-radius sd)."""

    sigma: float = 0.30
    beta: float = 0.9
    jitter: float = 0.02

    def __post_init__(self) -> None:
        if not 0 <= self.sigma <= 2:
            raise ConfigError(f"outline sigma must be in [0, 2], got {self.sigma}")
        if not 0 <= self.beta <= 4:
            raise ConfigError(f"outline beta must be in [0, 4], got {self.beta}")
        if not 0 <= self.jitter <= 0.5:
            raise ConfigError(f"outline jitter must be in [0, 0.5], got {self.jitter}")


def radial_outline(
    rng: np.random.Generator,
    cx: float,
    cy: float,
    radius: float,
    model: OutlineModel,
    *,
    n: int = N_VERTICES,
) -> np.ndarray:
    """A (n, 2) star-shaped polygon around (cx, cy) whose largest radius is `radius`. A fixed
    vertex count keeps the shape statistics independent of the size."""
    phi = np.arange(n) * (2 * np.pi / n)
    k = np.arange(1, N_HARMONICS + 1)
    amp = rng.standard_normal(N_HARMONICS) * model.sigma * k ** (-model.beta)
    phase = rng.uniform(0, 2 * np.pi, N_HARMONICS)
    logr = (amp[None, :] * np.cos(k[None, :] * phi[:, None] + phase[None, :])).sum(axis=1)
    logr += rng.normal(0, model.jitter, n)
    r = np.exp(logr - logr.max()) * radius
    return np.stack([cx + r * np.cos(phi), cy + r * np.sin(phi)], axis=1)


def _hull(points: np.ndarray) -> np.ndarray:
    """Convex hull (Andrew's monotone chain), counter-clockwise, no repeated end point."""
    pts = np.unique(np.asarray(points, np.float64), axis=0)
    if len(pts) < 3:
        return pts

    def half(seq: np.ndarray) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        for p in seq:
            while len(out) >= 2:
                a, b = out[-2], out[-1]
                if (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0]) > 0:
                    break
                out.pop()
            out.append(p)
        return out

    lower, upper = half(pts), half(pts[::-1])
    return np.array(lower[:-1] + upper[:-1])


def _area_perimeter(p: np.ndarray) -> tuple[float, float]:
    q = np.roll(p, -1, axis=0)
    area = abs(float((p[:, 0] * q[:, 1] - q[:, 0] * p[:, 1]).sum())) / 2
    return area, float(np.sqrt(((q - p) ** 2).sum(axis=1)).sum())


def shape_stats(points: np.ndarray) -> dict[str, float]:
    """isoperimetric ratio P^2 / (4 pi A), solidity A / A_hull, convexity P_hull / P, and the
    largest diameter (polygon units) of one closed polygon."""
    p = np.asarray(points, np.float64)
    if len(p) < 3:
        raise ValueError(f"a polygon needs >= 3 vertices, got {len(p)}")
    area, per = _area_perimeter(p)
    h_area, h_per = _area_perimeter(_hull(p))
    if area <= 0 or per <= 0:
        raise ValueError("degenerate polygon (zero area)")
    d = p[:, None, :] - p[None, :, :] if len(p) <= 2000 else None
    diam = float(np.sqrt((d**2).sum(-1)).max()) if d is not None else float(np.ptp(p, 0).max())
    return {
        "iso": per**2 / (4 * np.pi * area),
        "solidity": area / h_area,
        "convexity": h_per / per,
        "diameter": diam,
    }


def summarize(stats: Sequence[dict[str, float]]) -> dict[str, float]:
    """Median and quartiles of iso, solidity and convexity over a set of outlines."""
    out: dict[str, float] = {"n": float(len(stats))}
    for key in ("iso", "solidity", "convexity"):
        v = np.array([s[key] for s in stats])
        out[f"{key}_median"] = float(np.median(v))
        out[f"{key}_q25"] = float(np.quantile(v, 0.25))
        out[f"{key}_q75"] = float(np.quantile(v, 0.75))
    return out


def load_real_outlines(folder: str | Path, *, group: str = "positive") -> list[np.ndarray]:
    """Tumor outlines ((k, 2) level-0 vertices) from NCRF-style CAMELYON16 JSON files
    (``{"positive": [{"name", "vertices"}], "negative": [...]}``) in `folder`."""
    folder = Path(folder)
    files = sorted(folder.glob("*.json"))
    if not files:
        raise ConfigError(f"no *.json outlines in {folder}; point at the ncrf-camelyon16 folder")
    out = []
    for f in files:
        try:
            data = json.loads(f.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read outlines from {f}: {exc}") from exc
        for ann in data.get(group, []):
            pts = np.asarray(ann.get("vertices", []), np.float64)
            if pts.ndim == 2 and len(pts) >= 3:
                out.append(pts)
    return out


def model_stats(model: OutlineModel, *, n: int = 200, seed: int = 0) -> dict[str, float]:
    """Summary statistics of `n` outlines drawn from `model` (radius 400 px)."""
    rng = np.random.default_rng(seed)
    return summarize([shape_stats(radial_outline(rng, 0, 0, 400.0, model)) for _ in range(n)])


def fit_outline_model(
    target: dict[str, float], *, n: int = 60, seed: int = 0
) -> tuple[OutlineModel, dict[str, float]]:
    """(sigma, beta, jitter) on a grid whose median iso, solidity and convexity are closest
    (summed squared relative error) to `target`'s (a `summarize` result). Returns the model
    and its statistics."""
    keys = ("iso_median", "solidity_median", "convexity_median")
    best: tuple[float, OutlineModel, dict[str, float]] | None = None
    for sigma in (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6):
        for beta in (0.2, 0.5, 0.8, 1.1, 1.5):
            for jitter in (0.0, 0.02, 0.04, 0.06):
                m = OutlineModel(sigma=sigma, beta=beta, jitter=jitter)
                s = model_stats(m, n=n, seed=seed)
                err = sum(((s[k] - target[k]) / target[k]) ** 2 for k in keys)
                if best is None or err < best[0]:
                    best = (err, m, s)
    assert best is not None
    return best[1], best[2]
