"""Inferred pixels per tissue pixel of predict's tiling, full tiles against trimmed tiles
(issue 23's figure: <= 1.3), on synthetic slides' tissue masks. Geometry only: no model runs.

    .venv/bin/python bench/bench_tiling.py [--seeds 0,1,2] [--levels 0,1,2]

For each slide size (the study's 8,000 x 6,000 slides and CAMELYON16-size 100,000 x 100,000
ones) and seed, a camelyon-world slide plan's tissue (its sections' analytic depth > 0,
evaluated at the centre of each pixel of a 2,048 px thumbnail, the size predict's thumbnail
has) is the mask; the tiling is predict's default for a window-independent model claiming 300
px patches (``fitted_tile`` up to 1,024 px, margin 4.5%, multiple 16), the windows those of
``tissue_windows`` on the mask grown by ``TISSUE_MARGIN_THUMB``, as ``plan_slide`` picks them.
Tissue = the ungrown mask's area. Inferred = every window's pixels (full: window^2 each;
trimmed: ``trim_tiles``' rectangles). The real thumbnail's mask (stain, pen marks, bubbles,
Otsu) differs at its edges from the analytic one; the ratio's scale does not.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from lymph.data.synth import make_plan  # noqa: E402
from lymph.data.tissue import dilate  # noqa: E402
from lymph.model.predict.config import THUMB_SIZE, TISSUE_MARGIN_THUMB  # noqa: E402
from lymph.model.predict.grid import (  # noqa: E402
    fitted_tile,
    plan_grid,
    tissue_windows,
    trim_tiles,
)

SIZES = ((8000, 6000), (100_000, 100_000))


def thumb_mask(size: tuple[int, int], seed: int) -> tuple[np.ndarray, float]:
    """The analytic tissue mask of one slide plan at predict's thumbnail size."""
    w, h = size
    plan = make_plan("camelyon", "mixed", name="t", status="tumor", width=w, height=h,
                     mpp=0.243, seed=seed, index=1)
    ds = max(w, h) / THUMB_SIZE
    tw, th = round(w / ds), round(h / ds)
    ys, xs = (np.arange(th) + 0.5) * ds, (np.arange(tw) + 0.5) * ds
    mask = np.zeros((th, tw), bool)
    for r0 in range(0, th, 256):  # bounded temporaries
        yy, xx = np.meshgrid(ys[r0:r0 + 256], xs, indexing="ij")
        mask[r0:r0 + 256] = plan.tissue_depth(xx, yy) > 0
    return mask, ds


def one(size: tuple[int, int], seed: int, level: int) -> dict[str, float]:
    mask, ds = thumb_mask(size, seed)
    lds = 2.0**level
    dims = (int(size[0] / lds), int(size[1] / lds))
    window = fitted_tile(dims, 300)
    grid = plan_grid(dims, lds, level=level, patch_size=window, multiple=16, window=window,
                     overlap="margin")
    origins = tissue_windows(grid, dilate(mask, TISSUE_MARGIN_THUMB), ds)
    rects = trim_tiles(grid, origins, dilate(mask, TISSUE_MARGIN_THUMB), ds, multiple=16)
    tissue = float(mask.sum()) * ds * ds
    full = len(origins) * grid.window**2 * lds * lds
    trimmed = sum(w * h for _x, _y, w, h in rects) * lds * lds
    return {"tiles": len(origins), "window": grid.window, "margin": grid.margin,
            "tissue_mpx": tissue / 1e6, "full": full / tissue, "trimmed": trimmed / tissue,
            "tissue_frac": float(mask.mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--levels", default="0,1,2")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    levels = [int(v) for v in args.levels.split(",")]
    print("| slide | level | seed | tissue % of slide | tiles | window / margin | tissue Mpx "
          "| inferred / tissue, full tiles | trimmed tiles |")
    print("|---|---|---|---|---|---|---|---|---|")
    t0 = time.perf_counter()
    summary: dict[tuple[tuple[int, int], int], list[tuple[float, float]]] = {}
    for size in SIZES:
        for level in levels:
            for seed in seeds:
                r = one(size, seed, level)
                summary.setdefault((size, level), []).append((r["full"], r["trimmed"]))
                print(f"| {size[0]} x {size[1]} | {level} | {seed} | {100 * r['tissue_frac']:.1f} "
                      f"| {r['tiles']} | {r['window']} / {r['margin']} | {r['tissue_mpx']:.0f} "
                      f"| {r['full']:.3f} | {r['trimmed']:.3f} |", flush=True)
    print("\nmean over seeds (inferred px per tissue px): full -> trimmed")
    for (size, level), vals in summary.items():
        f, t = np.mean(vals, axis=0)
        print(f"  {size[0]} x {size[1]} level {level}: {f:.3f} -> {t:.3f}")
    print(f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
