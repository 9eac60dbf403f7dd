"""Benchmark `lymph predict`: the old tiling against the new, side by side in one run.

    .venv/bin/python bench/bench_predict.py                 # CPU, budgets of windows
    .venv/bin/python bench/bench_predict.py --gpu           # on a CUDA machine
    .venv/bin/python bench/bench_predict.py --skip-quality  # speed and memory only

**Old** is today's tiling before issue 12 (``overlap="half"``: windows of the training patch
size every half window, Hann-blended: every pixel computed 4 times; contiguous tensors).
**New** is the default (``overlap="auto"``, channels_last): for a BatchNorm model (lymph's default
since issue 12) 1,024 px tiles whose margin is cut off, redundancy about 1.2; for a GroupNorm
model the half-window tiling, whose maps margin tiles would move (``margin`` forces them).
Both run with the same torch thread count (``--threads``).

1. Speed, same checkpoint and slide: an untrained default UNet (speed does not depend on the
   weights; GroupNorm, and the BatchNorm variant) on the cached 25,000 px synthetic slide at
   level 0, claiming 300 px patches as the paper's. Each run is a child process inferring a
   contiguous run of tissue windows from the middle of the tissue (``--windows`` for the old
   path, the same tissue area for the new) and doing everything else for the whole slide.
   Tissue Mpx/s is the slide's tissue (level-0 Mpx of its thumbnail tissue mask, the same for
   both) over the seconds a whole-slide run would take: read wait + model + blend
   seconds per inferred window times the tiling's tissue windows. Big tiles over the tissue's
   edge hold glass, so this charges the new tiling for it (crediting each window with its
   stride cell's area did not).
2. Memory: peak RSS (``ru_maxrss`` of the child) of both on a 100,000 x 100,000 slide that
   repeats the 25,000 px one's JPEG tiles (``make_tiled_slide``).
3. Maps and scores, small synthetic worlds: a width-8 UNet of each norm trained here for
   ``--train-steps`` steps on 64 px crops of a 4-tumor-slide training world at level 2
   (cached), then full maps of a separate test world (``--test-world``, default 8 tumor + 4
   normal slides) by old and new: mean abs difference of the probability maps vs old (all map
   pixels, and pixels where either map is non-zero), the number of detections, FROC (lymph and
   official rules, with the lesion count) and AUC by
   ``lymph.model.camelyon.run``, and inference seconds over the whole world
   (speed-ups vs old and vs new). Coarse to fine (``--screen``) was removed after
   bench/results/screen.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

ARCHS = {
    "default": {"base_width": 32, "depth": 4},  # the UNet lymph trains by default
    "tiny": {"base_width": 8, "depth": 3},
}
MODES = {
    "old": {"overlap": "half", "channels_last": False},
    "new": {"overlap": "auto", "channels_last": True},  # the default: margin for BatchNorm
    "margin": {"overlap": "margin", "channels_last": True},  # forced, for a GroupNorm model too
}
WORLD_LEVEL, WORLD_PATCH = 2, 64


def make_slide(cache: Path, size: int) -> tuple[Path, float]:
    """The cached synthetic tumor slide of size x size px (made once), and seconds spent."""
    from lymph.data.synth import SynthConfig, run

    folder = cache / f"slides_{size}"
    path = folder / "tumor_001.tif"
    if path.is_file():
        return path, 0.0
    t0 = time.perf_counter()
    run(SynthConfig(out=folder, n_tumor=1, n_normal=0, size=(size, size), seed=0,
                    progress=True, workers=max(1, (os.cpu_count() or 1))))
    return path, time.perf_counter() - t0


TILE = 256  # the tiled slide's tile edge (px)


def make_tiled_slide(cache: Path, src: Path, size: int) -> tuple[Path, float]:
    """A size x size slide that repeats a smaller synthetic slide: its JPEG tiles are copied
    as they are (no decoding) with a period of whole tiles that halves exactly at every source
    level (96 tiles, 24,576 px, for a 25k source), so every level repeats the same tissue; the
    levels below the source's smallest are composed from it. Same tissue, texture and JPEG
    tiles as lymph.data.synth.run makes, in I/O time instead of about 25 CPU-minutes."""
    import tifffile

    from lymph.data.pyramid import pyramid_dimensions

    path = cache / f"tiled_{size}" / "tumor_001.tif"
    if path.is_file():
        return path, 0.0
    t0 = time.perf_counter()
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    with tifffile.TiffFile(src) as tf:
        pages = [p for p in tf.pages if p.is_tiled]
        # the period in level-0 tiles: whole tiles of the source, halving exactly at each level
        step = 2 ** (len(pages) - 1)
        period0 = pages[0].shape[1] // TILE // step * step
        mpp = 1e4 * pages[0].tags["XResolution"].value[1] / pages[0].tags["XResolution"].value[0]
        with tifffile.TiffWriter(part, bigtiff=True) as out:
            for k, (w, h) in enumerate(pyramid_dimensions(size, size)):
                px_cm = 1e4 / (mpp * 2**k)
                extra = {"resolution": (px_cm, px_cm), "resolutionunit": "CENTIMETER",
                         "subfiletype": 1 if k else 0}
                period = period0 // 2**k if k < len(pages) else 0
                if period >= 1 and period0 % 2**k == 0:
                    _copy_level(out, tf.filehandle, pages[k], period, (w, h), extra)
                else:  # below the source's levels: compose from its smallest level
                    _compose_level(out, pages, period0, k, (w, h), extra)
    os.replace(part, path)
    return path, time.perf_counter() - t0


def _copy_level(out: Any, fh: Any, page: Any, period: int, wh: tuple[int, int],
                extra: dict[str, Any]) -> None:
    """One level of the tiled slide: the source page's JPEG tiles, repeated with `period`
    tiles, copied without decoding."""
    w, h = wh
    per_row = -(-page.shape[1] // TILE)

    def tiles() -> Iterator[bytes]:
        for r in range(-(-h // TILE)):
            for c in range(-(-w // TILE)):
                i = (r % period) * per_row + (c % period)
                fh.seek(page.dataoffsets[i])
                yield fh.read(page.databytecounts[i])

    out.write(tiles(), shape=(h, w, 3), dtype=np.uint8, tile=(TILE, TILE), photometric="rgb",
              compression="jpeg", subsampling=(2, 2), metadata=None, **extra)


def _compose_level(out: Any, pages: list[Any], period0: int, k: int, wh: tuple[int, int],
                   extra: dict[str, Any]) -> None:
    """A level below the source's smallest: one period of that level, averaged down to level
    k and repeated, JPEG-encoded."""
    w, h = wh
    small = pages[-1].asarray()
    scale = 2 ** (len(pages) - 1)
    cell = period0 * TILE // scale  # one period at the smallest source level
    factor = 2**k // scale
    block = (small[:cell, :cell].reshape(cell // factor, factor, cell // factor, factor, 3)
             .mean(axis=(1, 3)))
    reps = -(-max(w, h) // block.shape[0])
    image = np.tile(block.astype(np.uint8), (reps, reps, 1))[:h, :w]
    out.write(np.ascontiguousarray(image), tile=(TILE, TILE), photometric="rgb",
              compression="jpeg", compressionargs={"level": 85}, subsampling=(2, 2),
              metadata=None, **extra)


def make_checkpoint(cache: Path, arch: str, norm: str) -> Path:
    """An untrained UNet of ``arch`` and ``norm``, claiming 300 px patches at level 0."""
    import torch

    from lymph.model.checkpoint import save_checkpoint
    from lymph.model.unet import UNet, UNetConfig

    path = cache / f"model_{arch}_{norm}.pt"
    if not path.is_file():
        model = UNet(UNetConfig(**ARCHS[arch], norm=norm),
                     generator=torch.Generator().manual_seed(0))
        save_checkpoint(path, model=model,
                        config={"store": {"patch_size": 300, "level": 0}, "stage": "bench"})
    return path


def infer_seconds(r: dict) -> float:
    t = r["timings"]
    return sum(t.get(k, 0.0) for k in ("read_wait", "model", "blend"))


def child_predict(args: argparse.Namespace) -> dict:
    """One predict_slide in this (child) process: its result, wall time and peak RSS."""
    from lymph.model.predict import PredictConfig, predict_slide

    config = PredictConfig(checkpoint=args.child_ckpt, out=args.child_out, device=args.device,
                           batch_size=args.batch_size, read_threads=args.read_threads,
                           max_windows=args.child_windows or None, progress=False,
                           threads=args.threads, force=True, **MODES[args.child_mode])
    t0 = time.perf_counter()
    out = predict_slide(args.child_slide, config).to_dict()
    out["wall_s"] = time.perf_counter() - t0
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def run_child(args: argparse.Namespace, *, slide: Path, ckpt: Path, mode: str, windows: int,
              out: Path) -> dict:
    argv = ["--child", "--child-slide", str(slide), "--child-ckpt", str(ckpt), "--child-mode",
            mode, "--child-windows", str(windows), "--child-out", str(out), "--device",
            args.device, "--batch-size", str(args.batch_size), "--read-threads",
            str(args.read_threads), "--threads", str(args.threads)]
    proc = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"child {argv} failed:\n{proc.stderr[-3000:]}")
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    r["slide_seconds"] = slide_seconds(r)
    r["rate"] = r["slide_tissue_mpx"] / max(r["slide_seconds"], 1e-9)
    return r


def slide_seconds(r: dict) -> float:
    """Inference seconds for every tissue window of the slide, projected from the budget run:
    seconds per inferred window x the tiling's tissue windows. Big tiles hold more glass than
    small windows, so the new tiling's window count, not its stride area, is what it costs."""
    return infer_seconds(r) / max(r["n_windows"], 1) * r["n_tissue_windows"]


