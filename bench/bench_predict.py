"""Benchmark `lymph predict`: tissue megapixels per second and peak RSS on a 100,000 x 100,000
synthetic slide, against a 25,000 x 25,000 one (memory flatness) and against the model alone on
windows already in memory (pipeline overhead), all measured in the same run.

    .venv/bin/python bench/bench_predict.py                      # CPU, budget of windows
    .venv/bin/python bench/bench_predict.py --gpu                # on a CUDA machine
    .venv/bin/python bench/bench_predict.py --size 20000 --small 10000 --windows 40  # quick

The small slide is made once with `lymph.data.synth.synth_slides` (1 tumor slide, seed 0) into
``--cache`` and reused; the big one repeats its JPEG tiles (see ``make_tiled_slide``), or is
synthesised too with ``--synth-big``. Every prediction runs in its own child process, so that
each peak RSS (``ru_maxrss``) belongs to one slide alone. On a budget (``--windows N``) the
child infers N tissue windows, a contiguous run from the middle of the tissue, but does
everything else for the whole slide (thumbnail, tissue mask, the full-size map and its pyramidal
TIFF, detections, overlay); the full-slide time is extrapolated from the measured rate and
printed as such.

Tissue megapixels: each inferred window is credited with the level-0 area of one stride x stride
cell (the area it newly covers), so the rate is independent of the overlap setting's
double-counting; windows are those whose footprint touches tissue.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ARCHS = {
    "default": {"base_width": 32, "depth": 4},  # the UNet lymph trains by default
    "tiny": {"base_width": 8, "depth": 3},
}


def make_slide(cache: Path, size: int) -> tuple[Path, float]:
    """The cached synthetic tumor slide of size x size px (made once), and seconds spent."""
    from lymph.data.synth import synth_slides

    folder = cache / f"slides_{size}"
    path = folder / "tumor_001.tif"
    if path.is_file():
        return path, 0.0
    t0 = time.perf_counter()
    synth_slides(
        folder,
        n_tumor=1,
        n_normal=0,
        size=(size, size),
        seed=0,
        progress=True,
        workers=max(1, (os.cpu_count() or 1)),
    )
    return path, time.perf_counter() - t0


def make_tiled_slide(cache: Path, src: Path, size: int) -> tuple[Path, float]:
    """A size x size slide that repeats a smaller synthetic slide: its JPEG tiles are copied
    as they are (no decoding) with a period of whole tiles that halves exactly at every source
    level (96 tiles, 24,576 px, for a 25k source), so every level repeats the same tissue; the
    levels below the source's smallest are composed from it. Same tissue, texture and JPEG
    tiles as synth_slides makes, in I/O time instead of about 25 CPU-minutes."""
    import tifffile

    from lymph.data.pyramid import pyramid_dimensions

    path = cache / f"tiled_{size}" / "tumor_001.tif"
    if path.is_file():
        return path, 0.0
    t0 = time.perf_counter()
    tile = 256
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    dims = pyramid_dimensions(size, size)
    with tifffile.TiffFile(src) as tf:
        pages = [p for p in tf.pages if p.is_tiled]
        # the period in level-0 tiles: whole tiles of the source, halving exactly at each level
        step = 2 ** (len(pages) - 1)
        period0 = pages[0].shape[1] // tile // step * step
        mpp = 1e4 * pages[0].tags["XResolution"].value[1] / pages[0].tags["XResolution"].value[0]
        common = {
            "dtype": np.uint8,
            "tile": (tile, tile),
            "photometric": "rgb",
            "compression": "jpeg",
            "subsampling": (2, 2),
            "metadata": None,
        }
        with tifffile.TiffWriter(part, bigtiff=True) as out:
            for k, (w, h) in enumerate(dims):
                px_cm = 1e4 / (mpp * 2**k)
                extra = {
                    "resolution": (px_cm, px_cm),
                    "resolutionunit": "CENTIMETER",
                    "subfiletype": 1 if k else 0,
                }
                period = period0 // 2**k if k < len(pages) else 0
                if period >= 1 and period0 % 2**k == 0:
                    page = pages[k]
                    per_row = -(-page.shape[1] // tile)
                    fh = tf.filehandle

                    def tiles(page=page, per_row=per_row, period=period, w=w, h=h, fh=fh):
                        for r in range(-(-h // tile)):
                            for c in range(-(-w // tile)):
                                i = (r % period) * per_row + (c % period)
                                fh.seek(page.dataoffsets[i])
                                yield fh.read(page.databytecounts[i])

                    out.write(tiles(), shape=(h, w, 3), **common, **extra)
                else:  # below the source's levels: compose from its smallest level
                    small = pages[-1].asarray()
                    scale = 2 ** (len(pages) - 1)
                    cell = period0 * tile // scale  # one period at the smallest source level
                    factor = 2**k // scale
                    block = (
                        small[:cell, :cell]
                        .reshape(cell // factor, factor, cell // factor, factor, 3)
                        .mean(axis=(1, 3))
                    )
                    reps = -(-max(w, h) // block.shape[0])
                    image = np.tile(block.astype(np.uint8), (reps, reps, 1))[:h, :w]
                    out.write(
                        np.ascontiguousarray(image),
                        tile=(tile, tile),
                        photometric="rgb",
                        compression="jpeg",
                        compressionargs={"level": 85},
                        subsampling=(2, 2),
                        metadata=None,
                        **extra,
                    )
    os.replace(part, path)
    return path, time.perf_counter() - t0


def make_checkpoint(cache: Path, arch: str) -> Path:
    """An untrained UNet of ``arch`` (speed does not depend on the weights), claiming 300 px
    patches at level 0 like the paper's."""
    import torch

    from lymph.model.checkpoint import save_checkpoint
    from lymph.model.unet import UNet, UNetConfig

    path = cache / f"model_{arch}.pt"
    if not path.is_file():
        torch.manual_seed(0)
        model = UNet(UNetConfig(**ARCHS[arch]))
        save_checkpoint(
            path, model=model, config={"store": {"patch_size": 300, "level": 0}, "stage": "bench"}
        )
    return path


