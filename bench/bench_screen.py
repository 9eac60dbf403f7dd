"""Decide ``lymph predict --screen`` (coarse to fine) on a slide big enough to prune: predict
one ~100,000 px slide with little tumor with and without ``--screen``, in the same run.

    nice -n 10 .venv/bin/python bench/bench_screen.py                # ~100k px, --screen 4
    nice -n 10 .venv/bin/python bench/bench_screen.py --screen 4,2 --cells 8x11

The slide is virtual (a ``SlideReader`` served from memory, nothing written): a grid of
``--cells`` copies of the 6,144 x 4,608 px slides of bench/bench_predict.py's synthetic test
world, all normal (normal_001 and normal_002 alternating) but one tumor slide (tumor_001) in
the middle: 17 x 22 cells are 104,448 x 101,376 px, about 0.3% of it tumor slide. Every level of
the world slides' pyramid is tiled, so ``--screen`` reads the coarser level it would read on a
real slide. The model is bench/bench_predict.py's width-8 depth-3 BatchNorm UNet trained for
``--train-steps`` steps at level 2 of the 4-tumor training world (cached; trained here if
missing), so predict runs at level 2 (a 26,112 x 25,344 px level) with 848 px margin tiles.

Each run is one ``predict_slide`` in this process (wall and process CPU seconds: CPU time is
the steadier figure on a shared machine), one torch thread, fp32 on CPU (``precision``
auto); the slide's outputs (map, detections, overlay) are written as ``lymph predict`` writes
them. Reported per run: wall seconds, inference seconds (read wait + model + blend + screen),
full-resolution windows, screening windows, the fraction of the no-screen run's windows the
screen pruned, detections, the slide score, and the mean abs difference of its map vs the
no-screen map (all map pixels, and pixels where either is non-zero). Ratios are what count:
the machine is shared.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_predict import make_world, pair, train_tiny  # noqa: E402


class TiledWorld:
    """A ``SlideReader`` whose level 0 is a grid of copies of same-sized source slides:
    cell (row, col) shows ``sources[layout[row, col]]``, at every level of their pyramid."""

    def __init__(self, sources: list[Path], layout: np.ndarray, *, path: Path) -> None:
        from lymph.data.slides import open_slide

        self.readers = [open_slide(p) for p in sources]
        first = self.readers[0]
        if any(r.level_dimensions != first.level_dimensions for r in self.readers):
            raise ValueError("source slides differ in size")
        self.layout = layout
        rows, cols = layout.shape
        self.cell_dims = first.level_dimensions
        self.path = path
        self.mpp = first.mpp
        self.vendor: str | None = None
        self.properties: dict[str, str] = {}
        self.warnings: list[str] = []
        self.level_count = first.level_count
        self.level_downsamples = tuple(first.level_downsamples)
        self.level_dimensions = tuple((cols * w, rows * h) for w, h in self.cell_dims)
        self.dimensions = self.level_dimensions[0]
        self._images: dict[tuple[int, int], np.ndarray] = {}

    def _image(self, source: int, level: int) -> np.ndarray:
        key = (source, level)
        if key not in self._images:
            r = self.readers[source]
            self._images[key] = r.read_region((0, 0), level, r.level_dimensions[level])
        return self._images[key]

    def read_region(self, location_level0: tuple[int, int], level: int, size: tuple[int, int],
                    *, out: np.ndarray | None = None) -> np.ndarray:
        ds = self.level_downsamples[level]
        x0, y0 = round(location_level0[0] / ds), round(location_level0[1] / ds)
        w, h = int(size[0]), int(size[1])
        img = np.full((h, w, 3), 255, np.uint8) if out is None else out
        if out is not None:
            img[...] = 255
        cw, ch = self.cell_dims[level]
        rows, cols = self.layout.shape
        for row in range(max(0, y0 // ch), min(rows, -(-(y0 + h) // ch))):
            for col in range(max(0, x0 // cw), min(cols, -(-(x0 + w) // cw))):
                src = self._image(int(self.layout[row, col]), level)
                ax, ay = max(x0, col * cw), max(y0, row * ch)
                bx, by = min(x0 + w, (col + 1) * cw), min(y0 + h, (row + 1) * ch)
                img[ay - y0 : by - y0, ax - x0 : bx - x0] = src[ay - row * ch : by - row * ch,
                                                                ax - col * cw : bx - col * cw]
        return img

    def thumbnail(self, max_size: int) -> tuple[np.ndarray, float]:
        """The coarsest level at most as coarse as the thumbnail, box-resized to it."""
        from PIL import Image

        w0, h0 = self.dimensions
        ds = max(1.0, max(w0, h0) / max_size)
        tw, th = max(1, round(w0 / ds)), max(1, round(h0 / ds))
        level = max(i for i, d in enumerate(self.level_downsamples) if d <= ds * (1 + 1e-3))
        whole = self.read_region((0, 0), level, self.level_dimensions[level])
        thumb = np.asarray(Image.fromarray(whole).resize((tw, th), Image.Resampling.BOX))
        return thumb, w0 / tw

    def close(self) -> None:
        for r in self.readers:
            r.close()

    def __enter__(self) -> TiledWorld:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def predict_once(slide: TiledWorld, ckpt: Path, out: Path, screen: int | None) -> dict:
    from lymph.model.predict import PredictConfig, predict_slide

    config = PredictConfig(checkpoint=ckpt, out=out, threads=1, progress=False, force=True,
                           screen=screen)
    t0, c0 = time.perf_counter(), time.process_time()
    r = predict_slide(slide, config)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    t = r.timings
    infer = sum(t.get(k, 0.0) for k in ("read_wait", "model", "blend", "screen"))
    return {"wall": wall, "cpu": cpu, "infer": infer, "windows": r.n_windows,
            "tissue": r.n_tissue_windows,
            "screen_windows": r.n_screen_windows, "detections": r.n_detections,
            "probability": r.probability, "map": r.map_path, "level": r.level,
            "window": r.window, "size": slide.dimensions, "screen_s": t.get("screen", 0.0)}


def map_diff(a: Path, b: Path) -> tuple[float, float]:
    import tifffile

    x = tifffile.imread(a).astype(np.float32) / 255
    y = tifffile.imread(b).astype(np.float32) / 255
    d, seen = np.abs(x - y), (x > 0) | (y > 0)
    return float(d.mean()), float(d[seen].mean()) if seen.any() else 0.0


def cpu_line() -> str:
    import platform

    import torch

    flags: set[str] = set()
    name = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
    except OSError:
        pass
    picked = sorted(f for f in flags if f.startswith(("avx512_bf16", "amx")))
    return (f"CPU {name}, {os.cpu_count()} CPU(s), flags {picked or 'none of avx512_bf16/amx'}; "
            f"torch {torch.__version__}; load average {os.getloadavg()[0]:.1f}")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cells", type=pair, default="17x22", help="copies across x down")
    p.add_argument("--screen", default="4", help="coarse-to-fine factors to measure")
    p.add_argument("--train-steps", type=int, default=150)
    p.add_argument("--cache", type=Path, default=Path("/tmp/lymph-bench"))
    args = p.parse_args()
    args.screen = [int(f) for f in args.screen.split(",") if f]
    return args


def main() -> None:
    args = parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    size = (6144, 4608)
    train = make_world(args.cache, "train", n_tumor=4, n_normal=0, seed=0, size=size)
    test = make_world(args.cache, "test", n_tumor=4, n_normal=2, seed=1, size=size)
    ckpt = train_tiny(args.cache, train, norm="batch", steps=args.train_steps)
    cols, rows = args.cells
    layout = (np.add.outer(np.arange(rows), np.arange(cols)) % 2).astype(np.int64) + 1
    layout[rows // 2, cols // 2] = 0  # the one tumor slide
    sources = [test / "tumor_001.tif", test / "normal_001.tif", test / "normal_002.tif"]
    print(cpu_line())
    print(f"checkpoint {ckpt.name}; slide {cols} x {rows} copies of {size[0]} x {size[1]} px")
    runs: dict[str, dict] = {}
    with TiledWorld(sources, layout, path=args.cache / "screen_slide" / "big.tif") as slide:
        slide.thumbnail(2048)  # level images into memory before any timing
        for f in [None, *args.screen]:
            name = "no screen" if f is None else f"--screen {f}"
            runs[name] = predict_once(slide, ckpt, args.cache / f"screen_out_{f or 0}", f)
            print(f"{name}: {runs[name]['wall']:.1f} s wall, {runs[name]['cpu']:.1f} s CPU",
                  flush=True)
    base = runs["no screen"]
    print(f"\nslide {base['size'][0]} x {base['size'][1]} px, level {base['level']}, "
          f"window {base['window']} px, {base['tissue']} tissue windows")
    print("| run | wall s | CPU s | infer s | screen s | windows (+screen) | pruned | "
          "speed-up (wall / CPU / infer) | detections | score | map abs diff (all / non-zero) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, r in runs.items():
        diff = map_diff(base["map"], r["map"])
        pruned = 1 - r["windows"] / max(base["windows"], 1)
        print(f"| {name} | {r['wall']:.1f} | {r['cpu']:.1f} | {r['infer']:.1f} | "
              f"{r['screen_s']:.1f} | {r['windows']} (+{r['screen_windows']}) | {pruned:.1%} | "
              f"{base['wall'] / r['wall']:.2f}x / {base['cpu'] / r['cpu']:.2f}x / "
              f"{base['infer'] / r['infer']:.2f}x | "
              f"{r['detections']} | {r['probability']:.3f} | {diff[0]:.4f} / {diff[1]:.4f} |")


if __name__ == "__main__":
    main()