def new_stride(ckpt: Path) -> int:
    """The new path's stride for ``ckpt`` at level 0 (what plan_slide will choose)."""
    from lymph.model.checkpoint import load_model
    from lymph.model.predict import fitted_tile, plan_grid, window_independent

    model, c = load_model(ckpt)
    patch = c.record.store.patch_size if c.record.store is not None else None
    assert patch is not None, f"{ckpt} records no patch size"
    if not window_independent(model):  # the default (auto) keeps the half-window tiling
        return plan_grid((10**5, 10**5), 1.0, level=0, patch_size=patch,
                         multiple=model.multiple, overlap="half").stride
    window = fitted_tile((10**5, 10**5), patch)
    return plan_grid((10**5, 10**5), 1.0, level=0, patch_size=window, multiple=model.multiple,
                     window=window, overlap="margin").stride


def same_area_windows(windows: int, old_stride: int, new_stride: int) -> int:
    return max(1, math.ceil(windows * old_stride**2 / new_stride**2))


def speed_and_memory(args: argparse.Namespace) -> None:
    """Parts 1 and 2 (see the module doc)."""
    small, made = make_slide(args.cache, args.small)
    if made:
        print(f"made {small} in {made:.0f} s (lymph.data.synth.run)")
    big, made = make_tiled_slide(args.cache, small, args.size)
    print(f"big slide {big}{f', made in {made:.0f} s' if made else ''}")
    print("\n| norm | slide | path | window | stride | margin | windows inferred | "
          "their tissue Mpx | infer s | tissue windows | slide tissue Mpx | whole-slide s | "
          "tissue Mpx/s | new / old | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for norm in args.norms:
        ckpt = make_checkpoint(args.cache, args.arch, norm)
        slides = [(args.small, small)] + ([(args.size, big)] if norm == args.norms[0] else [])
        for size, slide in slides:
            old = run_child(args, slide=slide, ckpt=ckpt, mode="old", windows=args.windows,
                            out=args.cache / f"out_{size}_{norm}_old")
            new_windows = same_area_windows(args.windows, old["stride"], new_stride(ckpt))
            new = run_child(args, slide=slide, ckpt=ckpt, mode="new", windows=new_windows,
                            out=args.cache / f"out_{size}_{norm}_new")
            for name, r in (("old", old), ("new", new)):
                ratio = f"{r['rate'] / old['rate']:.2f}" if name == "new" else "1"
                print(f"| {norm} | {size:,} | {name} | {r['window']} | {r['stride']} | "
                      f"{r['margin']} | {r['n_windows']} | {r['tissue_mpx']:.2f} | "
                      f"{infer_seconds(r):.1f} | {r['n_tissue_windows']} | "
                      f"{r['slide_tissue_mpx']:.1f} | {r['slide_seconds']:.0f} | "
                      f"{r['rate']:.4f} | {ratio} | "
                      f"{r['peak_rss_mb']:.0f} |")


# --- part 3: maps and scores on small synthetic worlds ---------------------------------------


def make_world(cache: Path, name: str, *, n_tumor: int, n_normal: int, seed: int,
               size: tuple[int, int]) -> Path:
    from lymph.data.synth import SynthConfig, run

    folder = cache / f"world_{name}_{n_tumor}t{n_normal}n_{size[0]}x{size[1]}_s{seed}"
    if not (folder / "reference.csv").is_file():
        run(SynthConfig(out=folder, n_tumor=n_tumor, n_normal=n_normal, size=size, seed=seed,
                        workers=max(1, os.cpu_count() or 1)))
    return folder


def _level_image(path: Path, level: int) -> tuple[np.ndarray, float]:
    from lymph.data.slides import open_slide

    with open_slide(path) as r:
        return r.read_region((0, 0), level, r.level_dimensions[level]), r.level_downsamples[level]


def _training_pairs(world: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """(level-2 RGB, tumor mask at that level) of each tumor slide of the world."""
    from lymph.data.slides import open_slide

    pairs = []
    for slide in sorted(world.glob("tumor_*.tif")):
        if slide.stem.endswith("_mask"):
            continue
        rgb, ds = _level_image(slide, WORLD_LEVEL)
        with open_slide(slide.with_name(f"{slide.stem}_mask.tif")) as m:
            full = m.read_region((0, 0), 0, m.dimensions)[..., 0] > 127
        d = int(round(ds))
        h, w = rgb.shape[0], rgb.shape[1]
        mask = full[: h * d, : w * d].reshape(h, d, w, d).mean(axis=(1, 3)) > 0.5
        pairs.append((rgb, mask))
    return pairs


def train_tiny(cache: Path, world: Path, *, norm: str, steps: int, seed: int = 0,
               precision: str = "fp32") -> Path:
    """A width-8 depth-3 UNet trained for ``steps`` steps (batch 16, 64 px crops at level 2,
    half of them centred on tumor, flips; BCE, Adam 3e-3; forward under ``precision``'s
    autocast), cached."""
    import torch

    from lymph.model.checkpoint import save_checkpoint
    from lymph.model.precision import autocast
    from lymph.model.unet import UNet, UNetConfig

    tag = ("" if precision == "fp32" else f"_{precision}") + (f"_s{seed}" if seed else "")
    path = cache / f"tiny_{norm}_{steps}{tag}_{world.name}.pt"
    if path.is_file():
        return path
    rng = np.random.default_rng(seed)
    model = UNet(UNetConfig(base_width=8, depth=3, norm=norm),
                 generator=torch.Generator().manual_seed(seed))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    pairs, p = _training_pairs(world), WORLD_PATCH
    model.train()
    for _ in range(steps):
        xs, ys = [], []
        for i in range(16):
            rgb, mask = pairs[rng.integers(len(pairs))]
            hot = np.argwhere(mask)
            if i % 2 == 0 and len(hot):
                cy, cx = hot[rng.integers(len(hot))]
            else:
                cy, cx = rng.integers(mask.shape[0]), rng.integers(mask.shape[1])
            y0 = int(np.clip(cy - p // 2, 0, rgb.shape[0] - p))
            x0 = int(np.clip(cx - p // 2, 0, rgb.shape[1] - p))
            flip = rng.integers(2, size=2)
            img, lab = rgb[y0 : y0 + p, x0 : x0 + p], mask[y0 : y0 + p, x0 : x0 + p]
            if flip[0]:
                img, lab = img[::-1], lab[::-1]
            if flip[1]:
                img, lab = img[:, ::-1], lab[:, ::-1]
            xs.append(np.ascontiguousarray(img))
            ys.append(np.ascontiguousarray(lab))
        x = torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).float() / 255
        y = torch.from_numpy(np.stack(ys)).float()[:, None]
        with autocast("cpu", precision):
            logits = model(x).mask_logits
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    save_checkpoint(path, model=model, step=steps, config={
        "store": {"patch_size": WORLD_PATCH, "level": WORLD_LEVEL}, "stage": "finetune",
        "bench": {"steps": steps, "seed": seed, "world": world.name}})
    return path


def predict_world(world: Path, ckpt: Path, out: Path, args: argparse.Namespace,
                  **mode: object) -> dict:
    """Full maps of every slide of ``world``; inference seconds, FROC and AUC."""
    from lymph.model.camelyon import SlideEvalConfig
    from lymph.model.camelyon import run as evaluate_slides
    from lymph.model.predict import PredictConfig, find_slides, predict_slides

    config = PredictConfig(checkpoint=ckpt, out=out, device=args.device, threads=args.threads,
                           thumb_size=1024, progress=False, force=True, **mode)  # type: ignore
    results = predict_slides(find_slides(world)[0], config, progress=False)
    errors = [r.error for r in results if r.error]
    if errors:
        raise RuntimeError(errors)
    values = [r.value for r in results]
    scores = evaluate_slides(SlideEvalConfig(slides=world, predictions=out, rules="lymph",
                                             labels=world / "reference.csv"))
    return {"seconds": sum(infer_seconds(v.to_dict()) for v in values),
            "windows": sum(v.n_windows for v in values),
            "froc": scores.froc, "froc_official": scores.froc_official,
            "auc": scores.auc, "out": out, "n_lesions": scores.n_lesions,
            "detections": sum(v.n_detections for v in values),
            "names": [v.slide for v in values]}


def map_diff(a: Path, b: Path, names: list[str]) -> tuple[float, float]:
    """Mean abs difference of two folders' maps (probabilities): all pixels, and pixels where
    either map is non-zero (tissue the model saw)."""
    import tifffile

    total = tissue = 0.0
    n_all = n_tissue = 0
    for name in names:
        x = tifffile.imread(a / f"{name}_tumor_map.tif").astype(np.float64) / 255
        y = tifffile.imread(b / f"{name}_tumor_map.tif").astype(np.float64) / 255
        d, seen = np.abs(x - y), (x > 0) | (y > 0)
        total, n_all = total + d.sum(), n_all + d.size
        tissue, n_tissue = tissue + d[seen].sum(), n_tissue + int(seen.sum())
    return total / max(n_all, 1), tissue / max(n_tissue, 1)


def maps_and_scores(args: argparse.Namespace) -> None:
    """Part 3 (see the module doc)."""
    size, (n_tumor, n_normal) = args.world_size, args.test_world
    train = make_world(args.cache, "train", n_tumor=4, n_normal=0, seed=0, size=size)
    test = make_world(args.cache, "test", n_tumor=n_tumor, n_normal=n_normal, seed=1, size=size)
    print(f"\nworlds {train.name} (training), {test.name} (test), level {WORLD_LEVEL}, "
          f"{WORLD_PATCH} px patches, {args.train_steps} training steps")
    print("| norm | path | windows | infer s | speed-up vs old | vs new | "
          "mean abs diff vs old (all / tissue) | detections | FROC lymph / official "
          "(lesions) | AUC |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for norm in args.norms:
        ckpt = train_tiny(args.cache, train, norm=norm, steps=args.train_steps)
        runs = {name: predict_world(test, ckpt, args.cache / f"q_{norm}_{name}", args, **m)
                for name, m in MODES.items()}
        old, new = runs["old"], runs["new"]
        for name, r in runs.items():
            diff = map_diff(old["out"], r["out"], old["names"])
            print(f"| {norm} | {name} | {r['windows']} | "
                  f"{r['seconds']:.2f} | {old['seconds'] / r['seconds']:.2f} | "
                  f"{new['seconds'] / r['seconds']:.2f} | {diff[0]:.4f} / {diff[1]:.4f} | "
                  f"{r['detections']} | {r['froc']:.3f} / {r['froc_official']:.3f} "
                  f"({r['n_lesions']}) | {r['auc']:.3f} |")


def pair(text: str) -> tuple[int, int]:
    """``AxB`` (e.g. ``6144x4608``, ``8x4``) as two integers, for argparse."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(v.strip().isdigit() for v in parts):
        raise argparse.ArgumentTypeError(f"expected two integers as AxB (e.g. 8x4), got {text!r}")
    return int(parts[0]), int(parts[1])


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=100_000, help="big slide side, px (memory)")
    p.add_argument("--small", type=int, default=25_000, help="slide side, px (speed)")
    p.add_argument("--windows", type=int, default=None,
                   help="old-path windows per speed run [default: 24 CPU, 3000 GPU]")
    p.add_argument("--arch", choices=sorted(ARCHS), default="default")
    p.add_argument("--norms", default="group,batch", help="UNet norms to measure")
    p.add_argument("--gpu", action="store_true", help="device cuda, batch 64, 12 readers")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--read-threads", type=int, default=None)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads, both paths")
    p.add_argument("--world-size", type=pair, default="6144x4608",
                   help="synthetic worlds' level-0 size")
    p.add_argument("--test-world", type=pair, default="8x4",
                   help="tumor x normal slides of the test world (enough lesions that one "
                        "detection is not a whole FROC step)")
    p.add_argument("--train-steps", type=int, default=300)
    p.add_argument("--skip-quality", action="store_true")
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--cache", type=Path, default=Path("/tmp/lymph-bench"))
    p.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    for name in ("slide", "ckpt", "out"):
        p.add_argument(f"--child-{name}", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--child-mode", choices=sorted(MODES), help=argparse.SUPPRESS)
    p.add_argument("--child-windows", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.gpu:
        args.device = "cuda"
    gpu = args.device == "cuda"
    args.batch_size = args.batch_size or (64 if gpu else 8)
    args.read_threads = args.read_threads or (min(12, os.cpu_count() or 1) if gpu else 1)
    args.windows = (3000 if gpu else 24) if args.windows is None else args.windows
    args.norms = [n for n in args.norms.split(",") if n]
    return args


def main() -> None:
    args = parse_args()
    if args.child:
        print(json.dumps(child_predict(args)))
        return
    args.cache.mkdir(parents=True, exist_ok=True)
    print(f"device {args.device}, model {args.arch} {ARCHS[args.arch]}, norms {args.norms}, "
          f"batch {args.batch_size}, {args.threads} torch thread(s), {args.read_threads} "
          f"reader(s), {args.windows} old-path window(s) per speed run, {os.cpu_count()} CPU(s)")
    if not args.skip_speed:
        speed_and_memory(args)
    if not args.skip_quality:
        maps_and_scores(args)


if __name__ == "__main__":
    main()