def child_predict(args: argparse.Namespace) -> dict:
    """Model alone (the baseline, warmed up) then the whole pipeline, in this one process."""
    from lymph.model.predict import PredictConfig, predict_slide

    base = child_model_only(args)
    t0 = time.perf_counter()
    config = PredictConfig(
        checkpoint=args.child_ckpt,
        out=args.child_out,
        device=args.device,
        batch_size=args.batch_size,
        read_threads=args.read_threads,
        max_windows=args.windows or None,
        progress=False,
        threads=args.threads,
    )
    res = predict_slide(args.child_slide, config)
    wall = time.perf_counter() - t0
    out = res.to_dict()
    out["wall_s"] = wall
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["model_only"] = base
    return out


def child_model_only(args: argparse.Namespace) -> dict:
    """The model alone on windows already in memory: the rate the pipeline aims at."""
    import torch

    from lymph.model.checkpoint import load_model
    from lymph.model.infer import predict_probs, resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    from lymph.model.predict import plan_grid

    dev = resolve_device(args.device)
    model, ckpt = load_model(args.child_ckpt, device=dev)
    patch = ckpt["config"]["store"]["patch_size"]
    grid = plan_grid((10**5, 10**5), 1.0, level=0, patch_size=patch, multiple=model.multiple)
    window, stride = grid.window, grid.stride
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.batch_size, window, window, 3), dtype=np.uint8)
    with torch.inference_mode():
        predict_probs(model, images, device=dev, batch_size=args.batch_size)  # warm-up
        n, t0 = 0, time.perf_counter()
        while n < max(args.batch_size, args.model_windows):
            predict_probs(model, images, device=dev, batch_size=args.batch_size)
            n += len(images)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
    return {
        "windows": n,
        "seconds": seconds,
        "window": window,
        "tissue_mpx_per_s": n * stride * stride / 1e6 / seconds,
    }


def run_child(argv: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"child {argv} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=100_000, help="big slide side, px")
    p.add_argument("--small", type=int, default=25_000, help="small slide side, px (flatness)")
    p.add_argument(
        "--windows",
        type=int,
        default=None,
        help="windows inferred per slide (0: all) [default: 48 on CPU, 30000 on GPU]",
    )
    p.add_argument("--arch", choices=sorted(ARCHS), default="default")
    p.add_argument("--gpu", action="store_true", help="device cuda, batch 64, 12 reader threads")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--read-threads", type=int, default=None)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument(
        "--model-windows",
        type=int,
        default=None,
        help="windows for the model-only baseline [default: 16 CPU, 2048 GPU]",
    )
    p.add_argument("--cache", type=Path, default=Path("/tmp/lymph-bench"))
    p.add_argument(
        "--synth-big",
        action="store_true",
        help="synthesise the big slide with synth_slides (about 25 CPU-minutes at "
        "100k) instead of repeating the small one",
    )
    # child mode (internal)
    p.add_argument("--child", choices=["predict"], help=argparse.SUPPRESS)
    p.add_argument("--child-slide", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--child-ckpt", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.gpu:
        args.device = "cuda"
    gpu = args.device == "cuda"
    args.batch_size = args.batch_size or (64 if gpu else 8)
    args.read_threads = args.read_threads or (min(12, os.cpu_count() or 1) if gpu else 1)
    args.windows = (30000 if gpu else 48) if args.windows is None else args.windows
    args.model_windows = args.model_windows or (2048 if gpu else 16)

    if args.child == "predict":
        print(json.dumps(child_predict(args)))
        return

    args.cache.mkdir(parents=True, exist_ok=True)
    ckpt = make_checkpoint(args.cache, args.arch)
    common = [
        "--child-ckpt",
        str(ckpt),
        "--device",
        args.device,
        "--batch-size",
        str(args.batch_size),
        "--read-threads",
        str(args.read_threads),
        "--windows",
        str(args.windows),
        "--model-windows",
        str(args.model_windows),
    ]
    if args.threads:
        common += ["--threads", str(args.threads)]
    print(
        f"device {args.device}, model {args.arch} {ARCHS[args.arch]}, batch {args.batch_size}, "
        f"{args.read_threads} reader thread(s), "
        f"{'all' if not args.windows else args.windows} window(s) per slide, "
        f"{os.cpu_count()} CPU(s)"
    )
    rows = {}
    small_slide, made_s = make_slide(args.cache, args.small)
    if made_s:
        print(f"made {small_slide} in {made_s:.0f} s (synth_slides)")
    if args.synth_big:
        big_slide, made_s = make_slide(args.cache, args.size)
        how = "synth_slides"
    else:
        big_slide, made_s = make_tiled_slide(args.cache, small_slide, args.size)
        how = f"the {args.small:,} px synthetic slide repeated"
    print(f"big slide: {big_slide} ({how}){f', made in {made_s:.0f} s' if made_s else ''}")
    for size, slide in ((args.small, small_slide), (args.size, big_slide)):
        out = args.cache / f"out_{size}"
        r = run_child(
            ["--child", "predict", "--child-slide", str(slide), "--child-out", str(out), *common]
        )
        rows[size] = r

    print()
    print(
        "| slide | tissue windows | inferred | thumb+tissue s | read s | read wait s | model s | "
        "blend s | map TIFF s | outputs s | tissue Mpx/s | model alone Mpx/s | pipeline / "
        "model | peak RSS MB | full-slide est. s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for size, r in rows.items():
        t = r["timings"]
        infer_s = t["read_wait"] + t["model"] + t["blend"]
        rate = r["tissue_mpx"] / infer_s if infer_s else float("nan")
        fixed = t["tissue"] + t["write_map"] + t["write_outputs"]
        est = r["n_tissue_windows"] / max(r["n_windows"], 1) * infer_s + fixed
        r["rate"] = rate
        print(
            f"| {size:,} x {size:,} | {r['n_tissue_windows']:,} | {r['n_windows']:,} | "
            f"{t['tissue']:.1f} | "
            f"{t['read']:.1f} | {t['read_wait']:.1f} | {t['model']:.1f} | {t['blend']:.2f} | "
            f"{t['write_map']:.1f} | {t['write_outputs']:.1f} | {rate:.4f} | "
            f"{r['model_only']['tissue_mpx_per_s']:.4f} | "
            f"{rate / r['model_only']['tissue_mpx_per_s']:.2f} | "
            f"{r['peak_rss_mb']:.0f} | {est:,.0f} |"
        )
    big, small = rows[args.size], rows[args.small]
    print()
    base = big["model_only"]
    print(
        f"model alone (same process, warmed up, before the big slide): {base['windows']} "
        f"{base['window']} px windows in {base['seconds']:.1f} s"
    )
    print(
        f"peak RSS big / small ({(args.size / args.small) ** 2:.0f}x the pixels): "
        f"{big['peak_rss_mb'] / small['peak_rss_mb']:.2f} "
        f"({big['peak_rss_mb']:.0f} MB vs {small['peak_rss_mb']:.0f} MB)"
    )
    print(f"rate big / small: {big['rate'] / small['rate']:.2f}")
    print(
        f"map: {big['map_size'][0]:,} x {big['map_size'][1]:,} px at downsample "
        f"{big['map_downsample']:g}, window {big['window']}, stride {big['stride']}"
    )


if __name__ == "__main__":
    main()
